"""Link-layer headers: which protocol follows (IPv4, IPv6 or a PPPoE session), where, and the outer VLAN id."""

from __future__ import annotations

import struct
from typing import NamedTuple

from sensor.decode.anomaly import Anomaly

# libpcap link types (pcap_datalink values).
DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW_BSD = 12  # OpenBSD's number for raw IP
DLT_RAW_14 = 14  # the other BSDs' number for raw IP
DLT_LOOP = 108
DLT_RAW = 101  # LINKTYPE_RAW as stored in capture files
DLT_LINUX_SLL = 113
DLT_LINUX_SLL2 = 276
RAW_LINKTYPES = frozenset({DLT_RAW_BSD, DLT_RAW_14, DLT_RAW})
SUPPORTED_LINKTYPES = frozenset({DLT_NULL, DLT_EN10MB, DLT_LOOP, DLT_LINUX_SLL, DLT_LINUX_SLL2}) | RAW_LINKTYPES

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_PPPOE_SESSION = 0x8864  # RFC 2516; discovery (0x8863) carries no IP and stays not_ip
# 802.1Q, 802.1ad (provider bridging) and the pre-standard QinQ type some switches still send.
VLAN_ETHERTYPES = frozenset({0x8100, 0x88A8, 0x9100})
# Real networks stack two or three tags; eight leaves room for odd set-ups and bounds work per frame.
MAX_VLAN_TAGS = 8
VLAN_ID_MASK = 0x0FFF  # the low 12 bits of the tag control information

# BSD address families in DLT_NULL / DLT_LOOP headers: IPv6 is 24 (NetBSD, OpenBSD), 28 (FreeBSD), 30 (macOS).
AF_INET = 2
AF_INET6_VALUES = frozenset({24, 28, 30})

# What a link header announced: the IP version the next layer must find, or a PPPoE session to open.
IPV4 = 4
IPV6 = 6
PPPOE = 0x8864

ETHERNET = struct.Struct("!6s6sH")  # destination, source, ethertype
VLAN_TAG = struct.Struct("!HH")  # tag control information (priority, DEI, VLAN id), next ethertype
LINUX_SLL = struct.Struct("!HHH8sH")  # packet type, ARPHRD type, address length, address, protocol
LINUX_SLL2 = struct.Struct("!HHIHBB8s")  # protocol, reserved, interface index, ARPHRD, packet type, addr len, addr
FAMILY = struct.Struct("4s")  # DLT_NULL / DLT_LOOP: a 4-byte address family


class Link(NamedTuple):
    """What the link header says: IPV4, IPV6 or PPPOE, where that header starts, the outer VLAN id."""

    protocol: int
    offset: int
    vlan_id: int | None


def decode_link(linktype: int, frame: bytes) -> Link:
    """Read the link header of one frame; raise Anomaly naming why the frame carries no IP."""
    if linktype == DLT_EN10MB:
        if len(frame) < ETHERNET.size:
            raise Anomaly("truncated_link")
        ethertype = ETHERNET.unpack_from(frame)[2]
        return _after_ethertype(frame, ETHERNET.size, ethertype)
    if linktype == DLT_LINUX_SLL:
        if len(frame) < LINUX_SLL.size:
            raise Anomaly("truncated_link")
        protocol = LINUX_SLL.unpack_from(frame)[4]
        return _after_ethertype(frame, LINUX_SLL.size, protocol)
    if linktype == DLT_LINUX_SLL2:
        if len(frame) < LINUX_SLL2.size:
            raise Anomaly("truncated_link")
        protocol = LINUX_SLL2.unpack_from(frame)[0]
        return _after_ethertype(frame, LINUX_SLL2.size, protocol)
    if linktype in RAW_LINKTYPES:
        # No link header: the IP version nibble decides. An empty frame has no IP header at all.
        if not frame:
            raise Anomaly("truncated_ip")
        version = frame[0] >> 4
        if version not in (IPV4, IPV6):
            raise Anomaly("not_ip")
        return Link(version, 0, None)
    if linktype in (DLT_NULL, DLT_LOOP):
        if len(frame) < FAMILY.size:
            raise Anomaly("truncated_link")
        (raw,) = FAMILY.unpack_from(frame)
        families = {int.from_bytes(raw, "big")}
        if linktype == DLT_NULL:
            # Host byte order of the machine that captured, which the file does not record: accept both.
            families.add(int.from_bytes(raw, "little"))
        if AF_INET in families:
            return Link(IPV4, FAMILY.size, None)
        if families & AF_INET6_VALUES:
            return Link(IPV6, FAMILY.size, None)
        raise Anomaly("not_ip")
    raise Anomaly("unsupported_linktype")


def decode_ethernet(frame: bytes) -> Link:
    """An Ethernet II frame, as a capture's own link layer or inside a tunnel; its VLAN tags are its own."""
    return decode_link(DLT_EN10MB, frame)


def _after_ethertype(frame: bytes, offset: int, ethertype: int) -> Link:
    """Follow VLAN tags (Ethernet, SLL and SLL2 alike) to the IP ethertype; the first tag gives the VLAN id."""
    vlan_id = None
    tags = 0
    while ethertype in VLAN_ETHERTYPES and tags < MAX_VLAN_TAGS:
        if len(frame) < offset + VLAN_TAG.size:
            raise Anomaly("truncated_link")
        tci, ethertype = VLAN_TAG.unpack_from(frame, offset)
        if vlan_id is None:
            vlan_id = tci & VLAN_ID_MASK
        offset += VLAN_TAG.size
        tags += 1
    # A ninth tag lands here with a VLAN ethertype and is not IP.
    if ethertype == ETHERTYPE_IPV4:
        return Link(IPV4, offset, vlan_id)
    if ethertype == ETHERTYPE_IPV6:
        return Link(IPV6, offset, vlan_id)
    if ethertype == ETHERTYPE_PPPOE_SESSION:
        return Link(PPPOE, offset, vlan_id)
    raise Anomaly("not_ip")
