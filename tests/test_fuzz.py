"""A short, deterministic fuzz run of every target (fuzz/registry.py), and every saved finding replayed.

Each target runs under atheris for FUZZ_TEST_RUNS inputs after its seed corpus (shipped and peer captures, rule
files), with a fixed seed: the same inputs on every run. Inside the frame targets the fast path is checked
against the reference decoder on every input. `make fuzz` runs the same targets for minutes on an
AddressSanitizer build of the fast path (docs/fuzzing.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import campaign, registry

ROOT = Path(__file__).resolve().parents[1]
FUZZ_TEST_RUNS = int(os.environ.get("FUZZ_TEST_RUNS", "3000"))
REGRESSIONS = ROOT / "fuzz" / "regressions"


def test_atheris_is_installed() -> None:
    """Without it the runner falls back to hypothesis (no coverage guidance): a skip that says so here, a failure
    on CI, where `make test` must really fuzz."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        message = ("atheris is not installed (pip install atheris; it needs clang): the fuzz targets ran under "
                   "hypothesis instead, without coverage guidance")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("target", list(registry.TARGETS))
def test_bounded_fuzz_run(target: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TRUESOURCE_FUZZ_EXT", "LD_PRELOAD")}
    process = subprocess.run(
        [sys.executable, "-m", "fuzz.run", target, "--runs", str(FUZZ_TEST_RUNS), "--seed", "7",
         "--corpus", str(tmp_path / "corpus"), "--artifacts", str(tmp_path / "findings")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    output = process.stdout + process.stderr
    findings = sorted((tmp_path / "findings").glob("*"))
    assert process.returncode == 0 and not findings, (
        f"{target}: exit {process.returncode}, findings {findings}; copy each into fuzz/regressions/{target}/ "
        f"and fix it:\n{output[-4000:]}")
    outcome = campaign.parse(target, process.returncode, output, 0)
    assert outcome.executions >= FUZZ_TEST_RUNS, output[-2000:]
    assert outcome.coverage > 50, f"{target}: only {outcome.coverage} edges: is the target instrumented?"


def saved_findings() -> list[Path]:
    return sorted(p for p in REGRESSIONS.glob("*/*") if p.is_file())


@pytest.mark.parametrize("finding", saved_findings(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_saved_finding_is_fixed(finding: Path) -> None:
    target = registry.load(finding.parent.name)
    target.fuzz_one(finding.read_bytes())


def test_every_target_has_the_interface() -> None:
    for name in registry.TARGETS:
        target = registry.load(name)
        assert callable(target.fuzz_one) and callable(target.seeds) and target.INSTRUMENT, name
        assert next(iter(target.seeds()), None) is not None, f"{name}: no seed inputs"
