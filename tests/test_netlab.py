"""The namespace lab itself: it comes up, resolves through a real unbound and bind9, keeps its traffic inside,
shows a capture what a sensor needs, and leaves nothing behind."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlab import NetLab, lab_or_skip, read_dns, skip_or_fail, sweep_stale, tcpdump, zones
from netlab.lab import NS_PREFIX, SPORT_FIRST, SPORT_LAST, list_namespaces
from netlab.topology import (
    CLIENT,
    OUTSIDE4,
    OUTSIDE6,
    RESOLVER,
    RESOLVER_UPSTREAM4,
    RESOLVER_UPSTREAM6,
    ROLES,
    ROOT_SERVER4,
    TLD_SERVER4,
    TLD_SERVER6,
    UPSTREAM,
    UPSTREAM_ADDRS4,
    UPSTREAM_ADDRS6,
    ZONE_SERVER4,
    ZONE_SERVER6,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

START_BUDGET = 10.0  # seconds: the lab is a fixture, it must not dominate the suite

# (client address, resolver address, transport): every family and transport a client may use.
PATHS = [
    pytest.param(NetLab.clients4[1], NetLab.resolver4, False, id="v4-udp"),
    pytest.param(NetLab.clients4[2], NetLab.resolver4, True, id="v4-tcp"),
    pytest.param(NetLab.clients6[1], NetLab.resolver6, False, id="v6-udp"),
    pytest.param(NetLab.clients6[3], NetLab.resolver6, True, id="v6-tcp"),
]


@pytest.fixture(scope="module")
def lab() -> Iterator[NetLab]:
    with lab_or_skip() as lab:
        yield lab


def test_lab_starts_within_budget_with_its_addresses(lab: NetLab):
    assert lab.started_seconds < START_BUDGET
    assert all(lab.ns[role] in list_namespaces() for role in ROLES)
    client_addrs = lab.exec(CLIENT, ["ip", "-o", "addr", "show", "dev", lab.client_iface]).stdout
    for addr in (*lab.clients4, *lab.clients6):
        assert f" {addr}/" in client_addrs
    resolver_links = lab.exec(RESOLVER, ["ip", "-o", "link", "show", "up"]).stdout
    assert f"{lab.resolver_iface}@" in resolver_links and f"{lab.upstream_iface}@" in resolver_links


@pytest.mark.parametrize(("src", "server", "tcp"), PATHS)
@pytest.mark.parametrize("name", ["www.good.test", "intranet.corp.test", "portal.eu.corp.test"])
def test_good_name_resolves(lab: NetLab, name: str, src: str, server: str, tcp: bool):
    result = lab.dig(name, src=src, server=server, tcp=tcp)
    assert (result.status, result.addresses) == ("NOERROR", [zones.EXPECTED_A[name]]), result.output
    assert "ad" in result.flags  # validated: the chain from the lab's root key holds
    assert result.src == src and SPORT_FIRST <= result.sport < SPORT_LAST


@pytest.mark.parametrize(("src", "server", "tcp"), PATHS)
@pytest.mark.parametrize("name", ["c2.evil.test", "a.b.c.evil.test", "files.cdn.evil.test", "invoice.zip",
                                  "download.zip", "cdn.badcdn.test"])
def test_suspicious_name_resolves(lab: NetLab, name: str, src: str, server: str, tcp: bool):
    result = lab.dig(name, src=src, server=server, tcp=tcp)
    assert (result.status, result.addresses) == ("NOERROR", [zones.EXPECTED_A[name]]), result.output


def test_answers_follow_cnames_and_types(lab: NetLab):
    assert lab.dig("alias.good.test").addresses == [zones.EXPECTED_A["alias.good.test"]]
    assert "ad" not in lab.dig("cdn.badcdn.test").flags  # unsigned zone: an insecure delegation
    assert lab.dig("c2.evil.test", "AAAA", src=lab.clients6[0], server=lab.resolver6).addresses == [
        "2001:db8:66::66"]
    txt = lab.dig(lab.unique_name("t.evil.test"), "TXT", tcp=True)  # the wildcard *.t.evil.test
    assert [r.rdata for r in txt.answers] == ['"tunnel"']
    assert lab.dig("nothing-here.good.test").status == "NXDOMAIN"
    unique = lab.unique_name("evil.test")
    assert lab.dig(unique).addresses == ["198.51.100.69"]


def test_nothing_routes_out_of_the_lab(lab: NetLab):
    for role in ROLES:
        assert lab.exec(role, ["ip", "route", "show", "default"]).stdout == ""
        assert lab.exec(role, ["ip", "-6", "route", "show", "default"]).stdout == ""
        for outside in (OUTSIDE4, OUTSIDE6):
            route = lab.exec(role, ["ip", "route", "get", outside])
            assert route.returncode != 0 and "unreachable" in route.stderr, (role, outside, route.stdout)
    # A real attempt fails at once (ENETUNREACH): connect() on UDP only looks the route up, so nothing is sent.
    probe = ("import socket, sys\nfor fam, addr in ((socket.AF_INET, sys.argv[1]), (socket.AF_INET6, sys.argv[2])):\n"
             "    try:\n        socket.socket(fam, socket.SOCK_DGRAM).connect((addr, 53))\n"
             "    except OSError as e:\n        print(e.errno)\n    else:\n        print('connected')\n")
    out = lab.exec(CLIENT, ["python3", "-c", probe, OUTSIDE4, OUTSIDE6]).stdout.split()
    assert out == ["101", "101"]  # ENETUNREACH
    # Clients reach only the resolver: the resolver namespace does not forward to the upstream network.
    assert lab.exec(CLIENT, ["ip", "route", "get", ROOT_SERVER4]).returncode != 0
    direct = lab.dig("www.good.test", server=ROOT_SERVER4)
    assert direct.status == "" and direct.returncode != 0


def test_capture_shows_client_query_and_resolver_upstream_queries(lab: NetLab, tmp_path: Path):
    """What the sensor will see on the resolver: each client query with its true port, and the resolver's
    own walk upstream (minimised names, DS) for the same name."""
    lab.restart_resolver()  # cold cache: the walk starts at the root
    name = lab.unique_name("cdn.evil.test")
    client_side, upstream_side = tmp_path / "clients.pcap", tmp_path / "upstream.pcap"
    with tcpdump(lab, RESOLVER, lab.resolver_iface, client_side), \
            tcpdump(lab, RESOLVER, lab.upstream_iface, upstream_side):
        udp = lab.dig(name, src=lab.clients4[3])
        tcp = lab.dig(name, "AAAA", src=lab.clients6[2], server=lab.resolver6, tcp=True)
    assert udp.status == tcp.status == "NOERROR"

    seen = read_dns(client_side)
    queries = {(p.src, p.sport, p.dst, p.dport, p.transport, p.qname, p.qtype, p.msg.header.id)
               for p in seen if not p.is_response}
    assert queries == {
        (udp.src, udp.sport, lab.resolver4, 53, "udp", name, "A", udp.id),
        (tcp.src, tcp.sport, lab.resolver6, 53, "tcp", name, "AAAA", tcp.id),
    }
    answers = {(p.dst, p.dport, p.qname) for p in seen if p.is_response}
    assert answers == {(udp.src, udp.sport, name), (tcp.src, tcp.sport, name)}

    upstream = [p for p in read_dns(upstream_side) if not p.is_response]
    assert upstream, "no upstream query captured"
    assert all(p.src in (RESOLVER_UPSTREAM4, RESOLVER_UPSTREAM6) and p.dport == 53 for p in upstream)
    assert all(p.dst in (*UPSTREAM_ADDRS4, *UPSTREAM_ADDRS6) for p in upstream)
    asked = {(p.qname, p.qtype) for p in upstream}
    by_server = {(p.qname, p.dst) for p in upstream}
    assert ("", "NS") in asked  # priming the root
    assert ("test", "A") in asked  # minimised: the root is asked only for the TLD
    assert {("evil.test", TLD_SERVER4), ("evil.test", TLD_SERVER6)} & by_server  # the TLD, for the zone
    assert ("cdn.evil.test", "DS") in asked  # DS of a child zone served by its parent's server
    assert ("u.cdn.evil.test", "A") in asked  # minimised inside the zone
    full = {p.dst for p in upstream if p.qname == name}
    assert full and full <= {ZONE_SERVER4, ZONE_SERVER6}


def test_teardown_leaves_nothing_and_labs_do_not_collide(lab: NetLab):
    """A second lab runs beside the module's, then goes without a trace, even when the test inside fails."""
    other = NetLab(dnssec=False)
    with pytest.raises(RuntimeError, match="inside the lab"), other:
        assert set(other.ns.values()).isdisjoint(lab.ns.values())
        assert other.dig("www.good.test").addresses == [zones.EXPECTED_A["www.good.test"]]
        assert "ad" not in other.dig("c2.evil.test").flags  # dnssec=False: an iterator only
        assert lab.dig("www.good.test").status == "NOERROR"  # the first lab is untouched
        stray = other.popen(CLIENT, ["sleep", "300"])  # left running on purpose
        deadline = time.monotonic() + 5
        while stray.pid not in (pids := namespace_pids(other)) and time.monotonic() < deadline:
            time.sleep(0.01)  # `ip netns exec` enters the namespace just after it starts
        assert stray.pid in pids and len(pids) >= 3  # named, unbound, sleep
        raise RuntimeError("a failure inside the lab")
    assert not set(other.ns.values()) & set(list_namespaces())
    assert stray.poll() is not None
    assert not [p for p in pids if Path(f"/proc/{p}").exists()]
    assert not other.workdir.exists()
    assert lab.dig("mail.good.test").addresses == [zones.EXPECTED_A["mail.good.test"]]


def namespace_pids(lab: NetLab) -> list[int]:
    return [int(pid) for role in ROLES
            for pid in subprocess.run(["ip", "netns", "pids", lab.ns[role]], capture_output=True,
                                      text=True).stdout.split()]


def test_stale_lab_of_a_dead_run_is_swept(lab: NetLab):
    # Owner pid above any pid_max: it cannot be alive. (Another run's sweep may remove it first: fine too.)
    dead = f"{NS_PREFIX}999999999-{secrets.token_hex(2)}-{UPSTREAM}"
    subprocess.run(["ip", "netns", "add", dead], check=True)
    try:
        swept = sweep_stale()
        assert all(name.startswith(f"{NS_PREFIX}999999999-") for name in swept)
        assert dead not in list_namespaces()
        assert all(name in list_namespaces() for name in lab.ns.values())  # a live lab is never swept
    finally:
        subprocess.run(["ip", "netns", "del", dead], capture_output=True)


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), (None, pytest.skip.Exception)])
def test_unavailable_lab_skips_except_on_ci(monkeypatch: pytest.MonkeyPatch, ci: str | None, outcome):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="not root"):
        skip_or_fail("not root")

