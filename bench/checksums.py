#!/usr/bin/env python3
"""Checksum verification's cost: `truesource replay` of the benchmark capture with --checksums off and verify
(and optionally another checkout's build, --baseline DIR, e.g. the commit before verification existed), each
timed as a whole process in CPU seconds (user + sys), interleaved, --repeat times; prints medians and ratios.

The capture is bench/out/capture.pcap from bench/make_capture.py (made if missing): 1,000,000 frames, mostly DNS
over UDP with checksums filled in, so verify computes every IPv4 header and UDP checksum and drops nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
OUT = os.path.join(BENCH, "out")


# The loop alone: frames read into memory first, then every batch through FastLoop.run_batch, CPU time of that
# only (no start-up, no reading, no output). Run in the checkout's own directory, so its own build is imported.
LOOP_RATE = r"""
import sys, time
sys.path.insert(0, ".")
from sensor.capture.files import CaptureFile
from sensor.rules.loader import load_rules
from sensor.loop import compile_rules
from sensor import _loop
capture = CaptureFile(sys.argv[1])
batches = [(b.data, b.meta, b.first_frame) for b in capture.batches()]
rules = compile_rules(load_rules([sys.argv[2]]))
options = {"checksums": int(sys.argv[3])} if sys.argv[3] != "-" else {}
best = None
for _ in range(3):
    loop = _loop.FastLoop(capture.linktype, [53], rules.table, False, allow=rules.allow, patterns=rules.patterns,
                          **options)
    started = time.process_time()
    for data, meta, first in batches:
        loop.run_batch(data, meta, first)
    spent = time.process_time() - started
    best = spent if best is None else min(best, spent)
print(best)
"""


def loop_seconds(cwd: str, capture: str, rules: str, checksums: str) -> float:
    result = subprocess.run([sys.executable, "-c", LOOP_RATE, capture, rules, checksums], cwd=cwd, check=True,
                            capture_output=True, text=True)
    return float(result.stdout.strip().splitlines()[-1])


def cpu_seconds(command: list[str], cwd: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", metavar="DIR", help="another checkout with its sensor._loop built in place")
    args = parser.parse_args()
    capture, rules = os.path.join(OUT, "capture.pcap"), os.path.join(OUT, "rules.txt")
    if not os.path.exists(capture):
        subprocess.run([sys.executable, os.path.join(BENCH, "make_capture.py"), "--out-dir", OUT], check=True)
    base = [sys.executable, "-m", "sensor", "replay", capture, "--rules", rules, "--out", os.devnull,
            "--no-progress"]
    runs = {"off": (base + ["--checksums", "off"], ROOT), "verify": (base + ["--checksums", "verify"], ROOT),
            "auto": (base, ROOT)}
    if args.baseline:
        runs["baseline"] = (base, os.path.abspath(args.baseline))
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, (command, cwd) in runs.items():
            seconds[name].append(cpu_seconds(command, cwd))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    loops: dict[str, list[float]] = {"off": [], "verify": []} | ({"baseline": []} if args.baseline else {})
    for _ in range(args.repeat):
        loops["off"].append(loop_seconds(ROOT, capture, rules, "0"))
        loops["verify"].append(loop_seconds(ROOT, capture, rules, "1"))
        if args.baseline:
            loops["baseline"].append(loop_seconds(os.path.abspath(args.baseline), capture, rules, "-"))
    print("the loop alone (best of 3 passes per run; median of runs), frames/s:")
    loop_medians = {name: statistics.median(values) for name, values in loops.items()}
    for name, median in loop_medians.items():
        print(f"  {name:9s} {1_000_000 / median:12,.0f} frames/s  ({median:.3f} CPU s per 1,000,000)")
    print(f"  verify / off time: {loop_medians['verify'] / loop_medians['off']:.3f}")
    if args.baseline:
        print(f"  verify / baseline time: {loop_medians['verify'] / loop_medians['baseline']:.3f}")
    print("whole processes (CPU s):")
    for name, median in medians.items():
        spread = ", ".join(f"{v:.2f}" for v in seconds[name])
        print(f"{name:9s} median {median:6.2f} CPU s  ({spread})")
    print(f"verify / off: {medians['verify'] / medians['off']:.3f}")
    if "baseline" in medians:
        print(f"verify / baseline: {medians['verify'] / medians['baseline']:.3f}; "
              f"auto / baseline: {medians['auto'] / medians['baseline']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
