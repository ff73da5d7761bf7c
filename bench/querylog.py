#!/usr/bin/env python3
"""The query-log store (issue 6): insert rate, replay with and without --query-log, who-asked over 10M queries.

1. insert: generated QueryLogEntry batches (WRITE_ROWS each, as the writer process inserts them) into a new
   store, --stored queries in all (default 10,000,000); prints the sustained rate (wall clock and per CPU
   second of the process, since the machine is shared) every million and overall. Generating the entries
   is not timed.
2. who-asked on that store: a rare name, a common name and a popular domain with --subdomains, each timed
   in-process (the store query and the grouping: what the command does after start-up) and as a whole
   `truesource who-asked` process; medians of --repeat runs.
3. replay: `truesource replay` of the benchmark capture (bench/make_capture.py; made if missing) with and
   without --query-log, interleaved --repeat times; medians, packets/s and the ratio, twice: the whole
   process (with --query-log: until the writer has stored every query) and the replay's decode time from its
   summary (what the capture path pays: the loop's correlation and the push into the writer's pipe).

Goals (issue 6): insert >= 100,000 queries/s; replay with --query-log at most 10% slower; who-asked < 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
OUT = os.path.join(BENCH, "out")
sys.path.insert(0, ROOT)

from sensor.querylog.lookup import group_askers  # noqa: E402
from sensor.querylog.record import QueryLogEntry  # noqa: E402
from sensor.querylog.store import QueryStore  # noqa: E402
from sensor.querylog.writer import WRITE_ROWS  # noqa: E402

GOAL_INSERT = 100_000
GOAL_SLOWDOWN = 1.10
GOAL_WHO_ASKED = 0.100
DOMAINS = 300_000  # registered domains the generated queries ask for, by Zipf-like popularity
CLIENTS = 20_000
HOSTS = ("", "www.", "api.", "mail.", "cdn.", "login.", "v2.api.")


def generator(seed: int):
    """Batches of plausible entries: Zipf-like domains, a few host names each, 70% answered with an A record."""
    rng = random.Random(seed)
    domains = [f"d{i}-{rng.randrange(10**6)}.example{i % 97}.com" for i in range(DOMAINS)]
    weights = [1.0 / (rank + 1) ** 1.05 for rank in range(DOMAINS)]
    cumulative = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    clients = [bytes((10, rng.randrange(256), rng.randrange(256), rng.randrange(1, 255))) for _ in range(CLIENTS)]
    server = bytes((10, 0, 0, 53))
    start = int(time.time()) - 86400
    made = 0

    def batch(size: int) -> list[QueryLogEntry]:
        nonlocal made
        picks = rng.choices(domains, cum_weights=cumulative, k=size)
        out = []
        for name in picks:
            name = rng.choice(HOSTS) + name
            ts = start + made // 200  # 200 queries a second of packet time
            if rng.random() < 0.7:
                answers = ((name, 1, 300, f"192.0.{rng.randrange(256)}.{rng.randrange(256)}"),)
                out.append(QueryLogEntry(ts, made % 1_000_000, None, rng.choice(clients), server,
                                         rng.randrange(1024, 65536), 53, 17, rng.randrange(65536), name, 1, 1, 0, 0,
                                         0x8180, rng.randrange(200, 50_000), answers, made))
            else:
                out.append(QueryLogEntry(ts, made % 1_000_000, None, rng.choice(clients), server,
                                         rng.randrange(1024, 65536), 53, 17, rng.randrange(65536), name, 28, 1, 0, 3,
                                         0x8183, rng.randrange(200, 50_000), (), made))
            made += 1
        return out
    return batch, domains


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_insert(path: str, stored: int, seed: int) -> dict:
    import shutil

    from sensor.loop import querylog_segment_functions

    for suffix in ("", "-wal", "-shm", ".lock"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    shutil.rmtree(path + ".segments", ignore_errors=True)  # schema 2's segment files (decision 0180)
    batch, domains = generator(seed)
    store = QueryStore.open_writer(path, keys_of=querylog_segment_functions()[0],
                                   sort_keys=querylog_segment_functions()[1])
    wall = cpu = 0.0
    done = 0
    print(f"insert: {stored:,} generated queries into {path}, {WRITE_ROWS:,} a transaction")
    while done < stored:
        entries = batch(min(WRITE_ROWS, stored - done))
        started, cpu_started = time.perf_counter(), cpu_seconds()
        store.insert(entries)
        wall += time.perf_counter() - started
        cpu += cpu_seconds() - cpu_started
        done += len(entries)
        if done % 1_000_000 == 0:
            print(f"  {done:>11,}  {done / wall:>9,.0f} queries/s wall  {done / cpu:>9,.0f} per CPU second",
                  flush=True)
    size = store.used_bytes()
    store.close()
    print(f"insert: {done / wall:,.0f} queries/s (wall), {done / cpu:,.0f} per CPU second; "
          f"{size / 1e6:,.0f} MB, {size / done:.0f} bytes a query")
    return {"queries": done, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "rate_wall": round(done / wall),
            "rate_cpu": round(done / cpu), "bytes": size, "domains": domains}


def bench_who_asked(path: str, domains: list[str], repeat: int) -> list[dict]:
    store = QueryStore.open_reader(path)
    cases = [("rare name", domains[10_000], False), ("common name", "www." + domains[500], False),
             ("domain --subdomains", domains[2_000], True), ("top-4 domain --subdomains", domains[3], True)]
    results = []
    for label, name, below in cases:
        inner, outer, counts = [], [], set()
        for _ in range(repeat):
            started = time.perf_counter()
            askers = group_askers(store.by_name(name, below))
            inner.append(time.perf_counter() - started)
            counts.add(sum(a.count for a in askers))
            started = time.perf_counter()
            args = [sys.executable, "-m", "sensor", "who-asked", name, "--json", "--query-log", path]
            done = subprocess.run(args + (["--subdomains"] if below else []), cwd=ROOT, capture_output=True,
                                  text=True)
            outer.append(time.perf_counter() - started)
            assert done.returncode == 0, done.stderr
        result = {"case": label, "name": name, "queries": counts.pop(), "query_s": statistics.median(inner),
                  "process_s": statistics.median(outer)}
        results.append(result)
        print(f"who-asked {label:<30} {result['queries']:>8,} queries  {result['query_s'] * 1000:8.1f} ms in the "
              f"store  {result['process_s'] * 1000:8.1f} ms as a process")
    return results


def bench_replay(capture: str, rules: str, repeat: int) -> dict:
    """Whole processes, interleaved. Two figures each: the process from launch to exit (with --query-log: until
    the writer has stored the last query), and the replay's own decode time from its summary (frames read,
    decoded and handed to the pipe: what the capture path pays; the pipe holds 256 batches, so the loop does
    not wait for the writer until they are full)."""
    process: dict[str, list[float]] = {"off": [], "on": []}
    decode: dict[str, list[float]] = {"off": [], "on": []}
    packets = 0
    written: list[str] = []
    log = os.path.join(OUT, "replay-querylog.db")
    for _ in range(repeat):
        for mode in ("off", "on"):
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(log + suffix):
                    os.unlink(log + suffix)
            summary = os.path.join(OUT, f"replay-{mode}.json")
            args = [sys.executable, "-m", "sensor", "replay", capture, "--rules", rules, "--no-progress",
                    "--out", os.devnull, "--summary-json", summary]
            if mode == "on":
                args += ["--query-log", log]
            started = time.perf_counter()
            done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
            process[mode].append(time.perf_counter() - started)
            assert done.returncode == 0, done.stderr
            with open(summary) as handle:
                report = json.load(handle)
            packets = report["counters"]["packets"]
            decode[mode].append(report["seconds"])
            if mode == "on":
                written = [line for line in done.stderr.splitlines() if line.startswith("query log")]
    result = {"packets": packets, "process": {}, "decode": {}}
    for label, runs in (("process", process), ("decode", decode)):
        off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
        result[label] = {"off_s": off, "on_s": on, "ratio": on / off, "runs": runs}
        print(f"replay {packets:,} frames, {label:<7}: without --query-log {off:.3f} s ({packets / off:,.0f} "
              f"packets/s), with {on:.3f} s ({packets / on:,.0f} packets/s): {on / off:.2f}x the time")
    print(f"  {written[0] if written else ''}")
    result["ratio"] = result["process"]["ratio"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stored", type=int, default=10_000_000, help="queries generated into the store")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--skip", action="append", default=[], choices=("insert", "who-asked", "replay"))
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    results: dict = {}
    store = os.path.join(OUT, "querylog-10m.db")
    if "insert" not in args.skip:
        results["insert"] = bench_insert(store, args.stored, args.seed)
        domains = results["insert"].pop("domains")
    else:
        domains = generator(args.seed)[1]
    if "who-asked" not in args.skip:
        results["who_asked"] = bench_who_asked(store, domains, args.repeat)
    if "replay" not in args.skip:
        capture, rules = os.path.join(OUT, "capture.pcap"), os.path.join(OUT, "rules.txt")
        if not os.path.exists(capture):
            subprocess.run([sys.executable, os.path.join(BENCH, "make_capture.py"), "--out-dir", OUT], check=True)
        results["replay"] = bench_replay(capture, rules, args.repeat)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sensor", "--version"], cwd=ROOT, capture_output=True)
    print(f"(start-up alone: `truesource --version` takes {(time.perf_counter() - started) * 1000:.0f} ms here)")
    print("\ngoals:")
    if "insert" in results:
        rate = results["insert"]["rate_wall"]
        print(f"  insert >= {GOAL_INSERT:,}/s: {rate:,}/s wall, {results['insert']['rate_cpu']:,} per CPU second "
              f"-> {'met' if rate >= GOAL_INSERT else 'MISSED'}")
    if "replay" in results:
        for label in ("process", "decode"):
            ratio = results["replay"][label]["ratio"]
            print(f"  replay with --query-log <= {GOAL_SLOWDOWN:.2f}x the time ({label}): {ratio:.2f}x -> "
                  f"{'met' if ratio <= GOAL_SLOWDOWN else 'MISSED'}")
    for case in results.get("who_asked", []):
        print(f"  who-asked < {GOAL_WHO_ASKED * 1000:.0f} ms ({case['case']}, {case['queries']:,} queries): "
              f"{case['query_s'] * 1000:.1f} ms -> {'met' if case['query_s'] < GOAL_WHO_ASKED else 'MISSED'} "
              f"(whole process {case['process_s'] * 1000:.0f} ms)")
    with open(os.path.join(OUT, "querylog.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
