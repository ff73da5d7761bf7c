"""The per-hit fast path (sensor/hitline.py) against the reference (HitEncoder.event + schema.encode).

Both must write the same bytes: for every hit of every capture we ship and every peer capture, and for
generated records that vary what the fast path writes by hand (addresses, ports, VLAN, MAC, TCP handshake,
escaped and upper-case names, opcodes and flags, Unicode rule text, capture file or interface), and when a
reload gives the same rule index to another rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pcapy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_differential import batches, captures

from sensor.decode import ReferenceLoop
from sensor.events import HitEncoder, Observer, Origin
from sensor.loop import hit_line_writer, use_compiled
from sensor.messages import DnsRecord, records_of
from sensor.records import DnsMessage
from sensor.rules.loader import load_rules

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "pcaps" / "pcaps.rules"


def both(encoder: HitEncoder, record: DnsRecord, origin: Origin) -> tuple[str | None, str]:
    """(the fast path's line, the reference's); the compiled writer, when built, must write the twin's bytes. It
    writes first, so that a new name's fragments are the ones it made (ext/hitline.pxi new_name), which the twin
    then reuses and the reference encoder checks."""
    parts = encoder.rule_parts(record.rule)
    texts = encoder._lines.origin(origin.capture_file, origin.interface)
    writer = hit_line_writer(encoder._lines)
    compiled = writer.line(record, parts, texts) if writer is not None else None
    fast = encoder._lines.line(record, parts, texts)
    if writer is not None:
        assert compiled == fast
    return fast, encoder.encode(encoder.event(record, origin))


@pytest.mark.parametrize("capture", captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_hit_is_written_the_same(capture: Path) -> None:
    try:
        linktype = pcapy.open_offline(str(capture)).datalink()
    except pcapy.PcapError as err:
        pytest.skip(f"libpcap cannot open it: {err}")
    ruleset = load_rules([str(RULES)])
    loop = ReferenceLoop(linktype, (53, 5353, 5355), ruleset.table, True)
    encoder = HitEncoder(ruleset, Observer("sensor-1", "mirror-a"))
    records = []
    for first, data, meta in batches(capture, 4096):
        records += records_of(loop.run_batch(data, meta, first))
    origins = (Origin(capture_file=str(capture)), Origin(interface="eth1"))
    for record in (r for r in records if r.rule >= 0):
        for origin in origins:
            fast, reference = both(encoder, record, origin)
            if fast is not None:  # left to the reference: a tunnelled or ECS-subnet query
                assert fast == reference, f"{capture.name} frame {record.frame}"
                json.loads(fast)


UNICODE_RULES = "evil.example\n*.bad.example\nbücher.example\n"

names = st.one_of(
    st.sampled_from(["evil.example", "EVIL.Example", "x.bad.example", "a\\.b.bad.example", 'q"uote.bad.example',
                     "\\000\\255.bad.example", "xn--bcher-kva.example", "bad.example", "deep.x.y.z.bad.co.uk"]),
    st.from_regex(r"[a-zA-Z0-9\-_]{1,20}\.bad\.example", fullmatch=True),
)


@st.composite
def records(draw) -> DnsRecord:
    v6 = draw(st.booleans())
    size = 16 if v6 else 4
    src = draw(st.binary(min_size=size, max_size=size))
    dst = draw(st.one_of(st.just(src), st.binary(min_size=size, max_size=size)))
    transport = draw(st.sampled_from([17, 6]))
    return DnsRecord(
        frame=draw(st.integers(1, 2**40)), ts_sec=draw(st.integers(0, 2**33)), ts_usec=draw(st.integers(0, 999_999)),
        vlan_id=draw(st.one_of(st.none(), st.integers(0, 4095))), src_ip=src, dst_ip=dst, transport=transport,
        src_port=draw(st.integers(0, 65535)), dst_port=draw(st.integers(0, 65535)),
        dns_id=draw(st.integers(0, 65535)), flags=draw(st.integers(0, 0x7FFF)), qdcount=draw(st.integers(0, 65535)),
        qname=draw(names), qtype=draw(st.integers(0, 65535)), qclass=draw(st.integers(0, 65535)),
        rule=draw(st.integers(0, 2)),
        src_mac=draw(st.one_of(st.none(), st.binary(min_size=6, max_size=6))),
        tcp_handshake=draw(st.one_of(st.none(), st.booleans())) if transport == 6 else None)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=records(), origin=st.sampled_from([Origin(capture_file="/tmp/ä capture \"1\".pcap"),
                                                  Origin(interface="eth1"), Origin()]))
def test_generated_hits_are_written_the_same(tmp_path_factory, record: DnsRecord, origin: Origin) -> None:
    rules = tmp_path_factory.getbasetemp() / "unicode.rules"
    if not rules.exists():
        rules.write_text(UNICODE_RULES, encoding="utf-8")
    encoder = HitEncoder(load_rules([str(rules)]), Observer("sensor-ü", "mirror \"a\""))
    fast, reference = both(encoder, record, origin)
    assert fast == reference
    assert fast.isascii()


def test_a_reload_that_moves_a_rule_index_rewrites_the_cached_parts(tmp_path: Path) -> None:
    first, second = tmp_path / "a.rules", tmp_path / "b.rules"
    first.write_text("evil.example\n", encoding="utf-8")
    second.write_text("# a comment moves the line\nevil.example\n", encoding="utf-8")
    encoder = HitEncoder(load_rules([str(first)]), Observer("h", "h"))
    record = DnsRecord(1, 0, 0, None, b"\x0a\0\0\1", b"\x0a\0\0\2", 17, 1000, 53, 1, 0x0100, 1, "evil.example", 1,
                       1, 0)
    origin = Origin(capture_file="c.pcap")
    before = encoder.hit_line(record, origin)
    encoder.ruleset = load_rules([str(second)])
    after = encoder.hit_line(record, origin)
    assert json.loads(before)["truesource"]["rule"]["line"] == 1
    assert json.loads(after)["truesource"]["rule"]["line"] == 2
    assert after == encoder.encode(encoder.event(record, origin))


def test_records_the_fast_path_leaves_to_the_reference() -> None:
    encoder = HitEncoder(load_rules([str(RULES)]), Observer("h", "h"))
    base = dict(frame=1, ts_sec=0, ts_usec=0, vlan_id=None, src_ip=b"\x0a\0\0\1", dst_ip=b"\x0a\0\0\2",
                transport=17, src_port=1000, dst_port=53, dns_id=1, flags=0x0100, qdcount=1, qname="evil.example",
                qtype=1, qclass=1, rule=0)
    for extra in ({"tunnel": "vxlan"}, {"client_subnet": "192.0.2.0/24"}):
        record = DnsRecord(**base, **extra)
        fast, reference = both(encoder, record, Origin(capture_file="c.pcap"))
        assert fast is None
        assert encoder.hit_line(record, Origin(capture_file="c.pcap")) == reference


@pytest.mark.skipif(not use_compiled(), reason="the compiled fast path is not built (or TRUESOURCE_PURE is set)")
def test_the_compiled_writer_takes_the_loop_tuple_and_hands_what_it_cannot_write_to_the_twin() -> None:
    encoder = HitEncoder(load_rules([str(RULES)]), Observer("h", "h"))
    writer = hit_line_writer(encoder._lines)
    record = DnsRecord(7, 86_400, 5, 12, b"\x0a\0\0\1", b"\x0a\0\0\2", 6, 1000, 53, 1, 0x0100, 1, "evil.example", 1, 1,
                       0, src_mac=b"\x02\0\0\0\0\1", tcp_handshake=True)
    parts, texts = encoder.rule_parts(0), encoder._lines.origin("c.pcap", None)
    twin = encoder._lines.line(record, parts, texts)
    assert writer.line(record, parts, texts) == twin
    assert writer.line(DnsMessage(*msgspec.structs.astuple(record)), parts, texts) == twin  # the loop's tuple
    # a cached text that is not ASCII (the schema's encoder never makes one): the twin writes the line
    encoder._lines._seconds[86_400] = "1970-01-02T00:00:00\u00e9"
    twin = encoder._lines.line(record, parts, texts)
    assert "\u00e9" in twin
    assert writer.line(record, parts, texts) == twin
