#!/usr/bin/env python3
"""Flood soak (issue 14): the memory budget under the floods that fill memory, PSS growth against the budget.

    python bench/flood_soak.py [--budgets 0,64,512] [--rounds 5] [--streams 2000]

Each flood capture is generated (bench/make_tcp_partials.py: TCP partial messages across many streams;
bench/make_amplification.py: query-log answer amplification, with --query-log) and fed `--rounds` times over
through stdin to `truesource replay - --memory-budget MB` (tests/memory.py). Printed per flood and budget: the
whole process tree's PSS idle after start-up, its peak while the flood goes in (sampled every 20 ms), the growth
and the growth as a share of the budget. Budget 0 is the control: every table at its own limit. Flapping
subscribers (the publisher's queues) are not part of this script.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
import make_amplification  # noqa: E402
import make_tcp_partials  # noqa: E402
from memory import replay_flood  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="0,64,512", help="--memory-budget values, MB, comma separated")
    parser.add_argument("--rounds", type=int, default=5, help="times each flood capture is fed in")
    parser.add_argument("--streams", type=int, default=2_000, help="TCP streams of the partial-message flood")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="truesource-flood-"))
    rules = tmp / "flood.rules"
    rules.write_text("example.com\n")
    tcp, amp = tmp / "tcp-partials.pcap", tmp / "amplification.pcap"
    make_tcp_partials.write(str(tcp), args.streams)
    make_amplification.write(str(amp), 15, 15, 110)
    floods = {
        f"TCP partial messages, {args.streams:,} streams": (tcp, [], 1),
        "query-log amplification": (amp, ["--query-log", str(tmp / "queries.db"), "--query-log-max-mb", "20"], 2),
    }
    print(f"flood soak: {args.rounds} round(s) of each flood, budgets {args.budgets} MB; PSS of the process tree")
    failed = False
    for name, (pcap, extra, processes) in floods.items():
        for mb in (float(b) for b in args.budgets.split(",")):
            for path in tmp.glob("queries.db*"):
                path.unlink()
            result = replay_flood(pcap, ["--rules", str(rules), "--out", "/dev/null", "--memory-budget", f"{mb:g}",
                                         *extra], processes=processes, rounds=args.rounds)
            share = f"{result.growth_mb / mb * 100:5.1f} % of the budget" if mb else "(no budget)"
            print(f"{name:40} budget {mb:5g} MB: idle {result.idle_kib / 1024:6.1f} MB, peak "
                  f"{result.peak_kib / 1024:6.1f} MB, growth {result.growth_mb:6.1f} MB {share}"
                  f"{'' if result.returncode == 0 else f'  exit {result.returncode}'}", flush=True)
            failed |= result.returncode != 0 or bool(mb and result.growth_mb > mb)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
