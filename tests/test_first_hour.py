"""What a new user trips over in the first hour (issue 17), each through the real `truesource` command."""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

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
    script = Path(sys.executable).parent / "truesource"  # the installed command, as a user runs it
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "sensor"]
    result = subprocess.run([*argv, *command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: truesource {' '.join(command)}".rstrip()), result.stdout[:200]
    assert "%(default)s" not in result.stdout and result.stderr == ""


def test_item1_help_shows_the_real_defaults():
    result = run_cli("replay", "--help")
    assert "(default 10.0)" in " ".join(result.stdout.split())  # --wait-timeout's default, not SUPPRESS


@pytest.mark.parametrize("argv, names, command", [
    (("replay", DEMO_PCAP, "--rules", DEMO_RULES, "--no-such-option"), "--no-such-option", "truesource replay"),
    (("replay", DEMO_PCAP), "--rules", "truesource replay"),
    (("capture", "-i", "lo", "--rules", DEMO_RULES, "--workers", "0"), "--workers", "truesource capture"),
    (("rules", "export", "--rules", DEMO_RULES, "--format", "bind"), "--format", "truesource rules export"),
    (("rules", "test", "--rules", DEMO_RULES, "--bogus", "a.example"), "--bogus", "truesource rules test"),
    (("no-such-command",), "no-such-command", "truesource"),
])
def test_item12_a_bad_option_is_one_line_not_a_usage_block(argv, names, command):
    result = run_cli(*argv)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{command}: error: ") and names in lines[0], lines[0]
    assert lines[0].endswith(f"(see `{command} --help`)") and "usage:" not in lines[0]


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
    if not (ROOT / ".venv" / ".built-ext").exists():
        pytest.skip("this checkout has no `make build` yet: make run would set up a venv first")
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


# A slow writer: the pcap header and the frames up to FRAMES at once, then nothing until its standard input
# closes, then the rest, as `tcpdump -U -w -` on a quiet link would.
SLOW_WRITER = """
import struct, sys
data = open(sys.argv[1], "rb").read()
frames, offset = int(sys.argv[2]), 24
for _ in range(frames):
    offset += 16 + struct.unpack_from("<I", data, offset + 8)[0]
out = sys.stdout.buffer
out.write(data[:offset]); out.flush()
sys.stdin.read()  # the test closes it once it has seen the hit
out.write(data[offset:]); out.flush()
"""


def test_item4_replay_from_a_pipe_shows_a_hit_before_input_ends():
    """A partial batch from a quiet pipe is decoded after --idle-flush-ms, not held until 4,096 frames."""
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, DEMO_PCAP, "30"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    reader = subprocess.Popen([sys.executable, "-m", "sensor", "replay", "-", "--rules", DEMO_RULES,
                               "--idle-flush-ms", "100"], cwd=ROOT, stdin=writer.stdout, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    writer.stdout.close()  # the reader holds the pipe now
    try:
        ready, _, _ = select.select([reader.stdout], [], [], 30)  # a generous deadline, met in about 0.1 s
        assert ready, "no hit within 30 s while the writer was quiet"
        first = json.loads(reader.stdout.readline())
        assert writer.poll() is None, "the writer ended first: this did not test a quiet pipe"
        assert first["dns"]["question"]["name"] == "login-verify.evil.example"
        assert first["truesource"]["capture"] == {"file": "<stdin>", "frame": 24}
        writer.stdin.close()
        # read through the same buffered file as the first line: a second hit flushed with the first is already
        # in its buffer, where communicate(), reading the raw pipe, would not see it
        rest = reader.stdout.read()
        err = reader.stderr.read()
        reader.wait(timeout=60)
    finally:
        for process in (writer, reader):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert reader.returncode == 0, err
    assert 1 + len(rest.splitlines()) == 11 and "11 hits" in err


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.skipif(os.geteuid() != 0, reason="copies the staged tree to its prefix under /opt, as a package would")
def test_item10_make_install_destdir_builds_a_tree_that_runs_at_its_prefix(tmp_path):
    """`make install DESTDIR=stage`: the staged venv names PREFIX, not the stage (its #! lines made every script
    fail with "bad interpreter" once copied to /)."""
    prefix = Path(f"/opt/truesource-test-{os.getpid()}")
    stage = tmp_path / "stage"
    env = {**os.environ, "TRUESOURCE_DEBUG": "1"}  # -O0: the test is about paths, and -O3 compiles for minutes
    made = subprocess.run(["make", "--no-print-directory", "install", f"DESTDIR={stage}", f"PREFIX={prefix}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    tree = stage / str(prefix).lstrip("/")
    staged = str(stage).encode()
    naming_stage = [path for path in tree.rglob("*") if path.is_file() and not path.is_symlink()
                    and "__pycache__" not in path.parts and staged in path.read_bytes()]
    assert naming_stage == [], naming_stage[:10]
    assert (tree / "bin" / "truesource").read_text().splitlines()[0] == f"#!{prefix}/bin/python"
    try:
        shutil.copytree(tree, prefix, symlinks=True)
        shutil.rmtree(stage)  # nothing may lean on it any more
        version = subprocess.run([str(prefix / "bin" / "truesource"), "--version"], capture_output=True, text=True,
                                 timeout=60)
        assert version.returncode == 0 and version.stdout.startswith("truesource "), version.stderr
        demo = subprocess.run([str(prefix / "bin" / "truesource"), "replay", DEMO_PCAP, "--rules", DEMO_RULES],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert demo.returncode == 0 and len(demo.stdout.splitlines()) == 11, demo.stderr
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


SHIPPED = sorted(p.name for p in (ROOT / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.parametrize("name", SHIPPED)
def test_item4_a_pipe_gives_what_the_file_gives(name):
    """Read frame by frame from a pipe, every shipped capture gives the file's hits, counts and exit code."""
    path = f"pcaps/{name}"
    from_file = run_cli("replay", path, "--rules", "pcaps/pcaps.rules", "--no-progress")
    with open(ROOT / path, "rb") as capture:
        cat = subprocess.Popen(["cat"], stdin=capture, stdout=subprocess.PIPE)  # a pipe, not a redirected file
        from_pipe = run_cli("replay", "-", "--rules", "pcaps/pcaps.rules", stdin=cat.stdout)
        cat.stdout.close()
        cat.wait(timeout=60)

    def hits_without_file(text: str) -> list[dict]:
        events = [json.loads(line) for line in text.splitlines()]
        for event in events:
            assert event["truesource"]["capture"].pop("file") in (path, "<stdin>")
        return events

    assert from_pipe.returncode == from_file.returncode
    assert hits_without_file(from_pipe.stdout) == hits_without_file(from_file.stdout)
    dns_line = [line for line in from_file.stderr.splitlines() if line.startswith("DNS: ")]
    assert dns_line == [line for line in from_pipe.stderr.splitlines() if line.startswith("DNS: ")]
