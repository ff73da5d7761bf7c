"""Flow outputs: the Parquet store (round trip, rotation, DuckDB), IPFIX to a real nfcapd and on the wire,
the ZeroMQ topic `flow` with a real subscriber, and the options' errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from nfcapd import nfcapd

from conftest import PCAPS, ROOT, run_cli
from sensor.flows.build import flows_from_captures
from sensor.flows.ipfix import MAX_MESSAGE, TEMPLATE_IPV4, TEMPLATE_IPV6, IpfixExporter
from sensor.flows.store import FlowStoreWriter, read_flows

FLOWS = PCAPS / "flows" / "flow-timeouts.pcap"
EXPECTED = json.loads(FLOWS.with_name(FLOWS.name + ".flows.json").read_text())
CAPTURES = [str(FLOWS), str(PCAPS / "vlan.pcap"), str(PCAPS / "ipv6-extensions.pcap"),
            str(PCAPS / "demo-resolver.pcap")]


def generated(n: int, seed: int = 1) -> np.ndarray:
    """n flows with varied fields (both families), from the shipped captures' records repeated and shifted."""
    base = flows_from_captures(CAPTURES)
    rng = np.random.default_rng(seed)
    arr = base[rng.integers(0, len(base), n)]
    arr["src_lo"] += rng.integers(0, 1000, n).astype(np.uint64)
    arr["bytes"] = rng.integers(40, 1_000_000, n)
    return arr


# ------------------------------------------------------------------ store

def test_store_round_trip_and_rotation(tmp_path: Path) -> None:
    arr = generated(25_000)
    writer = FlowStoreWriter(str(tmp_path), max_records=10_000, row_group=4_000)
    for start in range(0, len(arr), 3_000):
        writer.write(arr[start:start + 3_000])
    writer.close()
    assert len(writer.files) == 3  # 10,000 + 10,000 + 5,000
    assert [pq.ParquetFile(f).metadata.num_rows for f in writer.files] == [10_000, 10_000, 5_000]
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    back = read_flows(str(tmp_path))
    assert back.tolist() == arr.tolist()
    assert read_flows(writer.files[1:2]).tolist() == arr[10_000:20_000].tolist()


def test_store_rotates_on_time(tmp_path: Path) -> None:
    writer = FlowStoreWriter(str(tmp_path), rotate_seconds=0.2, row_group=1)
    writer.write(generated(10))
    time.sleep(0.3)
    writer.write(generated(0))  # a quiet batch still rotates
    assert len(writer.files) == 1
    writer.write(generated(5))
    writer.close()
    assert len(writer.files) == 2 and len(read_flows(str(tmp_path))) == 15


def test_store_is_readable_by_duckdb_with_text_addresses(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    arr = flows_from_captures([str(FLOWS)], internal=EXPECTED["internal"])
    writer = FlowStoreWriter(str(tmp_path))
    writer.write(arr)
    writer.close()
    rows = duckdb.sql(f"SELECT src_addr, sum(packets) AS p, sum(bytes) AS b FROM '{tmp_path}/*.parquet' "
                      "WHERE proto = 17 GROUP BY src_addr ORDER BY src_addr").fetchall()
    want: dict[str, list[int]] = {}
    for flow in EXPECTED["flows"]:
        if flow["proto"] == 17:
            total = want.setdefault(flow["src"], [0, 0])
            total[0] += flow["packets"]
            total[1] += flow["bytes"]
    assert [(a, int(p), int(b)) for a, p, b in rows] == [(a, *want[a]) for a in sorted(want)]
    year = duckdb.sql(f"SELECT year(min(start_us)) FROM '{tmp_path}/*.parquet'").fetchall()[0][0]
    assert year == 2026  # times are real timestamps in SQL


def test_read_flows_names_a_missing_or_corrupt_file(tmp_path: Path) -> None:
    from sensor.flows.store import FlowStoreError

    with pytest.raises(FlowStoreError, match="nosuch"):
        read_flows(str(tmp_path / "nosuch"))
    bad = tmp_path / "flows-bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(FlowStoreError, match="flows-bad.parquet"):
        read_flows(str(tmp_path))


def test_replay_writes_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = run_cli("replay", *CAPTURES, "--rules", str(PCAPS / "pcaps.rules"), "--out", "/dev/null",
                     "--flow-store", str(store), "--internal", "10.0.0.0/8", "--no-progress")
    assert result.returncode == 0, result.stderr
    expected = flows_from_captures(CAPTURES, internal=["10.0.0.0/8"])
    assert read_flows(str(store)).tolist() == expected.tolist()
    assert f"flows: {len(expected):,} records" in result.stderr


# ------------------------------------------------------------------ IPFIX

def test_ipfix_messages_on_the_wire() -> None:
    """Header fields, templates first, data sets under the MTU, sequence numbers count data records."""
    arr = generated(3_000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        receiver.settimeout(2)
        exporter = IpfixExporter(f"127.0.0.1:{receiver.getsockname()[1]}", observation_domain=7)
        exporter.export(arr)
        messages = [receiver.recv(65535) for _ in range(exporter.messages)]
    assert exporter.send_errors == 0 and exporter.records == len(arr)
    expected_sequence, records = 0, {TEMPLATE_IPV4: 0, TEMPLATE_IPV6: 0}
    for index, message in enumerate(messages):
        version, length, _, sequence, domain = struct.unpack_from("!HHIII", message)
        assert (version, length, domain) == (10, len(message), 7) and length <= MAX_MESSAGE
        assert sequence == expected_sequence
        set_id, set_length = struct.unpack_from("!HH", message, 16)
        assert 16 + set_length == length
        if index == 0:
            assert set_id == 2  # the template set
            continue
        size = 52 if set_id == TEMPLATE_IPV4 else 76  # the templates' field lengths summed
        assert (set_length - 4) % size == 0
        records[set_id] += (set_length - 4) // size
        expected_sequence += (set_length - 4) // size
    assert records[TEMPLATE_IPV4] == int((arr["ip_version"] == 4).sum())
    assert records[TEMPLATE_IPV6] == int((arr["ip_version"] == 6).sum())


@pytest.mark.skipif(not (shutil.which("nfcapd") and shutil.which("nfdump")),
                    reason="needs nfcapd and nfdump (Debian package nfdump; make system-deps)")
def test_replay_exports_to_a_real_nfcapd(tmp_path: Path) -> None:
    """`replay --ipfix` into nfcapd (Debian's nfdump) on loopback; nfdump reads back the same flows, packets,
    bytes, ports, protocols and VLANs as the expected records of the flow capture."""
    with nfcapd(str(tmp_path)) as collector:
        result = run_cli("replay", str(FLOWS), "--rules", str(PCAPS / "pcaps.rules"), "--out", "/dev/null",
                         "--ipfix", collector.endpoint, "--no-progress")
        assert result.returncode == 0, result.stderr
    assert len(collector.files) == 1, collector.log
    path = collector.files[0]
    done = subprocess.run(["nfdump", "-r", path, "-q", "-o", "csv", "-N"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    header = ["ts", "te", "td", "sa", "da", "sp", "dp", "pr", "flg", "fwd", "stos", "ipkt", "ibyt"]
    rows = [dict(zip(header, row, strict=False)) for row in csv.reader(done.stdout.splitlines())
            if row and row[0][:1].isdigit()]
    protocols = {"TCP": 6, "UDP": 17, "ICMP": 1}
    got = sorted((r["sa"], r["da"], int(r["sp"]), int(r["dp"]), protocols.get(r["pr"].strip(), r["pr"]),
                  int(r["ipkt"]), int(r["ibyt"])) for r in rows)
    want = sorted((f["src"], f["dst"], f["src_port"], f["dst_port"], f["proto"], f["packets"], f["bytes"])
                  for f in EXPECTED["flows"])
    assert got == want
    vlans = subprocess.run(["nfdump", "-r", path, "-q", "-N", "-o", "fmt:%svln %ibyt"],
                           capture_output=True, text=True, timeout=60).stdout.split("\n")
    tagged = sorted(line.split()[0] for line in vlans if line.strip() and line.split()[0] != "0")
    assert tagged == ["10", "20"]


# ------------------------------------------------------------------ ZeroMQ

def test_flow_topic_reaches_a_real_subscriber(endpoint: str) -> None:
    tail = subprocess.Popen(
        [sys.executable, "-m", "sensor", "tail", "--connect", endpoint, "--topic", "flow", "--idle-exit", "5"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        result = run_cli("replay", str(FLOWS), "--rules", str(PCAPS / "pcaps.rules"), "--flows",
                         "--internal", "10.0.0.0/8", "--internal", "2001:db8:1::/48",
                         "--publish", endpoint, "--wait-subscribers", "1", "--wait-timeout", "20")
        received, errors = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in received.splitlines()]
    def ports(e: dict) -> tuple[int, int]:  # ICMP has no ports in the event: the records keep type*256+code
        icmp = e["truesource"]["flow"].get("icmp")
        if icmp is not None:
            return 0, icmp["type"] * 256 + icmp["code"]
        return e["source"]["port"], e["destination"]["port"]

    got = sorted((e["source"]["ip"], e["destination"]["ip"], *ports(e),
                  int(e["network"]["iana_number"]), e["network"]["packets"], e["network"]["bytes"],
                  e["event"]["reason"], e["network"]["direction"],
                  int(e["network"]["vlan"]["id"]) if "vlan" in e["network"] else None) for e in events)
    want = sorted((f["src"], f["dst"], f["src_port"], f["dst_port"], f["proto"], f["packets"], f["bytes"],
                   f["end_reason"], f["direction"], f["vlan"]) for f in EXPECTED["flows"])
    assert got == want, errors
    icmp = [e for e in events if e["network"]["iana_number"] in ("1", "58")]
    assert icmp and all("port" not in e["source"] and "port" not in e["destination"] and "icmp" not in e
                        and e["network"]["community_id"].startswith("1:") for e in icmp)
    echo = [e for e in icmp if e["truesource"]["flow"]["icmp"] == {"type": 8, "code": 0}]
    assert echo and echo[0]["network"]["transport"] == "icmp"
    tcp = [e for e in events if e["network"].get("transport") == "tcp"]
    assert sorted(e["truesource"]["flow"]["tcp_flags"] for e in tcp) == ["FSPA", "SRPA"]
    assert all(e["event"]["dataset"] == "truesource.flow" and e["network"].get("community_id", "1:")[:2] == "1:"
               for e in events)


# ------------------------------------------------------------------ bad options

@pytest.mark.parametrize("option, message", [
    (["--internal", "10.0.0.0/33"], "--internal: '10.0.0.0/33' is not a network"),
    (["--ipfix", "127.0.0.1:70000"], "--ipfix 127.0.0.1:70000: the port must be a number from 1 to 65535"),
    (["--flows", "--max-flows", "0"], "max flows must be at least 1"),
    (["--flows", "--flow-idle-timeout", "0"], "flow idle timeout must be above 0 seconds"),
])
def test_bad_flow_option_is_one_line_and_exit_2(option: list[str], message: str) -> None:
    result = run_cli("replay", str(FLOWS), "--rules", str(PCAPS / "pcaps.rules"), *option)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unwritable_store_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("replay", str(FLOWS), "--rules", str(PCAPS / "pcaps.rules"), "--flow-store",
                     str(blocker / "store"))
    assert result.returncode == 2 and "cannot create the flow store" in result.stderr, result.stderr


def test_ipfix_templates_are_resent_when_due() -> None:
    """Over UDP a restarted collector relearns templates only from a resend: with a 0 s refresh every export
    starts with the template set; with the default, only the first."""
    arr = generated(10)
    for refresh, expected in ((0.0, [True, True, True]), (60.0, [True, False, False])):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
            receiver.bind(("127.0.0.1", 0))
            receiver.settimeout(2)
            exporter = IpfixExporter(f"127.0.0.1:{receiver.getsockname()[1]}", template_refresh=refresh)
            starts = []
            for _ in range(3):
                before = exporter.messages
                exporter.export(arr)
                first = [receiver.recv(65535) for _ in range(exporter.messages - before)][0]
                starts.append(struct.unpack_from("!H", first, 16)[0] == 2)
            exporter.close()
        assert starts == expected


@pytest.mark.parametrize("text, endpoint", [("192.0.2.1:2055", ("192.0.2.1", 2055)),
                                            ("collector.example", ("collector.example", 4739)),
                                            ("[2001:db8::1]:4740", ("2001:db8::1", 4740)),
                                            ("[::1]", ("::1", 4739))])
def test_ipfix_endpoint_forms(text: str, endpoint: tuple[str, int]) -> None:
    from sensor.flows.ipfix import parse_endpoint

    assert parse_endpoint(text) == endpoint
