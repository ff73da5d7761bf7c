"""Resolver attribution on synthetic hit records: which client queries an upstream query is linked to."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.attribution import ResolverAttribution
from sensor.loop import use_compiled
from sensor.messages import DnsRecord
from sensor.records import DnsMessage

RD = 0x0100


def query(src: str, dst: str, name: str, t: float, rd: bool = True, sport: int = 40000) -> DnsMessage:
    sec, usec = int(t), round(t % 1 * 1_000_000)
    return DnsMessage(1, 1_700_000_000 + sec, usec, None, ipaddress.ip_address(src).packed,
                      ipaddress.ip_address(dst).packed, 17, sport, 53, 1, RD if rd else 0, 1, name, 1, 1, 0,
                      None, None)


def test_upstream_query_links_the_client_that_asked_that_resolver():
    a = ResolverAttribution()
    assert a.link(query("10.0.0.5", "10.0.0.53", "X.Evil.example", 0.0, sport=5555)) is None
    assert a.link(query("10.0.0.6", "10.0.0.54", "x.evil.example", 0.1)) is None  # another resolver's client
    found = a.link(query("10.0.0.53", "192.0.2.1", "evil.example", 0.2, rd=False))  # QNAME-minimised parent
    assert found.match == "resolver_address"
    assert [(c.ip, c.port, c.name) for c in found.clients] == [("10.0.0.5", 5555, "x.evil.example")]


def test_iterative_query_from_unknown_address_links_by_name_and_time():
    a = ResolverAttribution()
    a.link(query("10.0.0.5", "10.0.0.53", "a.evil.example", 0.0))
    a.link(query("10.0.0.7", "10.0.0.53", "other.evil.example", 0.0))
    found = a.link(query("10.0.2.1", "192.0.2.1", "a.evil.example", 0.1, rd=False))  # upstream-side address
    assert found.match == "name_and_time" and [c.ip for c in found.clients] == ["10.0.0.5"]


def test_configured_resolver_with_two_addresses():
    a = ResolverAttribution(["10.0.0.53,10.0.2.1"], learn=False)
    a.link(query("10.0.0.5", "10.0.0.53", "a.evil.example", 0.0))
    found = a.link(query("10.0.2.1", "192.0.2.1", "a.evil.example", 0.1, rd=True))  # RD set, but configured
    assert found.match == "resolver_address" and [c.ip for c in found.clients] == ["10.0.0.5"]


def test_names_not_below_are_not_linked():
    a = ResolverAttribution()
    a.link(query("10.0.0.5", "10.0.0.53", "notevil.example", 0.0))
    a.link(query("10.0.0.6", "10.0.0.53", "evil.example.com", 0.0))
    found = a.link(query("10.0.0.53", "192.0.2.1", "evil.example", 0.1, rd=False))
    assert found.clients == []


def test_window_expires_old_client_queries():
    a = ResolverAttribution(window=2.0)
    a.link(query("10.0.0.5", "10.0.0.53", "a.evil.example", 0.0))
    assert a.link(query("10.0.0.53", "192.0.2.1", "a.evil.example", 1.5, rd=False)).clients != []
    assert a.link(query("10.0.0.53", "192.0.2.1", "a.evil.example", 2.5, rd=False)).clients == []


def test_client_query_flood_stays_bounded():
    a = ResolverAttribution(max_recent=100, max_learned=10)
    for i in range(1000):
        a.link(query(f"10.1.{i // 250}.{i % 250}", f"10.2.0.{i % 50}", f"n{i}.evil.example", i / 1000))
    assert len(a.recent) == 100 and a.evicted == 900
    assert len(a.learned) == 10


def test_indexed_lookup_finds_what_a_scan_of_the_window_finds():
    """The bucket index (last two labels) against the plain scan it replaced, for parents, TLDs and the root."""
    import random

    from sensor.attribution import ResolverAttribution
    from sensor.records import DnsMessage

    rnd = random.Random(7)
    labels = ["evil", "co", "uk", "com", "a", "b", "x-1", "login"]
    attribution = ResolverAttribution(window=1000.0)
    names = []
    for i in range(400):
        name = ".".join(rnd.choice(labels) for _ in range(rnd.randint(1, 5)))
        names.append(name.lower())
        attribution.link(DnsMessage(i, 100, i, None, bytes([10, 1, 0, i % 250]), bytes([10, 0, 0, 53]), 17,
                                    1000 + i, 53, i, 0x0100, 1, name.upper() if i % 3 else name, 1, 1, 0))
    for query in [".", "com", "uk", "co.uk", "evil.co.uk", "a.evil.com", "login", "b.a.evil.co.uk"]:
        below = "." + query if query != "." else ""
        expected = [n for n in names if n == query or n.endswith(below)]
        assert [q.name for _, q in attribution._find(query)] == expected, query


# The compiled client-hit window (ext/attribution.pxi) against its twin, link(): the same records, the same
# answers and the same tables after each (names with odd labels and cases, RD set and clear, configured and
# learned resolvers, time steps across the window, a small max_recent so that eviction happens).
ADDRESSES = ["10.0.0.5", "10.0.0.6", "10.0.0.53", "10.0.2.1", "192.0.2.1", "2001:db8::5", "2001:db8::53"]
NAMES = ["evil.example", "X.Evil.Example", "a.b.evil.example", "example", ".", "b.example.com", "..x", ".lead",
         "deep.a.b.c.example.co.uk", "co.uk", "Ünïcode.example"]


def _same_family(draw, first: str) -> str:
    return draw(st.sampled_from([a for a in ADDRESSES if (":" in a) == (":" in first)]))


@st.composite
def hit_sequences(draw) -> list[DnsMessage]:
    t, out = 0.0, []
    for _ in range(draw(st.integers(1, 60))):
        t += draw(st.sampled_from([0.0, 0.001, 0.4, 1.3, 3.0]))
        src = draw(st.sampled_from(ADDRESSES))
        out.append(query(src, _same_family(draw, src), draw(st.sampled_from(NAMES)), t, rd=draw(st.booleans()),
                         sport=draw(st.integers(1, 65535))))
    return out


def _tables(a: ResolverAttribution):
    return (a.remembered(), a.counters(), {k: list(v) for k, v in a.by_bucket.items()}, list(a.learned.items()))


@pytest.mark.skipif(not use_compiled(), reason="the compiled fast path is not built (or TRUESOURCE_PURE is set)")
@settings(max_examples=300, deadline=None)
@given(records=hit_sequences(), configured=st.booleans())
def test_compiled_client_window_links_as_its_twin(records: list[DnsMessage], configured: bool) -> None:
    resolvers = ["10.0.0.53,10.0.2.1"] if configured else []
    compiled = ResolverAttribution(resolvers, window=2.0, max_recent=5, max_learned=3)
    twin = ResolverAttribution(resolvers, window=2.0, max_recent=5, max_learned=3)
    assert compiled.linker != compiled.link
    for i, record in enumerate(records):  # the runner's DnsRecord, and the loop's tuple
        assert compiled.linker(DnsRecord(*record) if i % 2 else record) == twin.link(record)
        assert _tables(compiled) == _tables(twin)
