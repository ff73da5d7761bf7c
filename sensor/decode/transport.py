"""UDP and TCP headers: ports, and the bytes that follow them (lengths from the headers, never the frame).

The port filter comes right after the fixed header (docs/decoding.md): traffic on other ports is
`not_dns_port` however odd its lengths, and only DNS traffic is held to the length checks. A UDP destination
port that names a tunnel (VXLAN, Geneve) is checked first, unless it is also a DNS port.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from typing import NamedTuple

from sensor.decode.anomaly import Anomaly
from sensor.decode.tunnel import TUNNEL_PORTS

PROTO_TCP = 6
PROTO_UDP = 17

UDP_HEADER = struct.Struct("!HHHH")  # source port, destination port, length, checksum
# source port, destination port, sequence, acknowledgement, data offset/reserved, flags, window, checksum, urgent
TCP_HEADER = struct.Struct("!HHIIBBHHH")
TCP_MIN_DATA_OFFSET = 5  # 32-bit words: a header without options
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_OPTION_END = 0
TCP_OPTION_NOP = 1
TCP_OPTION_FAST_OPEN = 34  # RFC 7413; a cookie request carries no cookie (length 2)
TCP_OPTION_EXPERIMENTAL = 254  # with magic 0xF989: the pre-RFC TFO option Linux still accepts
TFO_MAGIC = b"\xf9\x89"


class UdpDatagram(NamedTuple):
    src_port: int
    dst_port: int
    payload: bytes
    tunnel: bool  # the payload is a tunnel header (VXLAN or Geneve, by destination port), not DNS


class TcpSegment(NamedTuple):
    src_port: int
    dst_port: int
    seq: int
    flags: int
    payload: bytes
    urgent: int = 0  # the urgent pointer (meaningful with URG)
    ack: int = 0  # the acknowledgement number (meaningful with ACK)
    fast_open: bool = False  # a SYN carrying a TCP Fast Open cookie: its data counts


def decode_udp(packet: bytes, ports: Container[int]) -> UdpDatagram:
    """UDP: only the bytes the UDP length covers are payload; a length past the IP payload is refused."""
    if len(packet) < UDP_HEADER.size:
        raise Anomaly("truncated_transport")
    src_port, dst_port, length, _ = UDP_HEADER.unpack_from(packet)
    # a tunnel only when neither port is a DNS port: a response to a client on ephemeral port 4789 is DNS
    tunnel = dst_port in TUNNEL_PORTS and dst_port not in ports and src_port not in ports
    if not tunnel and src_port not in ports and dst_port not in ports:
        raise Anomaly("not_dns_port")
    if length < UDP_HEADER.size or length > len(packet):
        raise Anomaly("bad_udp_length")
    return UdpDatagram(src_port, dst_port, packet[UDP_HEADER.size : length], tunnel)


def decode_tcp(packet: bytes, ports: Container[int]) -> TcpSegment:
    """TCP: the data offset must cover the fixed header and stay within the IP payload."""
    if len(packet) < TCP_HEADER.size:
        raise Anomaly("truncated_transport")
    src_port, dst_port, seq, ack, offset_byte, flags, _, _, urgent = TCP_HEADER.unpack_from(packet)
    if src_port not in ports and dst_port not in ports:
        raise Anomaly("not_dns_port")
    header_length = (offset_byte >> 4) * 4
    if header_length < TCP_MIN_DATA_OFFSET * 4 or header_length > len(packet):
        raise Anomaly("bad_tcp_header")
    payload = packet[header_length:]
    fast_open = bool(flags & TCP_SYN and payload) and has_fast_open_cookie(packet[TCP_HEADER.size : header_length])
    return TcpSegment(src_port, dst_port, seq, flags, payload, urgent, ack, fast_open)


def has_fast_open_cookie(options: bytes) -> bool:
    """A TFO option with a cookie (RFC 7413 4.1.1), in the RFC or the experimental form."""
    pos = 0
    while pos < len(options):
        kind = options[pos]
        if kind == TCP_OPTION_END:
            return False
        if kind == TCP_OPTION_NOP:
            pos += 1
            continue
        if pos + 1 >= len(options) or options[pos + 1] < 2 or pos + options[pos + 1] > len(options):
            return False
        length = options[pos + 1]
        if kind == TCP_OPTION_FAST_OPEN and length > 2:
            return True
        if kind == TCP_OPTION_EXPERIMENTAL and length > 4 and options[pos + 2 : pos + 4] == TFO_MAGIC:
            return True
        pos += length
    return False
