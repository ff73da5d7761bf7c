"""Captures of mirrored traffic as it arrives at a collector (PPPoE, GRE, ERSPAN I/II/III, VXLAN, Geneve, nested
and broken tunnels) and of queries carrying the EDNS Client Subnet option. Frame numbers in the comments are
the ones pcaps/expectations.toml refers to.

The transport network of the tunnels uses 203.0.113.0/24 and 2001:db8:f::/48 (a switch mirroring to a
collector); the mirrored client traffic is the usual client and resolver.
"""

from __future__ import annotations

import struct

from dnslib import EDNS0, QTYPE, DNSHeader, DNSLabel, DNSQuestion, DNSRecord, EDNSOption
from scapy.contrib.erspan import ERSPAN_I, ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from pcaps.craft import (
    CLIENT4,
    CLIENT6,
    DLT_EN10MB,
    RESOLVER4,
    RESOLVER6,
    Timeline,
    answer,
    ether,
    labels_of,
    query,
    tcp_framed,
    tcp_seg,
    udp_dns,
)

SWITCH4, COLLECTOR4 = "203.0.113.1", "203.0.113.100"
SWITCH6, COLLECTOR6 = "2001:db8:f::1", "2001:db8:f::100"
SWITCH_MAC, COLLECTOR_MAC = "02:00:00:00:00:f1", "02:00:00:00:00:f2"
TUNNEL_SPORT = 49200  # the UDP source port a VXLAN/Geneve sender picks (a hash of the inner flow)
PPP_IPV4, PPP_IPV6, PPP_LCP = 0x0021, 0x0057, 0xC021
ETH_IPV4, ETH_IPV6, TRANSPARENT_ETHERNET, PPP_IN_GRE = 0x0800, 0x86DD, 0x6558, 0x880B
GRE_ERSPAN_I_II, GRE_ERSPAN_III = 0x88BE, 0x22EB
OPTION_COOKIE, OPTION_ECS, OPTION_PADDING = 10, 8, 12


# ---------------------------------------------------------------- tunnel wrappers

def outer_ip(v6: bool = False) -> Packet:
    """The transport network's IP header, switch to collector (fixed id so the bytes never change)."""
    return IPv6(src=SWITCH6, dst=COLLECTOR6, hlim=64) if v6 else IP(src=SWITCH4, dst=COLLECTOR4, id=0x5151, ttl=64)


def transport_ether(vlan: int | None = None) -> Packet:
    """The collector's own Ethernet header, optionally tagged with the transport network's VLAN."""
    frame = Ether(src=SWITCH_MAC, dst=COLLECTOR_MAC)
    return frame / Dot1Q(vlan=vlan) if vlan is not None else frame


def vxlan(inner: Packet, vni: int = 100) -> Packet:
    """IPv4/UDP 4789/VXLAN around an inner Ethernet frame (no outer Ethernet)."""
    return outer_ip() / UDP(sport=TUNNEL_SPORT, dport=4789) / VXLAN(vni=vni) / inner


def gre(protocol: int, inner: Packet | bytes, v6: bool = False, **flags: int) -> Packet:
    """IP/GRE with the given protocol type and optional fields (key_present, chksum_present, seqnum_present)."""
    return outer_ip(v6) / GRE(proto=protocol, **flags) / inner


def pppoe(protocol: int, inner: Packet | bytes) -> Packet:
    """PPPoE session data (ethertype 0x8864), session 0x0011, around a PPP payload."""
    return PPPoE(sessionid=0x0011) / PPP(proto=protocol) / inner


def client_frame(payload: Packet, vlan: int | None = None) -> Packet:
    """The mirrored client frame: the client's Ethernet header, optionally with the client's VLAN tag."""
    return ether() / Dot1Q(vlan=vlan) / payload if vlan is not None else ether() / payload


def q4(name: str, sport: int, dns_id: int) -> Packet:
    return udp_dns(CLIENT4, sport, RESOLVER4, 53, query(name, dns_id=dns_id))


def q6(name: str, sport: int, dns_id: int) -> Packet:
    return udp_dns(CLIENT6, sport, RESOLVER6, 53, query(name, QTYPE.AAAA, dns_id=dns_id))


# ---------------------------------------------------------------- captures

def tunnels() -> tuple[int, Timeline]:
    """One query for a rule name in each tunnel kind, and well-formed tunnels carrying what is not decoded."""
    t = Timeline(5000)
    t.add(Ether(src=SWITCH_MAC, dst=COLLECTOR_MAC, type=0x8864)
          / pppoe(PPP_IPV4, q4("pppoe.evil.example", 45001, 0x5001)))  # 1 hit, pppoe
    t.add(Ether(src=SWITCH_MAC, dst=COLLECTOR_MAC) / Dot1Q(vlan=7, type=0x8864)
          / pppoe(PPP_IPV6, q6("pppoe6.evil.example", 45002, 0x5002)))  # 2 hit, pppoe, vlan 7 (before PPPoE)
    t.add(Ether(src=SWITCH_MAC, dst=COLLECTOR_MAC, type=0x8864)
          / pppoe(PPP_LCP, Raw(b"\x09\x01\x00\x08\x00\x00\x00\x01")))  # 3 LCP echo: not_ip, not tunneled
    t.add(transport_ether() / gre(ETH_IPV4, q4("gre.evil.example", 45004, 0x5004), key_present=1,
                                  key=0x1234))  # 4 hit, gre (IP inside, with a key)
    t.add(transport_ether() / gre(ETH_IPV6, q6("gre6.evil.example", 45005, 0x5005), v6=True,
                                  chksum_present=1))  # 5 hit, gre over IPv6 (IPv6 inside, with a checksum)
    t.add(transport_ether(999) / gre(TRANSPARENT_ETHERNET, client_frame(q4("bridged.evil.example", 45006, 0x5006),
                                                                       vlan=30)))  # 6 hit, gre, vlan 30 (inner)
    t.add(transport_ether() / gre(GRE_ERSPAN_I_II, ERSPAN_I() / client_frame(q4("span1.evil.example", 45007, 0x5007))))
    # 7 above: hit, erspan1 (no sequence bit, no ERSPAN header)
    t.add(transport_ether(999) / gre(GRE_ERSPAN_I_II, ERSPAN_II(session_id=5, index=1)
                                     / client_frame(q4("span2.evil.example", 45008, 0x5008)),
                                     seqnum_present=1, sequence_number=1))  # 8 hit, erspan2, untagged inside
    t.add(transport_ether() / gre(GRE_ERSPAN_III, ERSPAN_III(session_id=6, timestamp=0x01020304)
                                  / client_frame(q4("span3.evil.example", 45009, 0x5009), vlan=40),
                                  seqnum_present=1, sequence_number=2))  # 9 hit, erspan3, vlan 40
    t.add(transport_ether() / gre(GRE_ERSPAN_III, ERSPAN_III(session_id=6, o=1)
                                  / ERSPAN_PlatformSpecific(platf_id=3, info1=7, info2=9)
                                  / client_frame(q6("span3o.evil.example", 45010, 0x500A)),
                                  seqnum_present=1, sequence_number=3))  # 10 hit, erspan3 with platform subheader
    t.add(transport_ether() / vxlan(client_frame(q4("vxlan.evil.example", 45011, 0x500B), vlan=50)))
    # 11 above: hit, vxlan, vlan 50
    framed = tcp_framed(query("tcp.vxlan.evil.example", dns_id=0x500C))
    t.add(transport_ether() / vxlan(client_frame(tcp_seg(CLIENT4, 45012, RESOLVER4, 53, 7000, 1, "PA", framed))))
    # 12 above: hit, vxlan, over TCP (a stream keyed by the inner addresses)
    t.add(transport_ether() / outer_ip() / UDP(sport=TUNNEL_SPORT, dport=6081)
          / GENEVE(proto=TRANSPARENT_ETHERNET, vni=200,
                   options=[GeneveOptions(classid=0x0102, type=0x80, data=b"opts")])
          / client_frame(q4("geneve.evil.example", 45013, 0x500D)))  # 13 hit, geneve (Ethernet, one option)
    t.add(transport_ether() / outer_ip() / UDP(sport=TUNNEL_SPORT, dport=6081)
          / GENEVE(proto=ETH_IPV6, vni=201) / q6("geneve6.evil.example", 45014, 0x500E))  # 14 hit, geneve (IPv6)
    t.add(transport_ether() / vxlan(ether() / udp_dns(RESOLVER4, 53, CLIENT4, 45011,
                                                      answer("vxlan.evil.example", "192.0.2.66",
                                                             dns_id=0x500B))))  # 15 response, no hit
    t.add(transport_ether() / gre(PPP_IN_GRE, Raw(b"\xff\x03\x00\x21")))  # 16 GRE carrying PPP: not_ip
    # 17: enhanced GRE (version 1, PPTP) with key and sequence, carrying PPP: bad_tunnel (bytes by hand)
    t.add(transport_ether() / IP(src=SWITCH4, dst=COLLECTOR4, id=0x5151, ttl=64, proto=47)
          / Raw(b"\x30\x01\x88\x0b" + bytes(8) + b"\xff\x03\x00\x21"))
    t.add(transport_ether() / vxlan(ether() / udp_dns(CLIENT4, 45018, "198.51.100.80", 80,
                                                       b"not dns")))  # 18 tunneled, inner port 80: not_dns_port
    return DLT_EN10MB, t


def tunnels_nested() -> tuple[int, Timeline]:
    """Tunnels inside tunnels, up to MAX_TUNNEL_DEPTH = 4 and one past it; tunnel headers cut off or invalid."""
    t = Timeline(5100)
    t.add(transport_ether() / gre(ETH_IPV4, vxlan(client_frame(q4("nested.evil.example", 45101, 0x5101),
                                                               vlan=60))))  # 1 hit, gre/vxlan, vlan 60
    t.add(transport_ether() / gre(GRE_ERSPAN_I_II, ERSPAN_II(session_id=9)
                                  / Ether(src=SWITCH_MAC, dst=COLLECTOR_MAC)
                                  / vxlan(client_frame(q6("fabric.evil.example", 45102, 0x5102))),
                                  seqnum_present=1, sequence_number=1))  # 2 hit, erspan2/vxlan
    four = Ether(src=SWITCH_MAC, dst=COLLECTOR_MAC, type=0x8864) / pppoe(PPP_IPV4, gre(ETH_IPV4, vxlan(
        Ether(src=SWITCH_MAC, dst=COLLECTOR_MAC) / outer_ip() / UDP(sport=TUNNEL_SPORT, dport=6081)
        / GENEVE(proto=ETH_IPV4) / q4("deep.evil.example", 45103, 0x5103))))
    t.add(four)  # 3 hit, pppoe/gre/vxlan/geneve: exactly four deep
    inner: Packet = client_frame(q4("deeper.evil.example", 45104, 0x5104))
    for vni in range(5):
        inner = Ether(src=SWITCH_MAC, dst=COLLECTOR_MAC) / vxlan(inner, vni=vni)
    t.add(inner)  # 4 five VXLAN headers: tunnel_too_deep (the fifth is refused unread)
    t.add(transport_ether() / outer_ip() / UDP(sport=TUNNEL_SPORT, dport=4789)
          / Raw(b"\x08\x00\x00\x00"))  # 5 VXLAN header cut to 4 bytes: bad_tunnel
    t.add(transport_ether() / outer_ip() / UDP(sport=TUNNEL_SPORT, dport=4789)
          / Raw(b"\x00\x00\x00\x00\x00\x00\x64\x00") / client_frame(q4("noflag.evil.example", 45106, 0x5106)))
    # 6 above: VXLAN without the I flag: bad_tunnel (scapy would set it: bytes by hand)
    t.add(transport_ether() / IP(src=SWITCH4, dst=COLLECTOR4, id=0x5151, ttl=64, proto=47)
          / Raw(b"\x20\x00\x08\x00\x00\x00"))  # 7 GRE announcing a key, cut 2 bytes into it: bad_tunnel
    t.add(transport_ether() / IP(src=SWITCH4, dst=COLLECTOR4, id=0x5151, ttl=64, proto=47)
          / Raw(b"\x10\x00\x88\xbe\x00\x00\x00\x01\x10\x00\x00"))  # 8 ERSPAN II header cut to 3 bytes: bad_tunnel
    t.add(Ether(src=SWITCH_MAC, dst=COLLECTOR_MAC, type=0x8864) / Raw(b"\x11\x00\x00\x11"))  # 9 PPPoE cut: bad_tunnel
    t.add(transport_ether() / outer_ip() / UDP(sport=TUNNEL_SPORT, dport=6081)
          / Raw(b"\x3f\x00\x65\x58\x00\x00\xc8\x00" + bytes(16)))  # 10 Geneve: 252 option bytes announced, 16 there
    t.add(transport_ether() / vxlan(Raw(b"\x02\x00\x00\x00\x00\x10\x02")))  # 11 inner Ethernet cut: truncated_link
    t.add(transport_ether() / gre(ETH_IPV4, Raw(bytes.fromhex("4500003c"))))  # 12 inner IPv4 cut: truncated_ip
    return DLT_EN10MB, t


# ---------------------------------------------------------------- EDNS Client Subnet

def ecs_data(family: int, source: int, address: bytes, scope: int = 0) -> bytes:
    """An ECS option's data (RFC 7871 6), the address given as the exact bytes to write."""
    return struct.pack("!HBB", family, source, scope) + address


def edns_query(name: str, dns_id: int, options: list[tuple[int, bytes]], qtype: int = QTYPE.A,
               response: bool = False) -> bytes:
    """A query (or its response) with an OPT record (dnslib) carrying the options as given."""
    record = DNSRecord(DNSHeader(id=dns_id, rd=1, qr=int(response), ra=int(response)),
                       q=DNSQuestion(DNSLabel(labels_of(name)), qtype))
    record.add_ar(EDNS0(udp_len=1232, opts=[EDNSOption(code, data) for code, data in options]))
    return record.pack()


def edns_client_subnet() -> tuple[int, Timeline]:
    """Queries with and without the ECS option, malformed ones (still hits, no subnet), and a response."""
    t = Timeline(5200)
    forwarder4, forwarder6 = "192.0.2.200", "2001:db8:1::200"

    def send(payload: bytes, sport: int, src: str = forwarder4) -> int:
        dst = RESOLVER6 if ":" in src else RESOLVER4
        return t.add(ether() / udp_dns(src, sport, dst, 53, payload))

    send(edns_query("ecs4.evil.example", 0x5201, [(OPTION_ECS, ecs_data(1, 24, bytes([192, 0, 2])))]), 45201)
    # 1 above: hit, client_subnet 192.0.2.0/24
    send(edns_query("ecs6.evil.example", 0x5202, [(OPTION_ECS, ecs_data(2, 56, bytes.fromhex("20010db8000112")))],
                    QTYPE.AAAA), 45202, forwarder6)  # 2 hit, 2001:db8:1:1200::/56
    send(edns_query("masked.evil.example", 0x5203,
                    [(OPTION_COOKIE, bytes(range(8))), (OPTION_ECS, ecs_data(1, 20, bytes([198, 51, 100])))]),
         45203)  # 3 hit after a cookie option: host bits past /20 masked, 198.51.96.0/20
    send(edns_query("zero.evil.example", 0x5204, [(OPTION_ECS, ecs_data(1, 0, b""))]), 45204)  # 4 hit, 0.0.0.0/0
    send(edns_query("plain.evil.example", 0x5205, [(OPTION_PADDING, bytes(20))]), 45205)  # 5 hit, OPT without ECS
    send(edns_query("family.evil.example", 0x5206, [(OPTION_ECS, ecs_data(3, 8, b"\x01"))]), 45206)
    # 6 above: hit, family 3: dns_bad_edns, no subnet
    send(edns_query("length.evil.example", 0x5207, [(OPTION_ECS, ecs_data(1, 24, bytes([192, 0, 2, 0])))]), 45207)
    # 7 above: hit, four address bytes for a /24 (three needed): dns_bad_edns
    cut = bytearray(edns_query("rdlen.evil.example", 0x5208, [(OPTION_ECS, ecs_data(1, 24, bytes([192, 0, 2])))]))
    cut[-13:-11] = struct.pack("!H", 200)  # the OPT record's RDLENGTH (11 bytes of option follow it) past the end
    send(bytes(cut), 45208)  # 8 hit, dns_bad_edns (by hand: dnslib writes only consistent lengths)
    send(edns_query("www.example.org", 0x5209, [(OPTION_ECS, ecs_data(9, 24, b""))]), 45209)
    # 9 above: no rule: not emitted, so its malformed ECS is neither read nor counted
    t.add(ether() / udp_dns(RESOLVER4, 53, forwarder4, 45201,
                            edns_query("ecs4.evil.example", 0x5201, [(OPTION_ECS, ecs_data(1, 24, bytes([192, 0, 2]),
                                                                                      scope=24))],
                                       response=True)))  # 10 response with ECS: not a hit, not read
    framed = tcp_framed(edns_query("tcp.ecs.evil.example", 0x520B,
                                   [(OPTION_ECS, ecs_data(1, 32, bytes([203, 0, 113, 7])))]))
    t.add(ether() / tcp_seg(forwarder4, 45211, RESOLVER4, 53, 9000, 1, "PA", framed))  # 11 hit over TCP, /32
    t.add(transport_ether() / vxlan(client_frame(udp_dns(
        forwarder4, 45212, RESOLVER4, 53,
        edns_query("both.evil.example", 0x520C, [(OPTION_ECS, ecs_data(1, 16, bytes([10, 9])))])))))
    # 12 above: hit in VXLAN with ECS: tunnel vxlan, client_subnet 10.9.0.0/16
    return DLT_EN10MB, t
