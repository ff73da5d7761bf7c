"""The nfdump filter language: every expression of the Flowmon tutorial (seed 003) on a network shaped like its
one, checked against a plain-Python reading of each expression; syntax errors point at the place; random input
raises only FilterError."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.flows.filter import FilterError, compile_filter
from sensor.flows.record import make_records

BASE_US = 1_700_000_000_000_000


def flow(src, dst, sport, dport, proto=17, packets=1, nbytes=80, duration_ms=0):
    return {"src": src, "dst": dst, "src_port": sport, "dst_port": dport, "proto": proto, "packets": packets,
            "bytes": nbytes, "start_us": BASE_US, "end_us": BASE_US + duration_ms * 1000}


# The tutorial's network: default DNS server 192.168.0.1, internal clients, Google DNS, and the servers it
# profiles with their ports (ICMP as type*256+code in the destination port: 771 is 3/3, 2048 is 8/0).
TUTORIAL_FLOWS = [
    flow("192.168.0.101", "192.168.0.1", 40001, 53),
    flow("192.168.70.2", "192.168.0.1", 40002, 53),
    flow("192.168.70.1", "192.168.0.1", 40003, 53, proto=6),
    flow("192.168.2.2", "192.168.2.3", 40004, 53),
    flow("192.168.3.221", "8.8.8.8", 40005, 53),
    flow("192.168.3.221", "8.8.4.4", 40006, 53),
    flow("192.168.2.4", "192.168.1.2", 40007, 53),
    flow("192.168.2.7", "192.168.2.3", 40008, 53),
    flow("10.9.9.9", "192.168.0.1", 40009, 53),
    flow("192.168.0.1", "192.168.0.101", 53, 40001),
    flow("192.168.3.5", "192.168.2.4", 50000, 443, proto=6, packets=900, nbytes=6_600_000),
    flow("192.168.3.5", "192.168.2.4", 50001, 161, packets=20, nbytes=3_000),
    flow("192.168.3.5", "192.168.2.4", 50002, 22, proto=6, packets=300, nbytes=1_900_000),
    flow("192.168.3.5", "192.168.2.4", 0, 771, proto=1, packets=4, nbytes=300),
    flow("192.168.3.5", "192.168.2.4", 443, 42482, proto=6, packets=80, nbytes=2_000_000),
    flow("192.168.3.5", "192.168.2.4", 443, 60373, proto=6),
    flow("192.168.3.6", "192.168.1.2", 16390, 16396),
    flow("192.168.3.6", "192.168.1.2", 16392, 16394),
    flow("192.168.3.6", "192.168.1.2", 0, 2048, proto=1),
    flow("192.168.3.7", "192.168.2.2", 50003, 3306, proto=6),
    flow("192.168.3.7", "192.168.2.2", 50004, 1025, proto=6),
    flow("192.168.3.7", "192.168.2.3", 50005, 445, proto=6, packets=3000, nbytes=3_900_000),
    flow("192.168.3.7", "192.168.2.7", 50006, 1433, proto=6),
    flow("192.168.3.7", "192.168.2.7", 50007, 2717, proto=6),
    flow("2001:db8::7", "2001:db8::53", 50008, 53),
    flow("2001:db8::7", "2001:db8::1", 50009, 53, duration_ms=1500),
    {**flow("192.168.3.8", "192.168.2.9", 50010, 8080, proto=6), "vlan": 100, "tcp_flags": 0x12},
]


def ip(text):
    return ipaddress.ip_address(text)


def in_net(text, cidr):
    address = ip(text)
    network = ipaddress.ip_network(cidr)
    return address.version == network.version and address in network


# Each expression of the tutorial, as written there, with what it means spelled out in Python.
TUTORIAL = [
    ("dst port 53", lambda r: r["dst_port"] == 53),
    ("dst port 53 and not dst ip 192.168.0.1",
     lambda r: r["dst_port"] == 53 and ip(r["dst"]) != ip("192.168.0.1")),
    ("dst port 53 and not dst ip 192.168.0.1 and src net 192.168.0.0/16",
     lambda r: r["dst_port"] == 53 and ip(r["dst"]) != ip("192.168.0.1") and in_net(r["src"], "192.168.0.0/16")),
    ("dst port 53 and not dst ip 192.168.0.1 and src net 192.168.0.0/16 and not dst net 8.8.0.0/16",
     lambda r: r["dst_port"] == 53 and ip(r["dst"]) != ip("192.168.0.1") and in_net(r["src"], "192.168.0.0/16")
     and not in_net(r["dst"], "8.8.0.0/16")),
    ("not dst net 8.8.0.0/16", lambda r: not in_net(r["dst"], "8.8.0.0/16")),
    ("src ip 192.168.0.101 or src ip 192.168.70.2",
     lambda r: r["src"] in ("192.168.0.101", "192.168.70.2")),
    ("dst ip 192.168.0.1", lambda r: r["dst"] == "192.168.0.1"),
    ("dst ip 192.168.2.4", lambda r: r["dst"] == "192.168.2.4"),
    ("dst ip 192.168.2.4 and dst port < 10000", lambda r: r["dst"] == "192.168.2.4" and r["dst_port"] < 10000),
    ("dst ip 192.168.2.4 and dst port < 10000 and not proto icmp",
     lambda r: r["dst"] == "192.168.2.4" and r["dst_port"] < 10000 and r["proto"] != 1),
    ("dst ip 192.168.1.2 and not proto icmp", lambda r: r["dst"] == "192.168.1.2" and r["proto"] != 1),
    ("dst ip 192.168.2.2", lambda r: r["dst"] == "192.168.2.2"),
    ("dst ip 192.168.2.3", lambda r: r["dst"] == "192.168.2.3"),
    ("dst ip 192.168.2.7", lambda r: r["dst"] == "192.168.2.7"),
]

# The rest of the supported language, each form once.
FORMS = [
    ("any", lambda r: True),
    ("ip 192.168.0.1", lambda r: "192.168.0.1" in (r["src"], r["dst"])),
    ("host 192.168.0.1", lambda r: "192.168.0.1" in (r["src"], r["dst"])),
    ("net 192.168.2.0/24", lambda r: in_net(r["src"], "192.168.2.0/24") or in_net(r["dst"], "192.168.2.0/24")),
    ("src net 192.168.2.0 255.255.255.0", lambda r: in_net(r["src"], "192.168.2.0/24")),
    ("dst net 192.168/16", lambda r: in_net(r["dst"], "192.168.0.0/16")),
    ("src and dst net 192.168.0.0/16",
     lambda r: in_net(r["src"], "192.168.0.0/16") and in_net(r["dst"], "192.168.0.0/16")),
    ("src or dst net 8.8.0.0/16", lambda r: in_net(r["src"], "8.8.0.0/16") or in_net(r["dst"], "8.8.0.0/16")),
    ("port 53", lambda r: 53 in (r["src_port"], r["dst_port"])),
    ("src port > 40005", lambda r: r["src_port"] > 40005),
    ("src port gt 40005 && dst port eq 53", lambda r: r["src_port"] > 40005 and r["dst_port"] == 53),
    ("dst port >= 16394 and dst port <= 16396", lambda r: 16394 <= r["dst_port"] <= 16396),
    ("dst port lt 100 || dst port ge 60000", lambda r: r["dst_port"] < 100 or r["dst_port"] >= 60000),
    ("dst port == 445", lambda r: r["dst_port"] == 445),
    ("dst port = 445", lambda r: r["dst_port"] == 445),
    ("port in [22, 443 3306]", lambda r: {22, 443, 3306} & {r["src_port"], r["dst_port"]} != set()),
    ("dst ip in [192.168.2.0/24 8.8.8.8]",
     lambda r: in_net(r["dst"], "192.168.2.0/24") or r["dst"] == "8.8.8.8"),
    ("proto tcp", lambda r: r["proto"] == 6),
    ("proto UDP", lambda r: r["proto"] == 17),
    ("proto 1", lambda r: r["proto"] == 1),
    ("! proto icmp", lambda r: r["proto"] != 1),
    ("not (proto tcp or proto udp)", lambda r: r["proto"] not in (6, 17)),
    ("(proto tcp or proto udp) and not port 53", lambda r: r["proto"] in (6, 17) and 53 not in (r["src_port"],
                                                                                               r["dst_port"])),
    ("proto tcp or proto udp and port 53",  # and binds tighter than or
     lambda r: r["proto"] == 6 or (r["proto"] == 17 and 53 in (r["src_port"], r["dst_port"]))),
    ("not not proto tcp", lambda r: r["proto"] == 6),
    ("packets > 100", lambda r: r["packets"] > 100),
    ("packets > 1k", lambda r: r["packets"] > 1000),
    ("bytes >= 2M", lambda r: r["bytes"] >= 2_000_000),
    ("bytes < 100", lambda r: r["bytes"] < 100),
    ("packets 20", lambda r: r["packets"] == 20),
    ("duration > 1000", lambda r: r["end_us"] // 1000 - r["start_us"] // 1000 > 1000),
    ("duration = 0", lambda r: r["end_us"] == r["start_us"]),
    ("ip 2001:db8::53", lambda r: "2001:db8::53" in (r["src"], r["dst"])),
    ("src net 2001:db8::/32", lambda r: in_net(r["src"], "2001:db8::/32")),
    ("net ::/0", lambda r: True),  # nfdump: IPv4 addresses are ::a.b.c.d in its 128-bit field
    ("ipv6", lambda r: ":" in r["src"]),
    ("inet", lambda r: ":" not in r["src"]),
    ("DST PORT 53 AND PROTO TCP", lambda r: r["dst_port"] == 53 and r["proto"] == 6),
    ("dst port 53 # DNS\n and proto tcp", lambda r: r["dst_port"] == 53 and r["proto"] == 6),
    ("vlan 100", lambda r: r.get("vlan") == 100),
    ("flags SA", lambda r: r["proto"] == 6 and r.get("tcp_flags", 0) & 0x12 == 0x12),
    ("", lambda r: True),
]


@pytest.fixture(scope="module")
def records():
    return make_records(TUTORIAL_FLOWS)


def expected_mask(meaning) -> list[bool]:
    return [bool(meaning(dict(row))) for row in TUTORIAL_FLOWS]


@pytest.mark.parametrize("expression, meaning", TUTORIAL, ids=[e for e, _ in TUTORIAL])
def test_flowmon_tutorial_expression(records, expression, meaning):
    got = compile_filter(expression).mask(records).tolist()
    assert got == expected_mask(meaning)
    assert any(got), "each tutorial expression selects something in its network"


@pytest.mark.parametrize("expression, meaning", FORMS, ids=[repr(e) for e, _ in FORMS])
def test_language_form(records, expression, meaning):
    assert compile_filter(expression).mask(records).tolist() == expected_mask(meaning)


def test_tutorial_narrows_step_by_step(records):
    """The tutorial's point: each added clause removes the noise it names, ending with the internal servers
    that do not use the default DNS server."""
    last = compile_filter(TUTORIAL[3][0]).mask(records)
    sources = sorted({row["src"] for row, keep in zip(TUTORIAL_FLOWS, last, strict=True) if keep})
    assert sources == ["192.168.2.2", "192.168.2.4", "192.168.2.7"]


def test_filter_reads_columns_not_records(records):
    """A dict of the columns the filter names is enough: what a store scan passes."""
    flow_filter = compile_filter("proto udp and dst port 53 and src net 192.168.0.0/16")
    assert flow_filter.fields == {"proto", "dst_port", "src_hi", "src_lo"}
    columns = {name: records[name] for name in flow_filter.fields}
    assert flow_filter.mask(columns).tolist() == flow_filter.mask(records).tolist()


@pytest.mark.parametrize("expression, column, reason", [
    ("dst port", 9, "expected a port number, found end of filter"),
    ("dst port x", 10, "expected a port number, found 'x'"),
    ("dst port 70000", 10, "port outside of range 0..65535"),
    ("dst port 53 and", 16, "expected a filter primitive"),
    ("dst port 53 and not dst ip 192.168.0.", 28, "is not an IP address"),
    ("src ip 1.2.3", 8, "incomplete IP address"),
    ("src ip example.org", 8, "is not an IP address"),
    ("(proto tcp", 11, "expected ')'"),
    ("proto tcp)", 10, "unexpected ')'"),
    ("proto foo", 7, "unknown protocol 'foo'"),
    ("proto 256", 7, "protocol number > 255"),
    ("port != 5", 6, "'!=' is not a comparator"),
    ("net 10.0.0.0", 13, "expected a netmask or /bits"),
    ("net 10.0.0.0/33", 5, "too many network bits"),
    ("src dst port 53", 5, "expected ip, host, net or port"),
    ("dst port 53 $", 13, "unexpected character '$'"),
    ("frobnicate 5", 1, "unknown filter primitive 'frobnicate'"),
    ("packets > lots", 11, "expected a number"),
])
def test_syntax_error_points_at_the_place(expression, column, reason):
    with pytest.raises(FilterError) as caught:
        compile_filter(expression)
    error = caught.value
    assert reason in str(error)
    assert f"at column {column}" in str(error)
    line, caret = error.pointer().split("\n")
    assert line == "  " + expression
    assert caret.index("^") - 2 == column - 1


def test_nesting_limit_is_an_error_not_a_crash():
    with pytest.raises(FilterError, match="nested deeper"):
        compile_filter("(" * 5000 + "any" + ")" * 5000)
    with pytest.raises(FilterError, match="nested deeper"):
        compile_filter("not " * 5000 + "any")


VOCABULARY = ["src", "dst", "ip", "host", "net", "port", "proto", "tcp", "udp", "icmp", "and", "or", "not", "(",
              ")", "!", "&&", "||", "any", "packets", "bytes", "duration", ">", "<", "=", "==", ">=", "<=", "eq",
              "gt", "lt", "53", "1k", "10.0.0.1", "10.0.0.0/8", "255.0.0.0", "2001:db8::/32", "::1", "in", "[",
              "]", ",", "flags", "SA", "vlan", "ipv6", "#", "\n", "/", "65536", "-1"]


def _evaluates_or_rejects(text: str, records) -> None:
    try:
        flow_filter = compile_filter(text)
    except FilterError as err:
        assert 0 <= err.position <= len(text)
        err.pointer()
        return
    assert flow_filter.mask(records).shape == (len(records),)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80))
def test_random_text_raises_only_filter_errors(records, text):
    _evaluates_or_rejects(text, records)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(VOCABULARY), max_size=14))
def test_random_token_soup_raises_only_filter_errors(records, words):
    _evaluates_or_rejects(" ".join(words), records)


def test_large_array_is_one_vectorized_pass():
    """A million records through a compound filter: the result matches numpy written out by hand."""
    rng = np.random.default_rng(5)
    n = 1_000_000
    arr = make_records([])
    arr = np.zeros(n, dtype=arr.dtype)
    arr["src_lo"] = np.uint64(0xFFFF << 32) | rng.integers(0, 1 << 32, n, dtype=np.uint64)
    arr["dst_port"] = rng.integers(0, 65536, n)
    arr["proto"] = rng.choice([1, 6, 17], n)
    mask = compile_filter("proto udp and not dst port < 1024 and src net 128.0.0.0/1").mask(arr)
    v4 = arr["src_lo"] & np.uint64(0xFFFFFFFF)
    expected = (arr["proto"] == 17) & (arr["dst_port"] >= 1024) & (v4 >= np.uint64(1 << 31))
    assert np.array_equal(mask, expected)
