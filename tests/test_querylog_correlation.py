"""Query-response correlation (docs/querylog.md): expectations on pcaps/querylog/ written from how
pcaps/make_querylog_pcaps.py built each exchange; the fast path against the reference on every capture and
on generated responses; the pending table flooded."""

from __future__ import annotations

import ipaddress
import os
import struct
from pathlib import Path

import pytest
from dnslib import RR, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from querylog_support import KINDS, QUERYLOG_PCAPS, _loop, every_capture, make, run_capture
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from conftest import make_batch
from pcaps.make_querylog_pcaps import SRV_RDATA
from sensor.querylog import STATUS_ANSWERED, STATUS_RESPONSE_ONLY, STATUS_UNANSWERED
from sensor.querylog.packed import decode_entries_reference

DLT_EN10MB = 1
# Fixed MACs: a bare Ether() would have scapy resolve the destination by ARP, seconds per frame.
LINK = Ether(src="02:00:00:00:00:10", dst="02:00:00:00:00:53")
CLIENT4 = ipaddress.ip_address("192.0.2.10").packed
CLIENT4_B = ipaddress.ip_address("192.0.2.11").packed
RESOLVER4 = ipaddress.ip_address("198.51.100.53").packed
CLIENT6 = ipaddress.ip_address("2001:db8:1::10").packed
QR_RD_RA = 0x8180
MS = 1000  # the generator's step between frames, in microseconds


def summary(entry) -> tuple:
    return (entry.frame, entry.qname, entry.qtype, entry.status, entry.rcode, entry.response_flags,
            entry.latency_us, entry.retransmissions, entry.transport, entry.answers)


@pytest.mark.parametrize("kind", KINDS)
def test_answers(kind: str) -> None:
    _, entries, counters, _ = run_capture(kind, QUERYLOG_PCAPS / "answers.pcap")
    srv = "\\# 23 " + SRV_RDATA.hex()
    assert [summary(e) for e in entries] == [
        (1, "www.example.com", 1, STATUS_ANSWERED, 0, QR_RD_RA, MS, 0, 17,
         (("www.example.com", 1, 300, "192.0.2.80"), ("www.example.com", 1, 300, "192.0.2.81"))),
        (3, "www.example.com", 28, STATUS_ANSWERED, 0, QR_RD_RA, MS, 0, 17,
         (("www.example.com", 28, 60, "2001:db8::80"),)),
        (5, "cdn.example.net", 1, STATUS_ANSWERED, 0, QR_RD_RA, MS, 0, 17,
         (("cdn.example.net", 5, 3600, "edge.example.org"), ("edge.example.org", 5, 20, "e1.example.org"),
          ("e1.example.org", 1, 20, "203.0.113.7"))),
        (7, "nxd.example", 1, STATUS_ANSWERED, 3, QR_RD_RA | 3, MS, 0, 17, ()),
        (9, "fail.example", 1, STATUS_ANSWERED, 2, QR_RD_RA | 2, MS, 0, 17, ()),
        (11, "example.com", 15, STATUS_ANSWERED, 0, QR_RD_RA, MS, 0, 17,
         (("example.com", 15, 3600, "10 mail.example.com"),)),
        (13, "example.com", 16, STATUS_ANSWERED, 0, QR_RD_RA, MS, 0, 17,
         (("example.com", 16, 300, '"v=spf1 -all" "say \\"hi\\""'),)),
        (15, "_sip._udp.example.com", 33, STATUS_ANSWERED, 0, QR_RD_RA, MS, 0, 17,
         (("_sip._udp.example.com", 33, 600, srv),)),
        (17, "80.2.0.192.in-addr.arpa", 12, STATUS_ANSWERED, 0, QR_RD_RA, MS, 0, 17,
         (("80.2.0.192.in-addr.arpa", 12, 86400, "www.example.com"),)),
        (19, "MiXeD.Example.COM", 1, STATUS_ANSWERED, 0, QR_RD_RA, MS, 0, 17,
         (("mixed.example.com", 1, 5, "192.0.2.90"),)),
    ]
    first = entries[0]
    assert (first.client_ip, first.server_ip, first.client_port, first.server_port, first.dns_id) == (
        CLIENT4, RESOLVER4, 40001, 53, 0x0101)
    assert (first.ts_usec, first.vlan_id, first.tunnel) == (0, None, None)
    assert entries[5].client_ip == CLIENT4_B
    assert entries[8].client_ip == CLIENT6 and len(entries[8].server_ip) == 16
    assert counters["dns_queries"] == counters["dns_responses"] == 10
    assert counters["dns_response_without_query"] == counters["dns_query_expired"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_retransmissions_orphans_and_expiry(kind: str) -> None:
    _, entries, counters, loop = run_capture(kind, QUERYLOG_PCAPS / "retransmit.pcap")
    assert [summary(e) for e in entries] == [
        # three copies of one query, answered 2.503 s after the first
        (1, "again.example", 1, STATUS_ANSWERED, 0, QR_RD_RA, 2_503_000, 2, 17,
         (("again.example", 1, 30, "192.0.2.100"),)),
        (5, "orphan.example", 1, STATUS_RESPONSE_ONLY, 0, QR_RD_RA, -1, 0, 17,
         (("orphan.example", 1, 30, "192.0.2.101"),)),
        # expired when frame 7 came 11 s later
        (6, "lost.example", 1, STATUS_UNANSWERED, -1, 0, -1, 0, 17, ()),
        # a response with another DNS id answers nothing
        (9, "wrongid.example", 1, STATUS_RESPONSE_ONLY, 0, QR_RD_RA, -1, 0, 17, ()),
        # left pending at the end of the capture: flushed
        (7, "later.example", 28, STATUS_UNANSWERED, -1, 0, -1, 0, 17, ()),
        (8, "wrongid.example", 1, STATUS_UNANSWERED, -1, 0, -1, 0, 17, ()),
    ]
    assert entries[1].ts_sec == entries[0].ts_sec + 2  # a response-only entry carries the response's time
    assert {k: counters[k] for k in ("dns_queries", "dns_responses", "dns_query_retransmission",
                                     "dns_response_without_query", "dns_query_expired", "dns_query_evicted")} == {
        "dns_queries": 6, "dns_responses": 3, "dns_query_retransmission": 2, "dns_response_without_query": 2,
        "dns_query_expired": 1, "dns_query_evicted": 0}
    assert loop.table_sizes()["pending_queries"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_udp_then_tcp(kind: str) -> None:
    _, entries, _, _ = run_capture(kind, QUERYLOG_PCAPS / "tcp.pcap")
    assert [summary(e) for e in entries] == [
        (1, "big.example", 16, STATUS_ANSWERED, 0, QR_RD_RA | 0x0200, MS, 0, 17, ()),
        (6, "big.example", 16, STATUS_ANSWERED, 0, QR_RD_RA, MS, 0, 6,
         (("big.example", 16, 120, '"part one"'), ("big.example", 16, 120, '"part two"'))),
    ]
    assert entries[0].truncated and not entries[1].truncated
    assert (entries[1].client_port, entries[1].server_port) == (40202, 53)


@pytest.mark.parametrize("kind", KINDS)
def test_query_log_off_changes_nothing(kind: str) -> None:
    """With the log off, records and counters are the ones the loops always gave, and no entries are made."""
    from querylog_support import rule_table

    from sensor.decode import ReferenceLoop

    path = QUERYLOG_PCAPS / "retransmit.pcap"
    on_records, _, on_counters, _ = run_capture(kind, path)
    if kind == "fast":
        loop = _loop.FastLoop(DLT_EN10MB, (53,), rule_table(), False)
    else:
        loop = ReferenceLoop(DLT_EN10MB, (53,), rule_table(), False)
    from querylog_support import batches

    records = []
    for first, data, meta in batches(path, 4096):
        records += loop.run_batch(data, meta, first)
    loop.flush_query_log()
    assert loop.take_query_log() == []
    assert records == on_records
    query_log_counters = {"dns_query_expired", "dns_query_evicted", "dns_query_retransmission",
                          "dns_response_without_query"}
    assert {k: v for k, v in loop.counters().items() if k not in query_log_counters} == {
        k: v for k, v in on_counters.items() if k not in query_log_counters}


# ---- fast path against the reference ---------------------------------------------------------------------

SMALL = {"max_pending_queries": 3, "query_timeout": 0.5, "max_fragmented_datagrams": 2}


@pytest.mark.parametrize("limits", [{}, SMALL], ids=["defaults", "small-tables"])
@pytest.mark.parametrize("capture", every_capture(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fast_agrees_with_reference(capture: Path, limits: dict) -> None:
    if _loop is None:
        pytest.skip("sensor._loop is not built")
    try:
        fast = run_capture("fast", capture, 7, **limits)
    except Exception as error:  # noqa: BLE001 - a capture libpcap refuses is covered elsewhere
        if "pcap" in type(error).__name__.lower():
            pytest.skip(str(error))
        raise
    reference = run_capture("reference", capture, 7, **limits)
    assert fast[1] == reference[1], capture.name
    assert [tuple(r) for r in fast[0]] == [tuple(r) for r in reference[0]]
    assert fast[2] == reference[2]
    assert fast[3].table_sizes() == reference[3].table_sizes()


@pytest.mark.parametrize("capture", every_capture(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_packed_decoders_agree(capture: Path) -> None:
    """The compiled bulk decoder and the pure-Python reading of the packed layout give the same entries."""
    if _loop is None:
        pytest.skip("sensor._loop is not built")
    import pcapy
    from querylog_support import batches

    try:
        linktype = pcapy.open_offline(str(capture)).datalink()
    except pcapy.PcapError:
        pytest.skip("libpcap cannot open it")
    loop = make("fast", linktype, ports=(53, 5353))
    packed = b""
    for first, data, meta in batches(capture, 4096):
        loop.run_batch(data, meta, first)
        packed += loop.take_query_log_packed()
    loop.flush_query_log()
    packed += loop.take_query_log_packed()
    from sensor.querylog.record import QueryLogEntry

    assert _loop.decode_query_log(packed, QueryLogEntry) == decode_entries_reference(packed)


def test_cut_packed_buffer_is_refused() -> None:
    if _loop is None:
        pytest.skip("sensor._loop is not built")
    from sensor.querylog.record import QueryLogEntry

    loop = make("fast", DLT_EN10MB)
    for first, data, meta in __import__("querylog_support").batches(QUERYLOG_PCAPS / "answers.pcap", 4096):
        loop.run_batch(data, meta, first)
    packed = loop.take_query_log_packed()
    with pytest.raises(ValueError, match="cut off"):
        _loop.decode_query_log(packed[:-3], QueryLogEntry)


# ---- generated responses --------------------------------------------------------------------------------

GENERATED_EXAMPLES = int(os.environ.get("DIFFERENTIAL_EXAMPLES", "300"))
NAMES = st.sampled_from(["a.example", "B.Example", "x.y.z.example", "example", "c.a.example"])
# Addresses with runs of zero hextets in every place, to check the compressed form against ipaddress.
HEXTETS = st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xDB8, 0x2001, 0xA]) | st.integers(0, 0xFFFF)


@st.composite
def answer_records(draw) -> list[RR]:
    records = []
    for _ in range(draw(st.integers(0, 5))):
        owner = draw(NAMES)
        kind = draw(st.sampled_from(["A", "AAAA", "CNAME", "NS", "PTR", "MX", "TXT", "other", "mapped"]))
        ttl = draw(st.integers(0, 2**32 - 1))
        if kind == "A":
            rr = RR.fromZone(f"{owner}. {ttl} IN A {ipaddress.IPv4Address(draw(st.binary(min_size=4, max_size=4)))}")
        elif kind in ("AAAA", "mapped"):
            hextets = draw(st.lists(HEXTETS, min_size=8, max_size=8))
            if kind == "mapped":
                hextets[:6] = [0, 0, 0, 0, 0, 0xFFFF]
            address = ipaddress.IPv6Address(struct.pack("!8H", *hextets))
            rr = RR.fromZone(f"{owner}. {ttl} IN AAAA {address}")
        elif kind in ("CNAME", "NS", "PTR"):
            rr = RR.fromZone(f"{owner}. {ttl} IN {kind} {draw(NAMES)}.")
        elif kind == "MX":
            rr = RR.fromZone(f"{owner}. {ttl} IN MX {draw(st.integers(0, 65535))} {draw(NAMES)}.")
        elif kind == "TXT":
            from dnslib import TXT

            strings = draw(st.lists(st.binary(max_size=40), min_size=1, max_size=3))
            rr = RR(DNSLabel(owner), 16, rdata=TXT(strings), ttl=ttl)
        else:
            from dnslib import RD

            rr = RR(DNSLabel(owner), draw(st.sampled_from([33, 99, 65280])), rdata=RD(draw(st.binary(max_size=20))),
                    ttl=ttl)
        records.extend(rr if isinstance(rr, list) else [rr])
    return records


def frame(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    packet = IP(src=str(ipaddress.IPv4Address(src)), dst=str(ipaddress.IPv4Address(dst))) / UDP(
        sport=sport, dport=dport)
    return bytes(LINK / packet / payload)


@settings(max_examples=GENERATED_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=NAMES,
    records=answer_records(),
    rcode=st.integers(0, 15),
    cut=st.none() | st.integers(12, 400),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3),
    answered=st.booleans(),
)
def test_generated_responses_agree(name, records, rcode, cut, flips, answered) -> None:
    """Responses with every kind of answer, then cut short or with bytes changed: the answers both paths read
    (and the text forms, AAAA against ipaddress) are the same."""
    if _loop is None:
        pytest.skip("sensor._loop is not built")
    response = DNSRecord(DNSHeader(id=7, qr=1, rd=1, ra=1, rcode=rcode), q=DNSQuestion(DNSLabel(name), 1))
    for rr in records:
        response.add_answer(rr)
    wire = bytearray(response.pack())
    for position, value in flips:
        if 12 <= position < len(wire):
            wire[position] = value
    if cut is not None:
        wire = wire[:cut]
    query = DNSRecord(DNSHeader(id=7, rd=1), q=DNSQuestion(DNSLabel(name), 1)).pack()
    frames = [frame(RESOLVER4, CLIENT4, 53, 40000, bytes(wire))]
    if answered:
        frames.insert(0, frame(CLIENT4, RESOLVER4, 40000, 53, query))
    data, meta = make_batch(frames)
    results = []
    for kind in KINDS:
        loop = make(kind, DLT_EN10MB, table={})
        loop.run_batch(data, meta, 1)
        loop.flush_query_log()
        results.append((loop.take_query_log(), loop.counters()))
    assert results[0] == results[1]


# ---- the pending table under a flood ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_pending_query_flood_stays_at_the_limit(kind: str) -> None:
    """Unique queries never answered: the table stops at its limit, the oldest leave first as unanswered and
    each is counted as evicted."""
    limit, sent = 100, 1000
    frames = [frame(CLIENT4, RESOLVER4, 1024 + index, 53,
                    DNSRecord(DNSHeader(id=index, rd=1), q=DNSQuestion(DNSLabel(f"q{index}.example"), 1)).pack())
              for index in range(sent)]
    data, meta = make_batch(frames, step_usec=10)  # 10 ms in all: nothing expires
    loop = make(kind, DLT_EN10MB, table={}, max_pending_queries=limit)
    loop.run_batch(data, meta, 1)
    assert loop.table_sizes()["pending_queries"] == limit
    counters = loop.counters()
    assert counters["dns_query_evicted"] == sent - limit
    assert counters["dns_query_expired"] == 0
    evicted = loop.take_query_log()
    assert [e.frame for e in evicted] == list(range(1, sent - limit + 1))  # oldest first
    assert {e.status for e in evicted} == {STATUS_UNANSWERED}
    loop.flush_query_log()
    assert [e.frame for e in loop.take_query_log()] == list(range(sent - limit + 1, sent + 1))
    assert loop.table_sizes()["pending_queries"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_bad_limits_are_refused(kind: str) -> None:
    with pytest.raises(ValueError, match="max_pending_queries"):
        make(kind, DLT_EN10MB, table={}, max_pending_queries=0)
    with pytest.raises(ValueError, match="query_timeout"):
        make(kind, DLT_EN10MB, table={}, query_timeout=0)


def test_generator_reproduces_the_captures(tmp_path: Path) -> None:
    from pcaps.make_querylog_pcaps import make_all

    for path in make_all(tmp_path):
        assert path.read_bytes() == (QUERYLOG_PCAPS / path.name).read_bytes(), f"{path.name} differs"


# ---- generated conversations: the pending table's order, expiry and eviction ----------------------------------

PORTS = (40000, 40001)
IDS = (1, 2)
CASES = ("q.example", "Q.EXAMPLE", "r.example")


@st.composite
def conversations(draw) -> tuple[list[bytes], list[int]]:
    """Queries and responses over a few ports, ids, names (in two cases) and types, with gaps that cross the
    timeout: retransmissions, answers, orphans, expiries and evictions all happen."""
    frames, gaps = [], []
    for _ in range(draw(st.integers(1, 25))):
        port, dns_id, name = draw(st.sampled_from(PORTS)), draw(st.sampled_from(IDS)), draw(st.sampled_from(CASES))
        qtype = draw(st.sampled_from([1, 28]))
        if draw(st.booleans()):
            message = DNSRecord(DNSHeader(id=dns_id, rd=1), q=DNSQuestion(DNSLabel(name), qtype)).pack()
            frames.append(frame(CLIENT4, RESOLVER4, port, 53, message))
        else:
            response = DNSRecord(DNSHeader(id=dns_id, qr=1, rd=1, ra=1), q=DNSQuestion(DNSLabel(name), qtype))
            response.add_answer(*RR.fromZone(f"{name}. 60 IN A 192.0.2.{dns_id}"))
            frames.append(frame(RESOLVER4, CLIENT4, 53, port, response.pack()))
        gaps.append(draw(st.sampled_from([0, 1000, 400_000, 1_200_000])))
    return frames, gaps


@settings(max_examples=GENERATED_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=conversations(), capacity=st.sampled_from([1, 2, 3, 100]))
def test_generated_conversations_agree(case, capacity: int) -> None:
    if _loop is None:
        pytest.skip("sensor._loop is not built")
    frames, gaps = case
    meta, data, offset, usec = [], b"", 0, 0
    for packet, gap in zip(frames, gaps, strict=True):
        usec += gap
        meta.append(struct.pack("=IIII", 1_700_000_000 + usec // 1_000_000, usec % 1_000_000, offset, len(packet)))
        offset += len(packet)
        data += packet
    results = []
    for kind in KINDS:
        loop = make(kind, DLT_EN10MB, table={}, max_pending_queries=capacity, query_timeout=1.0)
        loop.run_batch(data, b"".join(meta), 1)
        taken = loop.take_query_log()
        sizes = loop.table_sizes()
        loop.flush_query_log()
        results.append((taken, sizes, loop.take_query_log(), loop.counters()))
    assert results[0] == results[1]
