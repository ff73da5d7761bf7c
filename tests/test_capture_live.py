"""Live capture on a real veth in network namespaces: the same hits as replay, workers, statistics, stop."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from conftest import PCAPS, ROOT, run_cli

pytestmark = pytest.mark.netns


def wait_started(proc: subprocess.Popen, timeout: float = 20) -> str:
    """Read the sensor's standard error until it says it is capturing."""
    seen = []
    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(0.2):
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "capturing on" in line:
                return "".join(seen)
    proc.kill()
    raise AssertionError("capture did not start: " + "".join(seen))


def wait_total(endpoint: str, key: str, value: int, timeout: float = 60) -> None:
    """Subscribe to the sensor's `sensor.stats` at `endpoint` until its running total `key` reaches `value`: the
    capture has seen the traffic (the totals are cumulative, so a subscriber that joins late loses nothing)."""
    import zmq

    socket = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SUBSCRIBE, b"sensor.stats")
    socket.connect(endpoint)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if socket.poll(500):
                _, line = socket.recv_multipart()
                if json.loads(line)["truesource"]["stats"]["total"].get(key, 0) >= value:
                    return
        raise AssertionError(f"sensor.stats total {key} did not reach {value} in {timeout} s")
    finally:
        socket.close()


def read_lines_until(proc: subprocess.Popen, done, timeout: float = 60) -> list[str]:
    """Lines of `proc`'s standard output until `done(lines)` is true; fails after `timeout` seconds."""
    lines: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while not done(lines):
        assert time.monotonic() < deadline, f"gave up after {timeout} s with {lines}"
        if selector.select(0.2):
            line = proc.stdout.readline()
            assert line, f"the subscriber ended early: {lines}"
            lines.append(line)
    selector.close()
    return lines


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out, err


def hit_keys(lines: list[str]) -> list[tuple]:
    events = [json.loads(line) for line in lines if line.strip()]
    return sorted((e["source"]["ip"], e["source"]["port"], e["dns"]["id"], e["dns"]["question"]["name"],
                   e["network"].get("vlan", {}).get("id"), e["truesource"].get("tunnel", {}).get("path"),
                   e["truesource"].get("client_subnet")) for e in events if e["event"]["dataset"] == "truesource.hit")


# The shipped tunnel captures' mirror (pcaps/expectations.toml): their tunnels are decapsulated only from it.
MIRRORS = ("--mirror-source", "203.0.113.0/24", "--mirror-source", "2001:db8:f::/48")


def replay_hits(pcap: str, rules: str) -> list[str]:
    result = run_cli("replay", pcap, "--rules", rules, "--no-progress", *MIRRORS)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("pcap", ["demo-resolver.pcap", "vlan.pcap", "tcp-framing.pcap", "tunnels.pcap",
                                  "edns-client-subnet.pcap"])
def test_live_hits_equal_replay_hits(wire, tmp_path, pcap):
    """tcpreplay a shipped capture into the mirror port: the default filter keeps tagged, tunnelled and TCP DNS,
    and the sensor reports exactly what a replay of the file reports."""
    path = str(PCAPS / pcap)
    rules = str(PCAPS / "pcaps.rules")
    expected = hit_keys(replay_hits(path, rules))
    endpoint = f"ipc://{tmp_path}/events"  # statistics, to know when the capture has seen the traffic
    proc = wire.start_capture("--rules", rules, "--summary-json", str(tmp_path / "s.json"), "--out", "-",
                              "--publish", endpoint,
                              "--stats-interval", "0.5", *MIRRORS)
    wait_started(proc)
    wire.replay(path, pps=2000)
    wait_total(endpoint, "hits", len(expected))
    out, _ = stop(proc)
    assert hit_keys(out.splitlines()) == expected
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["counters"]["kernel_drops"] == 0


def test_attribution_live(wire, tmp_path):
    path = str(PCAPS / "demo-resolver.pcap")
    rules = str(ROOT / "rules" / "demo.rules")
    endpoint = f"ipc://{tmp_path}/events"
    proc = wire.start_capture("--rules", rules, "--out", "-", "--publish", endpoint, "--stats-interval", "0.5")
    wait_started(proc)
    wire.replay(path, pps=2000)
    wait_total(endpoint, "hits", len(replay_hits(path, rules)))
    out, _ = stop(proc)
    events = [json.loads(line) for line in out.splitlines()]
    upstream = [e for e in events if e["source"]["ip"] == "10.1.0.53"]
    assert upstream, "the demo has the resolver's own upstream queries"
    for event in upstream:
        clients = event["truesource"]["attribution"]["clients"]
        name = event["dns"]["question"]["name"].lower()
        assert all(c["name"] == name or c["name"].endswith("." + name) for c in clients)
    assert sum(bool(e["truesource"]["attribution"]["clients"]) for e in upstream) >= len(upstream) - 1


def test_statistics_and_clean_stop(wire, tmp_path):
    """sensor.stats arrive every interval and once more, final, after SIGTERM; a real subscriber hears them."""
    endpoint = f"ipc://{tmp_path}/events"  # a file socket: reachable across namespaces
    proc = wire.start_capture("--rules", str(PCAPS / "pcaps.rules"), "--publish", endpoint,
                              "--stats-interval", "0.5")
    wait_started(proc)
    tail = subprocess.Popen([sys.executable, "-m", "sensor", "tail", "--connect", endpoint, "--with-topic",
                             "--idle-exit", "5"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    # the first statistics line says tail's subscription has reached the publisher (ZeroMQ slow joiner)
    seen = read_lines_until(tail, lambda lines: lines)
    wire.replay(str(PCAPS / "vlan.pcap"), pps=1000)
    # the six hits, and a second interval's statistics (the final one, after SIGTERM, makes three or more)
    seen += read_lines_until(tail, lambda lines: sum(line.startswith("dns.hit ") for line in lines) == 6
                             and sum(line.startswith("sensor.stats ") for line in seen + lines) >= 2)
    _, err = stop(proc)
    received = "".join(seen) + tail.communicate(timeout=30)[0]
    topics = [line.split(" ", 1) for line in received.splitlines()]
    stats = [json.loads(body) for topic, body in topics if topic == "sensor.stats"]
    hits = [json.loads(body) for topic, body in topics if topic == "dns.hit"]
    assert len(stats) >= 3
    assert stats[-1]["truesource"]["stats"]["final"] is True
    assert not any(s["truesource"]["stats"]["final"] for s in stats[:-1])
    total = stats[-1]["truesource"]["stats"]["total"]
    # vlan.pcap has 8 frames; the default filter keeps all but the tagged ARP frame
    assert total["packets"] == 7 and total["received"] == 7 and total["hits"] == len(hits) == 6
    assert total["not_ip"] == 0 and total["kernel_drops"] == 0 and total["publisher_drops"] == 0
    assert "captured for" in err and "0 dropped by the kernel" in err


def test_missing_interface_exits_2(wire):
    result = subprocess.run(wire.sensor_command("capture", "-i", "nosuch9", "--rules", str(PCAPS / "pcaps.rules")),
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert "nosuch9: cannot capture: no such interface" in result.stderr


def test_missing_privilege_names_the_capability(wire):
    argv = ["ip", "netns", "exec", wire.sensor, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-m", "sensor", "capture",
            "-i", wire.sensor_iface, "--rules", str(PCAPS / "pcaps.rules")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert "CAP_NET_RAW" in result.stderr


def test_two_workers_split_flows_and_agree_with_replay(wire, tmp_path):
    """--workers 2 on replayed traffic: the same hits as replay, each worker a fair share, and every query
    decoded by the worker that decoded its response (the fanout hash is symmetric)."""
    made = subprocess.run([sys.executable, str(ROOT / "bench" / "make_capture.py"), "--packets", "20000",
                           "--rules", "2000", "--out-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert made.returncode == 0, made.stderr
    pcap, rules = str(tmp_path / "capture.pcap"), str(tmp_path / "rules.txt")
    trace = tmp_path / "trace.jsonl"
    offline = hit_keys(replay_hits(pcap, rules))
    endpoint = f"ipc://{tmp_path}/events"
    proc = wire.start_capture("--rules", rules, "--workers", "2", "--trace-messages", str(trace),
                              "--summary-json", str(tmp_path / "s.json"), "--out", "-", "--publish", endpoint,
                              "--stats-interval", "0.5")
    wait_started(proc)
    wire.replay(pcap, pps=10000)
    wait_total(endpoint, "hits", len(offline))
    out, _ = stop(proc)
    live = hit_keys(out.splitlines())
    assert len(offline) > 20 and live == offline
    summary = json.loads(trace.with_name("s.json").read_text())
    packets = [w["packets"] for w in summary["workers"]]
    assert sum(packets) == summary["counters"]["packets"] and summary["counters"]["kernel_drops"] == 0
    assert min(packets) >= 0.2 * sum(packets), packets
    workers = defaultdict(set)  # one DNS exchange -> the workers that saw its query or its response
    for line in trace.read_text().splitlines():
        m = json.loads(line)
        client = (m["dst"], m["dport"]) if m["response"] else (m["src"], m["sport"])
        workers[(client, m["id"], m["name"].lower(), m["transport"])].add(m["worker"])
    assert len(workers) > 1000
    split = [key for key, seen in workers.items() if len(seen) > 1]
    assert split == []


def test_forged_vxlan_seen_by_a_worker_reaches_the_parent_as_an_anomaly(wire, tmp_path):
    """--workers 2 without a mirror source: a VXLAN from an unknown sender carrying a query that would hit is an
    anomaly event, sent by the worker that decoded it in its Report and published by the parent; never a hit."""
    endpoint = f"ipc://{tmp_path}/events"
    proc = wire.start_capture("--rules", str(PCAPS / "pcaps.rules"), "--workers", "2", "--out", "-",
                              "--publish", endpoint, "--stats-interval", "0.2")
    wait_started(proc)
    wire.replay(str(PCAPS / "attacks" / "vxlan-untrusted.pcap"), pps=100)
    wait_total(endpoint, "tunnel_untrusted", 1)  # a worker has decoded it (stopping sooner could lose the frame)
    out, _ = stop(proc)  # a worker's last Report (sent when it stops) carries what it still held
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    kinds = [e["truesource"]["anomaly"]["name"] for e in events if e["event"]["dataset"] == "truesource.anomaly"]
    assert kinds == ["tunnel_untrusted"]
    assert hit_keys(out.splitlines()) == []


def test_two_workers_release_anomalies_and_hits_in_packet_order(wire, tmp_path):
    """--workers 2: anomalies go through the parent's time-order merge with the hits (as they do in one loop's
    packet order), not out as soon as a worker's report arrives. 160 clients, one query each, every other one with
    a wrong UDP checksum (a `bad_checksum_query` anomaly, one client each: no rate limit applies); the fanout
    hash spreads the clients over both workers; the events come out in packet time, hits and anomalies alike."""
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    rules = tmp_path / "order.rules"
    rules.write_text("order.example\n")
    frames = []
    for i in range(160):
        packet = (Ether(src="02:00:00:00:01:01", dst="02:00:00:00:00:53")
                  / IP(src=f"10.77.{i // 200}.{1 + i % 200}", dst="10.98.0.53")
                  / UDP(sport=20_000 + i, dport=53) / DNS(id=i, rd=1, qd=DNSQR(qname=f"q{i}.order.example")))
        packet = Ether(bytes(packet))  # checksums filled in
        if i % 2:
            packet[UDP].chksum ^= 0x5A5A
        frames.append(packet)
    pcap = tmp_path / "order.pcap"
    wrpcap(str(pcap), frames)
    endpoint = f"ipc://{tmp_path}/events"
    proc = wire.start_capture("--rules", str(rules), "--workers", "2", "--checksums", "verify", "--out", "-",
                              "--publish", endpoint, "--stats-interval", "0.2",
                              "--summary-json", str(tmp_path / "s.json"))
    wait_started(proc)
    wire.replay(str(pcap), pps=400)
    wait_total(endpoint, "bad_udp_checksum", 80)
    wait_total(endpoint, "hits", 80)
    out, _ = stop(proc)
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    ordered = [(e["@timestamp"], e["event"]["dataset"]) for e in events
               if e["event"]["dataset"] in ("truesource.hit", "truesource.anomaly")]
    assert sum(1 for _, kind in ordered if kind == "truesource.hit") == 80
    assert sum(1 for _, kind in ordered if kind == "truesource.anomaly") == 80
    assert [t for t, _ in ordered] == sorted(t for t, _ in ordered), ordered
    summary = json.loads((tmp_path / "s.json").read_text())
    assert all(w["packets"] > 0 for w in summary["workers"]), summary["workers"]
