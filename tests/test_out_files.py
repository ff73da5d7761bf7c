"""--out files as an operator meets them: failed starts, restarts, log rotation, full disks (a real small tmpfs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import PCAPS, ROOT, poll, run_cli

DEMO = str(PCAPS / "demo-resolver.pcap")
RULES = str(PCAPS / "pcaps.rules")
DEMO_HITS = 11
OLD = '{"kept": "a line a log shipper has not read yet"}\n'



@pytest.fixture
def small_disk(tmp_path):
    """A 16 KiB tmpfs: room for about 15 hit events."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("mounting a tmpfs needs root")
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def unchanged(path: Path, stat_before: os.stat_result) -> bool:
    after = path.stat()
    return path.read_text() == OLD and after.st_mtime_ns == stat_before.st_mtime_ns


@pytest.mark.parametrize("fault", ["missing capture", "bad rule line", "endpoint in use", "summary unwritable",
                                   "no subscriber"])
def test_failed_replay_start_leaves_existing_out_untouched(tmp_path, fault, endpoint):
    out = tmp_path / "hits.jsonl"
    out.write_text(OLD)
    before = out.stat()
    rules = tmp_path / "r.rules"
    rules.write_text("com\nnot a rule line !!\n" if fault == "bad rule line" else "com\n")
    files = [str(tmp_path / "missing.pcap")] if fault == "missing capture" else [DEMO]
    extra: list[str] = []
    blocker = None
    if fault == "endpoint in use":
        import zmq

        blocker = zmq.Context.instance().socket(zmq.PUB)
        blocker.bind(endpoint)
        extra = ["--publish", endpoint]
    elif fault == "summary unwritable":
        extra = ["--summary-json", str(tmp_path / "no-such-dir" / "summary.json")]
    elif fault == "no subscriber":
        extra = ["--publish", endpoint, "--wait-subscribers", "1", "--wait-timeout", "0.5"]
    try:
        result = run_cli("replay", *files, "--rules", str(rules), "--out", str(out), *extra)
    finally:
        if blocker is not None:
            blocker.close(linger=0)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert unchanged(out, before)


def test_summary_json_unwritable_is_refused_before_any_hit(tmp_path):
    result = run_cli("replay", DEMO, "--rules", RULES, "--summary-json", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""  # checked before the run: no hit printed
    assert f"--summary-json {tmp_path}: is a directory" in result.stderr


def test_replay_out_truncates_after_the_checks(tmp_path):
    out = tmp_path / "hits.jsonl"
    out.write_text(OLD)
    result = run_cli("replay", DEMO, "--rules", RULES, "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == DEMO_HITS and OLD.strip() not in lines


def test_full_disk_on_replay_out_counts_drops_names_the_file_and_keeps_publishing(small_disk, tmp_path, endpoint):
    out = small_disk / "hits.jsonl"
    copies = 10
    tail = subprocess.Popen([sys.executable, "-m", "sensor", "tail", "--connect", endpoint, "--topic", "dns.hit",
                             "--idle-exit", "5"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        result = run_cli("replay", *[DEMO] * copies, "--rules", RULES, "--out", str(out), "--publish", endpoint,
                         "--wait-subscribers", "1", "--wait-timeout", "30", "--summary-json",
                         str(tmp_path / "summary.json"))
        received, _ = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert result.returncode == 1, result.stderr
    assert "internal error" not in result.stderr
    written = out.read_text().splitlines()
    assert 0 < len(written) < DEMO_HITS * copies
    assert all(json.loads(line) for line in written)  # a line cut in half was taken back
    dropped = DEMO_HITS * copies - len(written)
    assert f"--out {out}: {len(written)} written, {dropped} dropped (the disk was full)" in result.stderr
    assert result.stderr.count("No space left on device") == 1  # said once, not once a line
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"--out {out}: {dropped} event lines lost (the disk was full)")
    assert len(received.splitlines()) == DEMO_HITS * copies  # the publisher lost nothing
    counters = json.loads((tmp_path / "summary.json").read_text())["counters"]
    assert counters["hits"] == counters["publisher_sent"] == DEMO_HITS * copies
    assert counters["out_drops"] == dropped and counters["publisher_undelivered"] == 0


# --- live capture: appends, reopens on SIGHUP, survives a full disk --------------------------------------------

def start(wire, *args: str) -> subprocess.Popen:
    from test_capture_live import wait_started

    proc = wire.start_capture("--rules", RULES, *args)
    wait_started(proc)
    return proc


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.netns
def test_capture_restart_appends_to_out(wire, tmp_path):
    from test_capture_live import stop

    out = tmp_path / "hits.jsonl"
    out.write_text(OLD)
    proc = start(wire, "--out", str(out))
    try:
        wire.replay(DEMO, pps=2000)
        poll(lambda: line_count(out) == 1 + DEMO_HITS, "the hits in --out")
    finally:
        stop(proc)
    lines = out.read_text().splitlines()
    assert lines[0] == OLD.strip() and len(lines) == 1 + DEMO_HITS


@pytest.mark.netns
def test_capture_reopens_out_on_sighup_after_logrotate(wire, tmp_path):
    from test_capture_live import stop

    out = tmp_path / "hits.jsonl"
    proc = start(wire, "--out", str(out))
    try:
        wire.replay(DEMO, pps=2000)
        poll(lambda: line_count(out) == DEMO_HITS, "the first hits")
        rotated = tmp_path / "hits.jsonl.1"
        out.rename(rotated)  # what logrotate does, then it sends SIGHUP (postrotate)
        proc.send_signal(signal.SIGHUP)
        poll(lambda: out.exists(), "the reopened file")
        wire.replay(DEMO, pps=2000)
        poll(lambda: line_count(out) == DEMO_HITS, "hits in the new file")
    finally:
        _, err = stop(proc)
    assert line_count(rotated) == DEMO_HITS
    assert f"--out {out}: reopened" in err


@pytest.mark.netns
def test_full_disk_on_capture_out_drops_lines_and_keeps_capturing_and_publishing(wire, small_disk, tmp_path):
    from test_capture_live import stop

    out = small_disk / "hits.jsonl"
    endpoint = f"ipc://{tmp_path}/events"  # a file socket: reachable across namespaces
    rounds = 4
    proc = start(wire, "--out", str(out), "--publish", endpoint, "--summary-json", str(tmp_path / "s.json"),
                 "--stats-interval", "0.2")
    tail = subprocess.Popen([sys.executable, "-m", "sensor", "tail", "--connect", endpoint, "--topic", "dns.hit",
                             "--topic", "sensor.stats", "--with-topic", "--idle-exit", "60"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(tail.stdout), daemon=True)
    reader.start()
    try:
        poll(lambda: any(line.startswith("sensor.stats ") for line in lines), "the subscriber to join")
        for _ in range(rounds):
            wire.replay(DEMO, pps=2000)
        poll(lambda: sum(line.startswith("dns.hit ") for line in lines) >= DEMO_HITS * rounds, "every hit")
        assert proc.poll() is None, "the capture died of the full disk"
    finally:
        tail.kill()
        out_text, err = stop(proc)
    received = [line for line in lines if line.startswith("dns.hit ")]
    written = line_count(out)
    assert 0 < written < DEMO_HITS * rounds
    assert len(received) == DEMO_HITS * rounds
    assert err.count("No space left on device") == 1 and f"--out {out}" in err
    assert f"--out {out}: {written} written, {DEMO_HITS * rounds - written} dropped (the disk was full)" in err
    counters = json.loads((tmp_path / "s.json").read_text())["counters"]
    assert counters["out_drops"] == DEMO_HITS * rounds - written


def test_failed_capture_start_leaves_existing_out_untouched(tmp_path):
    out = tmp_path / "hits.jsonl"
    out.write_text(OLD)
    before = out.stat()
    result = run_cli("capture", "-i", "no-such-if0", "--rules", RULES, "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert unchanged(out, before)


def test_full_disk_under_stdout_redirection_is_counted_not_an_internal_error(small_disk):
    target = small_disk / "stdout.jsonl"
    with open(target, "w") as stdout:
        result = subprocess.run([sys.executable, "-m", "sensor", "replay", *[DEMO] * 10, "--rules", RULES],
                                cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "internal error" not in result.stderr
    written = target.read_text().splitlines()
    assert all(json.loads(line) for line in written)
    assert f"--out -: {len(written)} written, {DEMO_HITS * 10 - len(written)} dropped (the disk was full)" \
        in result.stderr


@pytest.mark.netns
def test_failed_capture_start_leaves_trace_file_untouched_and_a_good_one_writes_it(wire, tmp_path):
    from test_capture_live import stop

    trace = tmp_path / "trace.jsonl"
    trace.write_text(OLD)
    before = trace.stat()
    bad = run_cli("capture", "-i", "no-such-if0", "--rules", RULES, "--trace-messages", str(trace))
    assert bad.returncode == 2 and unchanged(trace, before)
    proc = start(wire, "--trace-messages", str(trace))
    try:
        wire.replay(DEMO, pps=2000)
        poll(lambda: trace.read_text() != OLD, "the trace")
    finally:
        stop(proc)
    lines = trace.read_text().splitlines()
    assert lines and OLD.strip() not in lines and all(json.loads(line)["name"] for line in lines)


@pytest.mark.parametrize("fault", ["missing capture", "no subscriber"])
def test_failed_replay_start_creates_no_query_log_or_flow_store(tmp_path, fault, endpoint):
    files = [str(tmp_path / "missing.pcap")] if fault == "missing capture" else [DEMO]
    extra = ["--publish", endpoint, "--wait-subscribers", "1", "--wait-timeout", "0.5"] if fault == "no subscriber" \
        else []
    result = run_cli("replay", *files, "--rules", RULES, "--query-log", str(tmp_path / "q.db"),
                     "--flow-store", str(tmp_path / "store"), *extra)
    assert result.returncode == 2, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
