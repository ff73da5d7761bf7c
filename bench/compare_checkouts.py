"""Replay speed of two checkouts, interleaved in one run: `truesource replay` of bench/out/capture.pcap (made by
run.py if missing) with each checkout's own .venv and build, whole processes, CPU (user+sys) and wall medians and
their ratio. For a refactor that must not slow replay down: check out the base beside this one and build it
(`git worktree add /tmp/base main && make -C /tmp/base build`), then

    .venv/bin/python bench/compare_checkouts.py /tmp/base . --repeat 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402


def replay_once(root: str, capture: str, rules: str) -> tuple[float, float]:
    """Wall and CPU seconds of one replay by the checkout at `root`; exits on a failed run."""
    command = [os.path.join(root, ".venv", "bin", "python"), "-m", "sensor", "replay", capture, "--rules", rules,
               "--out", os.devnull]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    err = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{root}: replay failed: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the checkout measured against (built)")
    parser.add_argument("new", help="the checkout measured (built)")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each, taking turns")
    args = parser.parse_args()
    description = bench.ensure_capture(None, False)
    capture, rules = description["paths"]["capture.pcap"], description["paths"]["rules.txt"]
    bench.warm_cache(capture)
    roots = {"base": os.path.abspath(args.base), "new": os.path.abspath(args.new)}
    for root in roots.values():
        bench.compile_bytecode(root)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in roots}
    for _ in range(args.repeat):
        for name, root in roots.items():
            runs[name].append(replay_once(root, capture, rules))
    medians = {name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
               for name, v in runs.items()}
    for name, (wall, cpu) in medians.items():
        print(f"{name:4} {roots[name]}: median wall {wall:.3f} s, median CPU {cpu:.3f} s ({args.repeat} runs)")
    (base_wall, base_cpu), (new_wall, new_cpu) = medians["base"], medians["new"]
    print(f"new/base: wall {new_wall / base_wall:.3f}, CPU {new_cpu / base_cpu:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
