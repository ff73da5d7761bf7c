"""Captures of the layers below DNS: every link type, VLAN tags, padding, lengths, IPv4 options, fragments, IPv6
extension headers. Frame numbers in the comments are the ones pcaps/expectations.toml refers to.
"""

from __future__ import annotations

import struct

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_EOL, IPOption_NOP, IPOption_Router_Alert
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

from pcaps.craft import (
    CLIENT4,
    CLIENT6,
    CLIENT_MAC,
    DLT_EN10MB,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_LOOP,
    DLT_NULL,
    DLT_RAW,
    RESOLVER4,
    RESOLVER6,
    RESOLVER_MAC,
    Timeline,
    answer,
    ether,
    query,
    tcp_framed,
    tcp_seg,
    udp_dns,
)

ETH_IPV4, ETH_IPV6, ETH_ARP, ETH_8021Q, ETH_QINQ_OLD = 0x0800, 0x86DD, 0x0806, 0x8100, 0x9100
MAC_BYTES = bytes.fromhex("020000000010")


def q4(name: str, sport: int, qtype: int = 1, dns_id: int = 0x0100) -> Packet:
    """An IPv4 UDP query from the test client to the test resolver."""
    return udp_dns(CLIENT4, sport, RESOLVER4, 53, query(name, qtype, dns_id=dns_id))


def q6(name: str, sport: int, qtype: int = 28, dns_id: int = 0x0600) -> Packet:
    return udp_dns(CLIENT6, sport, RESOLVER6, 53, query(name, qtype, dns_id=dns_id))


def linktype_en10mb() -> tuple[int, Timeline]:
    t = Timeline(100)
    t.add(ether() / q4("evil.example", 40001, dns_id=0x0101))  # 1 hit
    t.add(ether(RESOLVER_MAC, CLIENT_MAC)
          / udp_dns(RESOLVER4, 53, CLIENT4, 40001, answer("evil.example", "192.0.2.66", dns_id=0x0101)))  # 2 response
    t.add(ether() / q6("www.evil.example", 40002, dns_id=0x0102))  # 3 hit (IPv6)
    t.add(ether() / q4("www.example.org", 40003, dns_id=0x0103))  # 4 no rule
    return DLT_EN10MB, t


def sll(proto: int) -> Packet:
    # ARPHRD_ETHER, 6-byte address, packet sent by us (4): what `tcpdump -i any` writes.
    return CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6, src=MAC_BYTES + b"\x00\x00", proto=proto)


def linktype_sll() -> tuple[int, Timeline]:
    t = Timeline(200)
    t.add(sll(ETH_IPV4) / q4("a.evil.example", 40011))  # 1 hit
    t.add(sll(ETH_IPV6) / q6("b.evil.example", 40012))  # 2 hit
    # docs/decoding.md: the SLL protocol may be a VLAN ethertype, the tag follows the header.
    t.add(sll(ETH_8021Q) / Dot1Q(vlan=42, type=ETH_IPV4) / q4("c.evil.example", 40013))  # 3 hit, vlan 42
    t.add(sll(ETH_ARP) / ARP(hwsrc=CLIENT_MAC, psrc=CLIENT4, pdst=RESOLVER4, hwdst="00:00:00:00:00:00"))  # 4 not_ip
    return DLT_LINUX_SLL, t


def sll2(proto: int) -> Packet:
    return CookedLinuxV2(proto=proto, ifindex=2, lladdrtype=1, pkttype=4, lladdrlen=6, src=MAC_BYTES + b"\x00\x00")


def linktype_sll2() -> tuple[int, Timeline]:
    t = Timeline(300)
    t.add(sll2(ETH_IPV4) / q4("a.evil.example", 40021))  # 1 hit
    t.add(sll2(ETH_IPV6) / q6("b.evil.example", 40022))  # 2 hit
    t.add(sll2(ETH_ARP) / ARP(hwsrc=CLIENT_MAC, psrc=CLIENT4, pdst=RESOLVER4, hwdst="00:00:00:00:00:00"))  # 3 not_ip
    return DLT_LINUX_SLL2, t


def linktype_raw() -> tuple[int, Timeline]:
    t = Timeline(400)
    t.add(q4("a.evil.example", 40031))  # 1 hit
    t.add(q6("b.evil.example", 40032))  # 2 hit
    t.add(udp_dns(RESOLVER4, 53, CLIENT4, 40031, answer("a.evil.example", "192.0.2.66")))  # 3 response
    return DLT_RAW, t


def family(value: int, order: str) -> bytes:
    return struct.pack(order + "I", value)


def linktype_null() -> tuple[int, Timeline]:
    # BSD loopback: the address family in the capturing host's byte order; AF_INET6 is 24, 28 or 30 by OS.
    t = Timeline(500)
    t.add(family(2, "<") + bytes(q4("a.evil.example", 40041)))  # 1 hit, AF_INET little-endian
    t.add(family(30, "<") + bytes(q6("b.evil.example", 40042)))  # 2 hit, macOS AF_INET6
    t.add(family(28, "<") + bytes(q6("c.evil.example", 40043)))  # 3 hit, FreeBSD AF_INET6
    t.add(family(24, ">") + bytes(q6("d.evil.example", 40044)))  # 4 hit, NetBSD/OpenBSD AF_INET6, big-endian host
    t.add(family(2, ">") + bytes(q4("e.evil.example", 40045)))  # 5 hit, AF_INET big-endian host
    t.add(family(7, "<") + bytes(q4("f.evil.example", 40046)))  # 6 not_ip: family 7 is neither
    return DLT_NULL, t


def linktype_loop() -> tuple[int, Timeline]:
    # OpenBSD loopback: the same families, always in network byte order.
    t = Timeline(600)
    t.add(family(2, ">") + bytes(q4("a.evil.example", 40051)))  # 1 hit
    t.add(family(24, ">") + bytes(q6("b.evil.example", 40052)))  # 2 hit
    t.add(family(30, ">") + bytes(q6("c.evil.example", 40053)))  # 3 hit
    return DLT_LOOP, t


def vlan() -> tuple[int, Timeline]:
    t = Timeline(700)
    t.add(Ether(src=CLIENT_MAC, dst=RESOLVER_MAC, type=ETH_8021Q) / Dot1Q(vlan=10) / q4("a.evil.example", 40061))  # 1
    # Priority 5 and DEI set: only the low 12 bits of the tag are the id.
    t.add(ether() / Dot1Q(prio=5, dei=1, vlan=11) / q4("b.evil.example", 40062))  # 2 vlan 11
    t.add(ether() / Dot1AD(vlan=100) / Dot1Q(vlan=20) / q4("c.evil.example", 40063))  # 3 802.1ad: outer 100
    t.add(Ether(src=CLIENT_MAC, dst=RESOLVER_MAC, type=ETH_QINQ_OLD) / Dot1Q(vlan=200, type=ETH_8021Q)
          / Dot1Q(vlan=30) / q4("d.evil.example", 40064))  # 4 old QinQ 0x9100: outer 200
    t.add(ether() / Dot1AD(vlan=300) / Dot1Q(vlan=31) / Dot1Q(vlan=32) / q4("e.evil.example", 40065))  # 5 three tags
    t.add(ether() / Dot1Q(vlan=10) / q6("f.evil.example", 40066))  # 6 IPv6 in vlan 10
    t.add(ether(RESOLVER_MAC, CLIENT_MAC) / Dot1Q(vlan=10)
          / udp_dns(RESOLVER4, 53, CLIENT4, 40061, answer("a.evil.example", "192.0.2.66")))  # 7 response
    t.add(ether() / Dot1Q(vlan=10) / ARP(hwsrc=CLIENT_MAC, psrc=CLIENT4, pdst=RESOLVER4))  # 8 not_ip
    return DLT_EN10MB, t


def shortened(packet: Packet, cut: int) -> bytes:
    """The packet's bytes with IP (and UDP) lengths `cut` bytes short, the cut bytes left behind as padding."""
    ip = packet.getlayer(IP) or packet.getlayer(IPv6)
    if isinstance(ip, IP):
        ip.len = len(ip) - cut
    else:
        ip.plen = len(ip.payload) - cut
    udp = packet.getlayer(UDP)
    udp.len = len(udp) - cut
    return bytes(packet)


def padding() -> tuple[int, Timeline]:
    # Padding is not payload: frames 2-4 end their IP/UDP lengths 4 bytes early, before the question's type and
    # class, and carry those 4 bytes after as padding; reading the frame length would decode them.
    t = Timeline(800)
    t.add(bytes(ether() / q4("pad.evil.example", 40071)) + b"\x00" * 6 + b"FCS!")  # 1 hit despite 10 trailing bytes
    t.add(shortened(ether() / q4("short.evil.example", 40072), 4))  # 2 dns_truncated (IP and UDP short)
    udp_only = q4("udp.evil.example", 40073)
    udp_only[UDP].len = len(udp_only[UDP]) - 4
    t.add(ether() / udp_only)  # 3 dns_truncated: the UDP length, not the IP one, bounds the payload
    t.add(shortened(ether() / q6("six.evil.example", 40074), 4))  # 4 dns_truncated (IPv6 payload length short)
    # TCP: junk after the IP packet must not enter the stream, or the next segment looks like a gap.
    first = tcp_framed(query("tcp1.evil.example", dns_id=0x0701))
    second = tcp_framed(query("tcp2.evil.example", dns_id=0x0702))
    t.add(bytes(ether() / tcp_seg(CLIENT4, 40075, RESOLVER4, 53, 7000, 1, "PA", first)) + b"\x00\x05junk!")  # 5 hit
    t.add(ether() / tcp_seg(CLIENT4, 40075, RESOLVER4, 53, 7000 + len(first), 1, "PA", second))  # 6 hit, no gap
    t.add(ether() / tcp_seg(CLIENT4, 40075, RESOLVER4, 53, 7000 + len(first) + len(second), 1, "FA"))  # 7 FIN
    return DLT_EN10MB, t


def lengths() -> tuple[int, Timeline]:
    """IP and UDP lengths that run past the captured bytes: counted, never read."""
    t = Timeline(900)
    full = ether() / q4("snap.evil.example", 40081)
    t.add(bytes(full)[:14 + 20 + 8 + 10], wirelen=len(full))  # 1 snaplen cut: ip_length_exceeds_capture
    full6 = ether() / q6("snap6.evil.example", 40082)
    t.add(bytes(full6)[:14 + 40 + 8 + 10], wirelen=len(full6))  # 2 same for IPv6 payload length
    lying = q4("lie.evil.example", 40083)
    lying[IP].len = 200
    t.add(ether() / lying)  # 3 IPv4 total length 200, fewer bytes captured: ip_length_exceeds_capture
    long_udp = q4("udplen.evil.example", 40084)
    long_udp[UDP].len = 300
    t.add(ether() / long_udp)  # 4 UDP length past the IP payload: bad_udp_length
    tiny_udp = q4("udp4.evil.example", 40085)
    tiny_udp[UDP].len = 4
    t.add(ether() / tiny_udp)  # 5 UDP length under its own header: bad_udp_length
    t.add(ether() / q4("ok.evil.example", 40086))  # 6 hit: the control
    return DLT_EN10MB, t


def bad_headers() -> tuple[int, Timeline]:
    """Headers too short or inconsistent: each frame one named reason."""
    t = Timeline(1000)
    good = bytes(ether() / q4("x.evil.example", 40091))
    t.add(good[:10])  # 1 truncated_link: not even an Ethernet header
    t.add(good[:14 + 12])  # 2 truncated_ip: frame ends inside the IPv4 header
    small = q4("y.evil.example", 40092)
    small[IP].len = 12
    t.add(ether() / small)  # 3 bad_ip_header: total length under 20
    t.add(ether() / IPv6(src=CLIENT6, dst=RESOLVER6, plen=0, nh=17) / UDP(sport=40093, dport=53)
          / Raw(query("z.evil.example")))  # 4 bad_ip_header: IPv6 payload length 0 (jumbogram)
    cut_udp = IP(src=CLIENT4, dst=RESOLVER4, id=0x4242, proto=17) / Raw(bytes(UDP(sport=40094, dport=53, len=8))[:6])
    t.add(ether() / cut_udp)  # 5 truncated_transport: 6 bytes of UDP header
    cut_tcp = IP(src=CLIENT4, dst=RESOLVER4, id=0x4242, proto=6) / Raw(bytes(TCP(sport=40095, dport=53))[:12])
    t.add(ether() / cut_tcp)  # 6 truncated_transport: 12 bytes of TCP header
    low_offset = tcp_seg(CLIENT4, 40096, RESOLVER4, 53, 1, 1, "PA", tcp_framed(query("w.evil.example")))
    low_offset[TCP].dataofs = 4
    t.add(ether() / low_offset)  # 7 bad_tcp_header: data offset 4
    high_offset = tcp_seg(CLIENT4, 40097, RESOLVER4, 53, 1, 1, "PA", b"\x00\x01")
    high_offset[TCP].dataofs = 15
    t.add(ether() / high_offset)  # 8 bad_tcp_header: 60-byte header in a 22-byte segment
    return DLT_EN10MB, t


def ipv4_options() -> tuple[int, Timeline]:
    t = Timeline(1100)
    alert = IP(src=CLIENT4, dst=RESOLVER4, id=0x4242, options=[IPOption_Router_Alert()])
    t.add(ether() / alert / UDP(sport=40101, dport=53) / Raw(query("ra.evil.example")))  # 1 hit, IHL 6
    # 36 NOPs and an end-of-list: the longest header (IHL 15, 60 bytes).
    longest = IP(src=CLIENT4, dst=RESOLVER4, id=0x4242, options=[IPOption_NOP()] * 36 + [IPOption_EOL()] * 4)
    t.add(ether() / longest / UDP(sport=40102, dport=53) / Raw(query("nop.evil.example")))  # 2 hit, IHL 15
    ihl4 = q4("ihl4.evil.example", 40103)
    ihl4[IP].ihl = 4
    t.add(ether() / ihl4)  # 3 bad_ip_header: IHL 4
    header_past_length = IP(src=CLIENT4, dst=RESOLVER4, id=0x4242, ihl=15, len=40, options=[IPOption_NOP()] * 40)
    t.add(ether() / header_past_length / UDP(sport=40104, dport=53) / Raw(query("ihl.evil.example")))  # 4 bad_ip_header
    return DLT_EN10MB, t


def edns_padded_query(name: str, size: int) -> bytes:
    """A query padded to `size` bytes with an EDNS(0) padding option (RFC 7830), to need fragmenting."""
    base = bytearray(query(name, dns_id=0x0800))
    base[10:12] = b"\x00\x01"  # ARCOUNT 1: the OPT record below
    opt_fixed = 11 + 4  # root name, type, class, ttl, rdlength; then option code and length
    pad = size - len(base) - opt_fixed
    option = struct.pack("!HH", 12, pad) + b"\x00" * pad
    return bytes(base) + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(option)) + option


def ipv4_fragments() -> tuple[int, Timeline]:
    t = Timeline(1200)
    padded = edns_padded_query("frag.evil.example", 600)
    whole = IP(src=CLIENT4, dst=RESOLVER4) / UDP(sport=40111, dport=53) / Raw(padded)
    payload = bytes(whole)[20:]  # UDP header and data, with the checksum over the whole datagram
    # By hand rather than scapy's fragment(): the offsets and flags are the point of this capture.
    pieces = [(0, payload[:256], 1), (32, payload[256:512], 1), (64, payload[512:], 0)]
    for offset, piece, more in pieces:
        frag = IP(src=CLIENT4, dst=RESOLVER4, id=0x4243, proto=17, frag=offset, flags="MF" if more else 0)
        t.add(ether() / frag / Raw(piece))  # 1 ip_fragment, 2 ip_fragment_not_first, 3 reassembled: hit
    dont = q4("df.evil.example", 40112)
    dont[IP].flags = "DF"
    t.add(ether() / dont)  # 4 hit: DF is not a fragment
    return DLT_EN10MB, t


def v6(nh_chain: Packet, name: str, sport: int) -> Packet:
    return ether() / IPv6(src=CLIENT6, dst=RESOLVER6, hlim=64) / nh_chain / UDP(sport=sport, dport=53) / Raw(
        query(name, 28))


def ipv6_extensions() -> tuple[int, Timeline]:
    t = Timeline(1300)
    t.add(v6(IPv6ExtHdrHopByHop(), "hbh.evil.example", 40121))  # 1 hit
    t.add(v6(IPv6ExtHdrRouting(addresses=["2001:db8::1"], segleft=0), "rt.evil.example", 40122))  # 2 hit
    t.add(v6(IPv6ExtHdrDestOpt(), "dst.evil.example", 40123))  # 3 hit
    chain = IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(segleft=0) / IPv6ExtHdrDestOpt()
    t.add(v6(chain, "chain.evil.example", 40124))  # 4 hit through four headers
    t.add(v6(IPv6ExtHdrFragment(offset=0, m=0, id=7), "atomic.evil.example", 40125))  # 5 hit: atomic fragment
    whole = IPv6(src=CLIENT6, dst=RESOLVER6) / UDP(sport=40126, dport=53) / Raw(query("frag6.evil.example", 28))
    body = bytes(whole)[40:]  # UDP header and data, with the checksum over the whole datagram
    first = IPv6(src=CLIENT6, dst=RESOLVER6, hlim=64) / IPv6ExtHdrFragment(nh=17, offset=0, m=1, id=8) / Raw(body[:24])
    rest = IPv6(src=CLIENT6, dst=RESOLVER6, hlim=64) / IPv6ExtHdrFragment(nh=17, offset=3, m=0, id=8) / Raw(body[24:])
    t.add(ether() / first)  # 6 ip_fragment
    t.add(ether() / rest)  # 7 completes the datagram (ip_reassembled): hit
    eight = IPv6ExtHdrDestOpt()
    for _ in range(7):
        eight = eight / IPv6ExtHdrDestOpt()
    t.add(v6(eight, "eight.evil.example", 40127))  # 8 hit: MAX_IPV6_EXT_HEADERS = 8 is allowed
    t.add(v6(IPv6ExtHdrDestOpt() / eight, "nine.evil.example", 40128))  # 9 hit: nine headers reach UDP, as in Linux
    # Hop-by-hop header claiming (20 + 1) * 8 = 168 bytes (next header UDP, one PadN option) in a shorter payload.
    overrun = bytes([17, 20]) + b"\x01\x04\x00\x00\x00\x00"
    t.add(ether() / IPv6(src=CLIENT6, dst=RESOLVER6, hlim=64, nh=0) / Raw(overrun)
          / Raw(bytes(UDP(sport=40129, dport=53) / Raw(query("over.evil.example", 28)))))  # 10 bad_ipv6_extension
    t.add(ether() / IPv6(src=CLIENT6, dst=RESOLVER6, hlim=64) / IPv6ExtHdrDestOpt(nh=59))  # 11 not_udp_tcp
    t.add(ether() / IPv6(src=CLIENT6, dst=RESOLVER6, hlim=64) / IPv6ExtHdrHopByHop()
          / tcp_seg(CLIENT6, 40130, RESOLVER6, 53, 100, 1, "PA", tcp_framed(query("tcp6.evil.example", 28)))[TCP]
          )  # 12 hit over TCP behind a hop-by-hop header
    t.add(ether() / IP(src=CLIENT4, dst=RESOLVER4, id=0x4242) / ICMP(type=8, id=1, seq=1))  # 13 not_udp_tcp
    return DLT_EN10MB, t
