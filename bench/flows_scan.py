"""`truesource flows` scan rate over 10,000,000 flow records, and nfdump running the same query on the same records.

Usage: python bench/flows_scan.py [--records 10000000] [--repeat 3] [--skip-nfdump] [--regenerate]

The records are seeded random flows (bench/out/flows-store/, kept between runs): 60,000 IPv4 and 5,000 IPv6
hosts, a fifth of the flows DNS over UDP, the rest TCP/UDP/ICMP/GRE/ESP. They are written by the sensor's own
store writer (sensor/flows/store.py). The query is the issue's:

    truesource flows STORE --filter 'proto udp and port 53' --aggregate srcip --top 10

timed as a whole process (start-up, imports, reading, filtering, binning, printing) and in-process as the scan
alone (reading the columns the query needs, filtering, binning). The goal is 2,000,000 records/s or more.

The peer: the same records exported over IPFIX (sensor/flows/ipfix.py) to a real nfcapd on loopback, then
`nfdump -r FILE -s srcip/flows -n 10 'proto udp and port 53'`, the same top 10, timed the same way; the bench
checks both give the same ten sources and counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"
QUERY = "proto udp and port 53"
CHUNK = 1_000_000


def generate(store: Path, records: int, seed: int = 35) -> None:
    from sensor.flows.record import FLOW_DTYPE
    from sensor.flows.store import FlowStoreWriter

    if store.exists():
        shutil.rmtree(store)
    rng = np.random.default_rng(seed)
    v4_hosts = (np.uint64(0xFFFF << 32) | (np.uint64(0x0A000000) + rng.choice(1 << 24, 60_000, replace=False)
                                           .astype(np.uint64)))
    v6_hi = np.full(5_000, 0x20010DB800000000, dtype=np.uint64)
    v6_lo = rng.integers(1, 1 << 63, 5_000, dtype=np.uint64)
    popularity = 1.0 / np.arange(1, len(v4_hosts) + 1) ** 0.8  # a few busy hosts, a long tail
    popularity /= popularity.sum()
    writer = FlowStoreWriter(str(store), rotate_seconds=1e9)
    start_us = 1_700_000_000_000_000
    for first in range(0, records, CHUNK):
        n = min(CHUNK, records - first)
        arr = np.zeros(n, FLOW_DTYPE)
        v6 = rng.random(n) < 0.1
        for side in ("src", "dst"):
            pick = rng.choice(len(v4_hosts), n, p=popularity)
            six = rng.integers(0, len(v6_lo), n)
            arr[f"{side}_hi"] = np.where(v6, v6_hi[six], 0)
            arr[f"{side}_lo"] = np.where(v6, v6_lo[six], v4_hosts[pick])
        arr["ip_version"] = np.where(v6, 6, 4)
        kind = rng.random(n)
        dns = kind < 0.2
        arr["proto"] = np.select([dns, kind < 0.6, kind < 0.9, kind < 0.95, kind < 0.98], [17, 6, 17, 1, 47], 50)
        ported = np.isin(arr["proto"], (6, 17))
        service = rng.choice([53, 80, 443, 25, 123, 22, 3306], n)
        ephemeral = rng.integers(1024, 65536, n)
        answer = rng.random(n) < 0.5
        arr["src_port"] = np.where(ported, np.where(dns & answer, 53, ephemeral), 0)
        arr["dst_port"] = np.where(ported, np.where(dns, np.where(answer, ephemeral, 53), service), 0)
        arr["start_us"] = start_us + np.sort(rng.integers(0, 3_600_000_000, n))
        arr["end_us"] = arr["start_us"] + rng.integers(0, 60_000_000, n)
        arr["packets"] = rng.integers(1, 100, n)
        arr["bytes"] = arr["packets"] * rng.integers(60, 1500, n).astype(np.uint64)
        arr["tcp_flags"] = np.where(arr["proto"] == 6, 0x1B, 0)
        arr["vlan"] = -1
        writer.write(arr)
        start_us += 3_600_000_000
    writer.close()
    (store / "bench.json").write_text(json.dumps({"records": records, "seed": seed}))


CPU: dict[str, list[float]] = {}  # CPU seconds (user+sys) of each timed command, by its program name


def timed_process(command: list[str]) -> tuple[float, str]:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.setdefault(os.path.basename(command[0]) if "sensor" not in command else "truesource", []).append(
        after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed: {done.stderr}")
    return seconds, done.stdout


def scan_only(store: Path) -> tuple[float, list]:
    from sensor.commands.flows import scan
    from sensor.flows.filter import compile_filter
    from sensor.flows.stats import aggregate, columns_for

    started = time.perf_counter()
    flow_filter = compile_filter(QUERY)
    columns, scanned = scan([str(store)], flow_filter, columns_for(("srcip",)))
    bins = aggregate(columns, ("srcip",), "flows", top=10)
    seconds = time.perf_counter() - started
    return seconds, bins.flows.tolist()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def to_nfcapd(store: Path, directory: Path) -> Path:
    """Export the store's records over IPFIX to a real nfcapd; the file it writes when stopped."""
    from sensor.flows.ipfix import IpfixExporter
    from sensor.flows.store import read_flows

    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    port = free_udp_port()
    collector = subprocess.Popen(["nfcapd", "-w", str(directory), "-b", "127.0.0.1", "-p", str(port), "-t", "86400",
                                  "-B", "16000000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    records = read_flows(str(store))
    exporter = IpfixExporter(f"127.0.0.1:{port}")
    step = 2_000  # paced so that nfcapd keeps up: loopback UDP drops what the collector has no room for
    for first in range(0, len(records), step):
        exporter.export(records[first:first + step])
        time.sleep(0.002)
    exporter.close()
    time.sleep(2.0)
    collector.send_signal(signal.SIGTERM)
    log = collector.communicate(timeout=120)[0]
    files = [name for name in os.listdir(directory) if name.startswith("nfcapd.") and "current" not in name]
    if len(files) != 1:
        raise SystemExit(f"nfcapd wrote {files}: {log}")
    print(f"  nfcapd: {log.strip().splitlines()[-2] if len(log.strip().splitlines()) > 1 else log.strip()}")
    return directory / files[0]


def nfdump_top(path: Path) -> tuple[float, list]:
    seconds, out = timed_process(["nfdump", "-r", str(path), "-q", "-N", "-s", "srcip/flows", "-n", "10",
                                  "-o", "csv", QUERY])
    counts = []
    for line in out.splitlines():
        parts = line.split(",")
        if len(parts) > 5 and parts[0][:1].isdigit():
            counts.append(int(parts[5]))
    return seconds, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--skip-nfdump", action="store_true")
    args = parser.parse_args()
    store = OUT / "flows-store"
    meta = store / "bench.json"
    if args.regenerate or not meta.exists() or json.loads(meta.read_text())["records"] != args.records:
        print(f"writing {args.records:,} records to {store} ...", flush=True)
        started = time.perf_counter()
        generate(store, args.records)
        print(f"  {time.perf_counter() - started:.1f} s", flush=True)
    size = sum(f.stat().st_size for f in store.rglob("*.parquet"))  # the date=/sensor= partitions
    print(f"store: {args.records:,} records, {size / 1e6:.0f} MB of Parquet")

    truesource = [sys.executable, "-m", "sensor", "flows", str(store), "--filter", QUERY, "--aggregate", "srcip",
                  "--top", "10", "--json"]
    process_times, scan_times = [], []
    ours = None
    for _ in range(args.repeat):
        seconds, out = timed_process(truesource)
        process_times.append(seconds)
        ours = [json.loads(line)["flows"] for line in out.splitlines()]
        seconds, counts = scan_only(store)
        scan_times.append(seconds)
        assert counts == ours, (counts, ours)
    results = {"records": args.records, "query": QUERY,
               "truesource_process_s": statistics.median(process_times),
               "truesource_scan_s": statistics.median(scan_times)}
    results["truesource_process_rate"] = args.records / results["truesource_process_s"]
    results["truesource_scan_rate"] = args.records / results["truesource_scan_s"]
    if not args.skip_nfdump and shutil.which("nfcapd") and shutil.which("nfdump"):
        nfcapd_file = OUT / "flows-nfcapd" / "records.nfcapd"
        if args.regenerate or not nfcapd_file.exists() or nfcapd_file.stat().st_mtime < meta.stat().st_mtime:
            print("exporting the records over IPFIX to nfcapd ...", flush=True)
            started = time.perf_counter()
            written = to_nfcapd(store, OUT / "flows-nfcapd-tmp")
            nfcapd_file.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(written), nfcapd_file)
            shutil.rmtree(OUT / "flows-nfcapd-tmp")
            print(f"  {time.perf_counter() - started:.1f} s", flush=True)
        check = subprocess.run(["nfdump", "-r", str(nfcapd_file), "-N", "-s", "proto/flows", "-n", "1"],
                               capture_output=True, text=True).stdout
        processed = [line for line in check.splitlines() if line.startswith("Total flows processed")]
        results["nfdump_records"] = int(processed[0].split(":")[1].split(",")[0]) if processed else None
        nfdump_times = []
        theirs = None
        for _ in range(args.repeat):
            seconds, theirs = nfdump_top(nfcapd_file)
            nfdump_times.append(seconds)
        results["nfdump_s"] = statistics.median(nfdump_times)
        results["nfdump_rate"] = args.records / results["nfdump_s"]
        results["same_top10_as_nfdump"] = theirs == ours
    print(f"query: truesource flows STORE --filter '{QUERY}' --aggregate srcip --top 10  (median of {args.repeat})")
    print(f"  truesource, whole process  {results['truesource_process_s']:7.2f} s  "
          f"{results['truesource_process_rate']:>13,.0f} records/s")
    print(f"  truesource, scan only      {results['truesource_scan_s']:7.2f} s  "
          f"{results['truesource_scan_rate']:>13,.0f} records/s")
    if "nfdump_s" in results:
        print(f"  nfdump -s srcip/flows      {results['nfdump_s']:7.2f} s  {results['nfdump_rate']:>13,.0f} records/s"
              f"  (truesource process is {results['nfdump_s'] / results['truesource_process_s']:.2f}x nfdump's "
              f"speed; same top 10: {results['same_top10_as_nfdump']}; records in nfcapd's file: "
              f"{results['nfdump_records']:,})")
    for program, seconds in CPU.items():
        results[f"{program}_cpu_s"] = statistics.median(seconds)
        print(f"  {program} CPU (user+sys), median: {results[f'{program}_cpu_s']:.2f} s")
    if "nfdump_cpu_s" in results:
        ratio = results["truesource_cpu_s"] / results["nfdump_cpu_s"]
        print(f"  truesource CPU / nfdump CPU: {ratio:.2f}x (goal <= 1.5x: {'met' if ratio <= 1.5 else 'MISSED'})")
    print(f"  goal: 2,000,000 records/s -> {'met' if results['truesource_process_rate'] >= 2e6 else 'MISSED'}")
    OUT.mkdir(exist_ok=True)
    (OUT / "flows_scan.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
