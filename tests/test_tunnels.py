"""Tunnels (PPPoE, GRE, ERSPAN, VXLAN, Geneve) and the EDNS Client Subnet, in both decoders (docs/decoding.md).

Every case runs through the reference decoder and the compiled fast path, which must agree record for record
and counter for counter. Limits have a test named after the attack they stop.
"""

from __future__ import annotations

import struct
import tomllib
from pathlib import Path

import pcapy
import pytest
from dnslib import EDNS0, RR, DNSRecord, EDNSOption
from scapy.contrib.erspan import ERSPAN_I, ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from sensor.decode import ReferenceLoop
from sensor.decode.edns import MAX_EDNS_OPTIONS, MAX_EDNS_WALK_RECORDS
from sensor.decode.tunnel import MAX_TUNNEL_DEPTH
from sensor.records import COUNTERS, TABLE_GAUGES, DnsMessage
from sensor.rules.loader import load_rules

try:
    from sensor._loop import FastLoop
except ImportError:  # the reference alone; test_differential.py fails on CI without the build
    FastLoop = None

ROOT = Path(__file__).resolve().parents[1]
EN10MB = 1
ALL = {"": [0, 0]}  # the root rule: every query hits
CLIENT, RESOLVER = "192.0.2.10", "198.51.100.53"
SWITCH, COLLECTOR = "203.0.113.1", "203.0.113.100"
# These tests are about decapsulation: every sender is a mirror and checksums are not checked (some frames are
# built by hand); tests/test_attacks.py and tests/test_anomalies.py cover untrusted senders and checksums.
MIRRORS = ("any",)
POLICY = {"mirror_sources": MIRRORS, "checksums": 0}


def run(frames: list[bytes], ports: tuple[int, ...] = (53,), table=None, emit_all: bool = True):
    """Both decoders over the frames: the records (which must agree) and the non-zero counters."""
    table = ALL if table is None else table
    reference = ReferenceLoop(EN10MB, ports, table, emit_all, **POLICY)
    records = []
    for number, frame in enumerate(frames, 1):
        records += reference.run_frame(number, 1_700_000_000, 0, frame)
    if FastLoop is not None:
        fast = FastLoop(EN10MB, ports, table, emit_all, **POLICY)
        fast_records = []
        for number, frame in enumerate(frames, 1):
            fast_records += fast.run_batch(frame, struct.pack("=IIII", 1_700_000_000, 0, 0, len(frame)), number)
        assert [tuple(r) for r in fast_records] == [tuple(r) for r in records]
        assert fast.counters() == reference.counters()
    counters = {k: v for k, v in reference.counters().items() if v and k not in ("packets", "bytes")}
    return records, counters


def dns_query(name: str = "www.evil.example") -> bytes:
    record = DNSRecord.question(name)
    record.header.id = 0x1234  # fixed: read as a VXLAN header, 0x12 has no I flag
    return record.pack()


def client_udp(payload: bytes | None = None, sport: int = 40000) -> Packet:
    return IP(src=CLIENT, dst=RESOLVER) / UDP(sport=sport, dport=53) / Raw(payload or dns_query())


def client_eth(packet: Packet | None = None, vlan: int | None = None) -> Packet:
    frame = Ether(src="02:00:00:00:00:10", dst="02:00:00:00:00:53")
    if vlan is not None:
        frame = frame / Dot1Q(vlan=vlan)
    return frame / (packet or client_udp())


def transport(packet: Packet, vlan: int | None = None) -> bytes:
    frame = Ether(src="02:00:00:00:00:f1", dst="02:00:00:00:00:f2")
    return bytes(frame / Dot1Q(vlan=vlan) / packet if vlan is not None else frame / packet)


def vxlan(inner: Packet, dport: int = 4789) -> Packet:
    return IP(src=SWITCH, dst=COLLECTOR) / UDP(sport=49200, dport=dport) / VXLAN(vni=7) / inner


def gre(protocol: int, inner: Packet | bytes, **flags) -> Packet:
    return IP(src=SWITCH, dst=COLLECTOR) / GRE(proto=protocol, **flags) / inner


def ip_gre(raw: bytes) -> bytes:
    """A GRE header written by hand (to make it wrong) after an IPv4 header."""
    return transport(IP(src=SWITCH, dst=COLLECTOR, proto=47) / Raw(raw))


def only(records: list[DnsMessage]) -> DnsMessage:
    assert len(records) == 1, records
    return records[0]


# ---- each tunnel kind ------------------------------------------------------------------------------------

TUNNELLED = {
    "pppoe": (transport(Dot1Q(vlan=7, type=0x8864) / PPPoE(sessionid=3) / PPP(proto=0x0021) / client_udp()),
              "pppoe", 7),
    "gre-ip": (transport(gre(0x0800, client_udp(), key_present=1, key=9, chksum_present=1)), "gre", None),
    "gre-ethernet": (transport(gre(0x6558, client_eth(vlan=30)), vlan=999), "gre", 30),
    "erspan1": (transport(gre(0x88BE, ERSPAN_I() / client_eth())), "erspan1", None),
    "erspan2": (transport(gre(0x88BE, ERSPAN_II() / client_eth(), seqnum_present=1), vlan=999), "erspan2", None),
    "erspan3": (transport(gre(0x22EB, ERSPAN_III() / client_eth(vlan=40))), "erspan3", 40),
    "erspan3-platform": (transport(gre(0x22EB, ERSPAN_III(o=1) / ERSPAN_PlatformSpecific(platf_id=1)
                                       / client_eth())), "erspan3", None),
    "vxlan": (transport(vxlan(client_eth(vlan=50))), "vxlan", 50),
    "geneve-ethernet": (transport(IP(src=SWITCH, dst=COLLECTOR) / UDP(sport=1, dport=6081)
                                  / GENEVE(proto=0x6558, optionlen=2) / Raw(bytes(8)) / client_eth()), "geneve", None),
    "geneve-ip": (transport(IP(src=SWITCH, dst=COLLECTOR) / UDP(sport=1, dport=6081) / GENEVE(proto=0x0800)
                            / client_udp()), "geneve", None),
}


@pytest.mark.parametrize("kind", TUNNELLED)
def test_each_tunnel_is_decoded_like_a_local_frame(kind: str) -> None:
    frame, name, vlan = TUNNELLED[kind]
    record = only(run([frame])[0])
    assert (record.tunnel, record.vlan_id) == (name, vlan)
    assert (record.src_ip, record.dst_ip, record.src_port, record.dst_port) == (
        bytes([192, 0, 2, 10]), bytes([198, 51, 100, 53]), 40000, 53)
    assert record.qname == "www.evil.example"
    assert run([frame])[1]["tunneled"] == 1


def test_untunnelled_records_have_no_tunnel() -> None:
    assert only(run([bytes(client_eth())])[0]).tunnel is None


def test_gre_over_ipv6_carrying_ipv6() -> None:
    inner = IPv6(src="2001:db8::10", dst="2001:db8::53") / UDP(sport=40000, dport=53) / Raw(dns_query())
    record = only(run([transport(IPv6(src="2001:db8:f::1", dst="2001:db8:f::2") / GRE(proto=0x86DD) / inner)])[0])
    assert record.tunnel == "gre" and record.src_ip == bytes.fromhex("20010db8000000000000000000000010")


def test_nested_tunnels_are_named_outer_to_inner() -> None:
    frame = transport(gre(0x0800, vxlan(client_eth(vlan=60))))
    records, counters = run([frame])
    assert only(records).tunnel == "gre/vxlan" and only(records).vlan_id == 60
    assert counters["tunneled"] == 1  # a frame, not a tunnel


def onion(depth: int) -> bytes:
    packet: Packet = client_eth()
    for _ in range(depth):
        packet = Ether() / vxlan(packet)
    return bytes(packet)


def test_tunnel_onion_is_refused_past_max_depth() -> None:
    records, _ = run([onion(MAX_TUNNEL_DEPTH)])
    assert only(records).tunnel == "/".join(["vxlan"] * MAX_TUNNEL_DEPTH)
    records, counters = run([onion(MAX_TUNNEL_DEPTH + 1)])
    assert records == [] and counters == {"tunneled": 1, "tunnel_too_deep": 1}


def test_onion_of_a_thousand_tunnels_costs_five() -> None:
    # built with struct: scapy recurses once per layer. The whole onion fits in one 64 KiB datagram.
    packet = bytes(client_eth())
    for _ in range(1000):
        body = struct.pack("!HHHH", 49200, 4789, 16 + len(packet), 0) + b"\x08\x00\x00\x00\x00\x00\x07\x00" + packet
        packet = bytes(14 - 2) + b"\x08\x00" + struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 64, 17, 0, bytes(4), bytes(4)) + body
    assert len(packet) < 65_535
    records, counters = run([packet])
    assert records == [] and counters == {"tunneled": 1, "tunnel_too_deep": 1}


CUT_OR_INVALID = {
    "vxlan header cut": transport(IP(src=SWITCH, dst=COLLECTOR) / UDP(sport=49200, dport=4789) / Raw(b"\x08\x00\x00")),
    "vxlan without I flag": transport(IP(src=SWITCH, dst=COLLECTOR) / UDP(sport=49200, dport=4789) / Raw(bytes(8))
                                      / client_eth()),
    "geneve version 1": transport(IP(src=SWITCH, dst=COLLECTOR) / UDP(sport=49200, dport=6081)
                                  / Raw(b"\x40\x00\x08\x00" + bytes(4))
                                  / client_udp()),
    "geneve options past the datagram": transport(IP(src=SWITCH, dst=COLLECTOR) / UDP(sport=49200, dport=6081)
                                                  / Raw(b"\x3f\x00\x65\x58" + bytes(12))),
    "gre cut": ip_gre(b"\x00\x00\x08"),
    "gre key cut": ip_gre(b"\x20\x00\x08\x00\x00\x00"),
    "gre version 1": ip_gre(b"\x30\x01\x88\x0b" + bytes(8)),
    "gre routing bit": ip_gre(b"\x40\x00\x08\x00" + bytes(8)),
    "erspan2 header cut": ip_gre(b"\x10\x00\x88\xbe\x00\x00\x00\x01" + b"\x10\x00"),
    "erspan2 wrong version": ip_gre(b"\x10\x00\x88\xbe\x00\x00\x00\x01" + b"\x20" + bytes(7) + bytes(client_eth())),
    "erspan3 platform subheader cut": ip_gre(b"\x00\x00\x22\xeb" + b"\x20" + bytes(10) + b"\x01" + bytes(4)),
    "pppoe cut": transport(Raw(b"")) [:12] + b"\x88\x64\x11\x00\x00\x03",
    "pppoe discovery code": transport(Raw(b""))[:12] + b"\x88\x64\x11\x09\x00\x03\x00\x02\x00\x21",
}


@pytest.mark.parametrize("case", CUT_OR_INVALID)
def test_cut_or_invalid_tunnel_header(case: str) -> None:
    records, counters = run([CUT_OR_INVALID[case]])
    assert records == [] and counters == {"bad_tunnel": 1}


@pytest.mark.parametrize("frame", [
    transport(Ether(type=0x8864) / PPPoE() / PPP(proto=0xC021) / Raw(bytes(8)))[14:],  # LCP
    ip_gre(b"\x00\x00\x88\x0b" + b"\xff\x03"),  # PPP in GRE
    ip_gre(b"\x00\x00\x22\xeb" + b"\x20" + bytes(9) + b"\x08\x00" + bytes(14)),  # ERSPAN III frame type 2 (IP)
    transport(IP(src=SWITCH, dst=COLLECTOR) / UDP(sport=49200, dport=6081)
              / GENEVE(proto=0x0806) / Raw(bytes(28))),  # ARP
], ids=["pppoe-lcp", "gre-ppp", "erspan3-ip-frame", "geneve-arp"])
def test_well_formed_tunnel_without_ip_is_not_ip(frame: bytes) -> None:
    assert run([frame]) == ([], {"not_ip": 1})


def test_inner_layers_keep_their_own_reasons() -> None:
    cut_ethernet = transport(vxlan(Raw(b"\x02\x00\x00")))
    cut_ip = transport(gre(0x0800, Raw(b"\x45\x00")))
    assert run([cut_ethernet])[1] == {"tunneled": 1, "truncated_link": 1}
    assert run([cut_ip])[1] == {"tunneled": 1, "truncated_ip": 1}


def test_a_port_in_both_lists_is_dns() -> None:
    # 4789 configured as a DNS port: the datagram is read as DNS, not as VXLAN
    frame = transport(IP(src=CLIENT, dst=RESOLVER) / UDP(sport=40000, dport=4789) / Raw(dns_query()))
    record = only(run([frame], ports=(53, 4789))[0])
    assert record.tunnel is None and record.dst_port == 4789
    assert run([frame])[1] == {"bad_tunnel": 1}  # with 53 alone it is a VXLAN header (no I flag)


def test_tunnel_port_is_the_destination_port_only() -> None:
    # a client that picked 4789 as its source port is not a tunnel
    record = only(run([bytes(client_eth(client_udp(sport=4789)))])[0])
    assert record.tunnel is None and record.src_port == 4789


def test_tunnel_udp_length_is_checked() -> None:
    frame = bytearray(transport(vxlan(client_eth())))
    frame[14 + 20 + 4: 14 + 20 + 6] = struct.pack("!H", 7)
    assert run([bytes(frame)])[1] == {"bad_udp_length": 1}


def test_tcp_stream_key_is_the_inner_flow() -> None:
    # one DNS-over-TCP message in two segments, mirrored through two different tunnels: still one stream
    message = dns_query()
    framed = struct.pack("!H", len(message)) + message
    first = client_eth(IP(src=CLIENT, dst=RESOLVER) / TCP(sport=40001, dport=53, seq=100, flags="PA")
                       / Raw(framed[:10]))
    second = client_eth(IP(src=CLIENT, dst=RESOLVER) / TCP(sport=40001, dport=53, seq=110, flags="PA")
                        / Raw(framed[10:]))
    records, counters = run([transport(vxlan(first)), transport(gre(0x6558, second))])
    assert only(records).tunnel == "gre" and only(records).frame == 2
    assert "tcp_gap" not in counters


# ---- EDNS Client Subnet ----------------------------------------------------------------------------------


def ecs(family: int, source: int, address: bytes, scope: int = 0) -> EDNSOption:
    return EDNSOption(8, struct.pack("!HBB", family, source, scope) + address)


def with_options(*options: EDNSOption, response: bool = False, name: str = "www.evil.example") -> bytes:
    record = DNSRecord.question(name)
    if response:
        record = record.reply()
    record.add_ar(EDNS0(udp_len=1232, opts=list(options)))
    return record.pack()


def subnet_of(message: bytes, emit_all: bool = True) -> tuple[str | None, dict[str, int]]:
    records, counters = run([bytes(client_eth(client_udp(message)))], emit_all=emit_all)
    return (only(records).client_subnet if records else None), counters


@pytest.mark.parametrize("option, subnet", [
    (ecs(1, 24, bytes([192, 0, 2])), "192.0.2.0/24"),
    (ecs(1, 32, bytes([192, 0, 2, 77])), "192.0.2.77/32"),
    (ecs(1, 0, b""), "0.0.0.0/0"),
    (ecs(1, 20, bytes([198, 51, 100])), "198.51.96.0/20"),  # bits past the prefix are masked
    (ecs(2, 56, bytes.fromhex("20010db8000112")), "2001:db8:1:1200::/56"),
    (ecs(2, 128, bytes.fromhex("20010db8" + "00" * 11 + "01")), "2001:db8::1/128"),
    (ecs(2, 0, b""), "::/0"),
], ids=["v4-24", "v4-32", "v4-0", "v4-masked", "v6-56", "v6-128", "v6-0"])
def test_client_subnet(option: EDNSOption, subnet: str) -> None:
    assert subnet_of(with_options(option)) == (subnet, {"dns_queries": 1, "hits": 1})


def test_client_subnet_after_other_options_and_answer_records() -> None:
    record = DNSRecord.question("www.evil.example")
    record.add_answer(*RR.fromZone("www.evil.example. 60 IN A 192.0.2.1"))  # as in an UPDATE's sections
    record.add_auth(*RR.fromZone("evil.example. 60 IN NS ns.evil.example."))
    record.add_ar(*RR.fromZone("ns.evil.example. 60 IN A 192.0.2.53"))
    record.add_ar(EDNS0(opts=[EDNSOption(10, bytes(8)), EDNSOption(12, bytes(30)), ecs(1, 24, bytes([10, 0, 0]))]))
    assert subnet_of(record.pack())[0] == "10.0.0.0/24"


def test_no_opt_or_no_ecs_is_none_without_a_count() -> None:
    assert subnet_of(dns_query()) == (None, {"dns_queries": 1, "hits": 1})
    assert subnet_of(with_options(EDNSOption(10, bytes(8)))) == (None, {"dns_queries": 1, "hits": 1})


MALFORMED_ECS = {
    "family 3": ecs(3, 8, b"\x01"),
    "prefix 33 for IPv4": ecs(1, 33, bytes(5)),
    "prefix 129 for IPv6": ecs(2, 129, bytes(17)),
    "more address bytes than the prefix": ecs(1, 24, bytes(4)),
    "fewer address bytes than the prefix": ecs(2, 64, bytes(7)),
    "option shorter than its fixed part": EDNSOption(8, b"\x00\x01\x18"),
}


@pytest.mark.parametrize("case", MALFORMED_ECS)
def test_malformed_ecs_is_counted_and_the_query_still_decoded(case: str) -> None:
    assert subnet_of(with_options(MALFORMED_ECS[case])) == (None, {"dns_queries": 1, "hits": 1, "dns_bad_edns": 1})


def test_option_running_past_the_opt_record() -> None:
    message = bytearray(with_options(ecs(1, 24, bytes([192, 0, 2]))))
    message[-9:-7] = struct.pack("!H", 50)  # the ECS option's length, past the record's data
    assert subnet_of(bytes(message))[1]["dns_bad_edns"] == 1


def test_opt_record_running_past_the_message() -> None:
    message = bytearray(with_options(ecs(1, 24, bytes([192, 0, 2]))))
    message[-13:-11] = struct.pack("!H", 200)  # RDLENGTH
    assert subnet_of(bytes(message))[1]["dns_bad_edns"] == 1


def test_opt_record_not_owned_by_the_root() -> None:
    message = with_options(ecs(1, 24, bytes([192, 0, 2])))
    at = len(message) - 11 - 11  # the OPT record's owner name: one zero byte, 10 fixed bytes, 11 of option
    message = message[:at] + b"\x01x\x00" + message[at + 1:]
    assert subnet_of(message)[1]["dns_bad_edns"] == 1


def test_counts_claiming_records_that_are_not_there() -> None:
    message = bytearray(dns_query())
    message[6:12] = struct.pack("!HHH", 0xFFFF, 0xFFFF, 0xFFFF)
    assert subnet_of(bytes(message)) == (None, {"dns_queries": 1, "hits": 1, "dns_bad_edns": 1})


def test_record_count_flood_stops_at_the_walk_limit() -> None:
    # MAX_EDNS_WALK_RECORDS records before the OPT: the walk gives up on the last one it may take
    record = DNSRecord.question("www.evil.example")
    for _ in range(MAX_EDNS_WALK_RECORDS - 1):
        record.add_ar(*RR.fromZone("x. 1 IN A 192.0.2.1"))
    record.add_ar(EDNS0(opts=[ecs(1, 8, b"\x0a")]))
    assert subnet_of(record.pack())[0] == "10.0.0.0/8"
    record.ar.insert(0, RR.fromZone("x. 1 IN A 192.0.2.1")[0])
    assert subnet_of(record.pack()) == (None, {"dns_queries": 1, "hits": 1, "dns_bad_edns": 1})


def test_option_flood_stops_at_the_option_limit() -> None:
    padding = [EDNSOption(12, b"") for _ in range(MAX_EDNS_OPTIONS - 1)]
    assert subnet_of(with_options(*padding, ecs(1, 8, b"\x0a")))[0] == "10.0.0.0/8"
    assert subnet_of(with_options(*padding, EDNSOption(12, b""), ecs(1, 8, b"\x0a")))[1]["dns_bad_edns"] == 1


def test_name_on_the_walk_with_a_bad_label_type() -> None:
    record = DNSRecord.question("www.evil.example")
    record.add_ar(*RR.fromZone("x. 1 IN A 192.0.2.1"))
    record.add_ar(EDNS0(opts=[ecs(1, 8, b"\x0a")]))
    message = bytearray(record.pack())
    at = message.index(b"\x01x\x00")
    message[at] = 0x41  # an extended label type where the additional record's name starts
    assert subnet_of(bytes(message))[1]["dns_bad_edns"] == 1


def test_responses_are_not_read() -> None:
    bad = with_options(ecs(9, 8, b""), response=True)
    records, counters = run([bytes(client_eth(client_udp(bad)))])
    assert only(records).client_subnet is None and "dns_bad_edns" not in counters


def test_queries_not_emitted_are_not_read() -> None:
    bad = with_options(ecs(9, 8, b""), name="www.example.org")
    table = {"evil.example": [0, 0]}
    records, counters = run([bytes(client_eth(client_udp(bad)))], table=table, emit_all=False)
    assert records == [] and "dns_bad_edns" not in counters
    records, counters = run([bytes(client_eth(client_udp(bad)))], table=table, emit_all=True)
    assert only(records).rule == -1 and counters["dns_bad_edns"] == 1


# ---- records, counters and shipped captures --------------------------------------------------------------


def test_record_fields_and_counter_order() -> None:
    assert DnsMessage._fields[15:18] == ("rule", "tunnel", "client_subnet")
    assert COUNTERS.index("tunneled") == 2
    assert COUNTERS.index("bad_tunnel") + 1 == COUNTERS.index("tunnel_too_deep")
    assert COUNTERS.index("dns_extra_questions") + 1 == COUNTERS.index("dns_bad_edns")


SHIPPED = ("tunnels.pcap", "tunnels-nested.pcap", "edns-client-subnet.pcap")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_captures_name_tunnels_and_subnets(name: str) -> None:
    """The records' tunnel and client_subnet against pcaps/expectations.toml (the events carry them later)."""
    with open(ROOT / "pcaps" / "expectations.toml", "rb") as handle:
        expected = tomllib.load(handle)["captures"][name]
    reader = pcapy.open_offline(str(ROOT / "pcaps" / name))
    table = load_rules([str(ROOT / "pcaps" / "pcaps.rules")]).table
    loop = ReferenceLoop(reader.datalink(), (53,), table, False, mirror_sources=expected.get("mirror_source", ()))
    records = []
    number = 0
    while True:
        header, data = reader.next()
        if header is None:
            break
        number += 1
        records += loop.run_frame(number, 0, 0, data)
    got = [(r.frame, r.tunnel, r.client_subnet) for r in records]
    assert got == [(h["frame"], h.get("tunnel"), h.get("client_subnet")) for h in expected["hits"]]
    counters = {k: v for k, v in loop.counters().items() if v and k not in ("bytes", *TABLE_GAUGES)}
    assert counters == expected["counters"]


def test_response_to_client_port_4789_is_dns_not_vxlan():
    """A client's ephemeral port may be 4789 or 6081: the response from port 53 is DNS, not a tunnel."""
    from dnslib import DNSRecord
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    from conftest import make_batch
    from sensor._loop import FastLoop
    from sensor.decode.loop import ReferenceLoop

    answer = DNSRecord.question("www.example.org").reply().pack()
    frames = [bytes(Ether() / IP(src="10.0.0.53", dst="10.0.0.7") / UDP(sport=53, dport=port) / answer)
              for port in (4789, 6081)]
    data, meta = make_batch(frames)
    for loop in (FastLoop(1, [53], {}, True), ReferenceLoop(1, [53], {}, True)):
        records = loop.run_batch(data, meta, 1)
        assert [r[8] for r in records] == [4789, 6081]
        assert loop.counters()["dns_responses"] == 2 and loop.counters()["bad_tunnel"] == 0
