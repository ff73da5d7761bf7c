"""Captures of the DNS message itself: compression pointers, limits, escaping, case, types, classes, question
counts, responses, junk on port 53, traffic that is not DNS, and a second DNS port.

dnslib builds every well-formed message; the malformed ones are built by hand (`header`, `wire_name`), since
no library will write a forward pointer or a 256-byte name.
"""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from pcaps.craft import (
    CLIENT4,
    CLIENT6,
    CLIENT_MAC,
    DLT_EN10MB,
    RESOLVER4,
    RESOLVER6,
    RESOLVER_MAC,
    Timeline,
    answer,
    ether,
    header,
    query,
    tcp_framed,
    tcp_seg,
    udp_dns,
    wire_name,
)

QTYPE_CLASS_A_IN = b"\x00\x01\x00\x01"


def to_resolver(t: Timeline, sport: int, payload: bytes, src: str = CLIENT4, dport: int = 53) -> int:
    dst = RESOLVER6 if ":" in src else RESOLVER4
    return t.add(ether() / udp_dns(src, sport, dst, dport, payload))


def to_client(t: Timeline, dport: int, payload: bytes, dst: str = CLIENT4, sport: int = 53) -> int:
    src = RESOLVER6 if ":" in dst else RESOLVER4
    return t.add(ether(RESOLVER_MAC, CLIENT_MAC) / udp_dns(src, sport, dst, dport, payload))


def dns_names() -> tuple[int, Timeline]:
    """Compression pointers, name limits and escaping, one question name per frame (all queries, port 53)."""
    t = Timeline(3000)
    # The first question starts at offset 12, so the only bytes a pointer in it may reach (strictly backwards)
    # are the header's. Frames 1-2 are legal pointers into header counts chosen to spell labels.
    # 1 hit foo.zip: ANCOUNT/NSCOUNT/ARCOUNT bytes at 6..11 read "\x03zip\x00": the pointer lands on 'zip'.
    to_resolver(t, 42001, header(0x3001, an=0x037A, ns=0x6970, ar=0x0000) + b"\x03foo\xc0\x06" + QTYPE_CLASS_A_IN)
    # 2 hit bar.zip through three backward hops: 12 -> 10 -> 8 -> 6 (a zero byte: the root).
    to_resolver(t, 42002, header(0x3002, an=0x0000, ns=0xC006, ar=0xC008)
                + b"\x03bar\x03zip\xc0\x0a" + QTYPE_CLASS_A_IN)
    # 3 dns_bad_pointer: a forward pointer to a valid name placed after the question ("abc.evil.example" if
    # followed).
    to_resolver(t, 42003, header(0x3003) + b"\x03abc\xc0\x16" + QTYPE_CLASS_A_IN + wire_name(b"evil", b"example"))
    # 4 dns_bad_pointer: the name is a pointer to itself.
    to_resolver(t, 42004, header(0x3004) + b"\xc0\x0c" + QTYPE_CLASS_A_IN)
    # 5 dns_bad_pointer: a loop 12 -> 10 -> 8 -> 10 (the third hop goes forwards).
    to_resolver(t, 42005, header(0x3005, ns=0xC00A, ar=0xC008) + b"\x03abc\xc0\x0a" + QTYPE_CLASS_A_IN)
    # 6 dns_bad_pointer: 20 backward hops down a chain after the question, entered by a forward pointer. More
    # than MAX_POINTER_HOPS backward hops cannot be built in a first question: only 12 header bytes precede it.
    chain = bytearray(b"\x00")  # the root name at offset 18
    for hop in range(20):
        chain += bytes([0xC0, 18 + (0 if hop == 0 else 1 + 2 * (hop - 1))])
    to_resolver(t, 42006, header(0x3006) + bytes([0xC0, 18 + 1 + 2 * 19]) + QTYPE_CLASS_A_IN + bytes(chain))
    # 7 hit: a name of exactly 255 wire bytes (63+63+63+57 and 'zip': 4*64 - 6 + 4 + 1).
    longest = (b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 57, b"zip")
    to_resolver(t, 42007, header(0x3007) + wire_name(*longest) + QTYPE_CLASS_A_IN)
    # 8 dns_name_too_long: one byte more.
    too_long = (b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 58, b"zip")
    to_resolver(t, 42008, header(0x3008) + wire_name(*too_long) + QTYPE_CLASS_A_IN)
    # 9, 10 dns_bad_label_type: length bytes 0x40 (extended label, RFC 6891) and 0x80 (reserved).
    to_resolver(t, 42009, header(0x3009) + b"\x03abc\x40" + b"x" * 8 + b"\x00" + QTYPE_CLASS_A_IN)
    to_resolver(t, 42010, header(0x300A) + b"\x03abc\x80" + b"x" * 8 + b"\x00" + QTYPE_CLASS_A_IN)
    # 11-13 dns_truncated: the message ends inside a label, before the type and class, inside a pointer.
    to_resolver(t, 42011, header(0x300B) + b"\x04evil\x07exa")
    to_resolver(t, 42012, header(0x300C) + wire_name(b"evil", b"example") + b"\x00\x01")
    to_resolver(t, 42013, header(0x300D) + b"\x03abc\xc0")
    # 14 hit: bytes outside 0x21-0x7e as \DDD, '.' and '\' in a label as \. and \\ (docs/decoding.md).
    odd = (b"a.b", b"c\\d", b"sp ace", b"\x00\x7f\xff", b"!~", b"evil", b"example")
    to_resolver(t, 42014, query(odd, dns_id=0x300E))
    # 15 no hit: one label "evil.example" is not the name evil.example.
    to_resolver(t, 42015, query((b"evil.example",), dns_id=0x300F))
    # 16 no hit: the root.
    to_resolver(t, 42016, query((), 2, dns_id=0x3010))
    return DLT_EN10MB, t


def dns_fields() -> tuple[int, Timeline]:
    """Case, rule kinds, types, classes, question counts, responses."""
    t = Timeline(3100)
    to_resolver(t, 42101, query("EVIL.EXAMPLE", dns_id=0x3101))  # 1 hit, upper case kept
    to_resolver(t, 42102, query("wWw.EvIl.ExAmPlE", 28, dns_id=0x3102), src=CLIENT6)  # 2 hit, mixed case, IPv6
    to_resolver(t, 42103, query("Foo.ZIP", dns_id=0x3103))  # 3 hit, TLD rule
    to_resolver(t, 42104, query("cdn1.BadCdn.Test", dns_id=0x3104))  # 4 hit, below-only rule
    to_resolver(t, 42105, query("badcdn.test", dns_id=0x3105))  # 5 no hit: *.badcdn.test is only below it
    to_resolver(t, 42106, query("x.tracker.example.net", dns_id=0x3106))  # 6 hit, rule written Tracker.Example.NET.
    to_resolver(t, 42107, query("evil.example.com", dns_id=0x3107))  # 7 no hit: suffix of a different name
    to_resolver(t, 42108, query("notevil.example", dns_id=0x3108))  # 8 no hit: not at a label boundary
    to_resolver(t, 42109, query("svc.evil.example", 65, dns_id=0x3109))  # 9 hit, HTTPS
    to_resolver(t, 42110, query("evil.example", 255, dns_id=0x310A))  # 10 hit, ANY
    to_resolver(t, 42111, query("odd.evil.example", 65534, dns_id=0x310B))  # 11 hit, TYPE65534
    to_resolver(t, 42112, query("version.evil.example", 16, 3, dns_id=0x310C))  # 12 hit, TXT class CH
    to_resolver(t, 42113, header(0x310D, qd=0))  # 13 dns_no_question
    two = header(0x310E, qd=2) + wire_name(b"two", b"evil", b"example") + QTYPE_CLASS_A_IN
    to_resolver(t, 42114, two + wire_name(b"www", b"example", b"org") + QTYPE_CLASS_A_IN)  # 14 hit on the first
    other_first = header(0x310F, qd=2) + wire_name(b"www", b"example", b"org") + QTYPE_CLASS_A_IN
    to_resolver(t, 42115, other_first + wire_name(b"three", b"evil", b"example") + QTYPE_CLASS_A_IN)  # 15 no hit
    to_client(t, 42101, answer("EVIL.EXAMPLE", "192.0.2.66", dns_id=0x3101))  # 16 response: never a hit
    to_client(t, 42103, answer("Foo.ZIP", "192.0.2.66", 28, dns_id=0x3103))  # 17 response
    return DLT_EN10MB, t


def junk_port53() -> tuple[int, Timeline]:
    """Bytes that are not DNS on port 53: each fails in one named way, none stops the loop."""
    t = Timeline(3200)
    to_resolver(t, 42201, b"hello")  # 1 dns_too_short
    http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    to_resolver(t, 42202, http)  # 2 dns_truncated: offset 12 is '.', a 46-byte label in a 27-byte message
    to_resolver(t, 42203, header(0xDEAD) + b"\x7fjunkjunk")  # 3 dns_bad_label_type: 0x7f
    to_client(t, 42204, bytes(12))  # 4 dns_no_question: twelve zero bytes from port 53
    # TCP: 'GE' read as a length prefix waits for 18,245 bytes that never come; the FIN drops them.
    t.add(ether() / tcp_seg(CLIENT4, 42205, RESOLVER4, 53, 300, 1, "PA", http))  # 5 nothing decoded
    t.add(ether() / tcp_seg(CLIENT4, 42205, RESOLVER4, 53, 300 + len(http), 1, "FA"))  # 6 FIN
    return DLT_EN10MB, t


def non_dns() -> tuple[int, Timeline]:
    """Ordinary traffic that is not DNS, including a DNS query on a port not configured."""
    t = Timeline(3300)
    t.add(Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=CLIENT_MAC, psrc=CLIENT4, pdst=RESOLVER4))  # 1
    t.add(ether() / IP(src=CLIENT4, dst=RESOLVER4, id=0x4242) / ICMP(type=8, id=7, seq=1) / Raw(b"ping" * 8))  # 2
    t.add(ether(RESOLVER_MAC, CLIENT_MAC) / IP(src=RESOLVER4, dst=CLIENT4, id=0x4242)
          / ICMP(type=0, id=7, seq=1) / Raw(b"ping" * 8))  # 3
    t.add(ether() / IPv6(src=CLIENT6, dst=RESOLVER6, hlim=64) / ICMPv6EchoRequest(id=7, seq=1))  # 4
    web = "198.51.100.80"
    request = b"GET /index.html HTTP/1.1\r\nHost: www.example.org\r\n\r\n"
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    t.add(ether() / tcp_seg(CLIENT4, 42301, web, 80, 100, 0, "S"))  # 5
    t.add(ether(RESOLVER_MAC, CLIENT_MAC) / tcp_seg(web, 80, CLIENT4, 42301, 900, 101, "SA"))  # 6
    t.add(ether() / tcp_seg(CLIENT4, 42301, web, 80, 101, 901, "A"))  # 7
    t.add(ether() / tcp_seg(CLIENT4, 42301, web, 80, 101, 901, "PA", request))  # 8
    t.add(ether(RESOLVER_MAC, CLIENT_MAC)
          / tcp_seg(web, 80, CLIENT4, 42301, 901, 101 + len(request), "PA", reply))  # 9
    t.add(ether() / udp_dns(CLIENT4, 123, "198.51.100.123", 123, b"\x23" + bytes(47)))  # 10 NTP
    t.add(ether() / udp_dns(CLIENT4, 5353, "224.0.0.251", 5353, query("evil.example", dns_id=0)))  # 11 mDNS port
    t.add(Ether(src=CLIENT_MAC, dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(bytes(46)))  # 12 LLDP
    t.add(ether() / IP(src=CLIENT4, dst=RESOLVER4, id=0x4242, proto=47) / Raw(b"\x00\x00\x08\x00"))  # 13 GRE
    return DLT_EN10MB, t


def port_5353() -> tuple[int, Timeline]:
    """DNS on a second port: decoded only when `--ports 53,5353` names it."""
    t = Timeline(3400)
    to_resolver(t, 42401, query("alt.evil.example", dns_id=0x3401), dport=5353)  # 1 hit
    to_client(t, 42401, answer("alt.evil.example", "192.0.2.66", dns_id=0x3401), sport=5353)  # 2 response
    t.add(ether() / tcp_seg(CLIENT4, 42402, RESOLVER4, 5353, 500, 1, "PA",
                            tcp_framed(query("tcp.evil.example", dns_id=0x3402))))  # 3 hit over TCP
    t.add(ether() / tcp_seg(CLIENT4, 42402, RESOLVER4, 5353, 500 + 2 + len(query("tcp.evil.example")), 1, "FA"))  # 4
    to_resolver(t, 42403, query("std.evil.example", dns_id=0x3403))  # 5 hit on 53
    to_resolver(t, 42404, query("other.evil.example", dns_id=0x3404), dport=5354)  # 6 not_dns_port
    return DLT_EN10MB, t
