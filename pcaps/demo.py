"""The demo capture for `make run`: an office LAN behind its recursive resolver, seen on a SPAN port.

Clients in 10.1.0.0/24 (and a few on fd00:1::/64) ask the resolver 10.1.0.53 (the domain controller); on a
cache miss the resolver asks an upstream server in 203.0.113.0/24 itself, then answers the client. A handful of
lookups are for names in rules/demo.rules; on the wire the resolver's own upstream query for such a name names
only the resolver, which is why the client's query is the one that matters.
"""

from __future__ import annotations

import random

from dnslib import AAAA, QTYPE, RR, A, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from pcaps.craft import DLT_EN10MB, Timeline, query, tcp_seg, udp_dns

RESOLVER = "10.1.0.53"
RESOLVER6 = "fd00:1::53"
RESOLVER_MAC = "02:00:0a:01:00:35"
GATEWAY_MAC = "02:00:0a:01:00:01"
UPSTREAMS = ("203.0.113.11", "203.0.113.12", "203.0.113.13")
SEED = 2026
LOOKUPS = 110
UPSTREAM_PORT_BASE = 50000  # the resolver's source port for lookup i is this + i

ORDINARY = (
    ("www.example.com", QTYPE.A), ("www.example.com", QTYPE.AAAA), ("mail.example.com", QTYPE.MX),
    ("intranet.corp.example", QTYPE.A), ("fileserver.corp.example", QTYPE.A),
    ("_ldap._tcp.dc._msdcs.corp.example", QTYPE.SRV), ("wpad.corp.example", QTYPE.A),
    ("updates.example.net", QTYPE.A), ("cdn.example.net", QTYPE.HTTPS), ("api.example.org", QTYPE.A),
    ("www.example.org", QTYPE.A), ("time.example.net", QTYPE.A), ("portal.example.com", QTYPE.AAAA),
    ("static.goodcdn.test", QTYPE.A), ("badcdn.test", QTYPE.A),
)

# (lookup index, client, client port, name, qtype): the lookups rules/demo.rules flags, in capture order.
SUSPICIOUS = (
    (6, "10.1.0.23", 51023, "login-verify.evil.example", QTYPE.A),
    (19, "10.1.0.31", 52031, "payload.badcdn.test", QTYPE.A),
    (33, "fd00:1::21", 53021, "beacon.evil.example", QTYPE.TXT),
    (47, "10.1.0.42", 54042, "invoice-2026.zip", QTYPE.A),
    (58, "10.1.0.37", 55037, "c2.badcdn.test", QTYPE.HTTPS),
    (71, "10.1.0.44", 56044, "payload.badcdn.test", QTYPE.A),  # asked again: answered from the cache
)


def client_mac(address: str) -> str:
    host = int(address.rsplit(".", 1)[-1]) if "." in address else 0x80 + int(address[-2:])
    return f"02:00:0a:01:00:{host:02x}"


def resolver_for(client: str) -> str:
    return RESOLVER6 if ":" in client else RESOLVER


def response(name: str, qtype: int, dns_id: int, rd: bool, rng: random.Random) -> bytes:
    flags = DNSHeader(id=dns_id, qr=1, rd=int(rd), ra=1, aa=int(not rd))  # upstream answers are authoritative
    record = DNSRecord(flags, q=DNSQuestion(DNSLabel(name), qtype))
    if qtype == QTYPE.A:
        record.add_answer(RR(name, QTYPE.A, rdata=A(f"203.0.113.{rng.randrange(100, 200)}"), ttl=300))
    elif qtype == QTYPE.AAAA:
        record.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA(f"2001:db8:100::{rng.randrange(1, 255):x}"), ttl=300))
    return record.pack()


def upstream_query(name: str, qtype: int, dns_id: int) -> bytes:
    """The resolver's iterative query: recursion not desired."""
    return DNSRecord(DNSHeader(id=dns_id, rd=0), q=DNSQuestion(DNSLabel(name), qtype)).pack()


def demo_resolver() -> tuple[int, Timeline]:
    rng = random.Random(SEED)
    t = Timeline(9 * 3600, step_usec=400)  # 09:00 UTC, the office opens
    clients4 = [f"10.1.0.{n}" for n in range(20, 60)]
    clients6 = [f"fd00:1::{n}" for n in range(20, 26)]
    suspicious = {index: rest for index, *rest in SUSPICIOUS}
    cache: set[tuple[str, int]] = set()
    for i in range(LOOKUPS):
        if i in suspicious:
            client, port, name, qtype = suspicious[i]
        else:
            client = rng.choice(clients4 if rng.random() < 0.85 else clients6)
            port = rng.randrange(49152, 65535)
            name, qtype = rng.choice(ORDINARY)
        dns_id = rng.randrange(0, 65536)
        resolver = resolver_for(client)
        mac = client_mac(client)
        asked = udp_dns(client, port, resolver, 53, query(name, qtype, dns_id=dns_id))
        t.add(Ether(src=mac, dst=RESOLVER_MAC) / asked, gap_usec=rng.randrange(50_000, 400_000))
        if (name, qtype) not in cache:
            cache.add((name, qtype))
            upstream = rng.choice(UPSTREAMS)
            up_id = rng.randrange(0, 65536)
            up_port = UPSTREAM_PORT_BASE + i
            t.add(Ether(src=RESOLVER_MAC, dst=GATEWAY_MAC)
                  / udp_dns(RESOLVER, up_port, upstream, 53, upstream_query(name, qtype, up_id)))
            t.add(Ether(src=GATEWAY_MAC, dst=RESOLVER_MAC)
                  / udp_dns(upstream, 53, RESOLVER, up_port, response(name, qtype, up_id, False, rng)),
                  gap_usec=rng.randrange(5_000, 40_000))
        t.add(Ether(src=RESOLVER_MAC, dst=mac)
              / udp_dns(resolver, 53, client, port, response(name, qtype, dns_id, True, rng)))
        if i % 8 == 3:
            background(t, rng, clients4)
    return DLT_EN10MB, t


def background(t: Timeline, rng: random.Random, clients: list[str]) -> None:
    """Some of what else a SPAN port carries: ARP, ping, a web connection's first segments."""
    client = rng.choice(clients)
    mac = client_mac(client)
    kind = rng.randrange(3)
    if kind == 0:
        t.add(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=mac, psrc=client, pdst="10.1.0.1"))
    elif kind == 1:
        t.add(Ether(src=mac, dst=GATEWAY_MAC) / IP(src=client, dst="203.0.113.80", id=0x4242)
              / ICMP(type=8, id=1, seq=rng.randrange(1, 100)) / Raw(bytes(32)))
    else:
        port = rng.randrange(49152, 65535)
        seq = rng.randrange(0, 1 << 31)
        t.add(Ether(src=mac, dst=GATEWAY_MAC) / tcp_seg(client, port, "203.0.113.80", 443, seq, 0, "S"))
        t.add(Ether(src=GATEWAY_MAC, dst=mac) / tcp_seg("203.0.113.80", 443, client, port, 7000, seq + 1, "SA"))
        t.add(Ether(src=mac, dst=GATEWAY_MAC) / tcp_seg(client, port, "203.0.113.80", 443, seq + 1, 7001, "A"))
