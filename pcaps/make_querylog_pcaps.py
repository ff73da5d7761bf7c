"""Write the query-log captures into pcaps/querylog/: `python -m pcaps.make_querylog_pcaps [DIR]`.

Each capture holds query/response exchanges whose correlation is known from how they are built here;
tests/test_querylog_correlation.py states, by hand, what the query log must say about each frame, and
tests/test_reassembly.py does the same for the fragments. Deterministic like pcaps/make_pcaps.py (fixed
times, addresses and ids): a second run writes byte-identical files (tested).

- `answers.pcap`: A (two records), AAAA, a CNAME chain, NXDOMAIN, SERVFAIL, MX, TXT, SRV (generic form), PTR
  over IPv6, a response whose name differs in case.
- `retransmit.pcap`: a query sent three times then answered, a response without a query, an unanswered query
  that expires, one left pending, a response with another DNS id.
- `tcp.pcap`: a truncated (TC) UDP response, then the retry over TCP (handshake, framed query and response).
- `fragments.pcap`: an IPv4 EDNS response in three fragments out of order, an IPv6 one in two, a fragmented
  query under a rule, overlapping fragments, an exact duplicate fragment.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RD, RR, TXT, A, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.packet import Raw

from pcaps.craft import (
    CLIENT4,
    CLIENT4_B,
    CLIENT6,
    CLIENT_MAC,
    DLT_EN10MB,
    RESOLVER4,
    RESOLVER6,
    RESOLVER_MAC,
    Timeline,
    ether,
    tcp_framed,
    udp_dns,
    write_pcap,
)
from pcaps.layers import edns_padded_query
from pcaps.tcp import Direction

HERE = Path(__file__).resolve().parent / "querylog"
SECOND = 1_000_000  # microseconds

# SRV rdata written as raw bytes, so that its generic text form is known here: priority 0, weight 5, port 5060,
# target sip.example.com (uncompressed).
SRV_RDATA = bytes.fromhex("0000000513c4") + b"\x03sip\x07example\x03com\x00"
# The big TXT answer of the fragmented IPv4 response: three strings of 255, 255 and 200 bytes, whatever the
# resolver would send for a large SPF or DKIM record.
BIG_TXT = [b"a" * 255, b"b" * 255, b"c" * 200]
# The fragmented IPv6 response: 100 AAAA records 2001:db8:6::1 to 2001:db8:6::64.
MANY_AAAA = [f"2001:db8:6::{index:x}" for index in range(1, 101)]


def q(name: str, qtype: int, dns_id: int) -> bytes:
    return DNSRecord(DNSHeader(id=dns_id, rd=1), q=DNSQuestion(DNSLabel(name), qtype)).pack()


def r(name: str, qtype: int, dns_id: int, answers: list[RR] = (), rcode: int = RCODE.NOERROR,
      tc: bool = False) -> bytes:
    """A response echoing the question, with `answers` (dnslib compresses owner names and name rdata)."""
    header = DNSHeader(id=dns_id, qr=1, rd=1, ra=1, rcode=rcode, tc=int(tc))
    record = DNSRecord(header, q=DNSQuestion(DNSLabel(name), qtype))
    for rr in answers:
        record.add_answer(rr)
    return record.pack()


def to_resolver(t: Timeline, client: str, port: int, payload: bytes, gap_usec: int | None = None) -> int:
    server = RESOLVER6 if ":" in client else RESOLVER4
    return t.add(ether() / udp_dns(client, port, server, 53, payload), gap_usec=gap_usec)


def to_client(t: Timeline, client: str, port: int, payload: bytes, gap_usec: int | None = None) -> int:
    server = RESOLVER6 if ":" in client else RESOLVER4
    return t.add(ether(RESOLVER_MAC, CLIENT_MAC) / udp_dns(server, 53, client, port, payload), gap_usec=gap_usec)


def answers_capture() -> Timeline:
    """Ten exchanges, each query answered 1 ms later (the Timeline's step) by the next frame."""
    t = Timeline(6000)
    to_resolver(t, CLIENT4, 40001, q("www.example.com", QTYPE.A, 0x0101))  # 1
    to_client(t, CLIENT4, 40001, r("www.example.com", QTYPE.A, 0x0101, [
        RR("www.example.com", QTYPE.A, rdata=A("192.0.2.80"), ttl=300),
        RR("www.example.com", QTYPE.A, rdata=A("192.0.2.81"), ttl=300),
    ]))  # 2
    to_resolver(t, CLIENT4, 40002, q("www.example.com", QTYPE.AAAA, 0x0102))  # 3
    to_client(t, CLIENT4, 40002, r("www.example.com", QTYPE.AAAA, 0x0102, [
        RR("www.example.com", QTYPE.AAAA, rdata=AAAA("2001:db8::80"), ttl=60),
    ]))  # 4
    to_resolver(t, CLIENT4, 40003, q("cdn.example.net", QTYPE.A, 0x0103))  # 5
    to_client(t, CLIENT4, 40003, r("cdn.example.net", QTYPE.A, 0x0103, [
        RR("cdn.example.net", QTYPE.CNAME, rdata=CNAME("edge.example.org"), ttl=3600),
        RR("edge.example.org", QTYPE.CNAME, rdata=CNAME("e1.example.org"), ttl=20),
        RR("e1.example.org", QTYPE.A, rdata=A("203.0.113.7"), ttl=20),
    ]))  # 6
    to_resolver(t, CLIENT4, 40004, q("nxd.example", QTYPE.A, 0x0104))  # 7
    to_client(t, CLIENT4, 40004, r("nxd.example", QTYPE.A, 0x0104, rcode=RCODE.NXDOMAIN))  # 8
    to_resolver(t, CLIENT4, 40005, q("fail.example", QTYPE.A, 0x0105))  # 9
    to_client(t, CLIENT4, 40005, r("fail.example", QTYPE.A, 0x0105, rcode=RCODE.SERVFAIL))  # 10
    to_resolver(t, CLIENT4_B, 40006, q("example.com", QTYPE.MX, 0x0106))  # 11
    to_client(t, CLIENT4_B, 40006, r("example.com", QTYPE.MX, 0x0106, [
        RR("example.com", QTYPE.MX, rdata=MX("mail.example.com", 10), ttl=3600),
    ]))  # 12
    to_resolver(t, CLIENT4_B, 40007, q("example.com", QTYPE.TXT, 0x0107))  # 13
    to_client(t, CLIENT4_B, 40007, r("example.com", QTYPE.TXT, 0x0107, [
        RR("example.com", QTYPE.TXT, rdata=TXT([b"v=spf1 -all", b'say "hi"']), ttl=300),
    ]))  # 14
    to_resolver(t, CLIENT4_B, 40008, q("_sip._udp.example.com", QTYPE.SRV, 0x0108))  # 15
    to_client(t, CLIENT4_B, 40008, r("_sip._udp.example.com", QTYPE.SRV, 0x0108, [
        RR("_sip._udp.example.com", QTYPE.SRV, rdata=RD(SRV_RDATA), ttl=600),
    ]))  # 16
    to_resolver(t, CLIENT6, 40009, q("80.2.0.192.in-addr.arpa", QTYPE.PTR, 0x0109))  # 17
    to_client(t, CLIENT6, 40009, r("80.2.0.192.in-addr.arpa", QTYPE.PTR, 0x0109, [
        RR("80.2.0.192.in-addr.arpa", QTYPE.PTR, rdata=PTR("www.example.com"), ttl=86400),
    ]))  # 18
    to_resolver(t, CLIENT4, 40010, q("MiXeD.Example.COM", QTYPE.A, 0x010A))  # 19
    to_client(t, CLIENT4, 40010, r("mixed.example.com", QTYPE.A, 0x010A, [
        RR("mixed.example.com", QTYPE.A, rdata=A("192.0.2.90"), ttl=5),
    ]))  # 20: the name in another case still answers the query
    return t


def retransmit_capture() -> Timeline:
    t = Timeline(6100)
    ask = q("again.example", QTYPE.A, 0x0201)
    to_resolver(t, CLIENT4, 40101, ask)  # 1 at 0 s
    to_resolver(t, CLIENT4, 40101, ask, gap_usec=SECOND)  # 2 at 1.001 s: a retransmission
    to_resolver(t, CLIENT4, 40101, ask, gap_usec=SECOND)  # 3 at 2.002 s: another
    to_client(t, CLIENT4, 40101, r("again.example", QTYPE.A, 0x0201, [
        RR("again.example", QTYPE.A, rdata=A("192.0.2.100"), ttl=30),
    ]), gap_usec=500_000)  # 4 at 2.503 s: answers frame 1, latency 2,503,000 us
    to_client(t, CLIENT4, 40102, r("orphan.example", QTYPE.A, 0x0202, [
        RR("orphan.example", QTYPE.A, rdata=A("192.0.2.101"), ttl=30),
    ]))  # 5 at 2.504 s: a response without a query
    to_resolver(t, CLIENT4, 40103, q("lost.example", QTYPE.A, 0x0203))  # 6 at 2.505 s: never answered
    to_resolver(t, CLIENT4, 40104, q("later.example", QTYPE.AAAA, 0x0204), gap_usec=11 * SECOND)
    # 7 at 13.506 s: frame 6 is 11.001 s old, past the 10 s timeout: it expires before 7 is taken; 7 stays
    # pending to the end (flushed)
    to_resolver(t, CLIENT4, 40105, q("wrongid.example", QTYPE.A, 0x0205))  # 8: never answered
    to_client(t, CLIENT4, 40105, r("wrongid.example", QTYPE.A, 0x0206))  # 9: another id: response only
    return t


def tcp_capture() -> Timeline:
    """A TXT query answered truncated over UDP, then asked again over TCP."""
    t = Timeline(6200)
    ask = q("big.example", QTYPE.TXT, 0x0301)
    to_resolver(t, CLIENT4, 40201, ask)  # 1
    to_client(t, CLIENT4, 40201, r("big.example", QTYPE.TXT, 0x0301, tc=True))  # 2 TC, no answers
    client = Direction(t, CLIENT4, 40202, RESOLVER4, 53, 1000, to_client=False)
    server = Direction(t, RESOLVER4, 53, CLIENT4, 40202, 5000, to_client=True)
    client.send(flags="S")  # 3
    server.ack = client.seq
    server.send(flags="SA")  # 4
    client.ack = server.seq
    client.send(flags="A")  # 5
    client.send(tcp_framed(ask))  # 6 the query over TCP
    server.ack = client.seq
    server.send(tcp_framed(r("big.example", QTYPE.TXT, 0x0301, [
        RR("big.example", QTYPE.TXT, rdata=TXT([b"part one"]), ttl=120),
        RR("big.example", QTYPE.TXT, rdata=TXT([b"part two"]), ttl=120),
    ])))  # 7 the whole answer, 1 ms after frame 6
    client.ack = server.seq
    client.send(flags="FA")  # 8
    return t


def ipv4_fragments(datagram: bytes, ident: int, offsets: list[int], order: list[int], src: str, dst: str,
                   to_client_side: bool) -> list:
    """An IPv4 datagram (IP header + payload, as scapy built it) cut at `offsets` (multiples of 8), frames in
    `order`."""
    payload = datagram[20:]
    bounds = [*offsets, len(payload)]
    macs = (RESOLVER_MAC, CLIENT_MAC) if to_client_side else (CLIENT_MAC, RESOLVER_MAC)
    pieces = []
    for index in range(len(offsets)):
        start, end = bounds[index], bounds[index + 1]
        more = index + 1 < len(offsets)
        frag = IP(src=src, dst=dst, id=ident, proto=17, ttl=64, frag=start // 8, flags="MF" if more else 0)
        pieces.append(ether(*macs) / frag / Raw(payload[start:end]))
    return [pieces[index] for index in order]


def fragments_capture() -> Timeline:
    t = Timeline(6300)
    # An IPv4 EDNS response of about 780 bytes in three fragments, sent 2, 3, 1.
    to_resolver(t, CLIENT4, 40301, q("large.example", QTYPE.TXT, 0x0401))  # 1
    big = r("large.example", QTYPE.TXT, 0x0401, [RR("large.example", QTYPE.TXT, rdata=TXT(BIG_TXT), ttl=300)])
    whole = bytes(IP(src=RESOLVER4, dst=CLIENT4, id=0x5001, ttl=64) / UDP(sport=53, dport=40301) / Raw(big))
    for frame in ipv4_fragments(whole, 0x5001, [0, 256, 512], [1, 2, 0], RESOLVER4, CLIENT4, True):
        t.add(frame)  # 2 (second piece), 3 (third), 4 (first: completes; the response is decoded here)
    # An IPv6 response with 100 AAAA records (about 2,900 bytes) in two fragments.
    to_resolver(t, CLIENT6, 40302, q("large6.example", QTYPE.AAAA, 0x0402))  # 5
    many = r("large6.example", QTYPE.AAAA, 0x0402,
             [RR("large6.example", QTYPE.AAAA, rdata=AAAA(address), ttl=60) for address in MANY_AAAA])
    body = bytes(IPv6(src=RESOLVER6, dst=CLIENT6) / UDP(sport=53, dport=40302) / Raw(many))[40:]
    for start, end, more in ((0, 1448, 1), (1448, len(body), 0)):
        frag = IPv6ExtHdrFragment(nh=17, offset=start // 8, m=more, id=0x6001)
        t.add(ether(RESOLVER_MAC, CLIENT_MAC) / IPv6(src=RESOLVER6, dst=CLIENT6, hlim=64) / frag / Raw(body[start:end]))
        # 6 held, 7 completes
    # A query under a rule, fragmented, last fragment first: a hit all the same.
    padded = edns_padded_query("hidden.evil.example", 600)
    whole = bytes(IP(src=CLIENT4, dst=RESOLVER4, id=0x5002, ttl=64) / UDP(sport=40303, dport=53) / Raw(padded))
    for frame in ipv4_fragments(whole, 0x5002, [0, 304], [1, 0], CLIENT4, RESOLVER4, False):
        t.add(frame)  # 8 held, 9 completes: hit, and a pending query (unanswered at the end)
    # Overlapping fragments: the second starts inside the first with other bytes (an evasion): no query.
    padded = edns_padded_query("overlap.evil.example", 600)
    whole = bytes(IP(src=CLIENT4, dst=RESOLVER4, id=0x5003, ttl=64) / UDP(sport=40304, dport=53) / Raw(padded))
    payload = whole[20:]
    first = IP(src=CLIENT4, dst=RESOLVER4, id=0x5003, proto=17, ttl=64, frag=0, flags="MF") / Raw(payload[:304])
    other = bytes(payload[296:304]).replace(b"\x00", b"X") + payload[304:]
    second = IP(src=CLIENT4, dst=RESOLVER4, id=0x5003, proto=17, ttl=64, frag=296 // 8) / Raw(other)
    t.add(ether() / first)  # 10 held
    t.add(ether() / second)  # 11 overlaps 296-304 and runs past: ip_fragment_overlap, the queue dropped
    t.add(ether() / IP(src=CLIENT4, dst=RESOLVER4, id=0x5003, proto=17, ttl=64, frag=304 // 8) / Raw(payload[304:]))
    # 12 the honest last fragment: a new queue, never completed
    # An exact duplicate of a fragment is harmless.
    padded = edns_padded_query("dup.example", 600)
    whole = bytes(IP(src=CLIENT4, dst=RESOLVER4, id=0x5004, ttl=64) / UDP(sport=40305, dport=53) / Raw(padded))
    pieces = ipv4_fragments(whole, 0x5004, [0, 304], [0, 0, 1], CLIENT4, RESOLVER4, False)
    for frame in pieces:
        t.add(frame)  # 13 held, 14 the same again (ip_fragment_duplicate), 15 completes: a query, unanswered
    return t


CAPTURES = {
    "answers.pcap": answers_capture,
    "retransmit.pcap": retransmit_capture,
    "tcp.pcap": tcp_capture,
    "fragments.pcap": fragments_capture,
}


def make_all(directory: Path = HERE) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in CAPTURES.items():
        write_pcap(directory / name, DLT_EN10MB, build().frames)
        written.append(directory / name)
    return written


def main(argv: list[str]) -> int:
    for path in make_all(Path(argv[0]) if argv else HERE):
        print(f"{path.stat().st_size:7d}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
