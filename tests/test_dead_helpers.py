"""Helpers that die are noticed: kill -9 of the real query-log writer (mid-live-capture) and of a real capture
worker ends the run with exit 1 and says what was lost, never hangs and never says 0 lost; a replay, which writes
its query log itself, keeps what it committed when killed and says what a full disk cost it; a replay stopped by
SIGINT/SIGTERM ends like a capture (summary, "interrupted after frame N", exit 130, JSON written)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
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


def test_sensor_killed_mid_replay_keeps_what_it_committed(capture, tmp_path):
    """kill -9 of a replay that writes its query log itself (decision 0207): what it committed reads back, and the
    next writer cuts the open segment back to its last commit and goes on (decision 0180's recovery)."""
    import sqlite3

    path = tmp_path / "q.db"
    proc = start_replay(capture, tmp_path, "--query-log", str(path))
    poll(lambda: path.exists() and committed_rows(path) > 0, "the first committed queries")
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    kept = committed_rows(path)
    again = subprocess.run([sys.executable, "-m", "sensor", "replay", capture[0], "--rules", capture[1], "--out",
                            os.devnull, "--no-progress", "--query-log", str(path)], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    written = int(re.search(r"query log .*: ([\d,]+) queries written", again.stderr).group(1).replace(",", ""))
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT SUM(rows) FROM segments").fetchone()[0] == kept + written
    listed = subprocess.run([sys.executable, "-m", "sensor", "who-asked", "--query-log", str(path), "--json",
                             "--subdomains", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr


def committed_rows(path: Path) -> int:
    """Queries the catalogue says are stored (0 before the first commit, or while the catalogue is created)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT COALESCE(SUM(rows), 0) FROM segments").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root to mount a small tmpfs")
def test_replay_query_log_on_a_full_disk_exits_1_and_counts_what_it_could_not_store(capture, tmp_path):
    """A replay's store fills its disk (a 6 MiB tmpfs) after its first transaction: the replay reads to the end,
    exits 1, says the error once and how many queries were not stored; what was committed reads back, and with
    what was not stored it makes every entry the same replay stores on a disk with room."""
    pcap, rules = capture
    roomy = subprocess.run([sys.executable, "-m", "sensor", "replay", pcap, "--rules", rules, "--out", os.devnull,
                            "--no-progress", "--query-log", str(tmp_path / "q.db")], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert roomy.returncode == 0, roomy.stderr
    entries = int(re.search(r"query log .*: ([\d,]+) queries written", roomy.stderr).group(1).replace(",", ""))
    small = tmp_path / "small"
    small.mkdir()
    count = (f"import sqlite3; print(sqlite3.connect('file:{small}/q.db?mode=ro', uri=True)"
             ".execute('SELECT SUM(rows) FROM segments').fetchone()[0])")
    shell = (f"mount -t tmpfs -o size=6m none {small} && {sys.executable} -m sensor replay {pcap} --rules {rules} "
             f"--out /dev/null --no-progress --query-log {small / 'q.db'}; "
             f"echo exit=$?; {sys.executable} -c \"{count}\"")
    result = subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert "exit=1" in result.stdout, result.stderr
    assert result.stderr.count("No space left on device") == 1, result.stderr
    lost = int(re.search(r"query log: OSError: .*\(([\d,]+) queries not stored\)", result.stderr)
               .group(1).replace(",", ""))
    stored = int(result.stdout.split()[-1])
    assert lost > 0 and stored > 0
    assert stored + lost == entries


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
