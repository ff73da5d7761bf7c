#!/usr/bin/env python3
"""What one hit costs, all in: CPU of a replay whose rules hit, minus CPU of one with as many rules that hit
nothing, divided by the hits (issue 15's goal: at most 5 us).

The capture is bench/make_capture.py's with a realistic hit rate (about 3% of queries under rule names, so
resolver attribution holds thousands of client queries in its window). The "nothing" rule file has the same
names with one label added in front of each (`miss-x.` + name): the same count, the same kinds, no hit. Each
run is a whole `truesource replay ... --out FILE` process, CPU seconds user+sys of the process tree, rounds
interleaved, medians printed. `--base DIR` measures another checkout (for example main, built with `make build`
in a temporary worktree) in the same rounds, so the two figures share the machine's state.
"""

from __future__ import annotations

import argparse
import json
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_SHARE = 0.031  # make_capture --rule-area-share: about 3% of queries hit (0.045: about 4.4%)


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def replay(checkout: str, capture: str, rules: str, out: str) -> tuple[float, float]:
    """(CPU s, wall s) of one whole replay process of `checkout`'s sensor."""
    python = os.path.join(checkout, ".venv", "bin", "python")
    before, started = cpu_children(), time.perf_counter()
    subprocess.run([python, "-m", "sensor", "replay", capture, "--rules", rules, "--out", out],
                   cwd=checkout, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cpu_children() - before, time.perf_counter() - started


def instructions(checkout: str, capture: str, rules: str, out: str) -> int:
    """Instructions one whole replay process executes (valgrind's cachegrind, no cache simulation, hash seed
    fixed): deterministic to a few parts in a million where CPU seconds on a shared machine vary by tenths. A
    proxy, not a time: it counts no cache miss and no stall."""
    python = os.path.join(checkout, ".venv", "bin", "python")
    done = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                           python, "-m", "sensor", "replay", capture, "--rules", rules, "--out", out],
                          cwd=checkout, env={**os.environ, "PYTHONHASHSEED": "0"}, check=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in done.stderr.splitlines():
        if "I   refs:" in line or "I refs:" in line:
            return int(line.split(":")[1].replace(",", "").split()[0])
    raise SystemExit(f"per_hit: no instruction count in valgrind's output:\n{done.stderr[-500:]}")


def miss_rules(rules: str, path: str) -> int:
    """The same rule names, each pushed one label down: as many rules, none of which the capture hits. The file
    is rewritten only when its text changes: a rule file written moments ago is hashed again at every start until
    the rules cache trusts its memo (RACY_NS, sensor/rules/cache.py), which would put that hashing, ~100 M
    instructions, into the runs that do not hit and not into the others."""
    lines = []
    with open(rules, encoding="utf-8") as src:
        for line in src:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            prefix = "*." if line.startswith("*.") else ""
            lines.append(f"{prefix}miss-x.{line.removeprefix('*.')}\n")
    text = "".join(lines)
    try:
        with open(path, encoding="utf-8") as old:
            unchanged = old.read() == text
    except OSError:
        unchanged = False
    if not unchanged:
        with open(path, "w", encoding="utf-8") as dst:
            dst.write(text)
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--rules", type=int, default=100_000)
    parser.add_argument("--share", type=float, default=DEFAULT_SHARE, help="make_capture --rule-area-share")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base", metavar="DIR", help="another built checkout to measure in the same rounds")
    parser.add_argument("--work", metavar="DIR", help="where the capture goes (default: a temporary folder)")
    parser.add_argument("--instructions", action="store_true",
                        help="also count each replay's instructions once under valgrind (about 10 s a run)")
    args = parser.parse_args(argv)
    if args.instructions and shutil.which("valgrind") is None:
        raise SystemExit("per_hit: --instructions needs valgrind (apt-get install valgrind)")

    work = args.work or tempfile.mkdtemp(prefix="per-hit-")
    capture_json = os.path.join(work, "capture.json")
    if not os.path.exists(capture_json):
        subprocess.run([sys.executable, os.path.join(HERE, "make_capture.py"), "--packets", str(args.packets),
                        "--rules", str(args.rules), "--rule-area-share", str(args.share), "--out-dir", work],
                       check=True)
    with open(capture_json, encoding="utf-8") as handle:
        made = json.load(handle)
    capture = os.path.join(work, "capture.pcap")
    hit_rules = os.path.join(work, "rules.txt")
    nohit_rules = os.path.join(work, "rules-miss.txt")
    miss_rules(hit_rules, nohit_rules)

    checkouts = {"this": ROOT}
    if args.base:
        checkouts["base"] = os.path.abspath(args.base)
    for checkout in checkouts.values():
        compile_bytecode(checkout)
    out = os.path.join(work, "out.jsonl")
    hits = {}
    for name, checkout in checkouts.items():  # a warm-up run each, which also counts the hits
        replay(checkout, capture, hit_rules, out)
        with open(out, encoding="utf-8") as handle:
            hits[name] = sum(1 for _ in handle)
        replay(checkout, capture, nohit_rules, out)
        if os.path.getsize(out):
            raise SystemExit(f"per_hit: the no-hit rules hit in {checkout}")
    cpu: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, checkout in checkouts.items():
            for kind, rules in (("hit", hit_rules), ("miss", nohit_rules)):
                cpu.setdefault((name, kind), []).append(replay(checkout, capture, rules, out)[0])

    queries = made["counts"]["dns_queries"]
    print(f"capture: {made['packets']:,} frames, {queries:,} queries, {made['rules']:,} rules; "
          f"{args.rounds} interleaved rounds, medians of CPU s (user+sys)")
    per = {}
    for name in checkouts:
        hit, miss = statistics.median(cpu[(name, "hit")]), statistics.median(cpu[(name, "miss")])
        per[name] = (hit - miss) / max(hits[name], 1) * 1e6
        print(f"{name:>5} ({checkouts[name]}): {hits[name]:,} hits ({hits[name] / queries:.2%} of queries); "
              f"CPU hitting {hit:.3f} s, not hitting {miss:.3f} s -> {per[name]:.1f} us per hit")
    if "base" in per and per["this"] > 0:
        print(f"per hit: {per['base']:.1f} us -> {per['this']:.1f} us ({per['base'] / per['this']:.1f}x less)")
    if args.instructions:
        for name, checkout in checkouts.items():
            hit = instructions(checkout, capture, hit_rules, out)
            miss = instructions(checkout, capture, nohit_rules, out)
            print(f"{name:>5}: instructions hitting {hit:,}, not hitting {miss:,} -> "
                  f"{(hit - miss) / max(hits[name], 1):,.0f} a hit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
