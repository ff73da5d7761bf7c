#!/usr/bin/env python3
"""Where a hit's time goes, in process: the bench hit capture decoded once into its records, then the steps a
hit takes after the loop, each timed over all the capture's hits, compiled path against its twin in one run.

    .venv/bin/python bench/hit_split.py [--rounds 7]

Steps (microseconds a hit, medians over --rounds, each round with a fresh encoder and attribution):
  link        ResolverAttribution.linker (compiled window, ext/attribution.pxi) vs .link (the twin)
  lines cold  HitEncoder.hit_lines over the capture once: half the hits' names are new (their fragments made)
  lines warm  the same again: every name's fragments kept
The lines use the compiled writer (ext/hitline.pxi) or, for the twin, HitLines.line. The Public Suffix List is
loaded before timing; the records are made before timing (the loop's and records_of's cost is not here). A whole
process's cost per hit is bench/per_hit.py's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)

import pcapy  # noqa: E402
from run import ensure_hit_capture  # noqa: E402

from sensor import heap, suffixes  # noqa: E402
from sensor.attribution import ResolverAttribution  # noqa: E402
from sensor.events import HitEncoder, Observer, Origin  # noqa: E402
from sensor.loop import compile_rules, make_loop  # noqa: E402
from sensor.messages import records_of  # noqa: E402
from sensor.rules.cache import load_rule_set  # noqa: E402

BATCH_FRAMES = 4096


def hit_batches(capture: str, rules_path: str) -> tuple[list, object]:
    """The capture's hit records, batch by batch as the runner hands them on."""
    ruleset = load_rule_set([rules_path])
    reader = pcapy.open_offline(capture)
    loop = make_loop(reader.datalink(), (53,), compile_rules(ruleset))
    batches, first = [], 1
    while True:
        data, meta = reader.next_batch(BATCH_FRAMES)
        if not meta:
            break
        batches.append(records_of(loop.run_batch(data, meta, first)))
        first += len(meta) // 16
    return batches, ruleset


def per_hit(seconds: float, hits: int) -> float:
    return seconds / hits * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    made = ensure_hit_capture(None, False)
    capture, rules = made["paths"]["capture.pcap"], made["paths"]["rules.txt"]
    batches, ruleset = hit_batches(capture, rules)
    hits = sum(1 for batch in batches for record in batch if record.rule >= 0)
    origin = Origin(capture_file=capture)
    suffixes.domain_parts("example.com")  # the Public Suffix List loaded once, outside the timings
    heap.settle()
    clock = time.perf_counter
    figures: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for path in ("compiled", "twin"):
            attribution = ResolverAttribution()
            link = attribution.linker if path == "compiled" else attribution.link
            started = clock()
            for batch in batches:
                for record in batch:
                    if record.rule >= 0:
                        link(record)
            figures.setdefault((path, "link"), []).append(per_hit(clock() - started, hits))
            encoder = HitEncoder(ruleset, Observer.local("bench"))
            if path == "twin":
                encoder._lines.write_line = encoder._lines.line  # HitLines' own twin in place of the writer
            for step in ("lines cold", "lines warm"):
                started = clock()
                for batch in batches:
                    encoder.hit_lines(batch, origin, None)
                figures.setdefault((path, step), []).append(per_hit(clock() - started, hits))
    print(f"{hits:,} hits of {capture}; medians of {args.rounds} rounds, us a hit")
    print(f"{'step':<12} {'compiled':>9} {'twin':>9}")
    for step in ("link", "lines cold", "lines warm"):
        compiled = statistics.median(figures[("compiled", step)])
        twin = statistics.median(figures[("twin", step)])
        print(f"{step:<12} {compiled:9.2f} {twin:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
