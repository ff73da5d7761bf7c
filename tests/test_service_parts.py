"""The service's parts on their own: sd_notify datagrams and the watchdog interval, the journald log line, the
Prometheus text, the privilege-drop refusals. Real sockets and a real HTTP scrape; no systemd needed."""

from __future__ import annotations

import logging
import os
import socket
import urllib.request

import pytest

from conftest import free_tcp_endpoint, run_cli
from sensor.errors import StartupError
from sensor.service.logs import JournalFormatter
from sensor.service.metrics import MetricsServer, parse_address, render
from sensor.service.notify import Notifier
from sensor.service.privileges import check_identity
from sensor.stats import StatsBoard


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    yield sock, str(tmp_path / "notify")
    sock.close()


def test_notify_sends_datagrams_and_pings_at_half_the_interval(listener):
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    assert notifier.watchdog_interval == 2.0
    notifier.ready("capturing on eth1")
    assert sock.recv(4096) == b"READY=1\nSTATUS=capturing on eth1"
    notifier.tick(now=100.0)
    assert sock.recv(4096) == b"WATCHDOG=1"
    notifier.tick(now=100.9)  # before half the interval: nothing
    notifier.tick(now=101.0)
    assert sock.recv(4096) == b"WATCHDOG=1"
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(4096)
    notifier.close()


def test_notify_abstract_socket_and_watchdog_meant_for_another_process():
    name = f"truesource-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
        assert notifier.watchdog_interval is None  # WATCHDOG_PID names another process
        notifier.send("STOPPING=1")
        assert sock.recv(4096) == b"STOPPING=1"
    finally:
        sock.close()
    assert not Notifier({}).enabled  # outside systemd: nothing to do


def test_journal_line_has_priority_and_key_values_on_one_line():
    formatter = JournalFormatter()
    record = logging.LogRecord("truesource", logging.WARNING, __file__, 1, "refused %s", ("a\nb",), None)
    record.fields = {"event": "curve_refuse", "peer": "10.0.0.9", "detail": "two words"}
    assert formatter.format(record) == ('<4>truesource: refused a | b event=curve_refuse peer=10.0.0.9 '
                                        'detail="two words"')


def test_metrics_endpoint_serves_prometheus_text():
    board = StatsBoard(1)
    board.update(0, {"packets": 10, "hits": 3, "bytes": 900, "not_ip": 2}, (10, 1, 0))
    board.rules_loaded = 5
    text = render(board.snapshot(7, 2))
    assert "truesource_packets_total 10" in text and 'truesource_drops_total{cause="kernel"} 1' in text
    assert 'truesource_drops_total{cause="publisher"} 2' in text
    assert 'truesource_undecoded_total{reason="not_ip"} 2' in text
    for line in text.splitlines():  # the exposition format: comments, or NAME{LABELS} VALUE
        assert line.startswith("# ") or len(line.split()) == 2
    address = "127.0.0.1:" + free_tcp_endpoint().rsplit(":", 1)[1]
    server = MetricsServer(address, lambda: board.snapshot(7, 2))
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert "truesource_rules_loaded 5" in response.read().decode()
    finally:
        server.close()


@pytest.mark.parametrize("text", ["127.0.0.1", "localhost:9100", "127.0.0.1:0", "127.0.0.1:70000"])
def test_metrics_address_must_be_ip_and_port(text):
    with pytest.raises(ValueError):
        parse_address(text)


def test_metrics_bad_address_on_the_command_line_and_in_the_file(tmp_path):
    result = run_cli("capture", "-i", "lo", "--rules", "rules/demo.rules", "--metrics", "localhost:9100")
    assert result.returncode == 2 and "--metrics" in result.stderr
    config = tmp_path / "sensor.toml"
    config.write_text('[capture]\nmetrics = "localhost:9100"\n')
    result = run_cli("config", "check", str(config))
    assert result.returncode == 2 and "capture.metrics" in result.stderr and "not an IP address" in result.stderr


def test_unknown_user_or_group_is_refused_before_anything_opens():
    with pytest.raises(StartupError, match="no such user"):
        check_identity("no-such-user-truesource", None)
    with pytest.raises(StartupError, match="no such group"):
        check_identity(None, "no-such-group-truesource")
