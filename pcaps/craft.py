"""Shared pieces of the capture generators: addresses, DNS messages, frame builders and a deterministic writer.

Every capture is written from fixed times and fixed addresses (nothing is taken from the host: scapy would
otherwise fill MAC and IP source addresses from the routing table), so running the generators twice gives
byte-identical files.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from dnslib import QTYPE, RR, A, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import PcapNgWriter, PcapWriter

# 2026-01-01T00:00:00Z: every capture's clock starts here (plus a per-capture offset).
EPOCH = 1767225600

# Link types (pcap-linktype(7)).
DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW = 101
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_LINUX_SLL2 = 276

# Documentation addresses (RFC 5737, RFC 3849) and locally administered MACs: nothing real.
CLIENT4 = "192.0.2.10"
CLIENT4_B = "192.0.2.11"
RESOLVER4 = "198.51.100.53"
CLIENT6 = "2001:db8:1::10"
RESOLVER6 = "2001:db8:53::53"
CLIENT_MAC = "02:00:00:00:00:10"
RESOLVER_MAC = "02:00:00:00:00:53"


# ---------------------------------------------------------------- DNS messages (dnslib: the wire format)

def labels_of(name: str | tuple[bytes, ...]) -> tuple[bytes, ...]:
    """A dotted ASCII name, or labels given as bytes (to put a dot or any byte inside a label)."""
    if isinstance(name, tuple):
        return name
    return tuple(part.encode("ascii") for part in name.rstrip(".").split(".") if part)


def query(name: str | tuple[bytes, ...], qtype: int = QTYPE.A, qclass: int = 1, dns_id: int = 0x1000) -> bytes:
    """A recursive query with one question, case and bytes kept as given."""
    record = DNSRecord(DNSHeader(id=dns_id, rd=1), q=DNSQuestion(DNSLabel(labels_of(name)), qtype, qclass))
    return record.pack()


def answer(name: str | tuple[bytes, ...], address: str, qtype: int = QTYPE.A, dns_id: int = 0x1000) -> bytes:
    """The response to `query(name)`: the question echoed, one A record (dnslib compresses its owner name)."""
    record = DNSRecord(DNSHeader(id=dns_id, qr=1, rd=1, ra=1), q=DNSQuestion(DNSLabel(labels_of(name)), qtype))
    if qtype == QTYPE.A:
        record.add_answer(RR(DNSLabel(labels_of(name)), QTYPE.A, rdata=A(address), ttl=300))
    return record.pack()


def header(dns_id: int, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    """A 12-byte DNS header by hand, for messages dnslib refuses to build (malformed on purpose)."""
    return struct.pack("!6H", dns_id, flags, qd, an, ns, ar)


def wire_name(*labels: bytes) -> bytes:
    """Labels with their length bytes and the final zero, without any check (to build illegal names)."""
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def tcp_framed(*messages: bytes) -> bytes:
    """Messages behind their 2-byte length, as on a DNS TCP stream (RFC 1035 4.2.2)."""
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


# ---------------------------------------------------------------- frames (scapy: the layers)

def ip_layer(src: str, dst: str) -> Packet:
    """IPv4 or IPv6 by the address family; IPv4 id fixed so the bytes never change."""
    if ":" in src:
        return IPv6(src=src, dst=dst, hlim=64)
    return IP(src=src, dst=dst, id=0x4242, ttl=64)


def ether(src_mac: str = CLIENT_MAC, dst_mac: str = RESOLVER_MAC) -> Packet:
    return Ether(src=src_mac, dst=dst_mac)


def udp_dns(src: str, sport: int, dst: str, dport: int, payload: bytes) -> Packet:
    """IP/UDP around a DNS payload (no link layer)."""
    return ip_layer(src, dst) / UDP(sport=sport, dport=dport) / Raw(payload)


def tcp_seg(src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: str, payload: bytes = b"") -> Packet:
    """IP/TCP segment; the window is fixed so the bytes never change."""
    segment = ip_layer(src, dst) / TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=64240)
    return segment / Raw(payload) if payload else segment


# ---------------------------------------------------------------- writing

@dataclass
class Frame:
    """One frame to write: its bytes, its time (seconds as an exact Decimal) and its length on the wire."""

    data: bytes
    time: Decimal
    wirelen: int | None = None


class Timeline:
    """Frames at fixed, evenly spaced times from a start second: the only clock the generators use."""

    def __init__(self, start: int, step_usec: int = 1000) -> None:
        self.next = Decimal(EPOCH + start)
        self.step = Decimal(step_usec) / Decimal(1_000_000)
        self.frames: list[Frame] = []

    def add(self, packet: Packet | bytes, wirelen: int | None = None, gap_usec: int | None = None) -> int:
        """Append a frame; returns its 1-based frame number (as the sensor reports it)."""
        if gap_usec is not None:
            self.next += Decimal(gap_usec) / Decimal(1_000_000)
        self.frames.append(Frame(bytes(packet), self.next, wirelen))
        self.next += self.step
        return len(self.frames)


def write_pcap(path: Path, linktype: int, frames: list[Frame], nano: bool = False) -> None:
    """A classic little-endian pcap (microsecond or nanosecond), independent of the host's byte order."""
    writer = PcapWriter(str(path), endianness="<", nano=nano, snaplen=65535)
    writer.linktype = linktype  # set here: the constructor ignores a falsy one (DLT_NULL is 0)
    scale = 1_000_000_000 if nano else 1_000_000
    with writer:
        writer.write_header(None)
        for frame in frames:
            sec = int(frame.time)
            fraction = int((frame.time - sec) * scale)
            writer.write_packet(frame.data, sec=sec, usec=fraction, wirelen=frame.wirelen)


def write_pcapng(path: Path, linktype: int, frames: list[Frame]) -> None:
    """A pcapng file (one section, one interface, microsecond enhanced packet blocks)."""
    writer = PcapNgWriter(str(path))
    writer.linktype = linktype
    with writer:
        writer.write_header(None)
        for frame in frames:
            # An exact Decimal so the microseconds are not rounded through a float.
            writer.write_packet(frame.data, sec=frame.time, wirelen=frame.wirelen)
