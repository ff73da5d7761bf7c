"""CNAME chains (docs/decoding.md, "CNAME hits"; decisions 0160, 0161): `cname-chains.pcap`.

A resolver following a CNAME from a good name to one a rule matches, seen on both of its sides; chains of 1, 3, 5
and 17 hops; a forwarder between the client and the resolver; a good chain that must not hit; a response whose
answer section is cut short after its one CNAME. Responses are built with dnslib (it compresses the owner names
against the question); the cut one is patched by hand, as its comment says.
"""

from __future__ import annotations

import struct

from dnslib import CNAME as CNAME_DATA
from dnslib import QTYPE, RR, A, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from pcaps.craft import CLIENT4, CLIENT4_B, DLT_EN10MB, RESOLVER4, Timeline, ether, query, udp_dns

AUTH4 = "203.0.113.53"  # an authoritative server the resolver asks (iterative: RD clear)
FORWARDER4 = "198.51.100.54"  # a forwarder: asks the resolver with RD set, as a client would


def chain_response(name: str, hops: list[str], address: str | None = "192.0.2.99", dns_id: int = 0x1000,
                   rd: bool = True) -> bytes:
    """A response to `name` whose answer section is the CNAME chain name -> hops[0] -> ... -> hops[-1], then an A
    record for the last target (when `address`)."""
    record = DNSRecord(DNSHeader(id=dns_id, qr=1, rd=int(rd), ra=1), q=DNSQuestion(DNSLabel(name), QTYPE.A))
    owner = name
    for target in hops:
        record.add_answer(RR(DNSLabel(owner), QTYPE.CNAME, rdata=CNAME_DATA(DNSLabel(target)), ttl=300))
        owner = target
    if address is not None:
        record.add_answer(RR(DNSLabel(owner), QTYPE.A, rdata=A(address), ttl=60))
    return record.pack()


def iterative_query(name: str, dns_id: int) -> bytes:
    """A resolver's upstream query: RD clear."""
    return DNSRecord(DNSHeader(id=dns_id, rd=0), q=DNSQuestion(DNSLabel(name), QTYPE.A)).pack()


def cname_chains() -> tuple[int, Timeline]:
    t = Timeline(6400)
    c, r = CLIENT4, RESOLVER4

    def frame(src: str, sport: int, dst: str, dport: int, payload: bytes) -> int:
        return t.add(ether() / udp_dns(src, sport, dst, dport, payload))

    # One hop, the client's side only (the resolver's upstream is not mirrored)
    frame(c, 45001, r, 53, query("one.good.test", dns_id=0x4501))  # 1 no hit
    frame(r, 53, c, 45001, chain_response("one.good.test", ["x.evil.example"], dns_id=0x4501))  # 2 hit, hop 1
    # Three hops, both sides of the resolver: its upstream response (hit, remembered), its upstream query for
    # the target (hit), then its answer to the client (hit: names the client, linked to both)
    frame(c, 45002, r, 53, query("alias.good.test", dns_id=0x4502))  # 3 no hit
    frame(r, 33001, AUTH4, 53, iterative_query("alias.good.test", 0x7001))  # 4 no hit
    three = ["h1.cdn.test", "h2.cdn.test", "c2.evil.example"]
    frame(AUTH4, 53, r, 33001, chain_response("alias.good.test", three, None, 0x7001, rd=False))  # 5 hit, hop 3
    frame(r, 33002, AUTH4, 53, iterative_query("c2.evil.example", 0x7002))  # 6 hit (query)
    frame(AUTH4, 53, r, 33002, chain_response("c2.evil.example", [], "192.0.2.98", 0x7002, rd=False))  # 7 no hit
    frame(r, 53, c, 45002, chain_response("alias.good.test", three, "192.0.2.98", 0x4502))  # 8 hit, hop 3
    # Five hops to a wildcard rule's name, to another client
    five = ["a.mid.test", "b.mid.test", "c.mid.test", "d.mid.test", "e.badcdn.test"]
    frame(CLIENT4_B, 45003, r, 53, query("deep.good.test", dns_id=0x4503))  # 9 no hit
    frame(r, 53, CLIENT4_B, 45003, chain_response("deep.good.test", five, dns_id=0x4503))  # 10 hit, hop 5
    # A forwarder: the client asks it, it asks the resolver (RD set); both answers hit, the forwarder's names the
    # client and links to the resolver's answer to the forwarder
    frame(c, 45004, FORWARDER4, 53, query("fwd.good.test", dns_id=0x4504))  # 11 no hit
    frame(FORWARDER4, 34001, r, 53, query("fwd.good.test", dns_id=0x7101))  # 12 no hit
    frame(r, 53, FORWARDER4, 34001, chain_response("fwd.good.test", ["t.evil.example"], dns_id=0x7101))  # 13 hit
    frame(FORWARDER4, 53, c, 45004, chain_response("fwd.good.test", ["t.evil.example"], dns_id=0x4504))  # 14 hit
    # A good chain: no name of it matches a rule
    frame(c, 45005, r, 53, query("www.good.test", dns_id=0x4505))  # 15 no hit
    frame(r, 53, c, 45005, chain_response("www.good.test", ["cdn.good.test", "edge.cdn.test"], dns_id=0x4505))  # 16
    # Seventeen hops: only the first 16 CNAMEs are read, and the 17th target is the one a rule matches: no hit
    long = [f"l{k}.good.test" for k in range(16)] + ["z.evil.example"]
    frame(r, 53, c, 45006, chain_response("long.good.test", long, dns_id=0x4506))  # 17 no hit
    # Cut short by hand: ANCOUNT says 3, the section holds one CNAME (to a rule's name) and then ends:
    # the target read counts, the walk stops (dns_bad_answers)
    whole = bytearray(chain_response("cut.good.test", ["y.evil.example"], None, 0x4507))
    struct.pack_into("!H", whole, 6, 3)
    frame(r, 53, c, 45007, bytes(whole))  # 18 hit, hop 1; dns_bad_answers
    return DLT_EN10MB, t
