"""Crafted evasion and framing forms: the frames an attacker sends to hide a query for a blocked name from the
sensor, or to make the sensor blame someone else. Each form is written once, against a Conversation, so the
same frames go into a capture (pcaps/attacks/make_attacks.py, the server's SYN-ACK made up) and to a real
resolver (tests/test_attacks_live.py, the SYN-ACK read off the wire).

The verdict each form expects is what Linux and a resolver on it do with the same frames (docs/decoding.md):
pcaps/attacks/expectations.toml, checked by tests/test_attacks.py through both loops.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from dnslib import CNAME, QTYPE, RR, A, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from scapy.layers.inet import GRE, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

TCP_WINDOW = 64240
JUNK_STREAMS = 4096  # the stream table's default size: every stream before them is pushed out


def query(name: str, dns_id: int = 0x3300) -> bytes:
    """A recursive A query (dnslib: the wire format)."""
    return DNSRecord(DNSHeader(id=dns_id, rd=1), q=DNSQuestion(DNSLabel(name), QTYPE.A)).pack()


def framed(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


class Conversation:
    """Where a form's frames go. `client`/`resolver` are addresses; subclasses implement send and handshake."""

    client: str
    resolver: str
    client6: str
    resolver6: str
    mirror: str  # an address the expectations trust as a mirror source
    stranger: str  # a host on the segment that is not a mirror

    def send(self, packet: Packet) -> None:
        raise NotImplementedError

    def handshake(self, sport: int, isn: int) -> int:
        """SYN, SYN-ACK, ACK; returns the server's next sequence number (its ISN + 1)."""
        raise NotImplementedError

    def finish(self, sport: int, seq: int) -> None:
        """After the client's FIN: the server's FIN, and the client's ACK of it (the connection fully closed)."""
        raise NotImplementedError

    def ip(self, **fields) -> IP:
        return IP(src=self.client, dst=self.resolver, ttl=64, **fields)

    def tcp(self, sport: int, seq: int, ack: int, flags: str, payload: bytes = b"", **fields) -> Packet:
        segment = self.ip() / TCP(sport=sport, dport=53, seq=seq, ack=ack, flags=flags, window=TCP_WINDOW, **fields)
        return segment / Raw(payload) if payload else segment

    def udp(self, sport: int, payload: bytes, **fields) -> Packet:
        return self.ip(**fields) / UDP(sport=sport, dport=53) / Raw(payload)


def with_bad_checksum(packet: Packet, layer: type) -> Packet:
    """The packet with its `layer` checksum off by one (built first, so scapy filled it in)."""
    built = packet.__class__(bytes(packet))
    built[layer].chksum = (built[layer].chksum + 1) & 0xFFFF
    return built


# ---- TCP ---------------------------------------------------------------------------------------------------

def tcp_split(c: Conversation, sport: int, name: str, order: tuple[int, ...]) -> None:
    """The query in three segments, sent in `order` (1-based)."""
    ack = c.handshake(sport, 1000)
    data = framed(query(name))
    cuts = [0, 9, 21, len(data)]
    for part in order:
        start, end = cuts[part - 1], cuts[part]
        c.send(c.tcp(sport, 1001 + start, ack, "PA", data[start:end]))


def tcp_out_of_order_132(c: Conversation) -> None:
    tcp_split(c, 47001, "ooo132.evil.example", (1, 3, 2))


def tcp_out_of_order_213(c: Conversation) -> None:
    tcp_split(c, 47002, "ooo213.evil.example", (2, 1, 3))


def tcp_overlap_resegmented(c: Conversation) -> None:
    """Bytes 0-19, then a retransmission re-cut as bytes 10 to the end: the overlap is the same bytes."""
    ack = c.handshake(47003, 1000)
    data = framed(query("overlap.evil.example"))
    c.send(c.tcp(47003, 1001, ack, "PA", data[:20]))
    c.send(c.tcp(47003, 1011, ack, "PA", data[10:]))


def tcp_overlap_conflict(c: Conversation) -> None:
    """Bytes 0-19 of the real query, then a retransmission from byte 10 whose overlap spells a decoy: Linux keeps
    the bytes it already has."""
    ack = c.handshake(47004, 1000)
    data = framed(query("clash.evil.example"))
    decoy = framed(query("clash.okay.example"))
    c.send(c.tcp(47004, 1001, ack, "PA", data[:22]))
    c.send(c.tcp(47004, 1011, ack, "PA", decoy[10:22] + data[22:]))


def tcp_urgent_junk(c: Conversation) -> None:
    """A junk byte inside the message, marked urgent: Linux takes it out of the stream."""
    ack = c.handshake(47005, 1000)
    data = framed(query("urgent.evil.example"))
    cut = 16
    c.send(c.tcp(47005, 1001, ack, "PAU", data[:cut] + b"X" + data[cut:], urgptr=cut + 1))


def tcp_syn_decoy(c: Conversation) -> None:
    """A SYN carrying a decoy query (no TFO cookie: the kernel drops SYN data), then the real one at the same
    sequence numbers."""
    decoy = framed(query("synbait.okay.example"))
    ack = c.handshake(47006, 1000, syn_payload=decoy)
    c.send(c.tcp(47006, 1001, ack, "PA", framed(query("synbait.evil.example"))))


def tcp_bad_checksum_decoy(c: Conversation) -> None:
    """A decoy segment with a bad TCP checksum first, then the real one at the same sequence numbers."""
    ack = c.handshake(47007, 1000)
    decoy = c.tcp(47007, 1001, ack, "PA", framed(query("cksbait.okay.example")))
    c.send(with_bad_checksum(decoy, TCP))
    c.send(c.tcp(47007, 1001, ack, "PA", framed(query("cksbait.evil.example"))))


def tcp_syn_midstream(c: Conversation) -> None:
    """Half the query, a bare SYN with a foreign sequence number, the other half (RFC 5961 4.2: ignored)."""
    ack = c.handshake(47008, 1000)
    data = framed(query("midsyn.evil.example"))
    c.send(c.tcp(47008, 1001, ack, "PA", data[:15]))
    c.send(c.tcp(47008, 777777, 0, "S"))
    c.send(c.tcp(47008, 1001 + 15, ack, "PA", data[15:]))


def tcp_rst_out_of_window(c: Conversation) -> None:
    """Half the query, a RST whose sequence number is not the next expected one, the other half (RFC 5961 3.2)."""
    ack = c.handshake(47009, 1000)
    data = framed(query("midrst.evil.example"))
    c.send(c.tcp(47009, 1001, ack, "PA", data[:15]))
    c.send(c.tcp(47009, 1001 + 15 + 5000, 0, "R"))
    c.send(c.tcp(47009, 1001 + 15, ack, "PA", data[15:]))


def tcp_port_reuse_after_fin(c: Conversation) -> None:
    """A query and FIN, then a new connection on the same ports: both queries count."""
    ack = c.handshake(47010, 1000)
    first = framed(query("reuse1.evil.example"))
    c.send(c.tcp(47010, 1001, ack, "PA", first))
    c.send(c.tcp(47010, 1001 + len(first), ack, "FA"))
    c.finish(47010, 1001 + len(first) + 1)
    ack = c.handshake(47010, 90000)
    c.send(c.tcp(47010, 90001, ack, "PA", framed(query("reuse2.evil.example"))))


def tcp_evicted(c: Conversation) -> None:
    """Half the query, JUNK_STREAMS junk connections, the other half: the sensor's table pushes the stream out."""
    ack = c.handshake(47011, 1000)
    data = framed(query("evicted.evil.example"))
    c.send(c.tcp(47011, 1001, ack, "PA", data[:24]))
    for port in range(JUNK_STREAMS):
        c.send(c.tcp(10000 + port, 5000, 0, "S"))
    c.send(c.tcp(47011, 1001 + 24, ack, "PA", data[24:]))


# ---- IP fragments ------------------------------------------------------------------------------------------

def udp_datagram(c: Conversation, sport: int, name: str) -> bytes:
    """The UDP header and query of a datagram to fragment by hand (checksum over the whole)."""
    packet = IP(bytes(c.udp(sport, query(name))))
    return bytes(packet[UDP])


def frag(c: Conversation, ident: int, offset: int, more: bool, data: bytes) -> IP:
    return c.ip(id=ident, flags="MF" if more else 0, frag=offset // 8, proto=17) / Raw(data)


def frag_bad_checksum_decoy(c: Conversation) -> None:
    """First fragment, a decoy last fragment with a bad IP header checksum, the real last fragment."""
    real = udp_datagram(c, 47101, "fragcks.evil.example")
    decoy = udp_datagram(c, 47101, "fragcks.okay.example")
    c.send(frag(c, 0x5101, 0, True, real[:24]))
    c.send(with_bad_checksum(frag(c, 0x5101, 24, False, decoy[24:]), IP))
    c.send(frag(c, 0x5101, 24, False, real[24:]))


def frag_decoy_inside(c: Conversation) -> None:
    """A decoy lying wholly inside the first fragment: Linux drops it and keeps the first copy."""
    real = udp_datagram(c, 47102, "fraginside.evil.example")
    decoy = udp_datagram(c, 47102, "fraginside.okay.example")
    c.send(frag(c, 0x5102, 0, True, real[:48]))
    c.send(frag(c, 0x5102, 24, True, decoy[24:40]))
    c.send(frag(c, 0x5102, 48, False, real[48:]))


def frag_overlap_bad_checksum(c: Conversation) -> None:
    """An overlapping decoy with a bad IP header checksum: ignored before reassembly."""
    real = udp_datagram(c, 47103, "fragovcks.evil.example")
    decoy = udp_datagram(c, 47103, "fragovcks.okay.example")
    c.send(frag(c, 0x5103, 0, True, real[:24]))
    c.send(with_bad_checksum(frag(c, 0x5103, 16, False, decoy[16:]), IP))
    c.send(frag(c, 0x5103, 24, False, real[24:]))


def frag_overlap_then_resend(c: Conversation) -> None:
    """An overlap (Linux drops the queue), then the whole datagram again with the same IP ID: accepted."""
    real = udp_datagram(c, 47104, "fragresend.evil.example")
    decoy = udp_datagram(c, 47104, "fragresend.okay.example")
    c.send(frag(c, 0x5104, 0, True, real[:24]))
    c.send(frag(c, 0x5104, 16, True, decoy[16:32]))  # overlaps the first and runs past it: the queue is dropped
    c.send(frag(c, 0x5104, 0, True, real[:24]))
    c.send(frag(c, 0x5104, 24, False, real[24:]))


def ipv6_nine_destination_options(c: Conversation) -> None:
    """Nine Destination Options headers before UDP: Linux walks them all."""
    headers = IPv6ExtHdrDestOpt()
    for _ in range(8):
        headers = headers / IPv6ExtHdrDestOpt()
    packet = IPv6(src=c.client6, dst=c.resolver6, hlim=64) / headers / UDP(sport=47105, dport=53)
    c.send(packet / Raw(query("ninedest.evil.example")))


def ipv6_first_fragment_incomplete_chain(c: Conversation) -> None:
    """A first fragment that ends inside the header chain, before UDP (RFC 7112: dropped, and so the datagram)."""
    udp = bytes(IPv6(src=c.client6, dst=c.resolver6) / UDP(sport=47106, dport=53)
                / Raw(query("chain.evil.example")))[40:]
    options = bytes(IPv6ExtHdrDestOpt(nh=17, len=1)) + bytes(8)  # 16 bytes of options, then UDP
    body = options + udp
    base = IPv6(src=c.client6, dst=c.resolver6, hlim=64)
    c.send(base / IPv6ExtHdrFragment(nh=60, offset=0, m=1, id=0x5106) / Raw(body[:8]))
    c.send(base / IPv6ExtHdrFragment(nh=60, offset=1, m=0, id=0x5106) / Raw(body[8:]))


# ---- checksums ---------------------------------------------------------------------------------------------

def bad_ip_checksum(c: Conversation) -> None:
    c.send(with_bad_checksum(c.udp(47201, query("badipsum.evil.example")), IP))


def bad_udp_checksum(c: Conversation) -> None:
    c.send(with_bad_checksum(c.udp(47202, query("badudpsum.evil.example")), UDP))


def ipv6_udp_zero_checksum(c: Conversation) -> None:
    packet = IPv6(bytes(IPv6(src=c.client6, dst=c.resolver6, hlim=64) / UDP(sport=47203, dport=53)
                        / Raw(query("zerosum.evil.example"))))
    packet[UDP].chksum = 0
    c.send(packet)


# ---- responses: CNAME hits (decision 0162) -----------------------------------------------------------------

def cname_response(name: str, target: str, dns_id: int = 0x3400) -> bytes:
    """The resolver's answer to a recursive A query for `name`: a CNAME to `target` and target's address."""
    response = DNSRecord(DNSHeader(id=dns_id, qr=1, aa=0, ra=1, rd=1), q=DNSQuestion(DNSLabel(name), QTYPE.A))
    response.add_answer(RR(DNSLabel(name), QTYPE.CNAME, ttl=300, rdata=CNAME(DNSLabel(target))))
    response.add_answer(RR(DNSLabel(target), QTYPE.A, ttl=300, rdata=A("203.0.113.80")))
    return response.pack()


def response_to_client(c: Conversation, dport: int, payload: bytes) -> Packet:
    return IP(src=c.resolver, dst=c.client, ttl=64) / UDP(sport=53, dport=dport) / Raw(payload)


def cname_response_bad_udp_checksum(c: Conversation) -> None:
    """A forged answer to a client, a good name aliased to a blocked one, with a UDP checksum the client's kernel
    refuses: no CNAME hit, the anomaly bad_checksum_response."""
    c.send(with_bad_checksum(response_to_client(c, 47401, cname_response("alias-bad.okay.example",
                                                                         "cnamebad.evil.example")), UDP))


def cname_response_good_udp_checksum(c: Conversation) -> None:
    """The same answer with a good checksum: the client takes it, a CNAME hit (on the response's question)."""
    c.send(response_to_client(c, 47402, cname_response("alias-good.okay.example", "cnamegood.evil.example")))


# ---- tunnels -----------------------------------------------------------------------------------------------

def inner_query(c: Conversation, victim: str, name: str) -> Packet:
    return (Ether(src="02:00:00:00:00:99", dst="02:00:00:00:00:53")
            / IP(src=victim, dst=c.resolver, ttl=64) / UDP(sport=47301, dport=53) / Raw(query(name)))


def vxlan_untrusted(c: Conversation) -> None:
    """One UDP packet to 4789 from a host that is not a mirror, blaming 192.0.2.77 for a blocked name."""
    c.send(IP(src=c.stranger, dst=c.resolver, ttl=64) / UDP(sport=49999, dport=4789) / VXLAN(vni=10)
           / inner_query(c, "192.0.2.77", "framed.evil.example"))


def gre_untrusted(c: Conversation) -> None:
    c.send(IP(src=c.stranger, dst=c.resolver, ttl=64) / GRE(proto=0x0800)
           / IP(src="192.0.2.78", dst=c.resolver, ttl=64) / UDP(sport=47302, dport=53)
           / Raw(query("framedgre.evil.example")))


def vxlan_from_mirror(c: Conversation) -> None:
    """The same from the configured mirror: decapsulated, and the hit names the outer sender."""
    c.send(IP(src=c.mirror, dst=c.resolver, ttl=64) / UDP(sport=49998, dport=4789) / VXLAN(vni=10)
           / inner_query(c, "192.0.2.79", "mirrored.evil.example"))


# Every form, by the capture name it is written to.
FORMS: dict[str, Callable[[Conversation], None]] = {
    "tcp-out-of-order-132": tcp_out_of_order_132,
    "tcp-out-of-order-213": tcp_out_of_order_213,
    "tcp-overlap-resegmented": tcp_overlap_resegmented,
    "tcp-overlap-conflict": tcp_overlap_conflict,
    "tcp-urgent-junk": tcp_urgent_junk,
    "tcp-syn-decoy": tcp_syn_decoy,
    "tcp-bad-checksum-decoy": tcp_bad_checksum_decoy,
    "tcp-syn-midstream": tcp_syn_midstream,
    "tcp-rst-out-of-window": tcp_rst_out_of_window,
    "tcp-port-reuse-after-fin": tcp_port_reuse_after_fin,
    "tcp-evicted": tcp_evicted,
    "frag-bad-checksum-decoy": frag_bad_checksum_decoy,
    "frag-decoy-inside": frag_decoy_inside,
    "frag-overlap-bad-checksum": frag_overlap_bad_checksum,
    "frag-overlap-then-resend": frag_overlap_then_resend,
    "ipv6-nine-destination-options": ipv6_nine_destination_options,
    "ipv6-first-fragment-incomplete-chain": ipv6_first_fragment_incomplete_chain,
    "bad-ip-checksum": bad_ip_checksum,
    "bad-udp-checksum": bad_udp_checksum,
    "ipv6-udp-zero-checksum": ipv6_udp_zero_checksum,
    "vxlan-untrusted": vxlan_untrusted,
    "gre-untrusted": gre_untrusted,
    "vxlan-from-mirror": vxlan_from_mirror,
    "cname-response-bad-udp-checksum": cname_response_bad_udp_checksum,
    "cname-response-good-udp-checksum": cname_response_good_udp_checksum,
}
