"""`make fuzz`: every target (or those named) for S seconds each on the sanitizer-instrumented fast path.

    python -m fuzz.campaign [--seconds S] [--plain] [TARGET...]

Builds sensor._loop with `-fsanitize=fuzzer-no-link,address` (fuzz/build_instrumented.py), runs each target
with the ASan+libFuzzer runtime preloaded, and prints per target: executions, libFuzzer's edge coverage (`cov:`,
Python and C edges together; the C module alone has the counters the `Loaded N modules` line gives), corpus
size, and the findings written. `--plain` uses the in-place build (no sanitizer, Python edges only). Exit 1 if any
target found something.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass

from fuzz import build_instrumented, registry
from fuzz.common import ROOT

COVERAGE = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")
C_COUNTERS = re.compile(r"Loaded \d+ modules\s+\((\d+) inline 8-bit counters\)")
# -print_coverage=1 lines; the fast path's own functions (Cython's cdef functions of sensor._loop), not the
# module's Python glue: these are the edges of the decoder itself.
FUNCTION_COVERAGE = re.compile(r"^(?:UN)?COVERED_FUNC: hits: \d+ edges: (\d+)/(\d+) (__pyx_f_6sensor_5_loop_\S+)",
                               re.MULTILINE)


@dataclass
class Outcome:
    target: str
    code: int
    executions: int = 0
    coverage: int = 0
    features: int = 0
    corpus: int = 0
    c_counters: int = 0
    findings: int = 0
    decoder_edges: tuple[int, int] = (0, 0)  # covered, total: the fast path's C functions, over the corpus


def parse(target: str, code: int, output: str, findings: int) -> Outcome:
    outcome = Outcome(target, code, findings=findings)
    for match in COVERAGE.finditer(output):
        outcome.executions, outcome.coverage, outcome.features, outcome.corpus = map(int, match.groups())
    executed = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    if executed:
        outcome.executions = int(executed.group(1))
    counters = C_COUNTERS.search(output)
    if counters:
        outcome.c_counters = int(counters.group(1))
    return outcome


def run(target: str, seconds: int, env: dict[str, str], runs: int = 0, seed: int = 1) -> Outcome:
    artifacts = ROOT / "build" / "fuzz" / "findings" / target
    artifacts.mkdir(parents=True, exist_ok=True)
    before = set(artifacts.iterdir())
    limit = ["--runs", str(runs)] if runs else ["--seconds", str(seconds)]
    process = subprocess.run([sys.executable, "-m", "fuzz.run", target, *limit, "--seed", str(seed),
                              "--artifacts", str(artifacts)], cwd=ROOT, env=env, capture_output=True, text=True)
    output = process.stdout + process.stderr
    log = ROOT / "build" / "fuzz" / f"{target}.log"
    log.write_text(output)
    found = sorted(set(artifacts.iterdir()) - before)
    for path in found:
        print(f"{target}: finding {path} (log {log})", file=sys.stderr)
    return parse(target, process.returncode, output, len(found))


def decoder_coverage(target: str, env: dict[str, str]) -> tuple[int, int]:
    """Run the target's corpus once with -print_coverage=1 (instrumented build): C edges of the fast path's
    own functions covered, of all of them."""
    corpus = ROOT / "build" / "fuzz" / "corpus" / target
    process = subprocess.run([sys.executable, "-m", "fuzz.run", target, "--runs", "1", "--corpus", str(corpus),
                              "--artifacts", str(ROOT / "build" / "fuzz" / "findings" / target), "-print_coverage=1"],
                             cwd=ROOT, env=env, capture_output=True, text=True)
    found = FUNCTION_COVERAGE.findall(process.stdout + process.stderr)
    return sum(int(c) for c, _, _ in found), sum(int(t) for _, t, _ in found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.campaign", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", choices=[[], *registry.TARGETS], default=[])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "300")))
    parser.add_argument("--plain", action="store_true", help="the in-place build: no sanitizer, no C coverage")
    parser.add_argument("--coverage-only", action="store_true",
                        help="no fuzzing: only measure the C coverage of the corpora already in build/fuzz/corpus")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if not args.plain:
        runtime = build_instrumented.OUT / "asan_with_fuzzer.so"
        module = build_instrumented.OUT / f"_loop{sysconfig.get_config_var('EXT_SUFFIX')}"
        if not (args.coverage_only and runtime.exists() and module.exists()):
            runtime, module = build_instrumented.build_runtime(), build_instrumented.build()
        env.update(LD_PRELOAD=str(runtime), TRUESOURCE_FUZZ_EXT=str(module),
                   # leaks: CPython keeps objects to exit on purpose; quarantine: keep RSS within a small machine
                   ASAN_OPTIONS="detect_leaks=0:quarantine_size_mb=64:allocator_may_return_null=1")
    outcomes = []
    for target in args.targets or list(registry.TARGETS):
        if args.coverage_only:
            outcome = Outcome(target, 0)
        else:
            print(f"fuzzing {target} for {args.seconds} s ...", file=sys.stderr, flush=True)
            outcome = run(target, args.seconds, env)
        if not args.plain:
            outcome.decoder_edges = decoder_coverage(target, env)
        outcomes.append(outcome)
    print(f"{'target':<16}{'exit':>5}{'executions':>12}{'cov':>7}{'ft':>8}{'corpus':>8}"
          f"{'C counters':>12}{'findings':>10}  fast-path C edges covered")
    for o in outcomes:
        covered, total = o.decoder_edges
        share = f"{covered}/{total} ({covered / total:.0%})" if total else "-"
        print(f"{o.target:<16}{o.code:>5}{o.executions:>12}{o.coverage:>7}{o.features:>8}{o.corpus:>8}"
              f"{o.c_counters:>12}{o.findings:>10}  {share}")
    return 1 if any(o.code or o.findings for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
