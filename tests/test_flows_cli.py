"""`truesource flows` and `truesource ipset` as a user runs them: the seed report's SiLK process step by step on
the capture built to look like its sample network, a flow store and captures giving the same answers, and the
errors (bad filter with its position, missing file, not a flow file) as one line and exit 2."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter

import pytest

from conftest import PCAPS, ROOT, run_cli
from sensor.flows.build import flows_from_captures
from sensor.flows.record import flow_dicts
from sensor.flows.store import FlowStoreWriter

REPORT_PCAP = str(ROOT / "pcaps" / "report-network.pcap")
OUTBOUND = "src net 203.0.113.0/24 and not dst net 203.0.113.0/24"  # rwfilter --type=out


def flows(*args: str) -> list[dict]:
    done = run_cli("flows", *args, "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def members(lines: list[str]) -> list[str]:
    """The addresses a compacted set holds (203.0.113.50/31 is .50 and .51)."""
    return [str(address) for line in lines for address in ipaddress.ip_network(line)]


def read_set(path) -> list[str]:
    return members(path.read_text().split())


def test_report_dns_process_with_ip_sets(tmp_path):
    """Report 5.4.1 steps 2-5: servers and clients by rwstats --percentage=1, then rwsettool."""
    servers = tmp_path / "dns_servers.set"
    clients = tmp_path / "dns_clients.set"
    done = run_cli("flows", REPORT_PCAP, "--filter", f"proto udp and src port 53 and {OUTBOUND}",
                   "--aggregate", "srcip", "--sort", "packets", "--percentage", "1", "--ipset-out", str(servers))
    assert done.returncode == 0, done.stderr
    assert servers.read_text() == "203.0.113.50/31\n203.0.113.52\n"  # compacted to CIDR blocks
    assert read_set(servers) == ["203.0.113.50", "203.0.113.51", "203.0.113.52"]
    rows = flows(REPORT_PCAP, "--filter", f"proto udp and dst port 53 and {OUTBOUND}", "--aggregate", "srcip",
                 "--sort", "packets", "--percentage", "1", "--ipset-out", str(clients))
    assert [(r["srcip"], r["packets"]) for r in rows] == [
        ("203.0.113.33", 338), ("203.0.113.51", 282), ("203.0.113.52", 234), ("203.0.113.222", 74),
        ("203.0.113.220", 65)]
    assert [r["percent"] for r in rows] == pytest.approx([33.8, 28.2, 23.4, 7.4, 6.5])
    assert rows[-1]["cumul_percent"] == pytest.approx(99.3)
    assert read_set(clients) == ["203.0.113.33", "203.0.113.51", "203.0.113.52", "203.0.113.220",
                                 "203.0.113.222"]
    recursive = tmp_path / "recursive.set"
    done = run_cli("ipset", "intersect", str(clients), str(servers), "--out", str(recursive))
    assert done.returncode == 0, done.stderr
    assert read_set(recursive) == ["203.0.113.51", "203.0.113.52"]
    done = run_cli("ipset", "difference", str(servers), str(recursive))
    assert members(done.stdout.split()) == ["203.0.113.50"]
    done = run_cli("ipset", "union", str(servers), str(clients))
    assert members(done.stdout.split()) == ["203.0.113.33", "203.0.113.50", "203.0.113.51", "203.0.113.52",
                                   "203.0.113.220", "203.0.113.222"]


def test_report_top_external_dns_destinations():
    """Report 5.4.1 step 1: rwstats --count=10 --fields=dip --packets over outbound UDP to port 53."""
    rows = flows(REPORT_PCAP, "--filter", f"proto udp and dst port 53 and {OUTBOUND}", "--aggregate", "dstip",
                 "--sort", "packets", "--top", "10")
    assert [(r["dstip"], r["packets"]) for r in rows] == [
        ("198.51.100.1", 328), ("192.0.2.1", 157), ("198.51.100.2", 110), ("192.0.2.31", 66), ("192.0.2.32", 62),
        ("192.0.2.33", 58), ("192.0.2.34", 56), ("192.0.2.35", 54), ("192.0.2.36", 52), ("192.0.2.37", 51)]
    assert rows[-1]["cumul_percent"] == pytest.approx(99.4)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The report capture's flows written to a flow store, and the flows as dicts."""
    records = flows_from_captures([REPORT_PCAP])
    directory = tmp_path_factory.mktemp("store")
    writer = FlowStoreWriter(str(directory))
    writer.write(records)
    writer.close()
    return str(directory), flow_dicts(records)


@pytest.mark.parametrize("fields", ["srcip", "dstip,dstport", "proto", "srcip,srcport,dstip,dstport,proto"])
def test_store_bins_match_counter(store, fields):
    directory, records = store
    rows = flows(directory, "--filter", "not proto icmp", "--aggregate", fields, "--sort", "bytes")
    names = fields.split(",")
    expected: Counter = Counter()
    packets: Counter = Counter()
    for record in records:
        if record["proto"] != 1:
            key = tuple(record[n] for n in names)
            expected[key] += record["bytes"]
            packets[key] += record["packets"]
    assert {tuple(r[n] for n in names): (r["bytes"], r["packets"]) for r in rows} == {
        key: (expected[key], packets[key]) for key in expected}
    assert [r["bytes"] for r in rows] == sorted(expected.values(), reverse=True)


def test_store_and_capture_give_the_same_answer(store):
    directory, _ = store
    arguments = ("--filter", "proto udp and port 53", "--aggregate", "srcip,dstport", "--sort", "packets")
    assert flows(directory, *arguments) == flows(REPORT_PCAP, *arguments)


def test_listing(store):
    directory, records = store
    listed = flows(directory, "--filter", "dst port 25", "--sort", "packets", "--top", "3")
    expected = sorted((r for r in records if r["dstport"] == 25), key=lambda r: -r["packets"])[:3]
    assert [r["packets"] for r in listed] == [r["packets"] for r in expected]
    assert all(r["dstport"] == 25 for r in listed)
    done = run_cli("flows", directory, "--filter", "dst port 25")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Date first seen")
    assert "Src IP Addr:Port" in lines[0] and "Dst IP Addr:Port" in lines[0]
    body = lines[1:-1]
    assert len(body) == sum(1 for r in records if r["dstport"] == 25)
    assert all(":25 " in line for line in body)
    assert lines[-1].startswith("Summary:")


def test_bad_filter_points_at_the_place():
    done = run_cli("flows", REPORT_PCAP, "--filter", "dst port 53 and not dst ip 192.168.0.")
    assert done.returncode == 2
    first, expression, caret = done.stderr.splitlines()
    assert first == ("truesource: --filter: '192.168.0.' is not an IP address (host names are not resolved) "
                     "at column 28")
    assert expression == "  dst port 53 and not dst ip 192.168.0."
    assert caret == "  " + " " * 27 + "^"
    assert done.stdout == ""


@pytest.mark.parametrize("arguments, message", [
    (("/nonexistent/flows",), "truesource: /nonexistent/flows: no such file or directory"),
    ((str(ROOT / "README.md"),), "neither a flow store (Parquet) nor a capture (pcap, pcapng)"),
    ((REPORT_PCAP, "--aggregate", "sip"), "--aggregate: 'sip' is not a field"),
    ((REPORT_PCAP, "--percentage", "1"), "--percentage needs --aggregate"),
    ((REPORT_PCAP, "--aggregate", "dstport", "--ipset-out", "/tmp/x.set"),
     "--ipset-field srcip: not one of the --aggregate fields"),
])
def test_errors_are_one_line_and_exit_2(arguments, message):
    done = run_cli("flows", *arguments)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert message in done.stderr


def test_ipset_errors(tmp_path):
    bad = tmp_path / "bad.set"
    bad.write_text("10.0.0.1\nnot-an-address\n")
    done = run_cli("ipset", "union", str(bad), str(bad))
    assert done.returncode == 2
    assert done.stderr.strip() == f"truesource: {bad}:2: 'not-an-address' is not an IP address or CIDR block"


def test_parquet_that_is_not_a_flow_store(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"name": ["a", "b"]}), other)
    done = run_cli("flows", str(other), "--aggregate", "srcip")
    assert done.returncode == 2
    assert done.stderr.strip() == f"truesource: {other}: not a flow store file (no column bytes)"
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1" + b"\0" * 100)
    done = run_cli("flows", str(broken))
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert f"{broken}: not a readable flow store file" in done.stderr


def test_ipset_out_from_a_listing(store, tmp_path):
    """Without --aggregate the set holds the addresses of the flows listed (here: the VPN assets' GRE/ESP/AH)."""
    directory, records = store
    path = tmp_path / "vpn.set"
    done = run_cli("flows", directory, "--filter", f"(proto 47 or proto 50 or proto 51) and {OUTBOUND}",
                   "--ipset-out", str(path))
    assert done.returncode == 0, done.stderr
    expected = sorted({r["srcip"] for r in records if r["proto"] in (47, 50, 51) and r["srcip"].startswith(
        "203.0.113.") and not r["dstip"].startswith("203.0.113.")}, key=ipaddress.ip_address)
    assert read_set(path) == expected == ["203.0.113.33", "203.0.113.35"]


@pytest.mark.parametrize("command", [["flows", "--aggregate", "proto", "--json"],
                                     ["profile", "--internal", "10.0.0.0/8", "--json"]])
def test_capture_cut_off_mid_frame_keeps_the_flows_before_and_exits_1(command):
    """As `replay` does: the frames before the cut count, one error line names the file and the frame, exit 1."""
    result = run_cli(command[0], str(PCAPS / "cut-off.pcap"), *command[1:])
    assert result.returncode == 1, result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "cut-off.pcap: capture cut off after frame 2" in errors[0], result.stderr
    first = json.loads(result.stdout.splitlines()[0])
    assert first["flows"] == 2  # the two queries before the cut, from two client ports (pcaps/files.py)
