"""`truesource relay` stops promptly on SIGTERM, every time, with events flowing through it."""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, free_tcp_endpoint

ROUNDS = 20
STOP_LIMIT = 5.0  # seconds from SIGTERM to exit


def wait_for_line(proc: subprocess.Popen, stream, text: str, timeout: float = 60) -> None:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(0.2):
            line = stream.readline()
            if not line:
                break
            seen.append(line)
            if text in line:
                return
    proc.kill()
    raise AssertionError(f"no {text!r}: {''.join(seen)}")


def test_relay_stops_within_5_s_of_sigterm_under_load_20_times(tmp_path):
    """Load: a sensor stand-in publishing as fast as it can, a subscriber that reads everything, one whose pipe
    is never read (its queue fills to the high-water mark), a process burning a CPU; every other round the relay
    is a CURVE server (its ZAP handler and handshake monitor threads must stop too)."""
    keys = tmp_path / "keys"
    allow = tmp_path / "allow"
    allow.mkdir()
    for name in ("relay", "siem"):
        made = subprocess.run([sys.executable, "-m", "sensor", "keys", "generate", str(keys), "--name", name],
                              cwd=ROOT, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
    (allow / "siem.key").write_text((keys / "siem.key").read_text())
    curve_server = ["--curve-secret-key", str(keys / "relay.key_secret"), "--curve-allow", str(allow)]
    curve_client = ["--curve-server-key", str(keys / "relay.key"), "--curve-client-key", str(keys / "siem.key_secret")]
    upstream = free_tcp_endpoint()
    flooder = subprocess.Popen([sys.executable, str(Path(__file__).with_name("flooder.py")), upstream],
                               stdout=subprocess.PIPE, text=True)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    times = []
    try:
        wait_for_line(flooder, flooder.stdout, "ready")
        for round_ in range(ROUNDS):
            downstream = free_tcp_endpoint()
            server, client = (curve_server, curve_client) if round_ % 2 else ([], [])
            relay = subprocess.Popen([sys.executable, "-m", "sensor", "relay", "--bind", downstream, "--connect",
                                      upstream, *server], cwd=ROOT, stderr=subprocess.PIPE, text=True)
            tail = [sys.executable, "-m", "sensor", "tail", "--connect", downstream, "--idle-exit", "30", *client]
            readers = [subprocess.Popen(tail, cwd=ROOT, stdout=subprocess.PIPE, text=True),
                       subprocess.Popen(tail, cwd=ROOT, stdout=subprocess.PIPE)]
            try:
                wait_for_line(relay, relay.stderr, "relaying 1 sensor(s)")
                wait_for_line(readers[0], readers[0].stdout, "dns")  # events flow: the stop comes while they do
                sent = time.monotonic()
                relay.send_signal(signal.SIGTERM)
                try:
                    relay.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    relay.kill()
                    raise
                times.append(time.monotonic() - sent)
                assert relay.returncode == 0, relay.stderr.read()
            finally:
                for proc in (relay, *readers):
                    proc.kill()
                    proc.wait()
    finally:
        for proc in (flooder, burner):
            proc.kill()
            proc.wait()
    print(f"relay stop after SIGTERM, {len(times)} rounds: longest {max(times):.2f} s, "
          f"median {sorted(times)[len(times) // 2]:.2f} s")
    assert len(times) == ROUNDS
    assert max(times) <= STOP_LIMIT, times
