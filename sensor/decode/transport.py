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
    src_port, dst_port, seq, _, offset_byte, flags, _, _, _ = TCP_HEADER.unpack_from(packet)
    if src_port not in ports and dst_port not in ports:
        raise Anomaly("not_dns_port")
    header_length = (offset_byte >> 4) * 4
    if header_length < TCP_MIN_DATA_OFFSET * 4 or header_length > len(packet):
        raise Anomaly("bad_tcp_header")
    return TcpSegment(src_port, dst_port, seq, flags, packet[header_length:])
