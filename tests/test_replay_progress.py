"""The replay's progress line on a terminal (a real pty): it reaches 100% and ends with a newline before the
summary; with --query-log too, and the summary's time includes closing the sinks (the query log's last
transaction and segment) after the last frame."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

from test_dead_helpers import capture  # noqa: F401  (the generated capture fixture)

from conftest import ROOT


def replay_on_a_terminal(*args: str) -> str:
    """Run a replay with its standard error on a pty; everything it wrote there."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "sensor", "replay", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode()


def test_progress_reaches_100_percent_and_ends_its_line(capture, tmp_path):  # noqa: F811
    pcap, rules = capture
    screen = replay_on_a_terminal(pcap, "--rules", rules, "--out", str(tmp_path / "hits.jsonl"))
    assert re.search(r"capture\.pcap: 100,000 frames, 100\.0%\r?\n", screen), screen
    assert re.search(r"\n1 file\(s\): 100,000 packets", screen)


def test_progress_with_a_query_log_ends_its_line_and_the_time_includes_closing_it(capture, tmp_path):  # noqa: F811
    pcap, rules = capture
    screen = replay_on_a_terminal(pcap, pcap, pcap, "--rules", rules, "--out", str(tmp_path / "hits.jsonl"),
                                  "--query-log", str(tmp_path / "q.db"), "--summary-json", str(tmp_path / "s.json"))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert re.search(r"100\.0%\r?\n", screen), screen
    assert re.search(r"\nquery log .*: [\d,]+ queries written, 0 dropped", screen), screen
    shown = float(re.search(r"300,000 packets, [\d,]+ bytes in ([\d.]+) s", screen).group(1))
    assert shown >= summary["wait_seconds"] > 0
    parts = summary["decode_seconds"] + summary["wait_seconds"] + summary["rules"]["compile_seconds"]
    assert abs(summary["seconds"] - parts) < 0.001
