"""rwstats-style bins against counts made independently with collections.Counter over Python tuples; IP sets
against Python sets of addresses."""

from __future__ import annotations

import ipaddress
import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.errors import StartupError
from sensor.flows.ipset import IPSet, combine, read_ipset, write_ipset
from sensor.flows.record import make_records
from sensor.flows.stats import aggregate, parse_fields

FIELDS = ("srcip", "dstip", "srcport", "dstport", "proto")


def random_rows(seed: int, n: int = 1500) -> list[dict]:
    """Few distinct values per field so bins repeat; IPv4 and IPv6 mixed; some ties on purpose."""
    rng = np.random.default_rng(seed)
    hosts = ["10.0.0.1", "10.0.0.2", "192.0.2.53", "203.0.113.50", "2001:db8::1", "2001:db8::53", "::1"]
    rows = []
    for _ in range(n):
        version = rng.integers(2)
        pool = hosts[:4] if version == 0 else hosts[4:]
        rows.append({"src": pool[rng.integers(len(pool))], "dst": pool[rng.integers(len(pool))],
                     "src_port": int(rng.choice([53, 1024, 40000, 65535])), "dst_port": int(rng.choice([53, 443])),
                     "proto": int(rng.choice([6, 17, 1])), "packets": int(rng.integers(1, 50)),
                     "bytes": int(rng.integers(40, 5000))})
    return rows


def key_of(row: dict, fields) -> tuple:
    names = {"srcip": "src", "dstip": "dst", "srcport": "src_port", "dstport": "dst_port", "proto": "proto",
             "srcnet": "src", "dstnet": "dst"}
    key = []
    for field in fields:
        value = row[names[field]]
        if field in ("srcip", "dstip"):
            value = str(ipaddress.ip_address(value))
        elif field in ("srcnet", "dstnet"):
            bits = 24 if ipaddress.ip_address(value).version == 4 else 64
            value = str(ipaddress.ip_network(f"{value}/{bits}", strict=False))
        key.append(value)
    return tuple(key)


def expected_bins(rows, fields):
    flows, packets, nbytes = Counter(), Counter(), Counter()
    for row in rows:
        key = key_of(row, fields)
        flows[key] += 1
        packets[key] += row["packets"]
        nbytes[key] += row["bytes"]
    return flows, packets, nbytes


def got_bins(bins) -> dict:
    from sensor.commands.flows import bin_rows

    return {tuple(row[f] for f in bins.fields): (row["flows"], row["packets"], row["bytes"])
            for row in bin_rows(bins)}


COMBINATIONS = [c for r in (1, 2, 3, 5) for c in itertools.combinations(FIELDS, r)]


@pytest.mark.parametrize("fields", COMBINATIONS, ids=[",".join(c) for c in COMBINATIONS])
def test_bins_match_counter(fields):
    rows = random_rows(len(fields))
    bins = aggregate(make_records(rows), fields, "packets")
    flows, packets, nbytes = expected_bins(rows, fields)
    assert got_bins(bins) == {key: (flows[key], packets[key], nbytes[key]) for key in flows}
    assert bins.total == sum(packets.values())
    assert bins.total_bins == len(flows)


@pytest.mark.parametrize("fields", [("srcnet",), ("dstnet", "dstport"), ("srcnet", "srcip", "dstnet")])
def test_network_bins_match_counter(fields):
    """srcnet/dstnet: /24 for IPv4, /64 for IPv6, written as CIDR blocks."""
    rows = random_rows(9)
    for i, row in enumerate(rows):  # spread the hosts over a few networks of each family
        if ":" in row["src"]:
            row["src"] = f"2001:db8:{i % 3}::{i % 5 + 1}"
        else:
            row["src"] = f"10.{i % 2}.{i % 3}.{i % 7}"
    bins = aggregate(make_records(rows), fields, "bytes")
    flows, packets, nbytes = expected_bins(rows, fields)
    assert got_bins(bins) == {key: (flows[key], packets[key], nbytes[key]) for key in flows}


@pytest.mark.parametrize("sort", ["flows", "packets", "bytes"])
def test_sort_top_and_percentages(sort):
    rows = random_rows(7)
    fields = ("srcip", "dstport")
    bins = aggregate(make_records(rows), fields, sort, top=5)
    counters = dict(zip(("flows", "packets", "bytes"), expected_bins(rows, fields), strict=True))
    metric = counters[sort]
    total = sum(metric.values())
    ranked_values = sorted(metric.values(), reverse=True)[:5]
    from sensor.commands.flows import bin_rows

    out = bin_rows(bins)
    assert [row[sort] for row in out] == ranked_values  # largest first (equal values: any key order)
    for row in out:
        assert metric[tuple(row[f] for f in fields)] == row[sort]
    cumulative = 0.0
    for row in out:
        assert row["percent"] == pytest.approx(100.0 * row[sort] / total, abs=1e-6)
        cumulative += 100.0 * row[sort] / total
        assert row["cumul_percent"] == pytest.approx(cumulative, abs=1e-5)


def test_percentage_keeps_every_bin_at_or_over_the_threshold():
    """rwstats --percentage=1: all bins with at least 1% of the packets, even past any top-N size."""
    rows = []
    for i in range(150):  # 150 sources: 100 with 1% exactly, 50 with 0.5% ... of 10,000 packets
        rows.append({"src": f"10.1.{i // 256}.{i % 256}", "dst": "192.0.2.1", "src_port": 1, "dst_port": 53,
                     "proto": 17, "packets": 75 if i < 100 else 50, "bytes": 1})
    total = sum(r["packets"] for r in rows)
    bins = aggregate(make_records(rows), ("srcip",), "packets", percentage=75 * 100 / total)
    assert len(bins) == 100
    assert all(p * total / 100 >= 75 - 1e-9 for p in bins.percent)
    assert len(aggregate(make_records(rows), ("srcip",), "packets", percentage=100.0)) == 0
    assert len(aggregate(make_records(rows), ("srcip",), "packets", percentage=0.0)) == 150


def test_empty_input_has_no_bins():
    bins = aggregate(make_records([]), ("srcip", "proto"), "bytes")
    assert len(bins) == 0 and bins.total == 0


def test_wide_keys_fall_back_to_a_lexicographic_sort():
    """IPv6 sources and destinations spread over the whole space do not pack into 64 bits."""
    rng = np.random.default_rng(3)
    rows = [{"src": str(ipaddress.IPv6Address(int(rng.integers(1 << 62)) << 66 | i % 7)),
             "dst": str(ipaddress.IPv6Address(int(rng.integers(1 << 62)) << 66)), "packets": 1, "bytes": 1}
            for i in range(200)]
    rows += rows[:50]
    bins = aggregate(make_records(rows), ("srcip", "dstip"), "flows")
    flows, _, _ = expected_bins(rows, ("srcip", "dstip"))
    assert {k: v[0] for k, v in got_bins(bins).items()} == dict(flows)


def test_aggregate_field_errors_name_the_field():
    assert parse_fields("srcip, DSTPORT") == ("srcip", "dstport")
    with pytest.raises(StartupError, match="'sip' is not a field"):
        parse_fields("sip")
    with pytest.raises(StartupError, match="twice"):
        parse_fields("srcip,srcip")


# IP sets

addresses_v4 = st.integers(0, 255).map(lambda i: ipaddress.IPv4Address(0x0A000000 + i))
networks_v4 = st.builds(lambda a, p: ipaddress.ip_network(f"{a}/{p}", strict=False), addresses_v4,
                        st.integers(24, 32))
networks_v6 = st.builds(lambda i, p: ipaddress.ip_network(f"2001:db8::{i:x}/{p}", strict=False),
                        st.integers(0, 255), st.integers(120, 128))
set_members = st.lists(st.one_of(networks_v4, networks_v6), max_size=8)


def as_python_set(networks) -> set:
    return {address for net in networks for address in net}


def from_lines(ipset: IPSet) -> set:
    return as_python_set(ipaddress.ip_network(line) for line in ipset.lines())


@settings(max_examples=200, deadline=None)
@given(set_members, set_members, set_members)
def test_set_operations_match_python_sets(a, b, c):
    sets = [IPSet.from_networks(x) for x in (a, b, c)]
    pa, pb, pc = (as_python_set(x) for x in (a, b, c))
    assert from_lines(combine("union", sets)) == pa | pb | pc
    assert from_lines(combine("intersect", sets)) == pa & pb & pc
    assert from_lines(combine("difference", sets)) == pa - pb - pc
    union = combine("union", sets)
    assert len(union) == len(pa | pb | pc)
    # compacted: no two written blocks can be merged into a bigger one
    blocks = [ipaddress.ip_network(line) for line in union.lines()]
    assert len(blocks) == len(list(ipaddress.collapse_addresses([b for b in blocks if b.version == 4]))) + len(
        list(ipaddress.collapse_addresses([b for b in blocks if b.version == 6])))


def test_set_from_flow_addresses_is_compacted(tmp_path):
    rows = [{"src": f"192.0.2.{i}", "dst": "10.0.0.1"} for i in range(256)]
    rows += [{"src": "2001:db8::1", "dst": "::1"}, {"src": "198.51.100.7", "dst": "::1"}]
    arr = make_records(rows)
    ipset = IPSet.from_halves(arr["src_hi"], arr["src_lo"])
    assert ipset.lines() == ["192.0.2.0/24", "198.51.100.7", "2001:db8::1"]
    path = tmp_path / "set.txt"
    write_ipset(ipset, str(path))
    assert read_ipset(str(path)).lines() == ipset.lines()


def test_bad_set_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.set"
    path.write_text("# servers\n10.0.0.1\n\n10.0.0.300\n")
    with pytest.raises(StartupError, match=r"bad.set:4: '10.0.0.300' is not an IP address or CIDR block"):
        read_ipset(str(path))
    with pytest.raises(StartupError, match="cannot read"):
        read_ipset(str(tmp_path / "missing.set"))
