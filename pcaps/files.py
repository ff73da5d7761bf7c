"""Captures about the file rather than the traffic: a cut-off pcap, a pcapng file, a nanosecond pcap."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pcaps.craft import (
    CLIENT4,
    DLT_EN10MB,
    EPOCH,
    RESOLVER4,
    Frame,
    Timeline,
    answer,
    ether,
    udp_dns,
    write_pcap,
    write_pcapng,
)
from pcaps.layers import q4, q6

PCAP_RECORD_HEADER = 16  # sec, usec, caplen, wirelen


def cut_off(path: Path) -> None:
    """Three queries, the last frame's bytes cut in half: what a capture killed mid-write leaves."""
    t = Timeline(4000)
    t.add(ether() / q4("first.evil.example", 43001))  # 1 hit
    t.add(ether() / q4("second.evil.example", 43002))  # 2 hit
    third = t.add(ether() / q4("third.evil.example", 43003))  # 3 cut off: never decoded
    write_pcap(path, DLT_EN10MB, t.frames)
    whole = path.read_bytes()
    last = len(t.frames[third - 1].data)
    path.write_bytes(whole[: len(whole) - last + last // 2])


def pcapng(path: Path) -> None:
    t = Timeline(4100)
    t.add(ether() / q4("ng.evil.example", 43101))  # 1 hit
    t.add(ether() / q6("ng6.evil.example", 43102))  # 2 hit
    t.add(ether() / udp_dns(RESOLVER4, 53, CLIENT4, 43101, answer("ng.evil.example", "192.0.2.66")))  # 3 response
    write_pcapng(path, DLT_EN10MB, t.frames)


def nanosecond(path: Path) -> None:
    """Nanosecond timestamps: libpcap hands them over in microseconds (truncated), as the events show them."""
    start = Decimal(EPOCH + 4200)
    frames = [
        Frame(bytes(ether() / q4("nano.evil.example", 43201)), start + Decimal("0.123456789")),  # 1 hit .123456
        Frame(bytes(ether() / q6("nano6.evil.example", 43202)), start + Decimal("1.000000999")),  # 2 hit .000000
    ]
    write_pcap(path, DLT_EN10MB, frames, nano=True)

