"""CNAME hits (decision 0160) in both loops, and attribution through the chain (decision 0161).

Differential: generated responses with CNAME chains (targets from a small pool a few rules match, other records
between them, allow rules, chains past the 16 read), whole or mutated, must give the same records and counters
from the compiled loop and the reference. Then what the crafted capture (pcaps/cname-chains.pcap, made by
pcaps/cnames.py) must give as events: the chain, the hop, `dns.answers`, the client named at its response.
"""

from __future__ import annotations

import json
import os
import struct

import pytest
from dnslib import CNAME as CNAME_DATA
from dnslib import QTYPE, RR, A, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PCAPS, ROOT, run_cli
from sensor.attribution import ResolverAttribution
from sensor.decode import ReferenceLoop
from sensor.decode.checksum import ones_sum
from sensor.querylog.record import QueryLogEntry
from sensor.records import DnsMessage

try:
    from sensor import _loop
except ImportError:
    _loop = None

DLT_RAW = 101
# evil.test and below hits; allowed.evil.test is allowed; x.test exactly
TABLE = {"evil.test": [0, 0], "allowed.evil.test": [1, 1], "x.test": [-1, 2]}
ALLOW = bytes([0, 1, 0])
TARGETS = ["a.evil.test", "EVIL.test", "allowed.evil.test", "b.allowed.evil.test", "x.test", "y.x.test", "good.test",
           "c.good.test", "evil.test.good"]
EXAMPLES = int(os.environ.get("CNAME_EXAMPLES", "600"))


def ipv4_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, damage: int = 0) -> bytes:
    """An IPv4 UDP datagram with a good header checksum and no UDP checksum (0: none over IPv4); `damage` 1 breaks
    the header checksum, 2 sets a wrong UDP checksum (the client's kernel drops either: decision 0162)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0xBAD if damage == 2 else 0) + payload
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst))
    struct.pack_into("!H", header, 10, (0xFFFF - ones_sum(bytes(header)) + (damage == 1)) & 0xFFFF)
    return bytes(header) + udp


def response(name: str, answers: list[tuple[str, int, str]], rd: bool = True, qd_extra: int = 0) -> bytes:
    record = DNSRecord(DNSHeader(id=7, qr=1, rd=int(rd), ra=1), q=DNSQuestion(DNSLabel(name), QTYPE.A))
    for index in range(qd_extra):
        record.add_question(DNSQuestion(DNSLabel(f"q{index}.test"), QTYPE.A))
    for owner, rrtype, data in answers:
        rdata = CNAME_DATA(DNSLabel(data)) if rrtype == QTYPE.CNAME else A(data)
        record.add_answer(RR(DNSLabel(owner), rrtype, rdata=rdata, ttl=30))
    return record.pack()


@st.composite
def chains(draw) -> bytes:
    hops = draw(st.lists(st.sampled_from(TARGETS), min_size=0, max_size=18))
    answers, owner = [], "start.good.test"
    for target in hops:
        if draw(st.integers(0, 4)) == 0:
            answers.append((owner, QTYPE.A, "192.0.2.1"))  # another record between the CNAMEs
        answers.append((owner, QTYPE.CNAME, target))
        owner = target
    message = bytearray(response("start.good.test", answers, qd_extra=draw(st.sampled_from([0, 0, 1]))))
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):  # damage: any byte, or the end cut off
        if draw(st.booleans()) and len(message) > 12:
            message[draw(st.integers(12, len(message) - 1))] = draw(st.integers(0, 255))
        else:
            del message[draw(st.integers(12, len(message))):]
    if draw(st.integers(0, 5)) == 0:
        struct.pack_into("!H", message, 6, draw(st.integers(0, 40)))  # ANCOUNT that lies
    return bytes(message)


def both(frames: list[bytes], **options) -> tuple[list, list, dict, dict]:
    meta = b"".join(struct.pack("=IIII", 1, k, sum(map(len, frames[:k])), len(f)) for k, f in enumerate(frames))
    data = b"".join(frames)
    reference = ReferenceLoop(DLT_RAW, [53], TABLE, allow=ALLOW, **options)
    fast = _loop.FastLoop(DLT_RAW, [53], TABLE, allow=ALLOW, **options)
    return (reference.run_batch(data, meta, 1), [DnsMessage(*r) for r in fast.run_batch(data, meta, 1)],
            reference.counters(), fast.counters())


def both_anomalies(frames: list[bytes], **options) -> tuple[list, list, list, list, dict, dict]:
    """As both(), and each loop's anomalies."""
    meta = b"".join(struct.pack("=IIII", 1, k, sum(map(len, frames[:k])), len(f)) for k, f in enumerate(frames))
    data = b"".join(frames)
    reference = ReferenceLoop(DLT_RAW, [53], TABLE, allow=ALLOW, **options)
    if options.get("query_log"):
        options["entry_type"] = QueryLogEntry
    fast = _loop.FastLoop(DLT_RAW, [53], TABLE, allow=ALLOW, **options)
    options.pop("entry_type", None)
    ref_records, fast_records = reference.run_batch(data, meta, 1), fast.run_batch(data, meta, 1)
    return (ref_records, [DnsMessage(*r) for r in fast_records], list(reference.take_anomalies()),
            [tuple(a) for a in fast.take_anomalies()], reference.counters(), fast.counters())


@pytest.mark.skipif(_loop is None and os.environ.get("CI") != "true", reason="sensor._loop is not built")
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(chains(), min_size=1, max_size=4))
def test_generated_chains_agree(messages: list[bytes]) -> None:
    frames = [ipv4_udp(b"\x0a\x00\x00\x35", b"\x0a\x00\x00\x02", 53, 40000, m) for m in messages]
    reference, fast, ref_counters, fast_counters = both(frames)
    assert fast == reference
    assert fast_counters == ref_counters


@pytest.mark.skipif(_loop is None and os.environ.get("CI") != "true", reason="sensor._loop is not built")
@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(chains(), st.sampled_from([0, 0, 1, 2])), min_size=1, max_size=4),
       st.booleans(), st.sampled_from([0, 1, 2]))
def test_generated_chains_with_bad_checksums_agree(messages: list[tuple[bytes, int]], query_log: bool,
                                                   checksums: int) -> None:
    """Damaged checksums, with the query log on (checked in the transport layer) and off (checked only when the
    response would hit, decision 0162), under each --checksums mode: both loops agree on records, anomalies and
    counters."""
    frames = [ipv4_udp(b"\x0a\x00\x00\x35", b"\x0a\x00\x00\x02", 53, 40000, m, damage) for m, damage in messages]
    reference, fast, ref_anomalies, fast_anomalies, ref_counters, fast_counters = both_anomalies(
        frames, query_log=query_log, checksums=checksums)
    assert fast == reference
    assert fast_anomalies == [tuple(a) for a in ref_anomalies]
    assert fast_counters == ref_counters


@pytest.mark.skipif(_loop is None and os.environ.get("CI") != "true", reason="sensor._loop is not built")
@pytest.mark.parametrize("query_log", [False, True])
@pytest.mark.parametrize("damage, counter", [(1, "bad_ip_checksum"), (2, "bad_udp_checksum")])
def test_a_response_its_client_drops_makes_no_cname_hit(query_log: bool, damage: int, counter: str) -> None:
    """Issue 13 for responses: a bad IPv4 header or UDP checksum means no CNAME hit but the anomaly
    bad_checksum_response, named by the client and the matching target; nothing else counted of it. With
    --checksums off it is a hit."""
    message = response("start.good.test", [("start.good.test", QTYPE.CNAME, "a.evil.test")])
    frame = ipv4_udp(b"\x0a\x00\x00\x35", b"\x0a\x00\x00\x02", 53, 40000, message, damage)
    reference, fast, ref_anomalies, fast_anomalies, ref_counters, fast_counters = both_anomalies(
        [frame], query_log=query_log, checksums=1)
    assert reference == fast == []
    (anomaly,) = ref_anomalies
    assert fast_anomalies == [tuple(anomaly)]
    assert (anomaly.kind, anomaly.src_ip, anomaly.dst_ip, anomaly.src_port, anomaly.dst_port, anomaly.qname) == (
        "bad_checksum_response", b"\x0a\x00\x00\x02", b"\x0a\x00\x00\x35", 40000, 53, "a.evil.test")
    assert ref_counters == fast_counters
    assert ref_counters[counter] == 1 and ref_counters["dns_cname_hits"] == ref_counters["hits"] == 0
    assert ref_counters["dns_responses"] == 0
    reference, fast, ref_anomalies, _, ref_counters, _ = both_anomalies([frame], query_log=query_log, checksums=0)
    assert len(reference) == len(fast) == 1 and ref_anomalies == [] and ref_counters["dns_cname_hits"] == 1


@pytest.mark.skipif(_loop is None and os.environ.get("CI") != "true", reason="sensor._loop is not built")
@pytest.mark.parametrize("hops, hit", [
    (["good.test", "a.evil.test"], (1, "a.evil.test", 0)),            # the second hop matches
    (["allowed.evil.test", "c.good.test"], None),                  # an allow rule is no hit
    (["c.good.test", "y.x.test", "a.evil.test"], (1, "y.x.test", 2)),  # the first matching hop decides
    ([f"h{k}.good.test" for k in range(16)] + ["a.evil.test"], None),  # past the 16 CNAMEs read
    (["c.good.test", "evil.test.good"], None),                     # a good chain
])
def test_which_hop_hits(hops: list[str], hit: tuple[int, str, int] | None) -> None:
    answers, owner = [], "start.good.test"
    for target in hops:
        answers.append((owner, QTYPE.CNAME, target))
        owner = target
    frame = ipv4_udp(b"\x0a\x00\x00\x35", b"\x0a\x00\x00\x02", 53, 40000, response("start.good.test", answers))
    reference, fast, ref_counters, fast_counters = both([frame])
    assert fast == reference and fast_counters == ref_counters
    if hit is None:
        assert reference == [] and ref_counters["dns_cname_hits"] == 0
        return
    (record,) = reference
    hop, records = record.cname
    assert (hop, records[hop][2], record.rule) == hit
    assert [target for _, _, target in records] == hops[:16]
    assert ref_counters["dns_cname_hits"] == ref_counters["hits"] == 1


@pytest.mark.skipif(_loop is None and os.environ.get("CI") != "true", reason="sensor._loop is not built")
@pytest.mark.parametrize("question, hits", [("q.evil.test", 0), ("allowed.evil.test", 1)])
def test_a_question_that_hits_itself_makes_no_second_hit(question: str, hits: int) -> None:
    """The query for a rule's name was the hit; an allowed name aliased to a rule's name is one."""
    message = response(question, [(question, QTYPE.CNAME, "a.evil.test")])
    frame = ipv4_udp(b"\x0a\x00\x00\x35", b"\x0a\x00\x00\x02", 53, 40000, message)
    reference, fast, ref_counters, fast_counters = both([frame])
    assert fast == reference and fast_counters == ref_counters
    assert len(reference) == ref_counters["dns_cname_hits"] == hits


def test_attribution_table_is_bounded() -> None:
    """Resolver-side names beyond max_upstream push the oldest out, counted."""
    attribution = ResolverAttribution(max_upstream=3)
    for k in range(5):
        chain = (0, ((f"n{k}.good.test", 30, f"t{k}.evil.test"),))
        attribution.link(DnsMessage(1, 1, k, None, b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", 17, 53, 3000, 1, 0x8000,
                                    1, f"n{k}.good.test", 1, 1, 0, cname=chain))
    counters = attribution.counters()
    assert counters["attribution_upstream"] == 3 and counters["attribution_upstream_evicted"] == 7


def test_capture_events_name_the_client_through_the_chain(tmp_path) -> None:
    out = tmp_path / "hits.jsonl"
    result = run_cli("replay", str(PCAPS / "cname-chains.pcap"), "--rules", str(ROOT / "pcaps" / "pcaps.rules"),
                     "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr
    events = {e["truesource"]["capture"]["frame"]: e for e in map(json.loads, out.read_text().splitlines())}
    answer = events[8]  # the resolver's answer to the client: three hops, linked to the resolver's upstream hits
    assert answer["source"]["ip"] == "192.0.2.10" and answer["destination"]["ip"] == "198.51.100.53"
    assert answer["dns"]["type"] == "answer" and answer["dns"]["response_code"] == "NOERROR"
    assert answer["truesource"]["cname"] == {"chain": ["alias.good.test", "h1.cdn.test", "h2.cdn.test",
                                                       "c2.evil.example"], "matched": "c2.evil.example", "hop": 3}
    assert [a["type"] for a in answer["dns"]["answers"]] == ["CNAME"] * 3
    assert answer["threat"]["enrichments"][0]["matched"]["field"] == "dns.answers.data"
    attribution = answer["truesource"]["attribution"]
    assert attribution["role"] == "client" and attribution["match"] == "resolver_address"
    assert [c["ip"] for c in attribution["clients"]] == ["192.0.2.10"]
    assert {"c2.evil.example", "alias.good.test"} <= {u["name"] for u in attribution["upstream"]}
    assert "attribution" not in events[5]["truesource"]  # the upstream response: remembered, nothing to name
    forwarded = events[14]["truesource"]["attribution"]  # the forwarder's answer: the client behind it
    assert forwarded["clients"][0]["ip"] == "192.0.2.10" and forwarded["match"] == "resolver_address"
    assert 16 not in events and 17 not in events  # the good chain; the 17-hop chain


@pytest.mark.skipif(_loop is None and os.environ.get("CI") != "true", reason="sensor._loop is not built")
@pytest.mark.parametrize("query_log", [False, True])
@pytest.mark.parametrize("form", ["ipv6-udp-zero", "tcp-bad"])
def test_ipv6_zero_and_tcp_bad_checksum_responses_make_no_cname_hit(query_log: bool, form: str) -> None:
    """An IPv6 UDP checksum of 0 is refused (RFC 8200 8.1) and a bad TCP checksum dropped, for a response as for a
    query: the anomaly bad_checksum_response, no record, in both loops."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet import UDP as ScapyUDP
    from scapy.layers.inet6 import IPv6

    message = response("start.good.test", [("start.good.test", QTYPE.CNAME, "a.evil.test")])
    if form == "ipv6-udp-zero":
        packet = IPv6(bytes(IPv6(src="2001:db8::53", dst="2001:db8::2") / ScapyUDP(sport=53, dport=40000) / message))
        packet[ScapyUDP].chksum = 0
    else:
        packet = IP(bytes(IP(src="10.0.0.53", dst="10.0.0.2") / TCP(sport=53, dport=40000, flags="PA", seq=1, ack=1)
                          / (struct.pack("!H", len(message)) + message)))
        packet[TCP].chksum ^= 0x0101
    reference, fast, ref_anomalies, fast_anomalies, ref_counters, fast_counters = both_anomalies(
        [bytes(packet)], query_log=query_log, checksums=1)
    assert reference == fast == []
    assert [a.kind for a in ref_anomalies] == ["bad_checksum_response"]
    assert fast_anomalies == [tuple(a) for a in ref_anomalies] and ref_anomalies[0].qname == "a.evil.test"
    assert ref_counters == fast_counters and ref_counters["dns_cname_hits"] == 0
