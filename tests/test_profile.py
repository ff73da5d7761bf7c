"""`truesource profile`: the seed report's process (CMU/SEI-2012-TR-006 5.3-5.5) on flow records.

The end-to-end tests replay pcaps/report-network.pcap through the real CLI (captures -> flow table ->
profile) and compare every table with the answers written in pcaps/make_report_network.py's docstring,
which follow from how the capture was designed. The unit tests hold each rule to small hand-built records.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import PCAPS, run_cli
from sensor.flows.profile import (
    ANOMALY_KINDS,
    ANY_PORT,
    DIRECT_QUERY,
    LOW_VOLUME,
    PORT_53_TO_53,
    UNLISTED_SERVER,
    parse_networks,
    profile,
)
from sensor.flows.record import FLOW_DTYPE, make_records

CAPTURE = str(PCAPS / "report-network.pcap")
NET = "203.0.113.0/24"
ANY = None  # JSON for ANY_PORT


def ip(host: int) -> str:
    return f"203.0.113.{host}"


# ---------------------------------------------------------------- the report's sample network, in full

# (ip, packets, share, cumulative): the docstring's "Top destinations".
TOP_DESTINATIONS = [
    ("198.51.100.1", 328, 32.8, 32.8), ("192.0.2.1", 157, 15.7, 48.5), ("198.51.100.2", 110, 11.0, 59.5),
    ("192.0.2.31", 66, 6.6, 66.1), ("192.0.2.32", 62, 6.2, 72.3), ("192.0.2.33", 58, 5.8, 78.1),
    ("192.0.2.34", 56, 5.6, 83.7), ("192.0.2.35", 54, 5.4, 89.1), ("192.0.2.36", 52, 5.2, 94.3),
    ("192.0.2.37", 51, 5.1, 99.4),
]
# (ip, packets, share, cumulative, protocols): "DNS answers out" and "DNS over TCP".
DNS_SERVERS = [
    (ip(50), 250, 50.0, 50.0, [17]), (ip(51), 150, 30.0, 80.0, [6, 17]), (ip(52), 96, 19.2, 99.2, [6, 17]),
]
# "DNS queries out": the report's dns_clients.set (.222 .220 .33 .51 .52), by packets.
DNS_CLIENTS = [
    (ip(33), 338, 33.8, 33.8, [17]), (ip(51), 282, 28.2, 62.0, [6, 17]), (ip(52), 234, 23.4, 85.4, [6, 17]),
    (ip(222), 74, 7.4, 92.8, [17]), (ip(220), 65, 6.5, 99.3, [17]),
]
ANSWERING = 527  # packets internal hosts sent from port 53 to other ports (the docstring's sum)
# (kind, ip, packets, share, peers, top peer)
ANOMALIES = [
    (PORT_53_TO_53, ip(52), 2, 100.0, 1, "198.51.100.53"),
    (UNLISTED_SERVER, ip(77), 4, 100 * 4 / ANSWERING, 2, "192.0.2.150"),
    (UNLISTED_SERVER, ip(66), 2, 100 * 2 / ANSWERING, 1, ip(100)),
    (DIRECT_QUERY, ip(33), 338, 33.8, 2, "198.51.100.1"),
    (DIRECT_QUERY, ip(222), 74, 7.4, 1, "198.51.100.2"),
    (DIRECT_QUERY, ip(220), 65, 6.5, 2, "192.0.2.1"),
    (LOW_VOLUME, ip(140), 3, 0.3, 1, "198.51.100.99"),
    (LOW_VOLUME, ip(141), 2, 0.2, 1, "198.51.100.99"),
    (LOW_VOLUME, ip(142), 2, 0.2, 2, "192.0.2.1"),
]
# ip -> (packets, share, [(proto, internal port, external port, packets, share)]): "VPN" and "Mail".
VPN = {
    ip(33): (50, 25.0, [(6, 1723, ANY, 10, 5.0), (47, ANY, ANY, 40, 20.0)]),
    ip(35): (150, 75.0, [(17, 500, 500, 10, 5.0), (17, 1701, 1701, 10, 5.0), (17, 4500, 4500, 20, 10.0),
                         (50, ANY, ANY, 100, 50.0), (51, ANY, ANY, 10, 5.0)]),
}
MAIL = {
    ip(195): (30, 15.0, [(6, 25, ANY, 16, 8.0), (6, 465, ANY, 4, 2.0), (6, ANY, 25, 10, 5.0)]),
    ip(221): (60, 30.0, [(6, 25, ANY, 20, 10.0), (6, 993, ANY, 20, 10.0), (6, 995, ANY, 10, 5.0),
                         (6, ANY, 25, 10, 5.0)]),
    ip(222): (70, 35.0, [(6, 25, ANY, 20, 10.0), (6, 110, ANY, 10, 5.0), (6, 143, ANY, 10, 5.0),
                         (6, 587, ANY, 20, 10.0), (6, ANY, 25, 10, 5.0)]),
    ip(231): (40, 20.0, [(6, 25, ANY, 20, 10.0), (6, ANY, 25, 20, 10.0)]),
}


def _ranked(rows: list[dict], with_protocols: bool) -> list[tuple]:
    out = []
    for r in rows:
        row = (r["ip"], r["packets"], pytest.approx(r["share"], abs=1e-4), pytest.approx(r["cumulative"], abs=1e-4))
        out.append((*row, r["protocols"]) if with_protocols else row)
    return out


def _assets(rows: list[dict]) -> dict:
    return {a["ip"]: (a["packets"], pytest.approx(a["share"]), [
        (s["proto"], s["internal_port"], s["external_port"], s["packets"], pytest.approx(s["share"]))
        for s in a["services"]]) for a in rows}


@pytest.fixture(scope="module", params=["compiled", "pure"])
def report_profile(request) -> dict:
    """The profile of the report's network, with the fast path's flow table and with the reference one."""
    if request.param == "compiled":
        from sensor import loop

        if loop.compiled is None or not hasattr(loop.compiled, "FlowTable"):
            pytest.skip("the compiled flow table is not built")
    env = {**os.environ, "TRUESOURCE_PURE": "1"} if request.param == "pure" else None
    process = run_cli("profile", CAPTURE, "--internal", NET, "--json", env=env)
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert len(lines) == 1, "--json prints one object"
    return json.loads(lines[0])


def test_top_external_dns_destinations(report_profile: dict) -> None:
    assert _ranked(report_profile["top_destinations"], False) == TOP_DESTINATIONS


def test_dns_servers_and_clients(report_profile: dict) -> None:
    assert _ranked(report_profile["dns_servers"], True) == DNS_SERVERS
    assert _ranked(report_profile["dns_clients"], True) == DNS_CLIENTS


def test_recursive_and_iterative_as_in_the_report(report_profile: dict) -> None:
    """Report steps 4 and 5: recursive.set is .51 and .52, iterative.set is .50."""
    assert report_profile["recursive"] == [{"ip": ip(51), "packets": 150}, {"ip": ip(52), "packets": 96}]
    assert report_profile["iterative"] == [{"ip": ip(50), "packets": 250}]


def test_every_anomaly_kind(report_profile: dict) -> None:
    got = [(a["kind"], a["ip"], a["packets"], a["share"], a["peers"], a["peer"])
           for a in report_profile["anomalies"]]
    assert got == [(k, i, n, pytest.approx(s, abs=1e-4), p, t) for k, i, n, s, p, t in ANOMALIES]
    assert {a["kind"] for a in report_profile["anomalies"]} == set(ANOMALY_KINDS)


def test_vpn_assets_with_protocols_ports_and_shares(report_profile: dict) -> None:
    """The report's vpn.set (.33 and .35), each with its tunnel protocols and setup ports."""
    assert _assets(report_profile["vpn"]) == VPN
    assert [a["ip"] for a in report_profile["vpn"]] == [ip(33), ip(35)]


def test_mail_assets_with_protocols_ports_and_shares(report_profile: dict) -> None:
    """Report Table 13's four SMTP servers, serving and sending on 25 (port 80 webmail is not mail)."""
    assert _assets(report_profile["mail"]) == MAIL
    assert [a["ip"] for a in report_profile["mail"]] == [ip(195), ip(221), ip(222), ip(231)]


def test_json_schema(report_profile: dict) -> None:
    for key in ("dns_servers", "dns_clients", "recursive", "iterative", "anomalies", "vpn", "mail"):
        assert isinstance(report_profile[key], list) and report_profile[key], key
        for item in report_profile[key]:
            assert isinstance(item["ip"], str)
    for item in report_profile["anomalies"]:
        assert item["kind"] in ANOMALY_KINDS
    assert report_profile["internal"] == [NET]
    assert report_profile["threshold"] == 1.0


def test_text_tables_match_the_json() -> None:
    """The text output: aligned tables holding the same rows (the report's Table 15 layout for DNS)."""
    process = run_cli("profile", CAPTURE, "--internal", NET)
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    dns_assets = lines.index(next(x for x in lines if x.startswith("DNS assets")))
    assert [line.split() for line in lines[dns_assets + 2 : dns_assets + 10]] == [
        [ip(50), "17", "53", "*", "*", "iterative"],
        [ip(51), "6,17", "53", "*", "*", "recursive"],
        ["6,17", "*", "*", "53"],
        [ip(52), "6,17", "53", "*", "*", "recursive"],
        ["6,17", "*", "*", "53"],
        [ip(33), "17", "*", "*", "53", "client"],
        [ip(222), "17", "*", "*", "53", "client"],
        [ip(220), "17", "*", "*", "53", "client"],
    ]
    vpn = lines.index(next(x for x in lines if x.startswith("VPN assets")))
    header, first = lines[vpn + 1], lines[vpn + 2]
    assert header.split() == ["internal", "IP", "proto", "int.port", "ext.IP", "ext.port", "packets", "%packets"]
    assert first.split() == [ip(33), "6", "tcp", "1723", "*", "*", "10", "5.00"]
    assert len(header) == len(first), "numbers right-aligned under their headers"


def test_a_store_profiles_as_its_capture(tmp_path) -> None:
    """SOURCE may be a flow store: `replay --flow-store` of the capture, then a profile of the store, gives the
    same profile as the capture itself."""
    store = str(tmp_path / "store")
    replay = run_cli("replay", CAPTURE, "--rules", "pcaps/pcaps.rules", "--out", os.devnull, "--no-progress",
                     "--flow-store", store, "--internal", NET)
    assert replay.returncode == 0, replay.stderr
    from_store = run_cli("profile", store, "--internal", NET, "--json")
    from_capture = run_cli("profile", CAPTURE, "--internal", NET, "--json")
    assert from_store.returncode == 0, from_store.stderr
    assert json.loads(from_store.stdout) == json.loads(from_capture.stdout)
    # and both at once: every flow counted twice, so the same roles and shares with twice the packets
    both = json.loads(run_cli("profile", store, CAPTURE, "--internal", NET, "--json").stdout)
    assert [(t["ip"], t["packets"], t["share"]) for t in both["dns_servers"]] == [
        (ip, 2 * packets, share) for ip, packets, share, _, _ in DNS_SERVERS]


def test_threshold_option_moves_the_edge() -> None:
    """--threshold 0.8: .77's 4 of 500 answer packets (0.8 %) now make it a server (at least, not above)."""
    process = run_cli("profile", CAPTURE, "--internal", NET, "--threshold", "0.8", "--json")
    assert process.returncode == 0, process.stderr
    result = json.loads(process.stdout)
    assert [s["ip"] for s in result["dns_servers"]] == [ip(50), ip(51), ip(52), ip(77)]
    assert [s["ip"] for s in result["iterative"]] == [ip(50), ip(77)]
    assert ip(77) not in [a["ip"] for a in result["anomalies"] if a["kind"] == UNLISTED_SERVER]


# ---------------------------------------------------------------- errors: one line, exit 2

@pytest.mark.parametrize("args, message", [
    ((CAPTURE,), "--internal CIDR is required"),
    ((CAPTURE, "--internal", "203.0.113.0/33"), "--internal: '203.0.113.0/33' is not an address or CIDR"),
    ((CAPTURE, "--internal", "10.0.0.0/8,bogus"), "--internal: 'bogus' is not an address or CIDR"),
    ((CAPTURE, "--internal", NET, "--threshold", "0"), "--threshold: 0 is not a percentage"),
    ((CAPTURE, "--internal", NET, "--threshold", "101"), "--threshold: 101 is not a percentage"),
    (("pcaps/no-such.pcap", "--internal", NET), "pcaps/no-such.pcap: no such file"),
    (("pcaps/pcaps.rules", "--internal", NET), "pcaps/pcaps.rules: neither a flow store"),
])
def test_bad_invocation_is_one_line_and_exit_2(args: tuple, message: str) -> None:
    process = run_cli("profile", *args)
    assert process.returncode == 2
    assert process.stdout == ""
    lines = process.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("truesource: ") and message in lines[0], process.stderr


# ---------------------------------------------------------------- each rule on hand-built records

OUT_CLIENT, EXT = ip(10), "198.51.100.9"


def flows(*rows: tuple) -> np.ndarray:
    """(src, dst, proto, sport, dport, packets) rows as records."""
    return make_records({"src": s, "dst": d, "proto": p, "src_port": sp, "dst_port": dp, "packets": n}
                        for s, d, p, sp, dp, n in rows)


def udp_out(src: str, sport: int, dport: int, packets: int, dst: str = EXT) -> tuple:
    return (src, dst, 17, sport, dport, packets)


def test_server_at_exactly_the_threshold_is_kept_and_just_under_is_not() -> None:
    # 1 of 100 answer packets is exactly 1 %: kept (rwstats --percentage keeps bins at or above).
    records = flows(udp_out(ip(1), 53, 40000, 99), udp_out(ip(2), 53, 40000, 1))
    assert [t.ip for t in profile(records, [NET]).dns_servers] == [ip(1), ip(2)]
    # 1 of 101 is 0.99 %: not a server, so an unlisted one.
    records = flows(udp_out(ip(1), 53, 40000, 100), udp_out(ip(2), 53, 40000, 1))
    result = profile(records, [NET])
    assert [t.ip for t in result.dns_servers] == [ip(1)]
    assert [(a.kind, a.ip) for a in result.anomalies] == [(UNLISTED_SERVER, ip(2))]
    # A lower threshold takes it back in.
    assert [t.ip for t in profile(records, [NET], threshold=0.99).dns_servers] == [ip(1), ip(2)]


def test_client_threshold_edge_and_low_volume() -> None:
    records = flows(udp_out(ip(1), 40000, 53, 199), udp_out(ip(2), 40001, 53, 2), udp_out(ip(3), 40002, 53, 1))
    result = profile(records, [NET], threshold=1.0)  # 2/202 = 0.99 %, 1/202 = 0.5 %
    assert [t.ip for t in result.dns_clients] == [ip(1)]
    assert [(a.kind, a.ip, a.packets, a.peers) for a in result.anomalies] == [
        (LOW_VOLUME, ip(2), 2, 1), (LOW_VOLUME, ip(3), 1, 1)]
    records = flows(udp_out(ip(1), 40000, 53, 198), udp_out(ip(2), 40001, 53, 2))  # 2/200 = 1 %
    assert [t.ip for t in profile(records, [NET]).dns_clients] == [ip(1), ip(2)]


def test_recursive_is_the_intersection_and_iterative_the_difference() -> None:
    records = flows(
        udp_out(ip(1), 53, 40000, 10), udp_out(ip(2), 53, 40000, 10),  # two servers
        udp_out(ip(2), 40001, 53, 10), udp_out(ip(3), 40002, 53, 10),  # .2 also a client; .3 only a client
    )
    result = profile(records, [NET])
    assert result.recursive == (ip(2),)
    assert result.iterative == (ip(1),)
    # .3 is a client beside a local resolver: it queries external servers directly.
    assert [(a.kind, a.ip) for a in result.anomalies] == [(DIRECT_QUERY, ip(3))]


def test_direct_query_only_when_the_network_has_a_resolver() -> None:
    """Report 5.4.3: going to external servers is "necessary when there is no local DNS server"."""
    records = flows(udp_out(ip(1), 53, 40000, 10), udp_out(ip(3), 40002, 53, 10))  # .1 iterative only
    result = profile(records, [NET])
    assert result.recursive == () and result.iterative == (ip(1),)
    assert result.anomalies == ()


def test_only_outbound_flows_count() -> None:
    """Inbound, internal and external flows are none of the report's `--type=out` tables."""
    records = flows(
        (EXT, ip(1), 17, 40000, 53, 50),  # inbound query to .1
        (ip(2), ip(1), 17, 40000, 53, 50),  # internal query
        (EXT, "192.0.2.9", 17, 53, 40000, 50),  # external to external
        (EXT, ip(1), 50, 0, 0, 50),  # inbound ESP
        (EXT, ip(1), 6, 40000, 25, 50),  # inbound SMTP
    )
    result = profile(records, [NET])
    assert result.top_destinations == result.dns_servers == result.dns_clients == ()
    assert result.vpn == result.mail == ()


def test_internal_host_answering_internal_hosts_is_an_unlisted_server() -> None:
    records = flows(udp_out(ip(1), 53, 40000, 100), (ip(9), ip(2), 6, 53, 40000, 3))  # TCP, internal
    result = profile(records, [NET])
    assert [(a.kind, a.ip, a.packets, a.peers, a.peer) for a in result.anomalies] == [
        (UNLISTED_SERVER, ip(9), 3, 1, ip(2))]


def test_port_53_to_53_is_seen_from_the_internal_end_both_ways() -> None:
    records = flows(udp_out(ip(5), 53, 53, 3), (EXT, ip(5), 17, 53, 53, 2), (EXT, "192.0.2.9", 17, 53, 53, 7))
    result = profile(records, [NET], threshold=100)
    found = [(a.kind, a.ip, a.packets, a.peer) for a in result.anomalies if a.kind == PORT_53_TO_53]
    assert found == [(PORT_53_TO_53, ip(5), 5, EXT)]  # the external-only pair is not the network's


def test_vpn_rows() -> None:
    records = flows(
        (ip(1), EXT, 50, 0, 0, 6),  # ESP: no ports
        (ip(1), EXT, 17, 500, 500, 2),  # IKE
        (ip(2), EXT, 6, 40000, 1723, 1),  # an internal PPTP client
        (ip(2), EXT, 17, 40000, 53, 1),  # DNS: not VPN
        (ip(3), EXT, 6, 40000, 500, 1),  # TCP 500 is not IKE
    )
    result = profile(records, [NET])
    got = [(a.ip, a.packets, [(r.proto, r.internal_port, r.external_port, r.packets) for r in a.rows])
           for a in result.vpn]
    assert got == [(ip(1), 8, [(17, 500, 500, 2), (50, ANY_PORT, ANY_PORT, 6)]),
                   (ip(2), 1, [(6, ANY_PORT, 1723, 1)])]
    assert [round(a.share, 4) for a in result.vpn] == [round(800 / 9, 4), round(100 / 9, 4)]


def test_mail_rows_count_tcp_mail_ports_only() -> None:
    records = flows(
        (ip(1), EXT, 6, 25, 40000, 3), (ip(1), EXT, 6, 40001, 587, 1),
        (ip(1), EXT, 6, 80, 40002, 9),  # webmail login: web traffic
        (ip(2), EXT, 17, 40000, 25, 9),  # UDP to 25 is not SMTP
    )
    result = profile(records, [NET])
    assert [(a.ip, [(r.proto, r.internal_port, r.external_port, r.packets, r.share) for r in a.rows])
            for a in result.mail] == [(ip(1), [(6, 25, ANY_PORT, 3, 75.0), (6, ANY_PORT, 587, 1, 25.0)])]


def test_ipv6_internal_network() -> None:
    records = flows(("2001:db8::53", "2001:db8:ffff::1", 17, 53, 40000, 5),
                    ("2001:db8:ffff::1", "2001:db8::53", 17, 40000, 53, 5))
    result = profile(records, parse_networks(["2001:db8::/48"]))
    assert [t.ip for t in result.dns_servers] == ["2001:db8::53"]
    assert result.iterative == ("2001:db8::53",)


def test_no_flows_no_tables() -> None:
    result = profile(np.zeros(0, FLOW_DTYPE), [NET])
    assert result.as_dict()["dns_servers"] == [] and result.anomalies == () and result.vpn == ()


def test_parse_networks_takes_lists_and_names_the_bad_item() -> None:
    assert [str(n) for n in parse_networks(["10.0.0.0/8,192.168.0.0/16", "2001:db8::/32"])] == [
        "10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        parse_networks(["10.0.0.300"])


# ---------------------------------------------------------------- the numpy rules against a plain-Python oracle

def oracle(rows: list[tuple], internal: str, threshold: float) -> dict:
    """The report's rules written the obvious way, one record at a time: what profile() must agree with."""
    import ipaddress
    from collections import defaultdict

    net = ipaddress.ip_network(internal)

    def inside(address: str) -> bool:
        return ipaddress.ip_address(address) in net

    def order(table: dict) -> list[tuple[str, int]]:
        key = ipaddress.ip_address
        return sorted(table.items(), key=lambda kv: (-kv[1], key(kv[0]).version, int(key(kv[0]))))

    queries, answers = defaultdict(int), defaultdict(int)
    query_peers, answer_peers = defaultdict(lambda: defaultdict(int)), defaultdict(lambda: defaultdict(int))
    both, vpn, mail = defaultdict(int), defaultdict(int), defaultdict(int)
    for src, dst, proto, sport, dport, packets in rows:
        out = inside(src) and not inside(dst)
        if out and proto == 17 and dport == 53:
            queries[src] += packets
            query_peers[src][dst] += packets
        if out and proto == 17 and sport == 53:
            answers[src] += packets
        if proto in (6, 17) and sport == 53 and dport != 53 and inside(src):
            answer_peers[src][dst] += packets
        if proto in (6, 17) and sport == 53 and dport == 53 and (inside(src) or inside(dst)):
            both[(src, dst) if inside(src) else (dst, src)] += packets
        if out:
            vpn_ports = {17: (500, 1701, 4500), 6: (1723,)}.get(proto, ())
            if proto in (47, 50, 51) or sport in vpn_ports or dport in vpn_ports:
                vpn[(src, proto, sport if sport in vpn_ports else None,
                     dport if dport in vpn_ports else None)] += packets
            mail_ports = (25, 110, 143, 465, 587, 993, 995) if proto == 6 else ()
            if sport in mail_ports or dport in mail_ports:
                mail[(src, proto, sport if sport in mail_ports else None,
                      dport if dport in mail_ports else None)] += packets

    def kept(table: dict) -> list[str]:
        total = sum(table.values())
        return [ip for ip, n in order(table) if n * 100 >= threshold * total]

    def top_peer(peers: dict) -> tuple[int, str]:
        return len(peers), order(peers)[0][0]

    servers, clients = kept(answers), kept(queries)
    recursive = [ip for ip in servers if ip in clients]
    anomalies = [("port_53_to_53", a, n, 1, b) for (a, b), n in sorted(both.items())]
    answering = {ip: sum(peers.values()) for ip, peers in answer_peers.items()}
    anomalies += [("unlisted_server", ip, n, *top_peer(answer_peers[ip]))
                  for ip, n in order(answering) if ip not in servers]
    if recursive:
        anomalies += [("direct_query", ip, queries[ip], *top_peer(query_peers[ip]))
                      for ip in clients if ip not in servers]
    anomalies += [("low_volume", ip, n, *top_peer(query_peers[ip])) for ip, n in order(queries) if ip not in clients]

    def assets(table: dict) -> dict:
        out: dict = defaultdict(set)
        for (ip, proto, iport, eport), n in table.items():
            out[ip].add((proto, iport, eport, n))
        return {ip: sorted(rows, key=lambda r: (r[1] is None, r[0], r[1] or 0, r[2] or 0)) for ip, rows in out.items()}

    return {"servers": servers, "clients": clients, "recursive": recursive,
            "iterative": [ip for ip in servers if ip not in clients], "anomalies": anomalies,
            "vpn": assets(vpn), "mail": assets(mail)}


def _sorted_53(anomalies: list[tuple]) -> list[tuple]:
    """53-to-53 rows in address order (the oracle sorts them as text; the order is not part of the rule)."""
    first = sorted(a for a in anomalies if a[0] == PORT_53_TO_53)
    return first + [a for a in anomalies if a[0] != PORT_53_TO_53]


ADDRESSES = [ip(1), ip(2), ip(3), ip(200), "198.51.100.1", "198.51.100.2", "192.0.2.7"]
PORTS = [53, 53, 25, 465, 500, 1701, 1723, 4500, 80, 40000, 40001]  # ICMP type 0 code 25 is "port" 25: not mail


@pytest.mark.parametrize("seed", range(40))
def test_profile_agrees_with_the_oracle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    inside, outside = ADDRESSES[:4], ADDRESSES[4:]

    def row() -> tuple:
        packets = int(rng.integers(1, 50))
        if rng.random() < 0.5:  # anything at all
            return (str(rng.choice(ADDRESSES)), str(rng.choice(ADDRESSES)), int(rng.choice([1, 6, 17, 17, 47, 50, 51])),
                    int(rng.choice(PORTS)), int(rng.choice(PORTS)), packets)
        # DNS out, queries or answers, so that servers, clients and resolvers turn up
        query = rng.random() < 0.5
        return (str(rng.choice(inside)), str(rng.choice(outside)), 17, 40000 if query else 53,
                53 if query else 40000, packets)

    rows = [row() for _ in range(int(rng.integers(1, 80)))]
    threshold = float(rng.choice([0.5, 1.0, 5.0, 20.0]))
    want = oracle(rows, NET, threshold)
    got = profile(flows(*rows), [NET], threshold)
    assert [t.ip for t in got.dns_servers] == want["servers"]
    assert [t.ip for t in got.dns_clients] == want["clients"]
    assert list(got.recursive) == want["recursive"] and list(got.iterative) == want["iterative"]
    assert _sorted_53([(a.kind, a.ip, a.packets, a.peers, a.peer) for a in got.anomalies]) == \
        _sorted_53(want["anomalies"])

    def rows_of(assets) -> dict:
        def port(p: int) -> int | None:
            return None if p == ANY_PORT else p
        return {a.ip: [(r.proto, port(r.internal_port), port(r.external_port), r.packets) for r in a.rows]
                for a in assets}

    assert rows_of(got.vpn) == want["vpn"]
    assert rows_of(got.mail) == want["mail"]
    for table in (got.vpn, got.mail):
        if table:
            assert sum(a.share for a in table) == pytest.approx(100.0)


def test_flowmon_tutorial_hunt_on_the_report_network() -> None:
    """Seed 003's filter, "dst port 53 and not dst ip <the default resolver> and src net <ours>", kept inside:
    the only internal host asking an internal DNS server other than the resolver .51 is .100, asking .66."""
    process = run_cli("flows", CAPTURE, "--filter", f"dst port 53 and src net {NET} and dst net {NET} "
                      f"and not dst ip {ip(51)}", "--aggregate", "srcip,dstip", "--json")
    assert process.returncode == 0, process.stderr
    rows = [json.loads(line) for line in process.stdout.splitlines()]
    assert [(r["srcip"], r["dstip"], r["flows"], r["packets"]) for r in rows] == [(ip(100), ip(66), 2, 2)]
