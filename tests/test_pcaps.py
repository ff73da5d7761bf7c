"""Every shipped capture, replayed by the real CLI, against what it was built to contain.

Two checks per capture: field by field against pcaps/expectations.toml (written from how each capture was
made), and the whole `--out` output against the committed pcaps/<capture>.expected.jsonl (rewritten only by
`make expected`).
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dnslib import CLASS, QTYPE

from conftest import run_cli
from pcaps.regen_expected import (
    PCAPS,
    RULES,
    comparable,
    expected_path,
    load_expectations,
    read_events,
    replay,
)
from sensor.records import COUNTERS

EXPECTATIONS = load_expectations()
NAMES = sorted(EXPECTATIONS)


class Replayed:
    def __init__(self, process: subprocess.CompletedProcess, events: list[dict], summary: dict | None) -> None:
        self.process, self.events, self.summary = process, events, summary


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory):
    """Replay each capture once for all the tests of this module."""
    workdir = tmp_path_factory.mktemp("pcaps")
    cache: dict[str, Replayed] = {}

    def get(name: str) -> Replayed:
        if name not in cache:
            process, out, summary = replay(name, EXPECTATIONS[name], workdir)
            counters = json.loads(summary.read_text()) if summary.exists() else None
            events = read_events(out)
            cache[name] = Replayed(process, [e for e in events if e["event"]["dataset"] == "truesource.hit"],
                                   counters)
            cache[name].anomalies = [e for e in events if e["event"]["dataset"] == "truesource.anomaly"]
            cache[name].all_events = events
        return cache[name]

    return get


def captured_bytes(path: Path) -> int:
    """Sum of the captured lengths of the whole frames in a pcap or pcapng file (a cut-off last frame left out).

    Read with struct, not with the library the sensor uses, so the check does not share its reader.
    """
    data = path.read_bytes()
    total = 0
    if data[:4] == b"\x0a\x0d\x0d\x0a":  # pcapng: sum the enhanced packet blocks' captured lengths
        order = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        offset = 0
        while offset + 12 <= len(data):
            block_type, length = struct.unpack_from(order + "II", data, offset)
            if block_type == 6 and offset + length <= len(data):
                total += struct.unpack_from(order + "I", data, offset + 20)[0]
            offset += length
        return total
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    offset = 24
    while offset + 16 <= len(data):
        caplen = struct.unpack_from(order + "I", data, offset + 8)[0]
        if offset + 16 + caplen > len(data):
            break
        total += caplen
        offset += 16 + caplen
    return total


def hit_view(event: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """The fields of a hit event that an expectation names, under the expectation's keys."""
    vlan = event["network"].get("vlan")
    view = {
        "frame": event["truesource"]["capture"]["frame"],
        "client": event["source"]["ip"],
        "port": event["source"]["port"],
        "qname": event["dns"]["question"]["name"],
        "qtype": event["truesource"]["dns"]["question"]["type"],
        "qclass": event["truesource"]["dns"]["question"]["class"],
        "transport": event["network"]["transport"],
        "vlan": vlan["id"] if vlan is not None else None,
        "rule": event["rule"]["name"],
        "tunnel": event["truesource"].get("tunnel", {}).get("path"),
        "client_subnet": event["truesource"].get("client_subnet"),
    }
    if "timestamp" in expected:
        view["timestamp"] = event["@timestamp"]
    return view


def expected_view(expected: dict[str, Any]) -> dict[str, Any]:
    view = {"qclass": 1, "tunnel": None, "client_subnet": None, **expected}
    view["vlan"] = str(expected["vlan"]) if "vlan" in expected else None  # ECS keyword: a string
    return view


@pytest.mark.parametrize("name", NAMES)
def test_exit_code(name: str, replayed) -> None:
    result = replayed(name)
    assert result.process.returncode == EXPECTATIONS[name].get("exit", 0), result.process.stderr


@pytest.mark.parametrize("name", NAMES)
def test_hits_field_by_field(name: str, replayed) -> None:
    events = replayed(name).events
    expected = EXPECTATIONS[name]["hits"]
    got = [hit_view(event, want) for event, want in zip(events, expected, strict=False)]
    assert got == [expected_view(want) for want in expected[: len(got)]]
    assert len(events) == len(expected), f"{len(events)} hits, expected {len(expected)}"


@pytest.mark.parametrize("name", NAMES)
def test_hit_events_name_their_origin(name: str, replayed) -> None:
    for event in replayed(name).events:
        assert event["event"]["kind"] == "alert"
        assert event["rule"]["ruleset"] == RULES
        assert event["truesource"]["capture"]["file"] == f"pcaps/{name}"
        number = event["truesource"]["dns"]["question"]
        assert event["dns"]["question"]["type"] == QTYPE[number["type"]]
        assert event["dns"]["question"]["class"] == CLASS[number["class"]]


@pytest.mark.parametrize("name", NAMES)
def test_counters(name: str, replayed) -> None:
    summary = replayed(name).summary
    assert summary is not None, "no --summary-json written"
    counters = summary["counters"]
    expected = EXPECTATIONS[name]["counters"]
    unknown = set(expected) - set(COUNTERS)
    assert not unknown, f"expectations name counters that do not exist: {unknown}"
    assert counters["bytes"] == captured_bytes(PCAPS / name)
    got = {key: value for key, value in counters.items() if key != "bytes" and value != 0}
    assert got == expected


@pytest.mark.parametrize("name", NAMES)
def test_output_matches_committed_expected(name: str, replayed) -> None:
    path = expected_path(name)
    assert path.exists(), f"{path.name} missing: run `make expected` and review it"
    got = [comparable(event) for event in replayed(name).all_events]
    assert got == read_events(path)


@pytest.mark.parametrize("name", NAMES)
def test_anomaly_events(name: str, replayed) -> None:
    """Anomaly events (dns.anomaly) as the expectation lists them: kind, client, partial name."""
    got = [{"kind": e["truesource"]["anomaly"]["name"], "client": e["source"]["ip"],
            "qname": e["truesource"]["anomaly"].get("partial_name")} for e in replayed(name).anomalies]
    want = [{"qname": None, **a} for a in EXPECTATIONS[name].get("anomalies", [])]
    assert got == want


def test_every_capture_has_expectations() -> None:
    on_disk = {path.name for path in PCAPS.iterdir() if path.suffix in (".pcap", ".pcapng")}
    assert on_disk == set(EXPECTATIONS)


def test_generator_reproduces_the_captures(tmp_path: Path) -> None:
    """Running the generator again writes byte-identical files (fixed times, addresses and seed)."""
    from pcaps.make_pcaps import make_all

    for path in make_all(tmp_path):
        assert path.read_bytes() == (PCAPS / path.name).read_bytes(), f"{path.name} differs from the committed one"


def test_demo_rules_flag_the_demo_lookups(tmp_path: Path) -> None:
    """`make run`'s pair: rules/demo.rules finds in the demo capture the lookups pcaps.rules finds there."""
    out = tmp_path / "demo.jsonl"
    process = run_cli("replay", "pcaps/demo-resolver.pcap", "--rules", "rules/demo.rules", "--out", str(out),
                      "--no-progress")
    assert process.returncode == 0, process.stderr
    lookups = [(e["source"]["ip"], e["source"]["port"], e["dns"]["question"]["name"], e["rule"]["name"])
               for e in read_events(out)]
    hits = EXPECTATIONS["demo-resolver.pcap"]["hits"]
    assert lookups == [(h["client"], h["port"], h["qname"], h["rule"]) for h in hits]
