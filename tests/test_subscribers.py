"""Slow, absent and restarting subscribers, with real sockets and a real capture on a veth (tests/wire.py).

- a subscriber that never reads: capture does not wait (every frame decoded, no kernel drop), the publisher
  drops past its high-water mark and says so in the summary and in `sensor.stats`;
- `--out -` into a pipe nobody reads: capture does not wait either; the lines that did not fit are counted;
- a subscriber that goes away and a new one that connects: the new one receives events;
- no subscriber at all: nothing queued, nothing dropped, memory as without --publish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from conftest import PCAPS, ROOT

pytestmark = pytest.mark.netns

RULES = str(PCAPS / "pcaps.rules")
FLOOD = 6_000  # hit events of ~1 KB: past a 64 KiB pipe and the JSON-lines writer's 4 MiB buffer


@pytest.fixture(scope="module")
def flood_pcap(tmp_path_factory) -> str:
    """FLOOD queries that all hit `evil.example`, unique ports and names (scapy, written once)."""
    from pcaps.craft import DLT_EN10MB, Timeline, ether, write_pcap
    from pcaps.layers import q4

    t = Timeline(5000, step_usec=100)
    for i in range(FLOOD):
        t.add(ether() / q4(f"flood-{i:05d}-{'x' * 40}.evil.example", 10_000 + i % 50_000, dns_id=i & 0xFFFF))
    path = tmp_path_factory.mktemp("flood") / "flood.pcap"
    write_pcap(path, DLT_EN10MB, t.frames)
    return str(path)


def wait_started(proc: subprocess.Popen, timeout: float = 20) -> None:
    from test_capture_live import wait_started as started

    started(proc, timeout)


def stop(proc: subprocess.Popen, timeout: float = 30) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out, err


def subscriber(endpoint: str, topic: bytes, rcvhwm: int = 1000) -> zmq.Socket:
    socket = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, rcvhwm)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SUBSCRIBE, topic)
    socket.connect(endpoint)
    return socket


def receive_all(socket: zmq.Socket, idle: float = 1.5, limit: float = 60) -> list[tuple[str, dict]]:
    """Every event until `idle` seconds pass without one."""
    events = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and socket.poll(int(idle * 1000)):
        topic, line = socket.recv_multipart()
        events.append((topic.decode(), json.loads(line)))
    return events


def final_stats(events: list[tuple[str, dict]]) -> dict:
    finals = [e["truesource"]["stats"]["total"] for t, e in events
              if t == "sensor.stats" and e["truesource"]["stats"]["final"]]
    assert finals, "no final sensor.stats event"
    return finals[-1]


def start(wire, tmp_path: Path, *args: str, **kwargs) -> subprocess.Popen:
    proc = wire.start_capture("--rules", RULES, "--stats-interval", "0.5", "--buffer-mb", "2",
                              "--summary-json", str(tmp_path / "summary.json"), *args, **kwargs)
    wait_started(proc)
    return proc


def summary_counters(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "summary.json").read_text())["counters"]


def test_subscriber_that_never_reads_does_not_slow_capture(wire, tmp_path, flood_pcap):
    endpoint = f"ipc://{tmp_path}/events"  # a file socket: reachable across namespaces
    out = tmp_path / "hits.jsonl"
    proc = start(wire, tmp_path, "--publish", endpoint, "--publish-hwm", "50", "--out", str(out))
    stalled = subscriber(endpoint, b"dns.hit", rcvhwm=1)  # never reads
    stats = subscriber(endpoint, b"sensor.stats")
    try:
        time.sleep(1.0)
        wire.replay(flood_pcap, pps=3000)
        time.sleep(1.0)
        _, err = stop(proc)
        events = receive_all(stats)
    finally:
        stalled.close()
        stats.close()
    counters = summary_counters(tmp_path)
    assert counters["hits"] == FLOOD and counters["kernel_drops"] == 0, "the capture loop fell behind"
    assert len(out.read_text().splitlines()) == FLOOD
    total = final_stats(events)
    assert total["publisher_drops"] > FLOOD // 2, total["publisher_drops"]
    line = next(line for line in err.splitlines() if line.startswith(f"publisher {endpoint}:"))
    sent, _, dropped = (int(part.split()[0].replace(",", "")) for part in line.split(": ", 1)[1].split(", "))
    assert dropped >= total["publisher_drops"] and sent + dropped >= FLOOD, line


def test_out_pipe_nobody_reads_does_not_block_capture(wire, tmp_path, flood_pcap):
    """`--out -` into a pipe the test does not read until the capture has stopped: the loop goes on."""
    endpoint = f"ipc://{tmp_path}/events"
    proc = start(wire, tmp_path, "--publish", endpoint, "--out", "-")
    stats = subscriber(endpoint, b"sensor.stats")
    try:
        time.sleep(1.0)
        wire.replay(flood_pcap, pps=3000)
        time.sleep(1.0)
        live = receive_all(stats, idle=0.8, limit=3)  # statistics keep coming while stdout is full
        out, err = stop(proc)
        events = receive_all(stats)
    finally:
        stats.close()
    assert live, "no statistics while standard output was full: the loop is blocked"
    counters = summary_counters(tmp_path)
    assert counters["hits"] == FLOOD and counters["kernel_drops"] == 0, "the capture loop fell behind"
    total = final_stats(events)
    written = len(out.splitlines())
    assert total["out_drops"] > 0 and 0 < written < FLOOD
    assert written + counters["out_drops"] == FLOOD, (written, counters["out_drops"])
    assert f"--out -: {written:,} written, {counters['out_drops']:,} dropped" in err


def test_subscriber_that_reconnects_receives_again(wire, tmp_path):
    endpoint = f"ipc://{tmp_path}/events"
    proc = start(wire, tmp_path, "--publish", endpoint, "--out", str(tmp_path / "hits.jsonl"))
    pcap = str(PCAPS / "vlan.pcap")  # 6 hits
    try:
        first = subscriber(endpoint, b"dns.hit")
        time.sleep(1.0)
        wire.replay(pcap, pps=1000)
        before = receive_all(first)
        first.close()  # the subscriber goes away ...
        time.sleep(0.5)
        wire.replay(pcap, pps=1000)  # ... events while nobody listens are not kept for it
        time.sleep(0.5)
        second = subscriber(endpoint, b"dns.hit")  # ... and a new one (a restarted tail) connects
        time.sleep(1.0)
        wire.replay(pcap, pps=1000)
        after = receive_all(second)
        second.close()
    finally:
        stop(proc)
    assert len(before) == 6 and len(after) == 6
    assert [e["dns"]["question"]["name"] for _, e in after] == [e["dns"]["question"]["name"] for _, e in before]
    assert summary_counters(tmp_path)["hits"] == 18
    assert summary_counters(tmp_path)["publisher_drops"] == 0


def run_measured(argv: list[str], out: Path) -> tuple[int, int, str]:
    """Run a command; (exit code, peak resident memory in KiB from wait4, standard error)."""
    with open(out, "w") as stdout, open(f"{out}.err", "w+") as stderr:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        return proc.returncode, usage.ru_maxrss, stderr.read()


def test_no_subscriber_costs_nothing(tmp_path, flood_pcap):
    """With --publish and nobody subscribed, every event goes to no one at once: nothing queued, nothing dropped,
    the same output, and about the peak memory of a run without --publish (queued, the 60,000 events of ~1 KB
    would hold ~60 MB)."""
    replay = [sys.executable, "-m", "sensor", "replay", *[flood_pcap] * 10, "--rules", RULES, "--no-progress"]
    plain_code, plain_rss, _ = run_measured(replay, tmp_path / "plain.jsonl")
    endpoint = f"ipc://{tmp_path}/nobody"
    code, rss, err = run_measured([*replay, "--publish", endpoint, "--out", "-"], tmp_path / "published.jsonl")
    assert plain_code == code == 0, err
    assert (tmp_path / "plain.jsonl").read_text() == (tmp_path / "published.jsonl").read_text()
    assert f"publisher {endpoint}: {10 * FLOOD:,} sent, {10 * FLOOD:,} undelivered (no subscriber), 0 dropped" in err
    assert rss - plain_rss < 16 * 1024, (plain_rss, rss)
