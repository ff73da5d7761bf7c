"""IP fragment reassembly (docs/querylog.md, "Reassembly"): the fragments capture frame by frame, orders,
overlaps (the evasion they are), limits and floods, and the fast path against the reference on generated
fragmentations."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from querylog_support import KINDS, QUERYLOG_PCAPS, _loop, make, run_capture
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from conftest import make_batch
from pcaps.layers import edns_padded_query
from pcaps.make_querylog_pcaps import MANY_AAAA
from sensor.querylog import STATUS_ANSWERED, STATUS_UNANSWERED
from sensor.records import TABLE_GAUGES

DLT_EN10MB = 1
# Fixed MACs: a bare Ether() would have scapy resolve the destination by ARP, seconds per frame.
LINK = Ether(src="02:00:00:00:00:10", dst="02:00:00:00:00:53")
CLIENT4, RESOLVER4 = "192.0.2.10", "198.51.100.53"
CLIENT6, RESOLVER6 = "2001:db8:1::10", "2001:db8:53::53"
RULES = {"evil.example": [0, 0]}  # the reference's table form; the fast loop takes it too


@pytest.mark.parametrize("kind", KINDS)
def test_fragments_capture(kind: str) -> None:
    records, entries, counters, loop = run_capture(kind, QUERYLOG_PCAPS / "fragments.pcap")
    # The fragmented query under evil.example is a hit, on the frame that completed it.
    assert [(r[0], r[12]) for r in records] == [(9, "hidden.evil.example")]
    summary = [(e.frame, e.qname, e.status, len(e.answers)) for e in entries]
    assert summary == [
        (1, "large.example", STATUS_ANSWERED, 1),  # the IPv4 response in three fragments, out of order
        (5, "large6.example", STATUS_ANSWERED, 100),  # the IPv6 response in two
        (9, "hidden.evil.example", STATUS_UNANSWERED, 0),
        (15, "dup.example", STATUS_UNANSWERED, 0),  # reassembled despite a duplicated fragment
    ]
    assert entries[0].answers[0][3] == '"' + "a" * 255 + '" "' + "b" * 255 + '" "' + "c" * 200 + '"'
    assert [a[3] for a in entries[1].answers] == MANY_AAAA
    assert entries[0].latency_us == 3000  # the response counts from the fragment that completed it
    nonzero = {k: v for k, v in counters.items() if v and k not in ("packets", "bytes", *TABLE_GAUGES)}
    assert nonzero == {
        "ip_fragment": 4,  # first fragments held: frames 6, 10, 13, 14
        "ip_fragment_not_first": 5,  # others held: 2, 3, 8, 11, 12
        "ip_reassembled": 4,  # frames 4, 7, 9, 15
        "ip_fragment_overlap": 1,  # frame 11: the queue is dropped (Linux)
        "ip_fragment_duplicate": 1,  # frame 14: inside data held, dropped, the queue kept
        "dns_queries": 4,
        "dns_responses": 2,
        "hits": 1,
    }
    # Frame 12, the honest last fragment, started a new queue after the overlap dropped the first: incomplete.
    assert loop.table_sizes()["fragmented_datagrams"] == 1


def v4_fragments(payload: bytes, cuts: list[int], ident: int = 1, src: str = CLIENT4, dst: str = RESOLVER4,
                 proto: int = 17) -> list[bytes]:
    """`payload` (transport header and data) cut at the byte offsets `cuts` (0 first, multiples of 8)."""
    bounds = [*cuts, len(payload)]
    frames = []
    for index, start in enumerate(cuts):
        more = index + 1 < len(cuts)
        header = IP(src=src, dst=dst, id=ident, proto=proto, frag=start // 8, flags="MF" if more else 0)
        frames.append(bytes(LINK / header / Raw(payload[start:bounds[index + 1]])))
    return frames


def v6_fragments(payload: bytes, cuts: list[int], ident: int = 1) -> list[bytes]:
    bounds = [*cuts, len(payload)]
    frames = []
    for index, start in enumerate(cuts):
        more = int(index + 1 < len(cuts))
        header = IPv6(src=CLIENT6, dst=RESOLVER6) / IPv6ExtHdrFragment(nh=17, offset=start // 8, m=more, id=ident)
        frames.append(bytes(LINK / header / Raw(payload[start:bounds[index + 1]])))
    return frames


def udp_query(name: str, port: int = 40000, v6: bool = False) -> bytes:
    """UDP header and an EDNS-padded query of 600 bytes, with the checksum of the whole datagram."""
    ip = IPv6(src=CLIENT6, dst=RESOLVER6) if v6 else IP(src=CLIENT4, dst=RESOLVER4)
    return bytes(ip / UDP(sport=port, dport=53) / Raw(edns_padded_query(name, 600)))[40 if v6 else 20:]


def run(kind: str, frames: list[bytes], step_usec: int = 1000, **limits):
    loop = make(kind, DLT_EN10MB, table=RULES, **limits)
    data, meta = make_batch(frames, step_usec=step_usec)
    records = loop.run_batch(data, meta, 1)
    return [(r[0], r[12]) for r in records], loop.counters(), loop


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]])
def test_any_order_reassembles(kind: str, order: list[int]) -> None:
    for v6 in (False, True):
        pieces = (v6_fragments if v6 else v4_fragments)(udp_query("x.evil.example", v6=v6), [0, 200, 400])
        records, counters, loop = run(kind, [pieces[i] for i in order])
        assert records == [(3, "x.evil.example")]
        assert counters["ip_reassembled"] == 1
        assert loop.table_sizes()["fragmented_datagrams"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_overlap_with_other_bytes_hides_nothing_and_is_counted(kind: str) -> None:
    """The classic evasion: a second fragment rewrites bytes of the first and runs past it. Linux drops the queue;
    the honest last fragment then starts a new one, which never completes."""
    payload = udp_query("a.evil.example")
    first, rest = v4_fragments(payload, [0, 304])
    rewrite = bytes(LINK / IP(src=CLIENT4, dst=RESOLVER4, id=1, proto=17, frag=296 // 8) /
                    Raw(b"Z" * 8 + payload[304:]))
    records, counters, loop = run(kind, [first, rewrite, rest])
    assert records == []
    assert counters["ip_fragment_overlap"] == 1
    assert counters["ip_reassembled"] == 0
    assert loop.table_sizes()["fragmented_datagrams"] == 1  # the new queue, waiting for its first part


@pytest.mark.parametrize("kind", KINDS)
def test_two_different_ends_are_an_overlap(kind: str) -> None:
    """Two last fragments that do not overlap but announce different lengths: the same trick as an overlap."""
    payload = udp_query("b.evil.example")
    first = v4_fragments(payload, [0, 304])[0]
    ends = [bytes(LINK / IP(src=CLIENT4, dst=RESOLVER4, id=1, proto=17, frag=start // 8) /
                  Raw(payload[start:start + 80])) for start in (400, 480)]
    records, counters, _ = run(kind, [first, *ends])
    assert records == [] and counters["ip_fragment_overlap"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_exact_duplicate_is_harmless(kind: str) -> None:
    first, last = v4_fragments(udp_query("c.evil.example"), [0, 304])
    records, counters, _ = run(kind, [first, first, last])
    assert records == [(3, "c.evil.example")]
    assert counters["ip_fragment_overlap"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_datagram_past_65535_bytes_is_too_big(kind: str) -> None:
    first = v4_fragments(udp_query("d.evil.example"), [0, 304])[0]
    beyond = bytes(LINK / IP(src=CLIENT4, dst=RESOLVER4, id=1, proto=17, frag=8190) / Raw(b"x" * 200))
    records, counters, _ = run(kind, [first, beyond])
    assert records == [] and counters["ip_reassembly_too_big"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_too_many_fragments(kind: str) -> None:
    """65 pieces of 8 bytes: the 65th is refused (MAX_FRAGMENTS = 64) and the datagram abandoned."""
    payload = udp_query("e.evil.example")[:65 * 8]
    pieces = v4_fragments(payload + b"y" * 8, [8 * i for i in range(66)])
    records, counters, _ = run(kind, pieces)
    assert records == [] and counters["ip_reassembly_too_big"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_incomplete_datagram_expires(kind: str) -> None:
    first = v4_fragments(udp_query("f.evil.example"), [0, 304])[0]
    other = v4_fragments(udp_query("g.evil.example"), [0, 304], ident=2)[0]
    _, counters, loop = run(kind, [first, other], step_usec=31_000_000, fragment_timeout=30.0)
    assert counters["ip_fragment_expired"] == 1
    assert loop.table_sizes()["fragmented_datagrams"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_first_fragment_flood_stays_at_the_limit(kind: str) -> None:
    """Unique first fragments that never complete: the table holds its limit, the oldest are evicted."""
    limit, sent = 16, 500
    frames = [v4_fragments(udp_query("h.example"), [0, 304], ident=index)[0] for index in range(sent)]
    _, counters, loop = run(kind, frames, step_usec=10, max_fragmented_datagrams=limit)
    assert loop.table_sizes()["fragmented_datagrams"] == limit
    assert counters["ip_fragment_evicted"] == sent - limit
    assert counters["ip_fragment"] == sent


@pytest.mark.parametrize("kind", KINDS)
def test_byte_limit_evicts_the_oldest(kind: str) -> None:
    """With room for 65,535 bytes, first fragments of 8,000 bytes each: each datagram's buffer is 8 KiB as
    allocated (2 KiB doubled), so seven are held (decision 0172)."""
    frames = [bytes(LINK / IP(src=CLIENT4, dst=RESOLVER4, id=index, proto=17, flags="MF") / Raw(b"p" * 8000))
              for index in range(40)]
    _, counters, loop = run(kind, frames, max_fragment_bytes=65_535)
    assert loop.table_sizes()["fragmented_datagrams"] == 7
    assert loop.table_sizes()["fragment_bytes"] == 7 * 8192
    assert counters["ip_fragment_evicted"] == 33


@pytest.mark.parametrize("kind", KINDS)
def test_high_offset_fragment_flood_is_counted_as_the_buffers_it_takes(kind: str) -> None:
    """A flood of 8-byte fragments at offset 64,000: each allocates a whole 64 KiB buffer. Counted as the data
    held (8 bytes), 1,024 of them would take 64 MiB within a 4-fragment byte limit; counted as allocated, the
    byte limit holds four datagrams, and every other is counted evicted."""
    limit = 4 * 65_535
    frames = [bytes(LINK / IP(src=CLIENT4, dst=RESOLVER4, id=index, proto=17, frag=8000, flags="MF")
                    / Raw(b"p" * 8)) for index in range(200)]
    _, counters, loop = run(kind, frames, max_fragment_bytes=limit)
    sizes = loop.table_sizes()
    assert sizes["fragmented_datagrams"] == 4
    assert sizes["fragment_bytes"] == 4 * 65_535 <= limit
    assert counters["ip_fragment_evicted"] == 196


@pytest.mark.parametrize("kind", KINDS)
def test_bad_limits_are_refused(kind: str) -> None:
    with pytest.raises(ValueError, match="max_fragmented_datagrams"):
        make(kind, DLT_EN10MB, table={}, max_fragmented_datagrams=0)
    with pytest.raises(ValueError, match="max_fragment_bytes"):
        make(kind, DLT_EN10MB, table={}, max_fragment_bytes=1000)


# ---- generated fragmentations: fast == reference -----------------------------------------------------------

GENERATED_EXAMPLES = int(os.environ.get("DIFFERENTIAL_EXAMPLES", "300"))


@st.composite
def fragmentations(draw) -> tuple[list[bytes], bool]:
    """A query datagram cut into 1-6 pieces (multiples of 8), sent in any order, some repeated, dropped,
    or rewritten over a neighbour's bytes; IPv4 or IPv6."""
    v6 = draw(st.booleans())
    payload = udp_query("gen.evil.example", v6=v6)
    count = draw(st.integers(1, 6))
    cuts = sorted(set([0] + [8 * draw(st.integers(1, len(payload) // 8 - 1)) for _ in range(count - 1)]))
    pieces = (v6_fragments if v6 else v4_fragments)(payload, cuts, ident=draw(st.sampled_from([1, 2])))
    frames = draw(st.permutations(pieces))
    for _ in range(draw(st.integers(0, 2))):
        action = draw(st.sampled_from(["repeat", "drop", "overlap"]))
        index = draw(st.integers(0, len(frames) - 1))
        if action == "repeat":
            frames.insert(draw(st.integers(0, len(frames))), frames[index])
        elif action == "drop" and len(frames) > 1:
            frames.pop(index)
        elif action == "overlap" and not v6:
            start = 8 * draw(st.integers(0, len(payload) // 8 - 1))
            data = draw(st.binary(min_size=1, max_size=64))
            more = draw(st.booleans())
            frames.insert(draw(st.integers(0, len(frames))), bytes(
                LINK / IP(src=CLIENT4, dst=RESOLVER4, id=1, proto=17, frag=start // 8, flags="MF" if more else 0)
                / Raw(data)))
    return frames, v6


@settings(max_examples=GENERATED_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=fragmentations(), step=st.sampled_from([1000, 20_000_000]))
def test_generated_fragments_agree(case, step: int) -> None:
    if _loop is None:
        pytest.skip("sensor._loop is not built")
    frames, _ = case
    results = []
    for kind in KINDS:
        records, counters, loop = run(kind, frames, step_usec=step, max_fragmented_datagrams=2, fragment_timeout=30.0)
        loop.flush_query_log()
        results.append((records, counters, loop.table_sizes(), loop.take_query_log()))
    assert results[0] == results[1]


@pytest.mark.parametrize("kind", KINDS)
def test_ipv6_extension_header_after_the_fragment_header(kind: str) -> None:
    """A destination-options header in the fragmentable part is walked after reassembly; a second fragment
    header in there is refused."""
    from scapy.layers.inet6 import IPv6ExtHdrDestOpt

    body = bytes(IPv6(src=CLIENT6, dst=RESOLVER6, nh=60) / IPv6ExtHdrDestOpt(nh=17) / UDP(sport=40001, dport=53) /
                 Raw(edns_padded_query("opt.evil.example", 600)))[40:]
    frames = []
    for start, end, more in ((0, 304, 1), (304, len(body), 0)):
        header = IPv6(src=CLIENT6, dst=RESOLVER6) / IPv6ExtHdrFragment(nh=60, offset=start // 8, m=more, id=9)
        frames.append(bytes(LINK / header / Raw(body[start:end])))
    records, counters, _ = run(kind, frames)
    assert records == [(2, "opt.evil.example")]
    inner = bytes(IPv6ExtHdrFragment(nh=17, offset=1, m=0, id=10)) + body[8:]  # a fragment header inside
    frames = []
    for start, end, more in ((0, 304, 1), (304, len(inner), 0)):
        header = IPv6(src=CLIENT6, dst=RESOLVER6) / IPv6ExtHdrFragment(nh=44, offset=start // 8, m=more, id=11)
        frames.append(bytes(LINK / header / Raw(inner[start:end])))
    records, counters, _ = run(kind, frames)
    assert records == [] and counters["bad_ipv6_extension"] == 1 and counters["ip_reassembled"] == 1
