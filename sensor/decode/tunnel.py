"""Tunnel headers a mirror delivers traffic in: PPPoE, GRE (with ERSPAN types I, II, III), VXLAN, Geneve.

Each decoder takes the bytes after the outer layer and returns what is inside: its kind (Ethernet, IPv4 or
IPv6), the tunnel's name for the record, and the inner bytes. A header cut off or with values the decoder
does not implement is `bad_tunnel`; a well-formed header carrying something other than Ethernet or IP is
`not_ip` (docs/decoding.md, "Tunnels").
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from sensor.decode.anomaly import Anomaly
from sensor.decode.link import ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPV4, IPV6

# Nesting a real mirror produces: ERSPAN of a VXLAN fabric, GRE over a PPPoE uplink: two, rarely three. Each
# level re-runs the link and IP decoders, so a crafted onion of tunnels is bounded work per frame.
MAX_TUNNEL_DEPTH = 4

ETHERNET = 0x6558  # "transparent Ethernet bridging", the GRE and Geneve protocol type for an Ethernet frame
INNER_KINDS = {ETHERTYPE_IPV4: IPV4, ETHERTYPE_IPV6: IPV6, ETHERNET: ETHERNET}

PROTO_GRE = 47
VXLAN_PORT = 4789  # RFC 7348
GENEVE_PORT = 6081  # RFC 8926
TUNNEL_PORTS = frozenset({VXLAN_PORT, GENEVE_PORT})

PPPOE_HEADER = struct.Struct("!BBHHH")  # version/type, code, session id, length, then the PPP protocol
PPPOE_VERSION_TYPE = 0x11  # RFC 2516: version 1, type 1
PPPOE_SESSION_DATA = 0x00  # the code of session data; discovery codes never reach ethertype 0x8864
PPP_PROTOCOLS = {0x0021: IPV4, 0x0057: IPV6}

GRE_HEADER = struct.Struct("!HH")  # flags and version, protocol type
GRE_CHECKSUM = 0x8000  # C: checksum and reserved1 follow (4 bytes)
GRE_ROUTING = 0x4000  # R (RFC 1701 source routing, deprecated by RFC 2784): not implemented
GRE_KEY = 0x2000  # K: a 4-byte key follows
GRE_SEQUENCE = 0x1000  # S: a 4-byte sequence number follows
GRE_VERSION = 0x0007  # 0 is GRE; 1 is PPTP's enhanced GRE, which carries PPP: not implemented
GRE_OPTIONAL_FIELD = 4

ERSPAN_I_II = 0x88BE  # type II with the GRE sequence bit, type I without
ERSPAN_III = 0x22EB
ERSPAN_II_HEADER = 8
ERSPAN_II_VERSION = 1
ERSPAN_III_HEADER = 12
ERSPAN_III_VERSION = 2
ERSPAN_III_PLATFORM = 8  # the platform-specific subheader present when the O bit is set
ERSPAN_III_FRAME_TYPE = 0x7C  # byte 10, bits 6-2: 0 is Ethernet (2, IP, is not implemented: not_ip)
ERSPAN_III_OPTIONAL = 0x01  # byte 11, bit 0: the O bit

VXLAN_HEADER = 8
VXLAN_VNI_VALID = 0x08  # the I flag, which RFC 7348 requires

GENEVE_HEADER = struct.Struct("!BBH3sB")  # version/option length, flags, protocol type, VNI, reserved
GENEVE_VERSION_SHIFT = 6
GENEVE_OPTION_WORDS = 0x3F  # options length in 4-byte words
GENEVE_OPTION_UNIT = 4


class Inner(NamedTuple):
    """What a tunnel holds: ETHERNET, IPV4 or IPV6, the tunnel's name, and the inner bytes."""

    kind: int
    name: str
    payload: bytes


def decode_pppoe(data: bytes) -> Inner:
    """A PPPoE session frame: 6-byte header, then the 2-byte PPP protocol (RFC 2516 section 4)."""
    if len(data) < PPPOE_HEADER.size:
        raise Anomaly("bad_tunnel")
    version_type, code, _, _, protocol = PPPOE_HEADER.unpack_from(data)
    if version_type != PPPOE_VERSION_TYPE or code != PPPOE_SESSION_DATA:
        raise Anomaly("bad_tunnel")
    if protocol not in PPP_PROTOCOLS:
        raise Anomaly("not_ip")  # LCP, IPCP, ...: PPP's own control traffic
    return Inner(PPP_PROTOCOLS[protocol], "pppoe", data[PPPOE_HEADER.size :])


def decode_gre(data: bytes) -> Inner:
    """GRE version 0 (RFC 2784, with RFC 2890's key and sequence number), and the ERSPAN types behind it."""
    if len(data) < GRE_HEADER.size:
        raise Anomaly("bad_tunnel")
    flags, protocol = GRE_HEADER.unpack_from(data)
    if flags & (GRE_ROUTING | GRE_VERSION):
        raise Anomaly("bad_tunnel")
    length = GRE_HEADER.size + GRE_OPTIONAL_FIELD * sum(
        1 for bit in (GRE_CHECKSUM, GRE_KEY, GRE_SEQUENCE) if flags & bit
    )
    if length > len(data):
        raise Anomaly("bad_tunnel")
    payload = data[length:]
    if protocol in INNER_KINDS:
        return Inner(INNER_KINDS[protocol], "gre", payload)
    if protocol == ERSPAN_I_II:
        if not flags & GRE_SEQUENCE:
            return Inner(ETHERNET, "erspan1", payload)  # type I: no ERSPAN header at all
        if len(payload) < ERSPAN_II_HEADER or payload[0] >> 4 != ERSPAN_II_VERSION:
            raise Anomaly("bad_tunnel")
        return Inner(ETHERNET, "erspan2", payload[ERSPAN_II_HEADER:])
    if protocol == ERSPAN_III:
        if len(payload) < ERSPAN_III_HEADER or payload[0] >> 4 != ERSPAN_III_VERSION:
            raise Anomaly("bad_tunnel")
        length = ERSPAN_III_HEADER + (ERSPAN_III_PLATFORM if payload[11] & ERSPAN_III_OPTIONAL else 0)
        if length > len(payload):
            raise Anomaly("bad_tunnel")
        if payload[10] & ERSPAN_III_FRAME_TYPE:
            raise Anomaly("not_ip")
        return Inner(ETHERNET, "erspan3", payload[length:])
    raise Anomaly("not_ip")


def decode_vxlan(data: bytes) -> Inner:
    """VXLAN (RFC 7348): 8-byte header with the I flag set, then an Ethernet frame."""
    if len(data) < VXLAN_HEADER or not data[0] & VXLAN_VNI_VALID:
        raise Anomaly("bad_tunnel")
    return Inner(ETHERNET, "vxlan", data[VXLAN_HEADER:])


def decode_geneve(data: bytes) -> Inner:
    """Geneve (RFC 8926): version 0, 8 bytes plus options, then Ethernet, IPv4 or IPv6 by protocol type."""
    if len(data) < GENEVE_HEADER.size:
        raise Anomaly("bad_tunnel")
    first, _, protocol, _, _ = GENEVE_HEADER.unpack_from(data)
    if first >> GENEVE_VERSION_SHIFT:
        raise Anomaly("bad_tunnel")
    length = GENEVE_HEADER.size + (first & GENEVE_OPTION_WORDS) * GENEVE_OPTION_UNIT
    if length > len(data):
        raise Anomaly("bad_tunnel")
    if protocol not in INNER_KINDS:
        raise Anomaly("not_ip")
    return Inner(INNER_KINDS[protocol], "geneve", data[length:])


def decode_udp_tunnel(dst_port: int, data: bytes) -> Inner:
    """The tunnel a UDP destination port names (one of TUNNEL_PORTS)."""
    return decode_vxlan(data) if dst_port == VXLAN_PORT else decode_geneve(data)
