"""CNAME hits live (decisions 0160, 0161): a client asks a real unbound for a good name whose answer is a chain of
three CNAMEs through two other good zones to a suspicious name (tests/netlab/zones.py: chain.good.test ->
hop1.corp.test -> hop2.eu.corp.test -> beacon.evil.test). The client never asks the suspicious name; the
resolver does, upstream. The sensor, capturing on both of the resolver's sides, must report the resolver's
answer to the client as a CNAME hit naming the client, linked to the resolver-side hits on the chain."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
from test_capture_live import wait_total

from conftest import ROOT, poll
from netlab import lab_or_skip, zones
from netlab.topology import (
    CLIENTS4,
    RESOLVER,
    RESOLVER_CLIENT4,
    RESOLVER_CLIENT6,
    RESOLVER_UPSTREAM4,
    RESOLVER_UPSTREAM6,
)

pytestmark = pytest.mark.netns
CHAIN = ["chain.good.test", "hop1.corp.test", "hop2.eu.corp.test", "beacon.evil.test"]


@pytest.fixture(scope="module")
def lab():
    with lab_or_skip() as lab:
        yield lab


def hits(out: Path) -> list[dict]:
    if not out.exists():
        return []
    text = out.read_text()
    lines = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]  # a line being written: later
    return [e for e in map(json.loads, lines) if e["event"]["dataset"] == "truesource.hit"]


def test_resolver_following_a_chain_names_the_client(lab, tmp_path):
    rules = tmp_path / "lab.rules"
    rules.write_text("".join(f"{zone}\n" for zone in zones.SUSPICIOUS_ZONES))
    out = tmp_path / "hits.jsonl"
    log = tmp_path / "sensor.log"
    endpoint = f"ipc://{tmp_path}/events"
    # One resolver, its client-side and upstream addresses: the upstream hits are its own (resolver_address)
    resolver = ",".join((RESOLVER_CLIENT4, RESOLVER_UPSTREAM4, RESOLVER_CLIENT6, RESOLVER_UPSTREAM6))
    sensor = lab.popen(RESOLVER, [sys.executable, "-m", "sensor", "capture", "-i", "any", "--rules", str(rules),
                                  "--out", str(out), "--resolver", resolver, "--attribution-window", "10",
                                  "--publish", endpoint, "--stats-interval", "0.5"],
                       cwd=ROOT, stdout=sys.stderr, stderr=open(log, "w"))
    try:
        poll(lambda: "capturing on" in log.read_text() or sensor.poll() is not None, "the sensor to start", 30)
        assert sensor.poll() is None, log.read_text()
        client = CLIENTS4[1]
        result = lab.dig(CHAIN[0], src=client, server=RESOLVER_CLIENT4)
        assert result.status == "NOERROR", result.output
        assert result.addresses == [zones.EXPECTED_A[CHAIN[0]]]
        # the resolver's answer to the client is the last packet of the exchange: its hit is the one to wait for
        wait_total(endpoint, "dns_cname_hits", 1)
        answer = poll(lambda: [e for e in hits(out) if e["source"]["ip"] == client], "the client's CNAME hit", 30)
    finally:
        sensor.send_signal(signal.SIGTERM)
        assert sensor.wait(timeout=30) == 0, log.read_text()
    events = hits(out)
    (event,) = [e for e in events if e["source"]["ip"] == client]
    assert event["source"]["port"] == result.sport and event["destination"]["ip"] == RESOLVER_CLIENT4
    assert event["dns"]["type"] == "answer" and event["dns"]["question"]["name"].lower() == CHAIN[0]
    cname = event["truesource"]["cname"]
    assert [name.lower() for name in cname["chain"]] == CHAIN
    assert cname["matched"].lower() == "beacon.evil.test" and cname["hop"] == 3
    assert event["rule"]["name"] == "evil.test"
    attribution = event["truesource"]["attribution"]
    assert attribution["role"] == "client" and attribution["match"] == "resolver_address", attribution
    assert [(c["ip"], c["port"]) for c in attribution["clients"]] == [(client, result.sport)]
    # what the client caused upstream: the resolver asked for (or was answered with) the suspicious name
    assert "beacon.evil.test" in {u["name"] for u in attribution["upstream"]}, attribution
    assert {u["resolver"] for u in attribution["upstream"]} <= {RESOLVER_UPSTREAM4, RESOLVER_UPSTREAM6}
    # the client never asked a suspicious name: no other hit has it as source
    assert all(e["source"]["ip"] in (RESOLVER_UPSTREAM4, RESOLVER_UPSTREAM6) for e in events if e is not event)
    assert answer
