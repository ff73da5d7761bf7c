"""Each crafted form (pcaps/attacks/) sent to a real unbound and a real BIND in namespaces, with the sensor capturing
live on the server's interface: where the resolver answers the blocked name, the sensor makes a plain hit (an
anomaly alone only for a stream evicted mid-message); where it does not, no plain hit. It never skips on CI
(netlab's lab_or_skip fails there instead).

The client addresses are spoofed (not the namespace's own; the server has a static neighbour entry for them), so
the sending kernel stays out of the way and scapy plays TCP by hand. TX checksum offload is off on every veth, so
the frames the sensor sees carry the checksums the wire would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT
from netlab import lab_or_skip
from netlab.topology import (
    CLIENT,
    CLIENT_IFACE,
    RESOLVER,
    RESOLVER_CLIENT_IFACE,
    RESOLVER_UPSTREAM_IFACE,
    UPSTREAM,
    UPSTREAM_IFACE,
)

pytestmark = pytest.mark.netns
with open(ROOT / "pcaps" / "attacks" / "expectations.toml", "rb") as handle:
    EXPECTATIONS = tomllib.load(handle)["attacks"]
# Tunnel forms are what a mirror delivers, never sent to a resolver; they are checked on captures only.
# Responses to a client (cname-response-*) are no query a resolver answers: the client kernel's verdict is checked
# by test_a_forged_cname_response_the_client_drops_is_no_cname_hit (below), with a real client socket.
LIVE_FORMS = sorted(name for name in EXPECTATIONS if not name.startswith(("vxlan-", "gre-", "cname-response-")))
SPOOFED4 = {"unbound": "10.77.1.200", "bind": "10.77.2.200"}
SPOOFED6 = {"unbound": "fd77:1::200", "bind": "fd77:2::200"}


@pytest.fixture(scope="module")
def lab():
    with lab_or_skip() as lab:
        for ns, iface in ((CLIENT, CLIENT_IFACE), (RESOLVER, RESOLVER_CLIENT_IFACE),
                          (RESOLVER, RESOLVER_UPSTREAM_IFACE), (UPSTREAM, UPSTREAM_IFACE)):
            lab.exec(ns, ["ethtool", "-K", iface, "tx", "off"])
        yield lab


def server(lab, which: str) -> dict:
    """Where each server is reached from: the sender's namespace and interface, the server's namespace, interface
    and addresses."""
    if which == "unbound":
        return {"sender": CLIENT, "sender_iface": CLIENT_IFACE, "ns": RESOLVER, "iface": RESOLVER_CLIENT_IFACE,
                "addr4": lab.resolver4, "addr6": lab.resolver6}
    return {"sender": RESOLVER, "sender_iface": RESOLVER_UPSTREAM_IFACE, "ns": UPSTREAM, "iface": UPSTREAM_IFACE,
            "addr4": "10.77.2.4", "addr6": "fd77:2::4"}


def start_sensor(lab, ns: str, iface: str, out: Path):
    log = Path(str(out) + ".log")
    proc = lab.popen(ns, [sys.executable, "-m", "sensor", "capture", "-i", iface, "--rules",
                          str(ROOT / "pcaps" / "pcaps.rules"), "--out", str(out)],
                     cwd=ROOT, stdout=sys.stderr, stderr=open(log, "w"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if "capturing on" in log.read_text():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError("sensor did not start: " + log.read_text())


@pytest.mark.parametrize("which", ["unbound", "bind"])
@pytest.mark.parametrize("form", LIVE_FORMS)
def test_sensor_sees_what_the_resolver_answers(lab, tmp_path: Path, which: str, form: str) -> None:
    where = server(lab, which)
    mac = lab.exec(where["sender"], ["cat", f"/sys/class/net/{where['sender_iface']}/address"]).stdout.strip()
    for address in (SPOOFED4[which], SPOOFED6[which]):
        lab.exec(where["ns"], ["ip", "neigh", "replace", address, "lladdr", mac, "dev", where["iface"],
                               "nud", "permanent"])
    out = tmp_path / "events.jsonl"
    sensor = start_sensor(lab, where["ns"], where["iface"], out)
    try:
        sent = lab.exec(where["sender"], [sys.executable, "-m", "pcaps.attacks.live", form, where["sender_iface"],
                                          where["addr4"], where["addr6"], SPOOFED4[which], SPOOFED6[which]],
                        cwd=ROOT, timeout=120)
        assert sent.returncode == 0, sent.stderr
        answered = json.loads(sent.stdout.strip().splitlines()[-1])
    finally:
        time.sleep(0.5)
        sensor.send_signal(signal.SIGTERM)
        assert sensor.wait(timeout=30) == 0, Path(str(out) + ".log").read_text()
    want = EXPECTATIONS[form]
    events = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    hits = sorted({e["dns"]["question"]["name"] for e in events if e["event"]["dataset"] == "truesource.hit"})
    kinds = {e["truesource"]["anomaly"]["name"] for e in events if e["event"]["dataset"] == "truesource.anomaly"}
    resolver_answered = [name for name in answered if name.endswith(".evil.example")]  # decoys are okay.example
    if want["resolver"] == "answers":
        assert resolver_answered, f"{which} did not answer {form} ({answered}): the form is not what the capture says"
        if want["hits"]:
            assert hits == sorted(want["hits"]), f"{which} answered {resolver_answered}; sensor hits {hits}"
        else:
            assert "stream_evicted_mid_message" in kinds
    else:
        assert resolver_answered == [], f"{which} answered {form}: the capture's verdict is wrong"
        assert hits == [], f"{which} refused {form}, the sensor hit {hits}"


# A forged CNAME response (pcaps/attacks/forms.py cname-response-*): the verdict is the client kernel's, so a real
# UDP socket in the client namespace receives what its kernel delivers. The bad-checksum response goes first, the
# good one after it on the same path: the first datagram the socket gets says whether the bad one was delivered,
# with no wait for something not to arrive.
RECEIVER = r"""
import socket, sys
from dnslib import DNSRecord
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(20)
print("bound", flush=True)
print(str(DNSRecord.parse(s.recv(4096)).q.qname).rstrip("."), flush=True)
"""
SENDER = r"""
import sys
from scapy.config import conf
from scapy.layers.inet import UDP
from pcaps.attacks.forms import cname_response, response_to_client, with_bad_checksum
iface, resolver, client, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
class Ends:
    pass
ends = Ends()
ends.resolver, ends.client = resolver, client
sock = conf.L3socket(iface=iface)
sock.send(with_bad_checksum(response_to_client(ends, port, cname_response("alias-bad.okay.example",
                                                                          "cnamebad.evil.example")), UDP))
sock.send(response_to_client(ends, port, cname_response("alias-good.okay.example", "cnamegood.evil.example")))
"""


def test_a_forged_cname_response_the_client_drops_is_no_cname_hit(lab, tmp_path: Path) -> None:
    """cname-response-bad-udp-checksum and -good-udp-checksum live (decision 0162): the client's kernel drops the
    response with a bad UDP checksum and takes the good one; the sensor on the resolver's client-facing interface
    makes a CNAME hit of the good one only, and the anomaly bad_checksum_response of the bad one."""
    client, port = lab.clients4[0], 47400
    out = tmp_path / "events.jsonl"
    sensor = start_sensor(lab, RESOLVER, RESOLVER_CLIENT_IFACE, out)
    receiver = lab.popen(CLIENT, [sys.executable, "-c", RECEIVER, client, str(port)], cwd=ROOT,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == "bound"
        sent = lab.exec(RESOLVER, [sys.executable, "-c", SENDER, RESOLVER_CLIENT_IFACE, lab.resolver4, client,
                                   str(port)], cwd=ROOT, timeout=60)
        assert sent.returncode == 0, sent.stderr
        delivered = receiver.stdout.readline().strip()
        assert receiver.wait(timeout=30) == 0
    finally:
        time.sleep(0.5)  # as above: the sensor's last batch
        sensor.send_signal(signal.SIGTERM)
        assert sensor.wait(timeout=30) == 0, Path(str(out) + ".log").read_text()
    assert delivered == "alias-good.okay.example", "the client's kernel took the response with a bad checksum"
    events = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    hits = [e for e in events if e["event"]["dataset"] == "truesource.hit"]
    assert [(e["dns"]["question"]["name"], e["truesource"]["cname"]["matched"], e["source"]["ip"]) for e in hits] \
        == [("alias-good.okay.example", "cnamegood.evil.example", client)]
    anomalies = [e for e in events if e["event"]["dataset"] == "truesource.anomaly"]
    assert [(a["truesource"]["anomaly"]["name"], a["truesource"]["anomaly"]["partial_name"], a["source"]["ip"])
            for a in anomalies] == [("bad_checksum_response", "cnamebad.evil.example", client)]
