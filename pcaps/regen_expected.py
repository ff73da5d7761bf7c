"""Rewrite pcaps/<capture>.expected.jsonl from the sensor's output: `make expected`.

(Also `python -m pcaps.regen_expected`.)

Run it only on purpose, after reading the difference: tests/test_pcaps.py compares every replay with these
files, so what they hold is what the sensor is held to. Fields that depend on the host (`observer.*`) are
left out; capture and rule paths are relative to the repository root, where the replay runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
RULES = "pcaps/pcaps.rules"  # relative, so rule.ruleset is the same on every machine
HOST_FIELDS = ("observer",)  # the sensor's host name and version: not part of what a capture decodes to


def load_expectations() -> dict[str, dict[str, Any]]:
    with open(PCAPS / "expectations.toml", "rb") as handle:
        return tomllib.load(handle)["captures"]


def replay_command(name: str, expectation: dict[str, Any], out: Path, summary: Path) -> list[str]:
    """`python -m sensor replay` for one capture, as tests/test_pcaps.py runs it."""
    command = [sys.executable, "-m", "sensor", "replay", f"pcaps/{name}", "--rules", RULES,
               "--out", str(out), "--summary-json", str(summary), "--no-progress"]
    if "ports" in expectation:
        command += ["--ports", expectation["ports"]]
    for source in expectation.get("mirror_source", []):  # tunnels are decoded only from the named mirrors
        command += ["--mirror-source", source]
    return command


def replay(name: str, expectation: dict[str, Any], workdir: Path) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """Run the replay from the repository root; returns the process and the paths of its two outputs."""
    out, summary = workdir / f"{name}.jsonl", workdir / f"{name}.summary.json"
    process = subprocess.run(replay_command(name, expectation, out, summary), cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    return process, out, summary


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    """The event without the fields that depend on the host."""
    return {key: value for key, value in event.items() if key not in HOST_FIELDS}


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def expected_path(name: str) -> Path:
    return PCAPS / f"{name}.expected.jsonl"


def main() -> int:
    expectations = load_expectations()
    with tempfile.TemporaryDirectory() as tmp:
        for name, expectation in sorted(expectations.items()):
            process, out, _ = replay(name, expectation, Path(tmp))
            want = expectation.get("exit", 0)
            if process.returncode != want:
                print(f"{name}: exit {process.returncode}, expected {want}; not rewritten\n{process.stderr}",
                      file=sys.stderr)
                return 1
            events = [comparable(event) for event in read_events(out)]
            lines = "".join(json.dumps(event, separators=(",", ":")) + "\n" for event in events)
            expected_path(name).write_text(lines)
            print(f"{len(events):4d} events  {expected_path(name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
