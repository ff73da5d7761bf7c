"""The source distribution builds, installs into a fresh virtual environment, and replays there on the compiled
loop: the .pyx/.pxi sources ship (MANIFEST.in), the generated C does not (docs/decisions/0130)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import ROOT
from pcaps.regen_expected import RULES, comparable, expected_path, read_events

CAPTURE = "demo-resolver.pcap"

# Run in the fresh environment: the CLI as installed, then which loop module the run had loaded.
PROBE = """
import json, sys
from sensor.cli import main  # the console script's entry point
try:
    code = main(sys.argv[2:])
finally:
    loop = sys.modules.get("sensor._loop")
    with open(sys.argv[1], "w") as handle:
        json.dump({"compiled": getattr(loop, "__file__", None), "sensor": sys.modules["sensor"].__file__}, handle)
sys.exit(code)
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sdist_installs_into_a_fresh_venv_and_replays_on_the_compiled_loop(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (sdist,) = dist.glob("truesource-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {Path(*Path(name).parts[1:]).as_posix() for name in archive.getnames()}
    assert {"ext/loop.pyx", "ext/flows.pxi", "sensor/_loop.pyi", "setup.py", "README.md"} <= names
    assert "ext/loop.c" not in names  # generated at install from the .pyx, never a stale copy

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-v", str(sdist)],
                               capture_output=True, text=True, timeout=800)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    # issue 17 item 13: the build says nothing a user must wade through (the compiler's own output is still shown)
    build_output = installed.stdout + installed.stderr
    assert "[-Wsign-compare]" not in build_output and "license` as a TOML table is deprecated" not in build_output

    out, probe = tmp_path / "hits.jsonl", tmp_path / "probe.json"
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}  # no PYTHONPATH, no TRUESOURCE_PURE
    # -I: isolated, so the checkout (the working directory, for the rule paths the expected output names) is not
    # on sys.path
    run = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", PROBE, str(probe), "replay", f"pcaps/{CAPTURE}",
                          "--rules", RULES, "--out", str(out), "--no-progress"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    loaded = json.loads(probe.read_text())
    assert loaded["sensor"].startswith(str(venv)), loaded  # the installed package, not this checkout
    assert loaded["compiled"] and loaded["compiled"].startswith(str(venv)) and loaded["compiled"].endswith(".so")
    assert "reference decoder" not in run.stderr
    assert [comparable(event) for event in read_events(out)] == read_events(expected_path(CAPTURE))
