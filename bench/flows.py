"""Flow building's cost on replay, beside nfpcapd building flows from the same capture, and the store's scan rate.

Usage: python bench/flows.py [--packets 300000] [--records 10000000] [--repeat 3] [--regenerate]

1. Replay of the benchmark capture (bench/make_capture.py: DNS plus HTTPS, QUIC, ICMP, ARP) as whole processes:
   `truesource replay` without flows, with `--flows`, and with `--flow-store`; medians of --repeat runs,
   packets/s and the ratio to the run without flows. The peer: `nfpcapd -r capture -w DIR` (nfdump's own
   pcap-to-flow builder) on the same file, timed the same way.
2. Scan: --records seeded random flow records written by the sensor's store writer (bench/out/flows-bench/store,
   kept between runs), read back by `read_flows` in-process, and scanned by `truesource flows STORE --aggregate
   srcip --top 10` as a whole process; records/s. The goal is 2,000,000 records/s or more.

Everything measured goes to bench/out/flows-bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out" / "flows-bench"
CHUNK = 1_000_000

from sensor.flows.record import FLOW_DTYPE  # noqa: E402
from sensor.flows.store import FlowStoreWriter, read_flows  # noqa: E402


def timed(command: list[str], repeat: int) -> tuple[float, str]:
    """Median wall seconds of `repeat` runs of a whole process; the last run's standard error."""
    seconds, err = [], ""
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {done.stderr}")
        err = done.stderr
    return statistics.median(seconds), err


def ensure_capture(packets: int, regenerate: bool) -> tuple[Path, Path, int]:
    OUT.mkdir(parents=True, exist_ok=True)
    described = OUT / "capture.json"
    if regenerate or not described.exists() or json.loads(described.read_text())["packets"] != packets:
        print(f"making a {packets:,}-frame capture (bench/make_capture.py)", flush=True)
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_capture.py"), "--packets", str(packets),
                        "--rules", "1000", "--out-dir", str(OUT)], check=True, cwd=ROOT)
    return OUT / "capture.pcap", OUT / "rules.txt", packets


def random_records(rng: np.random.Generator, n: int) -> np.ndarray:
    """Flows over 60,000 IPv4 and 5,000 IPv6 hosts, a fifth DNS over UDP."""
    arr = np.zeros(n, FLOW_DTYPE)
    v6 = rng.random(n) < 0.1
    for side in ("src", "dst"):
        v4_hosts = (0xFFFF << 32) | (0x0A000000 + rng.integers(0, 60_000, n, dtype=np.uint64))
        arr[f"{side}_hi"] = np.where(v6, 0x20010DB800000000, 0).astype(np.uint64)
        arr[f"{side}_lo"] = np.where(v6, rng.integers(1, 5_000, n, dtype=np.uint64), v4_hosts).astype(np.uint64)
    arr["ip_version"] = np.where(v6, 6, 4)
    dns = rng.random(n) < 0.2
    arr["proto"] = np.where(dns, 17, rng.choice([6, 17, 1, 47, 50], n))
    arr["src_port"] = rng.integers(1024, 65535, n)
    arr["dst_port"] = np.where(dns, 53, rng.choice([80, 443, 123, 22, 25], n))
    arr["start_us"] = 1_767_225_600_000_000 + np.sort(rng.integers(0, 86_400_000_000, n))
    arr["end_us"] = arr["start_us"] + rng.integers(0, 60_000_000, n)
    arr["packets"] = rng.integers(1, 1000, n)
    arr["bytes"] = arr["packets"] * rng.integers(40, 1500, n)
    arr["vlan"] = -1
    arr["end_reason"] = 1
    return arr


def ensure_store(records: int, regenerate: bool) -> Path:
    store = OUT / "store"
    marker = store / "records.txt"
    if regenerate or not marker.exists() or int(marker.read_text()) != records:
        shutil.rmtree(store, ignore_errors=True)
        print(f"writing {records:,} flow records with the store writer", flush=True)
        rng = np.random.default_rng(5)
        writer = FlowStoreWriter(str(store))
        started = time.perf_counter()
        for start in range(0, records, CHUNK):
            writer.write(random_records(rng, min(CHUNK, records - start)))
        writer.close()
        print(f"  written in {time.perf_counter() - started:.1f} s ({len(writer.files)} file(s))", flush=True)
        marker.write_text(str(records))
    return store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=300_000)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args(argv)
    capture, rules, packets = ensure_capture(args.packets, args.regenerate)
    results: dict = {"packets": packets, "repeat": args.repeat}
    sensor = [sys.executable, "-m", "sensor", "replay", str(capture), "--rules", str(rules), "--out", os.devnull,
              "--no-progress"]
    with tempfile.TemporaryDirectory() as scratch:
        runs = {
            "replay (no flows)": sensor,
            "replay --flows": sensor + ["--flows"],
            "replay --flow-store": sensor + ["--flow-store", f"{scratch}/store"],
        }
        if shutil.which("nfpcapd"):
            os.makedirs(f"{scratch}/nfpcapd")
            runs["nfpcapd -r (peer)"] = ["nfpcapd", "-r", str(capture), "-w", f"{scratch}/nfpcapd"]
        print(f"\nreplay of {packets:,} frames, median of {args.repeat} runs (whole processes)")
        print(f"{'command':<28}{'median s':>10}{'frames/s':>14}{'vs no flows':>13}")
        base = None
        for label, command in runs.items():
            seconds, err = timed(command, args.repeat)
            base = base or seconds
            results[label] = {"median_seconds": round(seconds, 4), "frames_per_second": round(packets / seconds)}
            flows_line = next((line for line in err.splitlines() if line.startswith("flows:")), "")
            if flows_line:
                results[label]["flows"] = flows_line
            print(f"{label:<28}{seconds:>10.3f}{packets / seconds:>14,.0f}{seconds / base:>12.2f}x  {flows_line}")
            if label.endswith("--flow-store"):
                shutil.rmtree(f"{scratch}/store", ignore_errors=True)
    store = ensure_store(args.records, args.regenerate)
    print(f"\nscan of {args.records:,} stored records")
    seconds = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        arr = read_flows(str(store))
        seconds.append(time.perf_counter() - started)
        assert len(arr) == args.records
        del arr
    read = statistics.median(seconds)
    results["read_flows"] = {"median_seconds": round(read, 4), "records_per_second": round(args.records / read)}
    print(f"{'read_flows (in-process)':<40}{read:>8.3f} s{args.records / read:>16,.0f} records/s")
    command = [sys.executable, "-m", "sensor", "flows", str(store), "--aggregate", "srcip", "--top", "10"]
    probe = subprocess.run(command[:4] + ["--help"], cwd=ROOT, capture_output=True, text=True)
    if probe.returncode == 0:
        whole, _ = timed(command, args.repeat)
        results["truesource flows"] = {"median_seconds": round(whole, 4),
                                       "records_per_second": round(args.records / whole)}
        print(f"{'truesource flows --aggregate srcip':<40}{whole:>8.3f} s{args.records / whole:>16,.0f} records/s"
              "  (whole process: start-up, read, aggregate, print)")
    else:
        print("truesource flows: command not available here; read_flows alone was timed")
    (OUT / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
