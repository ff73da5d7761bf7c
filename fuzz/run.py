"""Run one fuzz target under atheris (libFuzzer), or replay inputs through it.

    python -m fuzz.run TARGET [--runs N | --seconds S] [--seed N] [--corpus DIR] [--artifacts DIR]
    python -m fuzz.run TARGET --reproduce FILE...     run saved inputs once each (no fuzzer)
    python -m fuzz.run --list

The corpus directory is filled with the target's seeds first (shipped captures, peers' captures, rule files)
and with its saved regression inputs (fuzz/regressions/TARGET/); libFuzzer adds what it finds new. A finding
(an exception out of the target, a sanitizer report) is written under --artifacts and the exit code is non-zero.
With TRUESOURCE_FUZZ_EXT naming a sanitizer-instrumented build of sensor._loop (`make fuzz`), that build is
used and its C edges count in libFuzzer's `cov:`.

Without atheris (no clang to build it), the same target runs under hypothesis on the seeds and random bytes,
with a message saying so: fewer findings, but the target still runs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import sys
from pathlib import Path

from fuzz import common, registry

REGRESSIONS = Path(__file__).resolve().parent / "regressions"


def fill_corpus(corpus: Path, target) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    count = 0
    inputs = list(target.seeds())
    saved = REGRESSIONS / target.__name__.rsplit(".", 1)[-1]
    if saved.is_dir():
        inputs += [p.read_bytes() for p in sorted(saved.iterdir()) if p.is_file()]
    for data in inputs:
        path = corpus / hashlib.sha1(data).hexdigest()
        if not path.exists():
            path.write_bytes(data)
        count += 1
    return count


def reproduce(target, files: list[str]) -> int:
    failed = 0
    for name in files:
        try:
            target.fuzz_one(Path(name).read_bytes())
        except Exception as err:  # a finding: say which input and why, then go on to the next
            failed += 1
            print(f"{name}: {type(err).__name__}: {err}")
        else:
            print(f"{name}: ok")
    return 1 if failed else 0


def run_hypothesis(target, runs: int, seed: int) -> int:
    from hypothesis import given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    print("atheris is not installed (it needs clang): running the target under hypothesis instead, "
          "without coverage guidance", file=sys.stderr)
    for data in target.seeds():
        target.fuzz_one(data)
    seeds = list(target.seeds())[:200] or [b""]

    def patched(seed_and_patch: tuple[bytes, bytes, int]) -> bytes:
        """A seed with random bytes written over it at a random place: near-valid inputs, as a fuzzer makes."""
        data, patch, at = seed_and_patch
        at %= len(data) + 1
        return data[:at] + patch + data[at + len(patch):]

    mutated = st.tuples(st.sampled_from(seeds), st.binary(max_size=16), st.integers(0, 1 << 16)).map(patched)

    @hypothesis_seed(seed)
    @settings(max_examples=runs, deadline=None, database=None)
    @given(mutated | st.binary(max_size=2048))
    def check(data: bytes) -> None:
        target.fuzz_one(data)

    check()
    print(f"Done {runs} runs (hypothesis)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", choices=list(registry.TARGETS))
    parser.add_argument("--list", action="store_true", help="list the targets")
    parser.add_argument("--runs", type=int, default=0, help="stop after N mutated inputs (0: no limit)")
    parser.add_argument("--seconds", type=int, default=0, help="stop after S seconds (0: no limit)")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed (fixed: runs repeat)")
    parser.add_argument("--corpus", type=Path, help="corpus directory (default build/fuzz/corpus/TARGET)")
    parser.add_argument("--artifacts", type=Path, help="where findings go (default build/fuzz/findings/TARGET)")
    parser.add_argument("--reproduce", nargs="+", metavar="FILE", help="run these inputs once each")
    args, extra = parser.parse_known_args(argv)
    if args.list:
        print("\n".join(registry.TARGETS))
        return 0
    if args.target is None:
        parser.error("a target is required")
    try:
        import atheris
    except ImportError:
        atheris = None
    common.install_extension()  # after atheris: its libFuzzer must be there to take the build's counters
    if args.reproduce or atheris is None:
        target = registry.load(args.target)
        if args.reproduce:
            return reproduce(target, args.reproduce)
        return run_hypothesis(target, args.runs or 10_000, args.seed)
    with atheris.instrument_imports(include=["sensor"]):
        target = registry.load(args.target)
        for module in target.INSTRUMENT:  # imported here, so that the target's lazy imports find them instrumented
            importlib.import_module(module)
    build = common.ROOT / "build" / "fuzz"
    corpus = args.corpus or build / "corpus" / args.target
    artifacts = args.artifacts or build / "findings" / args.target
    artifacts.mkdir(parents=True, exist_ok=True)
    seeded = fill_corpus(corpus, target)
    print(f"{args.target}: {seeded} seed inputs in {corpus}", file=sys.stderr, flush=True)
    libfuzzer = [sys.argv[0], str(corpus), f"-seed={args.seed}", f"-artifact_prefix={artifacts}/",
                 "-timeout=20", "-rss_limit_mb=3072", "-print_final_stats=1", "-max_len=65536"]
    if args.runs:
        libfuzzer.append(f"-runs={args.runs}")
    if args.seconds:
        libfuzzer.append(f"-max_total_time={args.seconds}")
    atheris.Setup(libfuzzer + extra, target.fuzz_one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
