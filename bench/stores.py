#!/usr/bin/env python3
"""What the stores cost a whole replay (issue 15): CPU seconds (user+sys, summed over the process tree: the
sensor and the query-log writer) and wall time of `truesource replay` of the bench capture without a store,
with --query-log and with --flow-store, interleaved --repeat times; medians and ratios to the plain replay.

    python bench/stores.py [--capture bench/out/capture.pcap] [--rules bench/out/rules.txt] [--repeat 3]
                           [--modes plain,flow-store] [--base ../other-checkout]

--modes: the runs to make (default all three); --base: another built checkout whose same runs are interleaved
with these, each mode's ratio taken against that checkout's own plain replay.

Goals: --query-log <= 1.5x and --flow-store <= 1.3x the plain replay's CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import compile_bytecode  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
GOALS = {"query-log": 1.5, "flow-store": 1.3}


def run(args: list[str]) -> tuple[float, float]:
    """(CPU seconds of the process tree, wall seconds) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capture", default=os.path.join(BENCH, "out", "capture.pcap"))
    parser.add_argument("--rules", default=os.path.join(BENCH, "out", "rules.txt"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default="plain,query-log,flow-store", help="comma-separated; plain is always run")
    parser.add_argument("--base", help="a built checkout to measure beside this one, interleaved")
    args = parser.parse_args(argv)
    if args.base:
        return compare(args)
    if not os.path.exists(args.capture):
        subprocess.run([sys.executable, os.path.join(BENCH, "make_capture.py")], check=True)
    base = [sys.executable, "-m", "sensor", "replay", args.capture, "--rules", args.rules, "--no-progress",
            "--out", "/dev/null"]
    modes = ["plain"] + [m for m in args.modes.split(",") if m in ("query-log", "flow-store")]
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="truesource-stores-") as tmp:
        for _ in range(args.repeat):
            for mode in results:
                extra = []
                if mode == "query-log":
                    extra = ["--query-log", os.path.join(tmp, "q.db")]
                elif mode == "flow-store":
                    extra = ["--flow-store", os.path.join(tmp, "flows")]
                results[mode].append(run(base + extra))
                for name in os.listdir(tmp):  # each run starts from an empty store
                    path = os.path.join(tmp, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    plain = statistics.median(c for c, _ in results["plain"])
    print(f"{'run':<12}{'CPU s':>8}{'wall s':>8}{'CPU vs plain':>14}  goal")
    for mode, runs in results.items():
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(w for _, w in runs)
        goal = GOALS.get(mode)
        verdict = "" if goal is None else f"<= {goal}x: {'met' if cpu / plain <= goal else 'missed'}"
        print(f"{mode:<12}{cpu:>8.2f}{wall:>8.2f}{cpu / plain:>13.2f}x  {verdict}")
    return 0


def compare(args: argparse.Namespace) -> int:
    """--base: each mode run by both checkouts in turn (their own .venv), medians and ratios per checkout."""
    modes = ["plain"] + [m for m in args.modes.split(",") if m and m != "plain"]
    roots = {"base": os.path.abspath(args.base), "this": ROOT}
    results = {(who, mode): [] for who in roots for mode in modes}
    for root in roots.values():
        compile_bytecode(root)
    with tempfile.TemporaryDirectory(prefix="truesource-stores-") as tmp, \
            tempfile.TemporaryDirectory(prefix="truesource-stores-rules-") as rules_cache:
        # a rules cache of this run's own, warmed first: the shared ~/.cache keeps 4 compiled sets, and other
        # users' runs evicting ours made a run now and then rebuild the 100,000 rules (0.75 s CPU)
        for repeat in range(-1, args.repeat):
            for mode in modes:
                for who, root in roots.items():
                    extra = {"plain": [], "query-log": ["--query-log", os.path.join(tmp, "q.db")],
                             "flow-store": ["--flow-store", os.path.join(tmp, "flows")]}[mode]
                    command = [os.path.join(root, ".venv", "bin", "python"), "-m", "sensor", "replay",
                               os.path.abspath(args.capture), "--rules", os.path.abspath(args.rules),
                               "--no-progress", "--out", "/dev/null", "--rules-cache", rules_cache, *extra]
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    subprocess.run(command, cwd=root, check=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    if repeat >= 0:
                        results[(who, mode)].append(
                            after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                    for name in os.listdir(tmp):
                        path = os.path.join(tmp, name)
                        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    print(f"{'run':<12}{'base CPU s':>12}{'x plain':>9}{'this CPU s':>12}{'x plain':>9}")
    for mode in modes:
        cells = []
        for who in roots:
            cpu = statistics.median(results[(who, mode)])
            cells.append(f"{cpu:>12.3f}{cpu / statistics.median(results[(who, 'plain')]):>8.2f}x")
        print(f"{mode:<12}{''.join(cells)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
