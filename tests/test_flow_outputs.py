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
    assert not [name for _, _, names in os.walk(tmp_path) for name in names if name.endswith(".tmp")]
    back = read_flows(str(tmp_path))
    assert back.tolist() == arr.tolist()
    assert read_flows(writer.files[1:2]).tolist() == arr[10_000:20_000].tolist()


def test_store_rotates_on_time(tmp_path: Path) -> None:
    writer = FlowStoreWriter(str(tmp_path), rotate_seconds=0.2, row_group=1)
    writer.write(generated(10))
    time.sleep(0.3)  # deliberate: past rotate_seconds, the time passing is what is tested (not a wait)
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
    rows = duckdb.sql(f"SELECT src_addr, sum(packets) AS p, sum(bytes) AS b FROM '{tmp_path}/**/*.parquet' "
                      "WHERE proto = 17 GROUP BY src_addr ORDER BY src_addr").fetchall()
    want: dict[str, list[int]] = {}
    for flow in EXPECTED["flows"]:
        if flow["proto"] == 17:
            total = want.setdefault(flow["src"], [0, 0])
            total[0] += flow["packets"]
            total[1] += flow["bytes"]
    assert [(a, int(p), int(b)) for a, p, b in rows] == [(a, *want[a]) for a in sorted(want)]
    year = duckdb.sql(f"SELECT year(min(start_us)) FROM '{tmp_path}/**/*.parquet'").fetchall()[0][0]
    assert year == 2026  # times are real timestamps in SQL


def test_read_flows_names_a_missing_file_and_skips_a_corrupt_one(tmp_path: Path, capsys) -> None:
    from sensor.flows.store import FlowStoreError

    with pytest.raises(FlowStoreError, match="nosuch"):
        read_flows(str(tmp_path / "nosuch"))
    arr = generated(500)
    writer = FlowStoreWriter(str(tmp_path), sensor="s1")
    writer.write(arr)
    writer.close()
    bad = Path(writer.files[0]).with_name("flows-bad.parquet")
    bad.write_bytes(b"PAR1 cut short by a crash")
    assert read_flows(str(tmp_path)).tolist() == arr.tolist()
    assert "flows-bad.parquet: skipped" in capsys.readouterr().err


def test_flows_command_skips_a_corrupt_store_file_and_names_it(tmp_path: Path) -> None:
    """A damaged file (a disk that filled under an older version) no longer refuses the whole store."""
    arr = generated(300)
    writer = FlowStoreWriter(str(tmp_path), sensor="s1")
    writer.write(arr)
    writer.close()
    good = Path(writer.files[0])
    (good.parent / "flows-20260101000000-1-0001.parquet").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    done = run_cli("flows", str(tmp_path), "--aggregate", "proto", "--json")
    assert done.returncode == 0, done.stderr
    assert "flows-20260101000000-1-0001.parquet: skipped" in done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert sum(r["flows"] for r in rows) == len(arr)


FULL_DISK_SCRIPT = """
import os, sys, numpy as np
sys.path.insert(0, {root!r})
from sensor.flows.record import FLOW_DTYPE
from sensor.flows.store import FlowStoreWriter
rng = np.random.default_rng(7)
writer = FlowStoreWriter(sys.argv[1], max_records=2_000, row_group=1_000, sensor="s1")
for _ in range(200):  # ~20 MB of records with unique addresses into a 600 KiB file system
    arr = np.zeros(1_000, FLOW_DTYPE)
    arr["start_us"] = arr["end_us"] = 1_780_000_000_000_000 + rng.integers(0, 10**9, 1_000)
    arr["ip_version"] = 6
    for name in ("src_hi", "src_lo", "dst_hi", "dst_lo", "packets", "bytes"):
        arr[name] = rng.integers(0, 2**63, 1_000)
    writer.write(arr)
writer.close()
print(writer.records, writer.lost, len(writer.files))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root to mount a small tmpfs")
def test_flow_store_on_a_full_disk_leaves_no_corrupt_file(tmp_path: Path) -> None:
    """The store on a 600 KiB tmpfs: files that could not be completed are removed and their records counted;
    every file left is whole, and the store reads back exactly the records not counted as lost."""
    small = tmp_path / "small"
    small.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(FULL_DISK_SCRIPT.format(root=str(ROOT)))
    check = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from sensor.flows.store import read_flows; "
             f"print(len(read_flows({str(small / 'store')!r})))")
    shell = (f"mount -t tmpfs -o size=600k none {small} && {sys.executable} {script} {small / 'store'} && "
             f"find {small} -name '*.tmp' && {sys.executable} -c \"{check}\"")
    result = subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    records, lost, files, read_back = (int(x) for x in lines)  # no .tmp file was listed by find
    assert records == 200_000 and lost > 0 and files > 0
    assert read_back == records - lost
    assert "not stored" in result.stderr and "skipped" not in result.stderr
    assert result.stderr.count("No space left") == 1  # said once, not once per batch


def test_a_killed_writers_tmp_file_is_removed_at_start_and_a_live_ones_kept(tmp_path: Path, caplog) -> None:
    """SIGKILL mid-file leaves `flows-...-PID-SEQ.parquet.tmp`: never read, and removed by the next writer
    once that pid no longer runs."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "date=2026-01-01" / "sensor=s1"
    folder.mkdir(parents=True)
    stale = folder / f"flows-20260101000000-{dead.stdout.strip()}-0001.parquet.tmp"
    live = folder / f"flows-20260101000000-{os.getpid()}-0001.parquet.tmp"
    stale.write_bytes(b"PAR1 half")
    live.write_bytes(b"PAR1 being written")
    assert len(read_flows(str(tmp_path))) == 0  # neither is read
    with caplog.at_level("INFO"):
        FlowStoreWriter(str(tmp_path), sensor="s1")
    removed = [r.getMessage() for r in caplog.records if "removed" in r.getMessage()]
    assert removed == [f"{stale}: removed, an unfinished file of a flow-store writer that was killed"]
    assert not stale.exists() and live.exists()


def test_flow_store_buffer_stays_bounded_under_a_flood(tmp_path: Path) -> None:
    """The store held up to 1,048,576 records in memory (~885 MB RSS): now at most `row_group`, written out
    as a row group when reached."""
    writer = FlowStoreWriter(str(tmp_path), row_group=5_000, sensor="s1")
    arr = generated(1_700)
    peak = 0
    for _ in range(30):
        writer.write(arr)
        peak = max(peak, writer.buffered)
        assert writer.buffered < writer.row_group
    writer.close()
    assert peak > 0 and writer.buffered == 0
    groups = [pq.ParquetFile(f).metadata.num_row_groups for f in writer.files]
    assert sum(groups) >= 30 * 1_700 // 5_000 and len(read_flows(str(tmp_path))) == 30 * 1_700


def test_flow_store_is_hive_partitioned_and_read_back_by_duckdb(tmp_path: Path) -> None:
    """date= (the flows' start day, UTC) and sensor= in the path only; a sensor named `100` stays a string
    with explicit hive types; no unsigned column, which Spark would turn into a decimal."""
    duckdb = pytest.importorskip("duckdb")
    arr = generated(2_000)
    arr["start_us"][1_000:] += 86_400 * 1_000_000  # half of them a day later
    arr["src_hi"][:5] = np.uint64(2**64 - 1)  # the top bit set: stored as a negative int64, read back the same
    writer = FlowStoreWriter(str(tmp_path), sensor="100")
    writer.write(arr)
    writer.close()
    days = sorted({time.strftime("%Y-%m-%d", time.gmtime(int(t) // 10**6)) for t in arr["start_us"]})
    folders = sorted(os.path.relpath(os.path.dirname(f), tmp_path) for f in writer.files)
    assert folders == [f"date={day}/sensor=100" for day in days]
    source = (f"read_parquet('{tmp_path}/**/*.parquet', hive_partitioning = true, "
              "hive_types = {'date': DATE, 'sensor': VARCHAR})")
    rows = duckdb.sql(f"SELECT sensor, CAST(date AS VARCHAR), count(*), sum(packets) FROM {source} "
                      "GROUP BY ALL ORDER BY 2").fetchall()
    assert [(s, d) for s, d, _, _ in rows] == [("100", day) for day in days]
    assert sum(n for _, _, n, _ in rows) == len(arr) and sum(p for *_, p in rows) == int(arr["packets"].sum())
    types = dict(duckdb.sql(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {source})").fetchall())
    assert types["sensor"] == "VARCHAR" and types["date"] == "DATE"
    assert not [name for name, kind in types.items() if kind.startswith("U")], types
    assert "date" not in pq.ParquetFile(writer.files[0]).schema_arrow.names  # the keys only in the path
    assert read_flows(str(tmp_path)).tolist() == arr[np.argsort(arr["start_us"] // 86_400_000_000,
                                                                kind="stable")].tolist()


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
