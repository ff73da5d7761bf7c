"""Evasion and framing forms (pcaps/attacks/), each replayed through both loops: the sensor must see what the
resolver sees. A form the resolver answers makes a plain hit (an anomaly alone only for a stream evicted mid-message);
a form it refuses makes no plain hit, and an anomaly where the refused query would have hit.
"""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

import pcapy
import pytest

from sensor.decode import ReferenceLoop
from sensor.rules.loader import load_rules

try:
    from sensor import _loop
except ImportError:
    _loop = None

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ROOT / "pcaps" / "attacks"
with open(ATTACKS / "expectations.toml", "rb") as handle:
    EXPECTATIONS = tomllib.load(handle)["attacks"]
LOOPS = ["reference", "fast"]


def text(address: bytes | None) -> str | None:
    if address is None:
        return None
    return socket.inet_ntop(socket.AF_INET if len(address) == 4 else socket.AF_INET6, address)


def replay(name: str, which: str) -> tuple[list, list, dict]:
    """(hit records, anomaly records, counters) of one capture through one loop."""
    if which == "fast" and _loop is None:
        pytest.skip("sensor._loop is not built")
    table = load_rules([str(ROOT / "pcaps" / "pcaps.rules")]).table
    reader = pcapy.open_offline(str(ATTACKS / f"{name}.pcap"))
    options = {"mirror_sources": tuple(EXPECTATIONS[name].get("mirror_source", ()))}
    factory = ReferenceLoop if which == "reference" else _loop.FastLoop
    loop = factory(reader.datalink(), [53], table, False, **options)
    records, anomalies, first = [], [], 1
    while True:
        data, meta = reader.next_batch(64)
        if not meta:
            break
        records += loop.run_batch(data, meta, first)
        anomalies += loop.take_anomalies()
        first += len(meta) // 16
    return records, anomalies, loop.counters()


@pytest.mark.parametrize("which", LOOPS)
@pytest.mark.parametrize("name", sorted(EXPECTATIONS))
def test_attack_form(name: str, which: str) -> None:
    want = EXPECTATIONS[name]
    records, anomalies, counters = replay(name, which)
    assert [r[12] for r in records if r[15] >= 0] == want["hits"]
    got = [{"kind": a[0], "client": text(a[5]), "qname": a[10], "outer": text(a[11])} for a in anomalies]
    assert got == [{"qname": None, "outer": None, **a} for a in want.get("anomalies", [])]
    for counter, value in want.get("counters", {}).items():
        assert counters[counter] == value, counter


def test_every_form_has_a_capture_and_a_verdict() -> None:
    from pcaps.attacks.forms import FORMS

    assert set(FORMS) == set(EXPECTATIONS) == {p.stem for p in ATTACKS.glob("*.pcap")}
    for name, want in EXPECTATIONS.items():
        assert want["resolver"] in ("answers", "drops"), name
        if want["resolver"] == "drops":
            assert want["hits"] == [], f"{name}: the resolver refuses it, so it must make no plain hit"
        elif not want["hits"]:
            assert [a["kind"] for a in want["anomalies"]] == ["stream_evicted_mid_message"], name


def test_tunnelled_hit_names_the_outer_sender() -> None:
    from sensor.records import DnsMessage

    for which in LOOPS:
        records, _, _ = replay("vxlan-from-mirror", which)
        (hit,) = [DnsMessage._make(r) for r in records]
        assert text(hit.src_ip) == "192.0.2.79" and hit.tunnel == "vxlan"
        assert [text(a) for a in hit.tunnel_outer] == ["203.0.113.1", "198.51.100.53"]
        assert hit.src_mac == bytes.fromhex("020000000099")  # the inner frame's sender
        assert hit.tcp_handshake is None


def test_tcp_hit_says_whether_the_handshake_was_seen() -> None:
    from sensor.records import DnsMessage

    for which in LOOPS:
        records, _, _ = replay("tcp-out-of-order-132", which)
        (hit,) = [DnsMessage._make(r) for r in records]
        assert hit.tcp_handshake is True and hit.src_mac == bytes.fromhex("020000000010")
