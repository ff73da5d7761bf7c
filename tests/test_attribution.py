"""Resolver attribution on synthetic hit records: which client queries an upstream query is linked to."""

from __future__ import annotations

import ipaddress

from sensor.attribution import ResolverAttribution
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
