"""Helpers that die are noticed: kill -9 of the real query-log writer (mid-replay, mid-live-capture) and of a real
capture worker ends the run with exit 1 and says what was lost, never hangs and never says 0 lost; a replay
stopped by SIGINT/SIGTERM ends like a capture (summary, "interrupted after frame N", exit 130, JSON written)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, poll

DEADLINE = 60.0  # generous: the machine is shared; every wait polls and ends as soon as the condition holds


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> tuple[str, str]:
    """A generated capture (100,000 frames, a realistic share of hits) and its rules."""
    out = tmp_path_factory.mktemp("dead-helpers")
    made = subprocess.run([sys.executable, str(ROOT / "bench" / "make_capture.py"), "--packets", "100000",
                           "--rules", "2000", "--out-dir", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert made.returncode == 0, made.stderr
    return str(out / "capture.pcap"), str(out / "rules.txt")


def children(pid: int) -> list[int]:
    """The direct children of a process (every thread's)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""



def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def gone(pid: int) -> bool:
    """The process has ended (reaped, or a zombie waiting for whoever adopted it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def query_log_writer(pid: int) -> int | None:
    """The sensor's query-log writer process: named `truesource-qlog` (forked), or spawned
    (`multiprocessing.spawn` in its command line)."""
    return next((c for c in children(pid) if comm(c) == "truesource-qlog" or "spawn_main" in cmdline(c)), None)


def lines_in(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except OSError:
        return 0


def ended(proc: subprocess.Popen, deadline: float = DEADLINE) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the sensor did not end after its helper died: {err}") from None


def lost_count(err: str) -> int:
    match = re.search(r"about ([\d,]+) lost", err)
    assert match, err
    return int(match.group(1).replace(",", ""))


def start_replay(capture: tuple[str, str], tmp_path: Path, *extra: str, copies: int = 30) -> subprocess.Popen:
    pcap, rules = capture
    return subprocess.Popen([sys.executable, "-m", "sensor", "replay", *[pcap] * copies, "--rules", rules,
                             "--out", str(tmp_path / "hits.jsonl"), "--summary-json", str(tmp_path / "s.json"),
                             "--no-progress", *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_query_log_writer_killed_mid_replay_ends_with_the_loss(capture, tmp_path):
    """kill -9 of the writer while a replay pushes to it: the replay notices, stops, exits 1 and says how many
    queries were not stored (it used to hang forever on a blocking send with no peer)."""
    proc = start_replay(capture, tmp_path, "--query-log", str(tmp_path / "q.db"))
    writer = poll(lambda: query_log_writer(proc.pid), "the writer process")
    poll(lambda: lines_in(tmp_path / "hits.jsonl") > 0, "the first hits")
    os.kill(writer, signal.SIGKILL)
    killed = time.monotonic()
    _, err = ended(proc)
    noticed = time.monotonic() - killed
    assert proc.returncode == 1, err
    assert "query-log writer process killed by signal 9" in err
    assert lost_count(err) > 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["failed"] is True
    # it stopped at once rather than reading all 30 copies (~3 M frames)
    assert summary["counters"]["packets"] < 30 * 100_000
    print(f"replay ended {noticed:.2f} s after the writer was killed")


def test_sensor_killed_mid_replay_leaves_no_writer_behind(capture, tmp_path):
    """kill -9 of the sensor while its writer stores: the writer stores what reached it and ends (it used to
    wait forever on its control pipe, whose other end its own fork still held); what it stored is committed."""
    import sqlite3

    proc = start_replay(capture, tmp_path, "--query-log", str(tmp_path / "q.db"))
    writer = poll(lambda: query_log_writer(proc.pid), "the writer process")
    poll(lambda: lines_in(tmp_path / "hits.jsonl") > 0, "the first hits")
    proc.kill()
    proc.wait()  # not communicate(): the writer holds the same stdout and stderr
    try:
        poll(lambda: gone(writer), "the writer's end", timeout=20.0)
    finally:
        if not gone(writer):
            os.kill(writer, signal.SIGKILL)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    with sqlite3.connect(tmp_path / "q.db") as db:
        assert db.execute("SELECT SUM(rows) FROM segments").fetchone()[0] > 0


def test_query_log_writer_out_of_memory_mid_replay_exits_1(capture, tmp_path):
    """The writer dies of MemoryError (its address space capped with prlimit while it works): exit 1 and the
    loss said, not exit 0."""
    proc = start_replay(capture, tmp_path, "--query-log", str(tmp_path / "q.db"))
    writer = poll(lambda: query_log_writer(proc.pid), "the writer process")
    poll(lambda: lines_in(tmp_path / "hits.jsonl") > 0, "the first hits")
    size_kb = int(re.search(r"VmSize:\s+(\d+)", Path(f"/proc/{writer}/status").read_text()).group(1))
    subprocess.run(["prlimit", f"--pid={writer}", f"--as={size_kb * 1024}"], check=True)
    _, err = ended(proc, deadline=120)
    assert proc.returncode == 1, err
    assert re.search(r"query-log writer process (exited with code 1|killed by signal)", err), err
    assert lost_count(err) > 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_replay_interrupted_ends_like_a_capture(capture, tmp_path, signum):
    """Ctrl-C (or a service manager's SIGTERM) during a replay: the summary, "interrupted after frame N",
    exit 130, --summary-json written, and the hits already written kept."""
    proc = start_replay(capture, tmp_path)
    poll(lambda: lines_in(tmp_path / "hits.jsonl") > 0, "the first hits")
    proc.send_signal(signum)
    _, err = ended(proc)
    assert proc.returncode == 130, err
    frames = int(re.search(r"interrupted after frame ([\d,]+)", err).group(1).replace(",", ""))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["interrupted_after_frame"] == frames > 0
    assert summary["counters"]["packets"] == frames < 30 * 100_000
    hits = (tmp_path / "hits.jsonl").read_text().splitlines()
    assert len(hits) == summary["counters"]["hits"] > 0
    assert all(json.loads(line)["dns"]["question"]["name"] for line in hits)


# --- live capture on a veth (tests/wire.py) ------------------------------------------------------------------

def start_live(wire, capture, tmp_path, *extra: str) -> tuple[subprocess.Popen, subprocess.Popen]:
    from test_capture_live import wait_started

    pcap, rules = capture
    proc = wire.start_capture("--rules", rules, "--out", str(tmp_path / "hits.jsonl"), "--summary-json",
                              str(tmp_path / "s.json"), *extra)
    wait_started(proc)
    sender = subprocess.Popen(["ip", "netns", "exec", wire.sender, "tcpreplay", "-q", "-i", wire.sender_iface,
                               "--pps", "5000", "--loop", "10", pcap], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    return proc, sender


@pytest.mark.netns
def test_query_log_writer_killed_mid_live_capture_ends_with_the_loss(wire, capture, tmp_path):
    """kill -9 of the writer during a live capture: the capture ends by itself with exit 1 and the loss (it used
    to run on and report "0 written, 0 dropped" though entries had been written and more lost)."""
    proc, sender = start_live(wire, capture, tmp_path, "--query-log", str(tmp_path / "q.db"))
    try:
        writer = poll(lambda: query_log_writer(proc.pid), "the writer process")
        poll(lambda: lines_in(tmp_path / "hits.jsonl") > 0, "the first hits")
        os.kill(writer, signal.SIGKILL)
        _, err = ended(proc)
    finally:
        sender.kill()
        sender.wait()
    assert proc.returncode == 1, err
    assert "query-log writer process killed by signal 9" in err
    assert lost_count(err) > 0


@pytest.mark.netns
def test_capture_worker_killed_ends_the_capture_with_exit_1(wire, capture, tmp_path):
    """kill -9 of one of two fanout workers: noticed at once, the capture ends with exit 1 and names the worker
    and what it took with it."""
    proc, sender = start_live(wire, capture, tmp_path, "--workers", "2")
    try:
        workers = poll(lambda: len(children(proc.pid)) == 2 and children(proc.pid), "two workers")
        poll(lambda: lines_in(tmp_path / "hits.jsonl") > 0, "the first hits")
        os.kill(workers[1], signal.SIGKILL)
        _, err = ended(proc)
    finally:
        sender.kill()
        sender.wait()
    assert proc.returncode == 1, err
    assert re.search(r"capture worker [01] killed by signal 9 \(SIGKILL\): lost what it had not reported", err), err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["counters"]["packets"] > 0
