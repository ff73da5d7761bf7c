"""The compiled loop's limits, each named after the attack it stops (the reference is held to the same by
tests/test_differential.py)."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from conftest import make_batch
from sensor._loop import FastLoop
from sensor.records import COUNTERS, TABLE_GAUGES

EN10MB = 1
ALL = {"": [0, 0]}  # the root rule: every query hits


def udp_dns(payload: bytes, sport: int = 40000) -> bytes:
    return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.53") / UDP(sport=sport, dport=53) / payload)


def header(qdcount: int = 1, flags: int = 0x0100) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, flags, qdcount, 0, 0, 0)


def run(frames: list[bytes], table=ALL, **kw):
    loop = FastLoop(EN10MB, [53], table, True, **kw)
    data, meta = make_batch(frames)
    return loop.run_batch(data, meta, 1), loop.counters()


def test_counter_slots_follow_records_module():
    loop = FastLoop(EN10MB, [53], {}, False)
    assert list(loop.counters()) == list(COUNTERS) + list(TABLE_GAUGES)


def test_forward_pointer():
    # the name is a pointer to offset 20, after itself: a forward pointer could loop or read garbage
    records, c = run([udp_dns(header() + b"\xc0\x14" + b"\x00\x01\x00\x01" + b"\x03abc\x00")])
    assert records == [] and c["dns_bad_pointer"] == 1


def test_self_pointer_loop():
    records, c = run([udp_dns(header() + b"\xc0\x0c\x00\x01\x00\x01")])
    assert records == [] and c["dns_bad_pointer"] == 1


def test_pointer_into_own_labels_loop():
    # label "a" then a pointer back to the start of the same name: an infinite name if followed
    records, c = run([udp_dns(header() + b"\x01a\xc0\x0c\x00\x01\x00\x01")])
    assert records == [] and c["dns_bad_pointer"] == 1


def test_pointer_chain_into_the_header():
    # Pointers must go strictly backwards, so a first-question chain can only walk down through the 12-byte
    # header (MAX_POINTER_HOPS is for later names in the message): here 12 -> 10 -> ... -> 0, then a 0x12 byte.
    msg = bytearray(header())
    for at in range(0, 12, 2):
        msg[at:at + 2] = struct.pack("!H", 0xC000 | max(at - 2, 0))
    msg[0:2] = b"\x12\x00"
    records, c = run([udp_dns(bytes(msg) + struct.pack("!H", 0xC00A) + b"\x00\x01\x00\x01")])
    assert records == [] and c["packets"] == 1
    assert sum(c[k] for k in ("dns_bad_pointer", "dns_bad_label_type", "dns_truncated", "dns_no_question")) == 1


def test_name_over_255_bytes():
    name = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00"  # 257 wire bytes
    records, c = run([udp_dns(header() + name + b"\x00\x01\x00\x01")])
    assert records == [] and c["dns_name_too_long"] == 1


def test_name_of_exactly_255_bytes_is_decoded():
    name = b"".join(b"\x3f" + b"a" * 63 for _ in range(3)) + b"\x3d" + b"a" * 61 + b"\x00"
    assert len(name) == 255
    records, c = run([udp_dns(header() + name + b"\x00\x01\x00\x01")])
    assert len(records) == 1 and c["dns_queries"] == 1


@pytest.mark.parametrize("label_type", [0x40, 0x80])
def test_extended_label_type(label_type):
    records, c = run([udp_dns(header() + bytes([label_type | 1]) + b"a\x00\x00\x01\x00\x01")])
    assert records == [] and c["dns_bad_label_type"] == 1


def test_escaping_of_odd_bytes():
    name = b"\x05a.b\\c" + b"\x03\x00\xffZ" + b"\x00"
    records, _ = run([udp_dns(header() + name + b"\x00\x01\x00\x01")])
    assert records[0][12] == "a\\.b\\\\c.\\000\\255Z"


def test_udp_length_past_capture_is_not_read():
    frame = bytearray(udp_dns(header() + b"\x03abc\x00\x00\x01\x00\x01"))
    frame[14 + 20 + 4:14 + 20 + 6] = struct.pack("!H", 200)  # UDP length says more than the IP payload holds
    records, c = run([bytes(frame)])
    assert records == [] and c["bad_udp_length"] == 1


def test_ethernet_padding_is_not_payload():
    frame = udp_dns(header() + b"\x03abc\x00\x00\x01\x00\x01") + b"\xc0\x0c" * 8  # trailer after the IP datagram
    records, c = run([frame])
    assert len(records) == 1 and records[0][12] == "abc"


def syn(sport: int, seq: int = 1000) -> bytes:
    return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.53") / TCP(sport=sport, dport=53, flags="S", seq=seq))


def test_tcp_stream_flood_stays_bounded():
    records, c = run([syn(10000 + i) for i in range(100)], max_tcp_streams=8)
    assert c["tcp_streams"] == 8
    assert c["tcp_stream_evicted"] == 92 and c["tcp_stream_expired"] == 0
    assert c["tcp_no_payload"] == 100


def test_idle_streams_expire():
    # frames are 1 ms apart: the least recently used of 4 streams is 4 ms old, idle past a 2 ms timeout
    records, c = run([syn(10000 + i) for i in range(20)], max_tcp_streams=4, tcp_idle_timeout=0.002)
    assert c["tcp_streams"] == 4 and c["tcp_stream_expired"] == 16


def tcp_data(payload: bytes, seq: int, sport: int = 40001, flags: str = "PA") -> bytes:
    return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.53") /
                 TCP(sport=sport, dport=53, flags=flags, seq=seq) / payload)


def test_message_split_over_segments_and_gap():
    msg = header() + b"\x03abc\x00\x00\x01\x00\x01"
    framed = struct.pack("!H", len(msg)) + msg
    whole = [tcp_data(framed[:1], 1), tcp_data(framed[1:10], 2), tcp_data(framed[10:], 11)]
    records, c = run(whole)
    assert [r[0] for r in records] == [3] and c["tcp_gap"] == 0
    gapped = [tcp_data(framed[:10], 1), tcp_data(framed[12:], 13)]  # two bytes never seen: it waits (Linux)
    records, c = run(gapped)
    assert records == [] and c["tcp_gap"] == 0 and c["tcp_out_of_order"] == 1


def test_retransmission_is_decoded_once():
    msg = header() + b"\x03abc\x00\x00\x01\x00\x01"
    framed = struct.pack("!H", len(msg)) + msg
    records, c = run([tcp_data(framed, 1), tcp_data(framed, 1)])
    assert len(records) == 1 and c["tcp_retransmission"] == 1


def test_label_count_filter_keeps_every_rule_size():
    """The set skips probes for suffix sizes no rule has; rules of 1, 2, 65 labels and the root still match."""
    deep = ".".join(["x"] * 64) + ".com"  # 65 labels: the filter's second word
    table = {"com": (-1, 0), "evil.org": (1, 1), deep: (2, 2)}
    frames = [udp_dns(header() + b"".join(bytes([len(lab)]) + lab.encode() for lab in name.split(".")) + b"\x00"
                      + b"\x00\x01\x00\x01") for name in ("a.com", "a.b.evil.org", deep, "y." + deep, "a.net")]
    records, _ = run(frames, table=table)
    assert [r[15] for r in records] == [0, 1, 2, 2, -1]
    records, _ = run(frames, table={"": (0, 0)})
    assert [r[15] for r in records] == [0, 0, 0, 0, 0]
