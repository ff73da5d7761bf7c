#!/usr/bin/env python3
"""The query log under the amplification flood (issue 14): store size and memory while a replay writes it.

Makes the capture with bench/make_amplification.py (unless --capture is given), replays it with --query-log
and --query-log-max-mb, and samples every 50 ms the store's bytes on disk (the catalogue, its WAL and shared
memory, and the segment files) and the resident memory summed over the replay's process tree (the sensor, which
writes its query log itself since decision 0207). Prints the peaks, the final size, the summary line and the CPU
of the tree. Usage:

    python bench/querylog_flood.py [--udp-mb 29] [--tcp-mb 26] [--max-mb 50] [--sensor PATH-TO-CHECKOUT]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)


def tree(pid: int) -> list[int]:
    """The process and its descendants (from /proc's children lists)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def store_bytes(path: str) -> int:
    """The catalogue, its WAL and shared memory, and the segment files (schema 2, decision 0180)."""
    size = 0
    for name in [path + suffix for suffix in ("", "-wal", "-shm")] + [
            os.path.join(path + ".segments", f) for f in _listing(path + ".segments")]:
        try:
            size += os.path.getsize(name)
        except OSError:  # removed by retention meanwhile
            pass
    return size


def _listing(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def flood(capture: str, store: str, max_mb: float, root: str = ROOT, python: str = sys.executable,
          rules: str | None = None) -> dict:
    """Replay `capture` into `store` with the limit; peaks of the store's size and of the tree's RSS."""
    rules = rules or os.path.join(ROOT, "pcaps", "pcaps.rules")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    process = subprocess.Popen([python, "-m", "sensor", "replay", capture, "--rules", rules, "--no-progress",
                                "--out", "/dev/null", "--query-log", store, "--query-log-max-mb", str(max_mb)],
                               cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_store = peak_rss = 0
    while process.poll() is None:
        peak_store = max(peak_store, store_bytes(store))
        peak_rss = max(peak_rss, rss_bytes(tree(process.pid)))
        time.sleep(0.05)
    stderr = process.stderr.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"returncode": process.returncode, "wall_s": round(time.monotonic() - started, 2),
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
            "peak_store_mb": round(peak_store / 2**20, 1), "final_store_mb": round(store_bytes(store) / 2**20, 1),
            "peak_rss_mb": round(peak_rss / 2**20, 1), "limit_mb": max_mb,
            "summary": [line for line in stderr.splitlines() if "query log" in line or "rror" in line]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capture", help="an existing capture (default: made with make_amplification.py)")
    parser.add_argument("--udp-mb", type=float, default=29.0)
    parser.add_argument("--tcp-mb", type=float, default=26.0)
    parser.add_argument("--max-mb", type=float, default=50.0)
    parser.add_argument("--sensor", default=ROOT, help="the checkout to run (its .venv's Python if it has one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="truesource-flood-") as tmp:
        capture = args.capture
        if capture is None:
            capture = os.path.join(tmp, "amplification.pcap")
            subprocess.run([sys.executable, os.path.join(BENCH, "make_amplification.py"), capture,
                            "--udp-mb", str(args.udp_mb), "--tcp-mb", str(args.tcp_mb)], check=True)
        python = os.path.join(args.sensor, ".venv", "bin", "python")
        result = flood(capture, os.path.join(tmp, "q.db"), args.max_mb, args.sensor,
                       python if os.path.exists(python) else sys.executable)
    print(json.dumps(result, indent=1))
    return 0 if result["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
