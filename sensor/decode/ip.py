"""IPv4 and IPv6 headers (with IPv6 extension headers): addresses, transport protocol and its bytes."""

from __future__ import annotations

import struct
from typing import NamedTuple

from sensor.decode.anomaly import Anomaly
from sensor.decode.checksum import ipv4_header_ok
from sensor.decode.link import IPV4

# version/IHL, DSCP/ECN, total length, id, flags/fragment offset, TTL, protocol, checksum, source, destination
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
IPV4_MIN_IHL = 5  # 32-bit words: a header without options
IPV4_MORE_FRAGMENTS = 0x2000
IPV4_FRAGMENT_OFFSET = 0x1FFF
# version/traffic class/flow label, payload length, next header, hop limit, source, destination
IPV6_HEADER = struct.Struct("!IHBB16s16s")
IPV6_EXTENSION = struct.Struct("!BB")  # next header, length in 8-byte units not counting the first 8
IPV6_FRAGMENT = struct.Struct("!BBHI")  # next header, reserved, offset (13 bits) / M flag, identification
IPV6_FRAGMENT_OFFSET_SHIFT = 3
IPV6_MORE_FRAGMENTS = 0x0001

HOP_BY_HOP = 0
ROUTING = 43
FRAGMENT = 44
DESTINATION_OPTIONS = 60
SKIPPED_EXTENSIONS = frozenset({HOP_BY_HOP, ROUTING, DESTINATION_OPTIONS})
# No count limit: Linux walks extension headers to the end of the payload, so a chain of nine Destination
# Options headers reaches the resolver and must reach the sensor. Each header is at least 8 bytes, so the walk
# is bounded by the payload length (at most 8,191 steps).
# RFC 7112 / Linux's ipv6_frag_thdr_truncated: a first fragment must hold the whole chain and the upper header.
UPPER_HEADER_LENGTHS = {6: 20, 17: 8, 58: 8}  # TCP, UDP, ICMPv6; any other: 1 byte


class Fragment(NamedTuple):
    """A fragment's place in its datagram; the datagram is identified by the packet's addresses and these."""

    key_protocol: int  # IPv4's protocol (part of its datagram key); 0 for IPv6
    ident: bytes  # IPv4's 16-bit or IPv6's 32-bit identification
    offset: int  # in bytes
    more: bool
    protocol: int  # the transport protocol (IPv6: the fragment header's next header, meaningful at offset 0)


class IpPacket(NamedTuple):
    """The network layer read: addresses in network order, transport protocol number and its bytes.
    A fragment carries `fragment`; `payload` is then its part of the datagram."""

    src: bytes
    dst: bytes
    protocol: int
    payload: bytes
    fragment: Fragment | None = None
    header_ok: bool = True  # IPv4: the header checksum is right (IPv6 has none)


def decode_ip(version: int, frame: bytes, offset: int) -> IpPacket:
    """Decode the IP header the link layer announced, starting at `offset`."""
    packet = frame[offset:]
    return decode_ipv4(packet) if version == IPV4 else decode_ipv6(packet)


def decode_ipv4(packet: bytes) -> IpPacket:
    """IPv4: header checks in contract order; bytes past the total length are padding."""
    if len(packet) < IPV4_HEADER.size:
        raise Anomaly("truncated_ip")
    version_ihl, _, total_length, ident, flags_offset, _, protocol, _, src, dst = IPV4_HEADER.unpack_from(packet)
    header_length = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or header_length < IPV4_MIN_IHL * 4:
        raise Anomaly("bad_ip_header")
    if header_length > len(packet):
        raise Anomaly("truncated_ip")
    if total_length < header_length:
        raise Anomaly("bad_ip_header")
    if total_length > len(packet):
        raise Anomaly("ip_length_exceeds_capture")
    fragment = None
    if flags_offset & (IPV4_MORE_FRAGMENTS | IPV4_FRAGMENT_OFFSET):
        fragment = Fragment(
            protocol, ident.to_bytes(2, "big"), (flags_offset & IPV4_FRAGMENT_OFFSET) * 8,
            bool(flags_offset & IPV4_MORE_FRAGMENTS), protocol,
        )
    header_ok = ipv4_header_ok(packet[:header_length])
    return IpPacket(src, dst, protocol, packet[header_length:total_length], fragment, header_ok)


def decode_ipv6(packet: bytes) -> IpPacket:
    """IPv6: the fixed header, then its extension headers."""
    if len(packet) < IPV6_HEADER.size:
        raise Anomaly("truncated_ip")
    first_word, payload_length, next_header, _, src, dst = IPV6_HEADER.unpack_from(packet)
    if first_word >> 28 != 6 or payload_length == 0:  # 0 announces a jumbogram, which DNS never needs
        raise Anomaly("bad_ip_header")
    if IPV6_HEADER.size + payload_length > len(packet):
        raise Anomaly("ip_length_exceeds_capture")
    payload = packet[IPV6_HEADER.size : IPV6_HEADER.size + payload_length]
    return walk_ipv6_extensions(next_header, payload, src, dst, reassembled=False)


def walk_ipv6_extensions(next_header: int, payload: bytes, src: bytes, dst: bytes, reassembled: bool) -> IpPacket:
    """Skip hop-by-hop, routing, destination options and atomic fragment headers; a fragment header ends the
    walk with the rest as a fragment (refused inside a datagram already reassembled)."""
    offset = 0
    while next_header in SKIPPED_EXTENSIONS or next_header == FRAGMENT:
        if next_header == FRAGMENT:
            if offset + IPV6_FRAGMENT.size > len(payload):
                raise Anomaly("bad_ipv6_extension")
            following, _, offset_flags, ident = IPV6_FRAGMENT.unpack_from(payload, offset)
            fragment_offset = offset_flags >> IPV6_FRAGMENT_OFFSET_SHIFT
            if fragment_offset or offset_flags & IPV6_MORE_FRAGMENTS:
                if reassembled:
                    raise Anomaly("bad_ipv6_extension")
                rest = payload[offset + IPV6_FRAGMENT.size :]
                if not fragment_offset and not chain_complete(following, rest):
                    raise Anomaly("ipv6_fragment_incomplete_chain")
                fragment = Fragment(
                    0, ident.to_bytes(4, "big"), fragment_offset * 8, bool(offset_flags & IPV6_MORE_FRAGMENTS),
                    following,
                )
                return IpPacket(src, dst, following, payload[offset + IPV6_FRAGMENT.size :], fragment)
            length = IPV6_FRAGMENT.size  # an atomic fragment (RFC 6946): the whole datagram, read on
        else:
            if offset + IPV6_EXTENSION.size > len(payload):
                raise Anomaly("bad_ipv6_extension")
            following, units = IPV6_EXTENSION.unpack_from(payload, offset)
            length = (units + 1) * 8
            if offset + length > len(payload):
                raise Anomaly("bad_ipv6_extension")
        next_header = following
        offset += length
    return IpPacket(src, dst, next_header, payload[offset:])


def chain_complete(next_header: int, data: bytes) -> bool:
    """A first fragment's data holds every extension header and the upper-layer header (RFC 7112), as Linux's
    ipv6_frag_thdr_truncated checks."""
    offset = 0
    while next_header in SKIPPED_EXTENSIONS:
        if offset + IPV6_EXTENSION.size > len(data):
            return False
        following, units = IPV6_EXTENSION.unpack_from(data, offset)
        offset += (units + 1) * 8
        next_header = following
    if next_header == FRAGMENT:
        return True  # Linux stops at a second fragment header; it is refused after reassembly
    return offset + UPPER_HEADER_LENGTHS.get(next_header, 1) <= len(data)
