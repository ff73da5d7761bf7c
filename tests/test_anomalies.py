"""Anomaly events (dns.anomaly) end to end, the --checksums policy and --mirror-source, through the command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from pcaps.attacks.forms import query
from sensor.anomalies import AnomalyLimiter, AnomalyRecord

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "pcaps" / "pcaps.rules"
ATTACKS = ROOT / "pcaps" / "attacks"


def replay(tmp_path: Path, capture: Path, *options: str) -> tuple[subprocess.CompletedProcess, list[dict], dict]:
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    process = subprocess.run([sys.executable, "-m", "sensor", "replay", str(capture), "--rules", str(RULES),
                              "--out", str(out), "--summary-json", str(summary), "--no-progress", *options],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    events = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    counters = json.loads(summary.read_text())["counters"] if summary.exists() else {}
    return process, events, counters


def test_forged_vxlan_is_an_anomaly_naming_the_real_sender_not_a_hit(tmp_path: Path) -> None:
    process, events, counters = replay(tmp_path, ATTACKS / "vxlan-untrusted.pcap")
    assert process.returncode == 0, process.stderr
    (event,) = events
    assert event["event"]["dataset"] == "truesource.anomaly" and event["event"]["kind"] == "alert"
    assert event["truesource"]["anomaly"]["name"] == "tunnel_untrusted"
    assert event["truesource"]["anomaly"]["partial_name"] == "framed.evil.example"
    assert event["truesource"]["tunnel"]["outer"]["source"]["ip"] == "192.0.2.66"
    assert event["source"] == {"ip": "192.0.2.77", "port": 47301}
    assert counters["tunnel_untrusted"] == 1 and counters["hits"] == 0


def test_forged_vxlan_from_a_configured_mirror_is_a_hit_with_its_outer_sender(tmp_path: Path) -> None:
    process, events, _ = replay(tmp_path, ATTACKS / "vxlan-untrusted.pcap", "--mirror-source", "192.0.2.64/30")
    assert process.returncode == 0, process.stderr
    (event,) = events
    assert event["event"]["dataset"] == "truesource.hit"
    assert event["truesource"]["tunnel"] == {"path": "vxlan", "outer": {"source": {"ip": "192.0.2.66"},
                                                                        "destination": {"ip": "198.51.100.53"}}}
    assert event["source"]["mac"] == "02-00-00-00-00-99"


def test_bad_mirror_source_is_one_clear_line(tmp_path: Path) -> None:
    process, _, _ = replay(tmp_path, ATTACKS / "vxlan-untrusted.pcap", "--mirror-source", "10.0.0.300/8")
    assert process.returncode != 0
    assert "--mirror-source" in process.stderr and "10.0.0.300/8" in process.stderr
    assert "Traceback" not in process.stderr


def checksum_capture(path: Path, bad: int, good: int) -> None:
    """`bad` queries with a wrong UDP checksum, then `good` right ones, all for a blocked name."""
    frames = []
    for i in range(bad + good):
        packet = Ether() / IP(src="192.0.2.10", dst="198.51.100.53") / UDP(sport=20000 + i % 40000, dport=53) \
            / Raw(query(f"q{i}.evil.example"))
        packet = Ether(bytes(packet))
        if i < bad:
            packet[UDP].chksum ^= 0x5555
        frames.append(packet)
    wrpcap(str(path), frames)


@pytest.mark.parametrize(("mode", "hits", "off"), [("verify", 200, 0), ("off", 1400, 0), ("auto", 400, 1)])
def test_checksum_policy_offload_capture(tmp_path: Path, mode: str, hits: int, off: int) -> None:
    """1,200 bad checksums then 200 good (a capture on a host with offload): verify drops the bad ones; auto
    decides off after the first 1,000 checks (more than 1 in 10 bad) and keeps everything after; off keeps all."""
    capture = tmp_path / "offload.pcap"
    checksum_capture(capture, 1200, 200)
    process, _, counters = replay(tmp_path, capture, "--checksums", mode)
    assert process.returncode == 0, process.stderr
    assert counters["hits"] == hits
    assert counters["checksums_auto_off"] == off
    assert counters["bad_udp_checksum"] == {"verify": 1200, "off": 0, "auto": 1000}[mode]


def test_checksum_auto_is_not_switched_off_by_a_later_flood(tmp_path: Path) -> None:
    """1,000 good checks first: auto decides verify, and 1,000 bad ones after are all dropped."""
    capture = tmp_path / "late-flood.pcap"
    frames = []
    for i in range(2000):
        packet = Ether(bytes(Ether() / IP(src="192.0.2.10", dst="198.51.100.53") / UDP(sport=30000 + i, dport=53)
                             / Raw(query(f"f{i}.evil.example"))))
        if i >= 1000:
            packet[UDP].chksum ^= 0x5555
        frames.append(packet)
    wrpcap(str(capture), frames)
    process, events, counters = replay(tmp_path, capture)
    assert process.returncode == 0, process.stderr
    assert counters["hits"] == 1000 and counters["bad_udp_checksum"] == 1000 and counters["checksums_auto_off"] == 0
    anomalies = [e for e in events if e["event"]["dataset"] == "truesource.anomaly"]
    assert len(anomalies) == 1  # rate-limited: one client, one kind
    assert anomalies[0]["truesource"]["anomaly"]["name"] == "bad_checksum_query"


def test_anomaly_flood_is_rate_limited_and_bounded() -> None:
    limiter = AnomalyLimiter(window=60, capacity=64)
    sent = 0
    for i in range(1000):
        client = (i % 200).to_bytes(4, "big")
        record = AnomalyRecord("fragment_overlap", i, 1_767_225_600 + i // 100, 0, None, client, b"\x00" * 4,
                               0, 0, 0, None)
        sent += limiter.allow(record)
    counters = limiter.counters()
    assert counters["anomaly_rate_entries"] == 64
    assert counters["anomaly_events"] == sent and sent + counters["anomaly_suppressed"] == 1000
    assert counters["anomaly_rate_evicted"] == sent - 64


def test_one_client_flooding_one_kind_makes_one_event_a_minute() -> None:
    limiter = AnomalyLimiter()
    records = [AnomalyRecord("bad_checksum_query", i, 1_767_225_600 + i // 10, 0, None, b"\x0a\x00\x00\x01",
                             b"\x00" * 4, 17, 1, 53, "x.evil.example") for i in range(1200)]  # 120 s of packet time
    assert sum(limiter.allow(r) for r in records) == 2
    assert limiter.counters()["anomaly_suppressed"] == 1198


def test_encrypted_dns_bypassing_the_resolver_is_an_anomaly_with_flows(tmp_path: Path) -> None:
    """With --flows: a client's DoT (853) and its HTTPS to a public DoH resolver are anomalies; the resolver's own
    DoT upstream and a client's HTTPS to a web server are not."""
    from scapy.layers.inet import TCP

    def syn(src: str, dst: str, dport: int, sport: int) -> Ether:
        return Ether(src="02:00:00:00:00:10", dst="02:00:00:00:00:53") / IP(src=src, dst=dst) / TCP(
            sport=sport, dport=dport, flags="S")

    capture = tmp_path / "bypass.pcap"
    wrpcap(str(capture), [syn("192.0.2.10", "9.9.9.9", 853, 50001), syn("192.0.2.11", "1.1.1.1", 443, 50002),
                          syn("192.0.2.53", "8.8.8.8", 853, 50003), syn("192.0.2.12", "93.184.216.34", 443, 50004)])
    process, events, _ = replay(tmp_path, capture, "--flows", "--resolver", "192.0.2.53")
    assert process.returncode == 0, process.stderr
    got = sorted((e["source"]["ip"], e["destination"]["ip"], e["destination"]["port"]) for e in events
                 if e["event"]["dataset"] == "truesource.anomaly")
    assert got == [("192.0.2.10", "9.9.9.9", 853), ("192.0.2.11", "1.1.1.1", 443)]
    assert all(e["truesource"]["anomaly"]["name"] == "encrypted_dns_bypass" for e in events)


def test_the_workers_merge_releases_anomalies_with_hits_in_packet_time() -> None:
    """Two workers' reports, each with hits and anomalies in its own packet order: the parent's merge releases
    them all in packet time, an anomaly only once every worker has read past it (as a hit)."""
    from sensor.capture.workers import ANOMALY, WatermarkMerge
    from sensor.records import DnsMessage

    def hit(frame: int, usec: int) -> tuple:
        return ("rule", DnsMessage(frame, 100, usec, None, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x35", 17, 1000, 53, 1,
                                   0x0100, 1, "x.example", 1, 1, 0))

    def anomaly(frame: int, usec: int) -> tuple:
        return ("bad_checksum_query", frame, 100, usec, None, b"\x0a\x00\x00\x02", b"\x0a\x00\x00\x35", 17, 1001, 53,
                "y.example", None, None)

    merge = WatermarkMerge(2)
    merge.add(0, 100_000_030, [hit(1, 10), hit(3, 30)], [anomaly(2, 20)])
    assert merge.ready() == []  # worker 1 has read nothing yet
    merge.add(1, 100_000_025, [hit(1, 5)], [anomaly(2, 15), anomaly(3, 25)])
    out = merge.ready()
    merge.finish(0)
    merge.finish(1)
    out += merge.ready()
    times = [entry[1].ts_usec if entry[0] is not ANOMALY else entry[1][3] for entry in out]
    assert times == [5, 10, 15, 20, 25, 30]
    assert [entry[0] is ANOMALY for entry in out] == [False, False, True, True, True, False]
