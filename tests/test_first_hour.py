"""What a new user trips over in the first hour (issue 17), each through the real `truesource` command."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli
from sensor.cli import build_parser

DEMO_PCAP = str(ROOT / "pcaps" / "demo-resolver.pcap")
DEMO_RULES = str(ROOT / "rules" / "demo.rules")


def _command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _command_paths(sub, (*path, name))
    return found


COMMANDS = _command_paths(build_parser())


def test_the_parser_walk_finds_every_command():
    names = {" ".join(p) for p in COMMANDS}
    assert {"", "replay", "capture", "tail", "keys generate", "profile", "who-asked", "rules test"} <= names


@pytest.mark.parametrize("command", COMMANDS, ids=lambda p: " ".join(p) or "truesource")
def test_item1_help_works_on_every_command(command):
    """`--help` crashed with KeyError 'default' wherever a help string said %(default)s."""
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: truesource {' '.join(command)}".rstrip()), result.stdout[:200]
    assert "%(default)s" not in result.stdout and result.stderr == ""


def test_item1_help_shows_the_real_defaults():
    result = run_cli("replay", "--help")
    assert "(default 10.0)" in " ".join(result.stdout.split())  # --wait-timeout's default, not SUPPRESS


@pytest.mark.parametrize("argv, names", [
    (("replay", DEMO_PCAP, "--rules", DEMO_RULES, "--no-such-option"), "--no-such-option"),
    (("replay", DEMO_PCAP), "--rules"),
    (("capture", "-i", "lo", "--rules", DEMO_RULES, "--workers", "0"), "--workers"),
    (("rules", "export", "--rules", DEMO_RULES, "--format", "bind"), "--format"),
    (("no-such-command",), "no-such-command"),
])
def test_item12_a_bad_option_is_one_line_not_a_usage_block(argv, names):
    result = run_cli(*argv)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert names in lines[0] and "--help" in lines[0] and "usage:" not in lines[0]


def test_item12_a_query_log_that_is_a_directory_is_named_in_one_line(tmp_path):
    for argv in (("replay", DEMO_PCAP, "--rules", DEMO_RULES, "--out", str(tmp_path / "h.jsonl")),
                 ("who-asked", "example.com"), ("hunt", "--rules", DEMO_RULES)):
        result = run_cli(*argv, "--query-log", str(tmp_path))
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [
            f"truesource: {tmp_path}: is a directory; --query-log takes a file (e.g. {tmp_path}/queries.db)"]
    assert not (tmp_path / "h.jsonl").exists() or (tmp_path / "h.jsonl").read_text() == ""


def test_item13_make_run_prints_the_demo_and_nothing_else():
    """`make run` (set up already, as after `make build`): the demo's hits and summary, no build noise."""
    made = subprocess.run(["make", "--no-print-directory", "run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert made.returncode == 0, made.stderr
    direct = run_cli("replay", "pcaps/demo-resolver.pcap", "--rules", "rules/demo.rules")
    assert made.stdout == direct.stdout and len(made.stdout.splitlines()) == 11
    assert strip_rates(made.stderr) == strip_rates(direct.stderr)


def test_item13_the_project_metadata_loads_without_deprecation_warnings():
    """setuptools warned twice per build that pyproject's license table is deprecated."""
    result = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "truesource"
    assert "Warning" not in result.stderr and "deprecated" not in result.stderr, result.stderr


def strip_rates(text: str) -> str:
    return re.sub(r"in [0-9.]+ s \([0-9,]+ packets/s\)", "in T s", text)
