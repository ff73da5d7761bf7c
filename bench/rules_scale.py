"""Rule-set scale: load time, resident memory and replay packets/s with 10, 100,000 and 1,000,000 rules.

Usage: python bench/rules_scale.py [--repeat 3] [--sizes 10,100000,1000000]

Each point is a whole `truesource replay` process over the benchmark capture (bench/make_capture.py, made if
missing). Load time and the loop's own time come from the replay's --summary-json; peak resident memory from
wait4(). The loop rate excludes loading, so the rule set's effect on the loop shows alone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


def rule_file(size: int, base: Path, hitting: bool) -> Path:
    """Random names up to `size`; with `hitting`, the benchmark's own rules (2,313 queries hit them) first.

    The loop's rate is compared on the non-hitting sets: every hit costs an event (~25 us of Python), so sets that
    hit different numbers of queries would measure the encoder, not the lookup."""
    path = OUT / f"scale-{size}{'-hitting' if hitting else ''}.rules"
    if path.exists():
        return path
    known = [line for line in base.read_text().splitlines() if line and not line.startswith("#")] if hitting else []
    rng = random.Random(size)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    with path.open("w") as handle:
        for line in known[:size]:
            handle.write(line + "\n")
        for i in range(size - min(size, len(known))):
            handle.write("".join(rng.choice(letters) for _ in range(10)) + f"{i}.scale.example\n")
    return path


def run_once(capture: Path, rules: Path) -> dict:
    summary = OUT / "scale-summary.json"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "sensor", "replay", str(capture), "--rules", str(rules),
                             "--out", "/dev/null", "--summary-json", str(summary), "--no-progress"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"replay failed: {proc.stderr.read().decode()}")
    data = json.loads(summary.read_text())
    packets = data["counters"]["packets"]
    return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "load": data["rules"]["load_seconds"],
            "compile": data["rules"]["compile_seconds"], "decode": data["decode_seconds"],
            "loop_pps": packets / data["decode_seconds"], "hits": data["counters"]["hits"],
            "rules": data["rules"]["rules"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="10,100000,1000000")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    capture, base = OUT / "capture.pcap", OUT / "rules.txt"
    if not capture.exists() or not base.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_capture.py"), "--out-dir", str(OUT)], check=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    points = [(size, False) for size in sizes] + [(max(sizes), True)]
    files = {point: rule_file(point[0], base, point[1]) for point in points}
    runs: dict[tuple, list[dict]] = {point: [] for point in points}
    for _ in range(args.repeat):  # interleaved, so a noisy neighbour hits every size alike
        for point in points:
            runs[point].append(run_once(capture, files[point]))
    print(f"capture: {capture.name}; {args.repeat} runs each, medians; machine: {os.cpu_count()} cores, shared")
    print(f"{'rules':>10} {'load s':>8} {'compile s':>9} {'peak RSS MB':>11} {'loop pkt/s':>12} {'vs fewest':>9} "
          f"{'hits':>6} {'whole s':>8}")
    results = {}
    first = None
    for point in points:
        size, hitting = point
        med = {key: statistics.median(run[key] for run in runs[point]) for key in runs[point][0]}
        first = first or med["loop_pps"]
        results[f"{size}{' hitting' if hitting else ''}"] = med
        label = f"{size:,}" + (" +hits" if hitting else "")
        print(f"{label:>10} {med['load']:>8.2f} {med['compile']:>9.2f} {med['rss_mb']:>11.0f} "
              f"{med['loop_pps']:>12,.0f} {med['loop_pps'] / first:>9.2f} {med['hits']:>6.0f} {med['wall']:>8.2f}")
    (OUT / "rules-scale.json").write_text(json.dumps(results, indent=1))
    biggest = results[str(max(sizes))]
    print(f"goals: {max(sizes):,} rules load <= 3 s: {biggest['load'] + biggest['compile']:.2f} s; "
          f"<= 300 MB: {biggest['rss_mb']:.0f} MB; loop rate within 20% of {min(sizes)} rules: "
          f"{biggest['loop_pps'] / first:.2f}")


if __name__ == "__main__":
    main()
