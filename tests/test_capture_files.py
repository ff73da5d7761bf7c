"""Odd capture files, each with the behaviour docs/cli.md ("Capture files") documents.

The files are built here with struct (pcap and pcapng headers, written by hand because the point is to get them
subtly wrong or unusual) around frames from scapy and dnslib. Each case checks the exit code, the one-line
message, and the hits that came out before any error. Missing, directory and unreadable files are in
tests/test_cli.py.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from dnslib import DNSRecord
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from conftest import run_cli

T_SEC = 1_767_225_600  # 2026-01-01T00:00:00Z
DLT_EN10MB, DLT_RAW = 1, 101
PCAP_MICRO, PCAP_NANO = 0xA1B2C3D4, 0xA1B23C4D


def query(name: str, sport: int, link: bool = True) -> bytes:
    packet = IP(src="192.0.2.10", dst="198.51.100.53") / UDP(sport=sport, dport=53) / Raw(
        DNSRecord.question(name).pack())
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / packet) if link else bytes(packet)


def pcap(frames: list[tuple[int, int, bytes]], endian: str = "<", magic: int = PCAP_MICRO,
         linktype: int = DLT_EN10MB) -> bytes:
    """A classic pcap: (seconds, fraction, frame) records, byte order and resolution as asked."""
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for sec, fraction, data in frames:
        out += struct.pack(endian + "IIII", sec, fraction, len(data), len(data)) + data
    return out


def ng_block(kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def ng_section() -> bytes:
    return ng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))


def ng_interface(linktype: int, tsresol: int | None = None) -> bytes:
    options = b""
    if tsresol is not None:  # if_tsresol (9): 10^-tsresol seconds per tick
        options = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
    return ng_block(1, struct.pack("<HHI", linktype, 0, 65535) + options)


def ng_packet(interface: int, ticks: int, data: bytes) -> bytes:
    return ng_block(6, struct.pack("<IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data)


@pytest.fixture
def rules(tmp_path: Path) -> str:
    path = tmp_path / "r.rules"
    path.write_text("evil.example\n")
    return str(path)


def replay(path: Path, rules: str, *more: str):
    result = run_cli("replay", str(path), *more, "--rules", rules, "--no-progress")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return result, [(e["dns"]["question"]["name"], e["@timestamp"]) for e in events]


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


# ---- cut off -------------------------------------------------------------------------------------------------


def test_cut_in_the_file_header_is_not_a_capture(tmp_path, rules):
    path = tmp_path / "header-cut.pcap"
    path.write_bytes(pcap([])[:10])
    result, hits = replay(path, rules)
    assert result.returncode == 2 and not hits
    assert last_line(result).startswith(f"truesource: {path}: not a readable pcap or pcapng capture (truncated")


def test_cut_in_a_record_header_keeps_the_frames_before(tmp_path, rules):
    whole = pcap([(T_SEC, 0, query("one.evil.example", 1000)), (T_SEC + 1, 0, query("two.evil.example", 1001))])
    path = tmp_path / "record-cut.pcap"
    path.write_bytes(whole[: len(whole) - len(query("two.evil.example", 1001)) - 8])  # 8 of 16 header bytes
    result, hits = replay(path, rules)
    assert result.returncode == 1
    assert [name for name, _ in hits] == ["one.evil.example"]
    assert last_line(result).startswith(f"truesource: {path}: capture cut off after frame 1 (truncated dump file")


def test_cut_pcapng_block_keeps_the_frames_before(tmp_path, rules):
    blocks = ng_section() + ng_interface(DLT_EN10MB) + ng_packet(0, T_SEC * 10**6, query("one.evil.example", 1000))
    last = ng_packet(0, T_SEC * 10**6 + 1, query("two.evil.example", 1001))
    path = tmp_path / "cut.pcapng"
    path.write_bytes(blocks + last[:30])
    result, hits = replay(path, rules)
    assert result.returncode == 1 and [name for name, _ in hits] == ["one.evil.example"]
    assert "capture cut off after frame 1" in last_line(result)


# ---- several interfaces --------------------------------------------------------------------------------------


def test_pcapng_interfaces_of_one_link_type_are_all_read(tmp_path, rules):
    path = tmp_path / "two-ether.pcapng"
    path.write_bytes(ng_section() + ng_interface(DLT_EN10MB) + ng_interface(DLT_EN10MB)
                     + ng_packet(0, T_SEC * 10**6, query("zero.evil.example", 1000))
                     + ng_packet(1, T_SEC * 10**6 + 1, query("one.evil.example", 1001)))
    result, hits = replay(path, rules)
    assert result.returncode == 0, result.stderr
    assert [name for name, _ in hits] == ["zero.evil.example", "one.evil.example"]


def test_pcapng_interfaces_of_different_link_types_stop_with_a_clear_error(tmp_path, rules):
    """libpcap reads one link type per file. An interface of another type, declared after some frames: the
    frames before it are decoded, then one line says why the file stopped, exit 1."""
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(ng_section() + ng_interface(DLT_EN10MB)
                     + ng_packet(0, T_SEC * 10**6, query("ether.evil.example", 1000))
                     + ng_interface(DLT_RAW)
                     + ng_packet(1, T_SEC * 10**6 + 1, query("raw.evil.example", 1001, link=False)))
    result, hits = replay(path, rules)
    assert result.returncode == 1
    assert [name for name, _ in hits] == ["ether.evil.example"]
    line = last_line(result)
    assert line.startswith(f"truesource: {path}: stopped after frame 1: its interfaces have different link types")
    assert "Traceback" not in result.stderr


def test_mixed_link_types_declared_up_front_stop_before_any_frame(tmp_path, rules):
    path = tmp_path / "mixed-first.pcapng"
    path.write_bytes(ng_section() + ng_interface(DLT_EN10MB) + ng_interface(DLT_RAW)
                     + ng_packet(0, T_SEC * 10**6, query("ether.evil.example", 1000)))
    result, hits = replay(path, rules)
    assert result.returncode == 1 and not hits
    assert "stopped after frame 0: its interfaces have different link types" in last_line(result)


# ---- resolution and byte order --------------------------------------------------------------------------------


@pytest.mark.parametrize("endian", ["<", ">"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("magic, fraction", [(PCAP_MICRO, 123_456), (PCAP_NANO, 123_456_789)],
                         ids=["microsecond", "nanosecond"])
def test_pcap_byte_order_and_resolution(tmp_path, rules, endian, magic, fraction):
    path = tmp_path / "t.pcap"
    path.write_bytes(pcap([(T_SEC, fraction, query("t.evil.example", 1000))], endian, magic))
    result, hits = replay(path, rules)
    assert result.returncode == 0, result.stderr
    assert hits == [("t.evil.example", "2026-01-01T00:00:00.123456Z")]  # nanoseconds truncated to microseconds


@pytest.mark.parametrize("tsresol, ticks", [(None, T_SEC * 10**6 + 123_456), (9, T_SEC * 10**9 + 123_456_789)],
                         ids=["microsecond", "nanosecond"])
def test_pcapng_resolution(tmp_path, rules, tsresol, ticks):
    path = tmp_path / "t.pcapng"
    path.write_bytes(ng_section() + ng_interface(DLT_EN10MB, tsresol) + ng_packet(0, ticks, query("t.evil.example", 1)))
    result, hits = replay(path, rules)
    assert result.returncode == 0, result.stderr
    assert hits == [("t.evil.example", "2026-01-01T00:00:00.123456Z")]


# ---- empty --------------------------------------------------------------------------------------------------


def test_empty_file_is_not_a_capture(tmp_path, rules):
    path = tmp_path / "empty.pcap"
    path.write_bytes(b"")
    result, hits = replay(path, rules)
    assert result.returncode == 2 and not hits
    assert result.stderr.strip() == f"truesource: {path}: empty file (0 bytes), not a capture"


@pytest.mark.parametrize("content", [pcap([]), ng_section() + ng_interface(DLT_EN10MB)], ids=["pcap", "pcapng"])
def test_header_only_file_is_an_empty_capture(tmp_path, rules, content):
    path = tmp_path / "header-only"
    path.write_bytes(content)
    result, hits = replay(path, rules, "--summary-json", str(tmp_path / "s.json"))
    assert result.returncode == 0 and not hits
    assert json.loads((tmp_path / "s.json").read_text())["counters"]["packets"] == 0
