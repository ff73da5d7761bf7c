#!/usr/bin/env python3
"""The fast path with and without query-response correlation, in one run (issue 6: at most 10% slower).

Reads the benchmark capture (bench/make_capture.py; made if missing) into memory as pcapy-ng batches once,
then times, interleaved, --repeat times each:

  off        FastLoop as replay uses it (hits only), query log off
  on-loop    query log on, entries taken packed each batch (the loop's own cost: what capture pays)
  on-decoded query log on, entries taken and decoded into QueryLogEntry each batch (take_query_log: the
             whole cost in one thread; a writer can decode the packed bytes elsewhere)

and prints medians, frames/s, entries made and the ratios to `off`. Reading the capture is left out so the
loop is what is measured; `truesource replay` adds the same reading time to each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import pcapy

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)

from sensor import _loop  # noqa: E402
from sensor.querylog.record import QueryLogEntry  # noqa: E402
from sensor.rules.loader import load_rules  # noqa: E402

DEFAULT_CAPTURE = os.path.join(BENCH, "out", "capture.pcap")
DEFAULT_RULES = os.path.join(BENCH, "out", "rules.txt")
BATCH = 4096  # frames per next_batch, as replay reads them
GOAL_SLOWDOWN = 1.10


def read_batches(path: str) -> list[tuple[int, bytes, bytes]]:
    reader = pcapy.open_offline(path)
    batches, frame = [], 1
    while True:
        data, meta = reader.next_batch(BATCH)
        if not meta:
            return batches
        batches.append((frame, bytes(data), bytes(meta)))
        frame += len(meta) // 16


def run(mode: str, batches, table, linktype: int) -> tuple[float, float, int]:
    loop = _loop.FastLoop(linktype, (53,), table, False, query_log=mode != "off", entry_type=QueryLogEntry)
    entries = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    if mode == "off":
        for first, data, meta in batches:
            loop.run_batch(data, meta, first)
    elif mode == "on-loop":
        for first, data, meta in batches:
            loop.run_batch(data, meta, first)
            entries += len(loop.take_query_log_packed())
        loop.flush_query_log()
        entries += len(loop.take_query_log_packed())
    else:
        for first, data, meta in batches:
            loop.run_batch(data, meta, first)
            entries += len(loop.take_query_log())
        loop.flush_query_log()
        entries += len(loop.take_query_log())
    return time.perf_counter() - started, time.process_time() - cpu_started, entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", default=DEFAULT_CAPTURE)
    parser.add_argument("--rules", default=DEFAULT_RULES)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--modes", default="off,on-loop,on-decoded", help="comma-separated, from the list above")
    args = parser.parse_args()
    if not os.path.exists(args.capture):
        subprocess.run([sys.executable, os.path.join(BENCH, "make_capture.py")], check=True)
    batches = read_batches(args.capture)
    frames = sum(len(meta) // 16 for _, _, meta in batches)
    table = _loop.SuffixSet(load_rules([args.rules]).table) if os.path.exists(args.rules) else {}
    linktype = pcapy.open_offline(args.capture).datalink()
    modes = tuple(args.modes.split(","))
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    made: dict[str, int] = {}
    for _ in range(args.repeat):
        for mode in modes:
            elapsed, cpu_seconds, entries = run(mode, batches, table, linktype)
            seconds[mode].append(elapsed)
            cpu[mode].append(cpu_seconds)
            made[mode] = entries
    base, cpu_base = statistics.median(seconds["off"]), statistics.median(cpu["off"])
    print(f"{frames:,} frames from {args.capture}, {args.repeat} runs each, medians (wall, and CPU time of this"
          " process: less sensitive to other jobs on the machine)")
    for mode in modes:
        median, cpu_median = statistics.median(seconds[mode]), statistics.median(cpu[mode])
        what = "packed bytes" if mode == "on-loop" else "entries"
        extra = f", {made[mode]:,} {what}" if mode != "off" else ""
        print(f"  {mode:<11} wall {median:7.3f} s {frames / median:12,.0f} frames/s x{median / base:5.3f}"
              f"   cpu {cpu_median:7.3f} s x{cpu_median / cpu_base:5.3f}{extra}")
    if "on-loop" in modes:
        ratio = statistics.median(cpu["on-loop"]) / cpu_base
        print(f"goal: query log at most {GOAL_SLOWDOWN - 1:.0%} slower in the loop (CPU time): "
              f"{'met' if ratio <= GOAL_SLOWDOWN else 'NOT met'} (x{ratio:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
