"""A real ZeroMQ subscriber (`truesource tail`) receives exactly the hits that --out wrote."""

from __future__ import annotations

import subprocess
import sys

from conftest import PEERS, ROOT, run_cli

CAPTURES = [str(PEERS / name) for name in (
    "sv-dns-bug-1158-txt.pcap", "sv-dns-tcp-multirequest-buffer.pcap", "sv-datasets-08-vlan-ipv6.pcap")]


def test_subscriber_receives_what_out_wrote(tmp_path, endpoint):
    rules = tmp_path / "r.rules"
    rules.write_text("com\n")
    out = tmp_path / "hits.jsonl"
    tail = subprocess.Popen(
        [sys.executable, "-m", "sensor", "tail", "--connect", endpoint, "--topic", "dns.", "--idle-exit", "5"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        result = run_cli("replay", *CAPTURES, "--rules", str(rules), "--out", str(out), "--checksums", "off",
                         "--publish", endpoint, "--wait-subscribers", "1", "--wait-timeout", "20")  # offloaded peers
        received, errors = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert result.returncode == 0, result.stderr
    written = out.read_text().splitlines()
    assert len(written) == 81 + 20 + 3
    assert received.splitlines() == written, errors
    summary = f"publisher {endpoint}: {len(written)} sent, 0 undelivered (no subscriber), 0 dropped (queue full)"
    assert summary in result.stderr


def test_topic_filter_excludes_other_topics(tmp_path, endpoint):
    rules = tmp_path / "r.rules"
    rules.write_text("com\n")
    tail = subprocess.Popen(
        [sys.executable, "-m", "sensor", "tail", "--connect", endpoint, "--topic", "flow", "--idle-exit", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        result = run_cli("replay", CAPTURES[2], "--rules", str(rules), "--publish", endpoint,
                         "--wait-subscribers", "1", "--wait-timeout", "20")
        received, _ = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert result.returncode == 0 and result.stdout == ""
    assert received == ""
