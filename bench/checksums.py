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
