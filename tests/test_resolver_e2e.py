"""End to end behind a real recursive resolver: clients ask unbound, unbound iterates to bind9, the sensor
captures on the resolver's side of the network and names the true client of every suspicious query, and
links each of the resolver's upstream queries for a suspicious name to the client that caused it."""

from __future__ import annotations

import json
import signal
import sys
import time

import pytest
from test_capture_live import wait_total

from conftest import ROOT
from netlab import lab_or_skip, zones
from netlab.topology import RESOLVER, RESOLVER_UPSTREAM4, RESOLVER_UPSTREAM6

pytestmark = pytest.mark.netns
RESOLVER_SIDE = {RESOLVER_UPSTREAM4, RESOLVER_UPSTREAM6}


@pytest.fixture(scope="module")
def lab():
    with lab_or_skip() as lab:
        yield lab


def start_sensor(lab, rules: str, out: str, publish: str):
    # `any` sees both of the resolver's interfaces, as a SPAN of the resolver's switch port would
    proc = lab.popen(RESOLVER, [sys.executable, "-m", "sensor", "capture", "-i", "any", "--rules", rules,
                                "--out", out, "--attribution-window", "10",
                                "--publish", publish, "--stats-interval", "0.5"],
                     cwd=ROOT, stdout=sys.stderr, stderr=open(out + ".log", "w"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if "capturing on" in open(out + ".log").read():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)  # poll interval
    raise AssertionError("sensor did not start: " + open(out + ".log").read())


def test_true_client_of_every_suspicious_query(lab, tmp_path):
    rules = tmp_path / "lab.rules"
    rules.write_text("".join(f"{zone}\n" for zone in zones.SUSPICIOUS_ZONES))
    out = str(tmp_path / "hits.jsonl")
    events_endpoint = f"ipc://{tmp_path}/events"  # statistics, to know when the sensor has seen the traffic
    sensor = start_sensor(lab, str(rules), out, events_endpoint)
    asked = []  # (dig result, suspicious?)
    clients = list(zip(lab.clients4, lab.clients6, strict=False))
    for i, (v4, v6) in enumerate(clients):
        for zone in zones.SUSPICIOUS_ZONES:
            for src, server, tcp in ((v4, lab.resolver4, False), (v6, lab.resolver6, True)):
                result = lab.dig(lab.unique_name(zone), src=src, server=server, tcp=tcp)
                assert result.status == "NOERROR", result.output
                asked.append((result, True))
        for name in ("www.good.test", "intranet.corp.test", lab.unique_name(zones.GOOD_ZONES[i % 2])):
            result = lab.dig(name, src=v4, server=lab.resolver4, tcp=bool(i % 2))
            assert result.status == "NOERROR", result.output
            asked.append((result, False))
    # every suspicious client query and at least one upstream query for its (unique) name
    wait_total(events_endpoint, "hits", 2 * sum(suspicious for _, suspicious in asked))
    sensor.send_signal(signal.SIGTERM)
    assert sensor.wait(timeout=30) == 0, open(out + ".log").read()
    events = [json.loads(line) for line in open(out)]
    events = [e for e in events if e["event"]["dataset"] == "truesource.hit"]  # hits; anomalies have their tests
    client_hits = [e for e in events if e["source"]["ip"] not in RESOLVER_SIDE]
    upstream_hits = [e for e in events if e["source"]["ip"] in RESOLVER_SIDE]

    # exactly one hit per suspicious client query, with the client's own address, port and transport
    got = sorted((e["source"]["ip"], e["source"]["port"], e["dns"]["question"]["name"], e["network"]["transport"])
                 for e in client_hits)
    want = sorted((r.src, r.sport, r.name, "tcp" if r.tcp else "udp") for r, suspicious in asked if suspicious)
    assert got == want
    assert not any(e["dns"]["question"]["name"].endswith(zones.GOOD_ZONES) for e in events)

    # every upstream query for a client's (unique, never cached) suspicious name names that client
    for result, suspicious in asked:
        if not suspicious:
            continue
        own = [e for e in upstream_hits if e["dns"]["question"]["name"].lower() == result.name.lower()]
        assert own, f"no upstream query seen for {result.name}"
        for event in own:
            linked = {(c["ip"], c["port"]) for c in event["truesource"]["attribution"]["clients"]}
            assert linked == {(result.src, result.sport)}, event["truesource"]["attribution"]
    # and upstream queries for parent names (QNAME minimisation, DS) only ever name clients below them
    for event in upstream_hits:
        name = event["dns"]["question"]["name"].lower()
        for client in event["truesource"]["attribution"]["clients"]:
            assert client["name"] == name or client["name"].endswith("." + name)
