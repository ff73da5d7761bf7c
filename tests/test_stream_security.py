"""The secured event stream: CURVE with an allowlist, the plaintext guard, and the relay of several sensors.

Real sensors (replays with --publish), real subscribers (`truesource tail`), real keys from `truesource keys`.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time

from conftest import ROOT, free_tcp_endpoint, run_cli

DEMO = "pcaps/demo-resolver.pcap"
RULES = "rules/demo.rules"


def keys(directory, *names) -> None:
    for name in names:
        result = run_cli("keys", "generate", str(directory), "--name", name)
        assert result.returncode == 0, result.stderr


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sensor", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def demo_hits() -> list[str]:
    result = run_cli("replay", DEMO, "--rules", RULES)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} did not finish; stderr: {err}") from None


def read_until(proc: subprocess.Popen, wanted: list[str], timeout: float) -> str:
    """Standard error of a running process until every wanted text has appeared (or the time is up)."""
    seen = []
    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(any(w in line for line in seen) for w in wanted):
        if selector.select(0.2):
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
    selector.close()
    return "".join(seen)


def test_keys_generate_writes_a_key_pair_and_refuses_to_overwrite(tmp_path):
    keys(tmp_path, "sensor")
    assert (tmp_path / "sensor.key").read_text().count("public-key") == 1
    secret = tmp_path / "sensor.key_secret"
    assert "secret-key" in secret.read_text() and secret.stat().st_mode & 0o077 == 0
    again = run_cli("keys", "generate", str(tmp_path), "--name", "sensor")
    assert again.returncode == 2 and "not overwriting" in again.stderr


def test_curve_allowed_key_receives_hits_no_key_and_unknown_key_nothing(tmp_path):
    keys(tmp_path / "server", "sensor")
    keys(tmp_path / "clients", "siem", "stranger")
    allow = tmp_path / "allow"
    allow.mkdir()
    (allow / "siem.key").write_text((tmp_path / "clients" / "siem.key").read_text())
    endpoint = free_tcp_endpoint()
    expected = demo_hits()
    assert expected
    server_key = str(tmp_path / "server" / "sensor.key")
    no_key = start("tail", "--connect", endpoint, "--topic", "dns.hit", "--idle-exit", "12")
    stranger = start("tail", "--connect", endpoint, "--topic", "dns.hit", "--idle-exit", "12",
                     "--curve-server-key", server_key, "--curve-client-key",
                     str(tmp_path / "clients" / "stranger.key_secret"))
    sensor = start("replay", DEMO, "--rules", RULES, "--publish", endpoint, "--wait-subscribers", "1",
                   "--wait-timeout", "60", "--curve-secret-key", str(tmp_path / "server" / "sensor.key_secret"),
                   "--curve-allow", str(allow))
    stranger_key = (tmp_path / "clients" / "stranger.key").read_text().split('public-key = "')[1].split('"')[0]
    # both refused subscribers are turned away (and logged) before the allowed one arrives
    early = read_until(sensor, [f"key {stranger_key} is not in the allowlist", "handshake failed: "], 40)
    allowed = start("tail", "--connect", endpoint, "--topic", "dns.hit", "--count", str(len(expected)),
                    "--idle-exit", "30", "--curve-server-key", server_key, "--curve-client-key",
                    str(tmp_path / "clients" / "siem.key_secret"))
    received, _ = finish(allowed)
    _, rest = finish(sensor)
    sensor_log = early + rest
    assert sensor.returncode == 0, sensor_log
    assert sorted(received.splitlines()) == sorted(expected)
    assert finish(no_key)[0] == "" and finish(stranger)[0] == ""
    refusals = [line for line in sensor_log.splitlines() if "refused subscriber" in line]
    assert any(f"key {stranger_key} is not in the allowlist" in line and "127.0.0.1" in line for line in refusals), \
        sensor_log
    # the subscriber without CURVE: the server sees the mechanism mismatch, or the subscriber hanging up on it
    assert any("handshake failed: " in line and "no CURVE" in line for line in refusals), sensor_log


def test_non_loopback_endpoint_needs_curve_or_allow_plaintext():
    port = free_tcp_endpoint().rsplit(":", 1)[1]
    refused = run_cli("replay", DEMO, "--rules", RULES, "--publish", f"tcp://0.0.0.0:{port}")
    assert refused.returncode == 2
    assert "not a loopback endpoint and no CURVE" in refused.stderr and "--allow-plaintext" in refused.stderr
    allowed = run_cli("replay", DEMO, "--rules", RULES, "--publish", f"tcp://0.0.0.0:{port}", "--allow-plaintext")
    assert allowed.returncode == 0, allowed.stderr
    assert "UNENCRYPTED" in allowed.stderr
    half = run_cli("replay", DEMO, "--rules", RULES, "--publish", f"tcp://127.0.0.1:{port}", "--curve-allow", ".")
    assert half.returncode == 2 and "needs both --curve-secret-key" in half.stderr


def test_relay_gathers_two_sensors_into_one_stream_with_curve_on_both_sides(tmp_path):
    keys(tmp_path / "k", "alpha", "beta", "relay", "siem")
    k = tmp_path / "k"
    sensors_allow, relay_allow = tmp_path / "sensors-allow", tmp_path / "relay-allow"
    sensors_allow.mkdir()
    relay_allow.mkdir()
    (sensors_allow / "relay.key").write_text((k / "relay.key").read_text())
    (relay_allow / "siem.key").write_text((k / "siem.key").read_text())
    per_sensor = len(demo_hits())
    endpoints = {"alpha": free_tcp_endpoint(), "beta": free_tcp_endpoint()}
    sensors = [start("replay", DEMO, "--rules", RULES, "--publish", endpoints[name], "--sensor-name", name,
                     "--wait-subscribers", "1", "--wait-timeout", "40", "--curve-secret-key",
                     str(k / f"{name}.key_secret"), "--curve-allow", str(sensors_allow))
               for name in endpoints]
    relay_endpoint = free_tcp_endpoint()
    relay = start("relay", "--bind", relay_endpoint, "--connect", endpoints["alpha"], "--connect", endpoints["beta"],
                  "--curve-server-key", str(k / "alpha.key"), "--curve-server-key", str(k / "beta.key"),
                  "--curve-client-key", str(k / "relay.key_secret"),
                  "--curve-secret-key", str(k / "relay.key_secret"), "--curve-allow", str(relay_allow))
    try:
        siem = start("tail", "--connect", relay_endpoint, "--topic", "dns.hit", "--count", str(2 * per_sensor),
                     "--idle-exit", "40", "--curve-server-key", str(k / "relay.key"),
                     "--curve-client-key", str(k / "siem.key_secret"))
        received, _ = finish(siem)
        for sensor in sensors:
            _, err = finish(sensor)
            assert sensor.returncode == 0, err
    finally:
        relay.terminate()
        _, relay_log = finish(relay, 10)
    names = [json.loads(line)["observer"]["name"] for line in received.splitlines()]
    assert names.count("alpha") == per_sensor and names.count("beta") == per_sensor, relay_log
    assert relay.returncode == 0, relay_log
    assert "relaying 2 sensor(s)" in relay_log
