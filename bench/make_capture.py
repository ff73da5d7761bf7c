#!/usr/bin/env python3
"""Build the benchmark capture (default 1,000,000 frames) and a rule file (default 100,000 names).

The capture is mostly DNS between thousands of clients (10.0.0.0/16 and 2001:db8:1:2::/64, some behind
VLAN tags) and a few resolvers: UDP query/response pairs, some DNS over TCP (whole connections, some
queries split over two segments, some pipelined two to a segment), names drawn from a few thousand
registered domains with fixed and random-looking subdomains, a small share under rule-listed domains.
Background traffic: HTTPS over TCP, QUIC, ICMP echo, ARP.

Speed: scapy takes about 0.7 ms to build one DNS frame, which is over ten minutes for a million. So scapy
builds each kind of header once (a template), dnslib builds a few tens of thousands of DNS messages once,
and the frames are written by copying those bytes and patching them with struct: MAC and IP address, ports,
IP id, lengths, IPv4 header checksum, TCP sequence numbers and flags, DNS id, the random subdomain label.
Every UDP, TCP, ICMP and ICMPv6 checksum is computed: the sensor verifies them (--checksums, default auto), as
the resolver's kernel does, and a frame with a bad one would make no hit.

Everything is drawn from one seeded random generator, so the same options give the same bytes.

Outputs, in --out-dir (default bench/out/):
  capture.pcap         the capture (pcap, Ethernet, microsecond timestamps)
  rules.txt            the rule file
  expected_hits.tsv    one line per query under a rule name: client ip, client port, qname as sent
  capture.json         what was made: options, counts, hit shares
"""

from __future__ import annotations

import argparse
import bisect
import ipaddress
import json
import os
import random
import socket
import struct
import sys
import time
from dataclasses import dataclass

DEFAULT_PACKETS = 1_000_000
DEFAULT_RULES = 100_000
DEFAULT_SEED = 2024
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")

REGISTERED_DOMAINS = 3_000  # benign registered domains ("a few thousand")
ACTIVE_RULES = 300  # rule names the capture actually queries (the rest of the rule file is never hit)
DNS_TEMPLATES = 24_000  # distinct benign (name shape, qtype) messages built with dnslib
PTR_TEMPLATES = 600
RULE_AREA_SHARE = 0.006  # share of DNS transactions that ask for names in or next to rule-listed domains
IPV4_CLIENTS = 6_000
IPV6_CLIENTS = 1_000
VLANS = ((None, 0.70), (100, 0.20), (200, 0.10))  # outer VLAN id of a client's segment, and its share
RESOLVERS_V4 = ("10.53.0.1", "10.53.0.2")
RESOLVERS_V6 = ("2001:db8:53::1", "2001:db8:53::2")
GATEWAY_V4 = "10.0.0.1"
GATEWAY_MAC = bytes.fromhex("02005e000001")
WEB_SERVERS_V4 = [f"198.51.100.{i}" for i in range(1, 40)] + [f"203.0.113.{i}" for i in range(1, 40)]
WEB_SERVERS_V6 = [f"2001:db8:80::{i:x}" for i in range(1, 30)]
START_TIME = 1_717_200_000  # 2024-06-01 00:00:00 UTC, packet time of the first frame
SNAPLEN = 65_535
MIN_EPHEMERAL, MAX_EPHEMERAL = 1_024, 65_535
DNS_PORT = 53
EXCLUDED_CLIENT_PORTS = frozenset({53, 5353})  # a client port in the DNS port list would make a frame look like a reply
CHUNK = 20_000  # frames written per write() call
MAX_TRANSACTION_FRAMES = 10  # the longest transaction (a pipelined or split DNS-over-TCP connection)

# Transactions and their weights; packets per transaction vary (see Generator).
KINDS = ("udp_dns", "tcp_dns", "web", "quic", "icmp", "arp")
KIND_WEIGHTS = (0.86, 0.008, 0.04, 0.03, 0.04, 0.022)

QTYPES = (("A", 55), ("AAAA", 30), ("HTTPS", 8), ("MX", 2), ("TXT", 2), ("NS", 1), ("SRV", 1), ("CNAME", 1))
BENIGN_TLDS = (("com", 50), ("net", 10), ("org", 8), ("de", 6), ("io", 5), ("co.uk", 5), ("fr", 3),
               ("nl", 3), ("com.au", 2), ("jp", 2), ("ch", 2), ("edu", 2), ("gov", 1), ("info", 1))
RULE_TLDS = (("com", 25), ("net", 10), ("xyz", 10), ("top", 10), ("info", 8), ("ru", 6), ("cn", 5),
             ("online", 5), ("site", 5), ("club", 4), ("biz", 4), ("co.uk", 2), ("io", 3), ("org", 3))
FIXED_SUBDOMAINS = ("www", "api", "cdn", "mail", "static", "img", "m", "app", "edge", "auth", "login",
                    "assets", "ws", "v2.api", "img.cdn", "eu.edge", "mx1", "ns1", "_dmarc", "autodiscover")
RANDOM_SUFFIXES = ("", "", "", "cdn", "t", "metrics", "s3")  # label after a random one: abc123.cdn.example.com
RULE_HOSTS = ("login", "secure", "account", "update", "verify", "auth", "portal", "mail", "cloud")
ONSETS = tuple("b c d f g h j k l m n p r s t v w z br cl dr fl gr pl st tr ch sh th".split())
VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "io", "ou")
CODAS = ("", "", "", "n", "r", "s", "x", "t", "l")
LOWER_ALNUM = b"abcdefghijklmnopqrstuvwxyz0123456789"
DIGITS = b"0123456789"
ALNUM_TABLE = bytes(LOWER_ALNUM[i % 36] for i in range(256))

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


# ---------------------------------------------------------------- names and rules

def word(rnd: random.Random, syllables: int) -> str:
    return "".join(rnd.choice(ONSETS) + rnd.choice(VOWELS) for _ in range(syllables)) + rnd.choice(CODAS)


def weighted(rnd: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rnd.choices([k for k, _ in table], [w for _, w in table])[0]


def make_benign_domains(rnd: random.Random, count: int) -> list[str]:
    """Registered domains such as `stralou.com`, most popular first."""
    domains: dict[str, None] = {}
    while len(domains) < count:
        name = word(rnd, rnd.choice((1, 2, 2, 3)))
        if rnd.random() < 0.15:
            name += "-" + word(rnd, 1)
        domains.setdefault(f"{name}.{weighted(rnd, BENIGN_TLDS)}")
    return list(domains)


def dga_label(rnd: random.Random) -> str:
    return "".join(chr(rnd.choice(b"bcdfghjklmnpqrstvwxz0123456789aeiou")) for _ in range(rnd.randint(10, 18)))


@dataclass(frozen=True, slots=True)
class RuleLine:
    """A line of the rule file; `name` lowercase without trailing dot, `below_only` for `*.name`."""

    text: str
    name: str
    below_only: bool


def make_rules(rnd: random.Random, count: int, benign: list[str]) -> list[RuleLine]:
    """`count` distinct rules: phishing-like words, DGA-like strings, hosts under a domain, `*.` rules.

    No rule is a benign registered domain or a suffix of one, so benign names never hit by accident.
    """
    taken = set(benign)
    seen: set[str] = set()
    rules: list[RuleLine] = []
    while len(rules) < count:
        pick = rnd.random()
        tld = weighted(rnd, RULE_TLDS)
        if pick < 0.55:
            domain = f"{word(rnd, rnd.randint(2, 4))}-{rnd.choice(RULE_HOSTS)}{rnd.randint(0, 99)}.{tld}"
        else:
            domain = f"{dga_label(rnd)}.{tld}"
        if domain in taken:
            continue
        below_only = False
        name = domain
        if pick > 0.93:
            name = f"{rnd.choice(RULE_HOSTS)}.{domain}"
        elif pick > 0.88:
            below_only = True
        if name in seen:
            continue
        seen.add(name)
        text = ("*." if below_only else "") + name
        style = rnd.random()
        if style < 0.01:
            text = text.upper()  # rules are case-insensitive
        elif style < 0.02:
            text += "."  # and may end with a dot
        rules.append(RuleLine(text, name, below_only))
    return rules


def rule_covers(name: str, exact: set[str], below: set[str]) -> bool:
    """The generator's own reading of the rule semantics (issue 2), kept apart from sensor.rules on purpose.

    A plain rule covers its name and every name below it; `*.name` covers only the names below it.
    """
    labels = name.lower().split(".")
    if name.lower() in exact:
        return True
    return any(".".join(labels[i:]) in below for i in range(1, len(labels)))


# ---------------------------------------------------------------- DNS messages (dnslib, built once)

@dataclass(slots=True)
class DnsTemplate:
    """A query and its response; when `rand_len` > 0 the first label is a placeholder patched per packet."""

    qname: str  # with the placeholder label when rand_len > 0
    qtype: str
    query: bytes
    response: bytes
    rand_len: int
    hit: bool
    suffix: str  # the qname after the random label ("" when rand_len is 0)
    rule: str = ""  # for names in the rule area: the rule they were made from


def build_dns(rnd: random.Random, qname: str, qtype: str, nxdomain: bool, zone: str) -> tuple[bytes, bytes]:
    """Query and resolver response for one name, with dnslib (DNS id 0: patched per packet)."""
    from dnslib import AAAA, CNAME, EDNS0, MX, NS, PTR, QTYPE, RR, SOA, SRV, TXT, A, DNSRecord

    query = DNSRecord.question(qname, qtype)
    query.header.id = 0
    if rnd.random() < 0.5:
        query.add_ar(EDNS0(udp_len=1232))
    reply = query.reply()
    reply.ar = []
    reply.header.aa = 0
    reply.header.ra = 1
    times = (2024060101, 7200, 900, 1209600, 300)  # serial, refresh, retry, expire, minimum
    soa = RR(zone, QTYPE.SOA, ttl=900, rdata=SOA(f"ns1.{zone}", f"hostmaster.{zone}", times))
    if nxdomain:
        reply.header.rcode = 3
        reply.add_auth(soa)
    elif qtype == "A":
        owner = qname
        if rnd.random() < 0.25:
            owner = f"{word(rnd, 2)}.edgekey-cdn.net"
            reply.add_answer(RR(qname, QTYPE.CNAME, ttl=300, rdata=CNAME(owner)))
        for _ in range(rnd.choice((1, 1, 2, 4))):
            address = socket.inet_ntoa(struct.pack("!I", rnd.getrandbits(32) | 0x01000000))
            reply.add_answer(RR(owner, QTYPE.A, ttl=rnd.choice((60, 300, 3600)), rdata=A(address)))
    elif qtype == "AAAA" and rnd.random() < 0.7:
        for _ in range(rnd.choice((1, 2))):
            address = socket.inet_ntop(socket.AF_INET6, b"\x20\x01\x0d\xb8" + rnd.randbytes(12))
            reply.add_answer(RR(qname, QTYPE.AAAA, ttl=300, rdata=AAAA(address)))
    elif qtype == "MX":
        reply.add_answer(RR(qname, QTYPE.MX, ttl=3600, rdata=MX(f"mx1.{zone}", 10)))
    elif qtype == "TXT":
        reply.add_answer(RR(qname, QTYPE.TXT, ttl=300, rdata=TXT(f"v=spf1 include:_spf.{zone} ~all")))
    elif qtype == "NS":
        reply.add_answer(RR(qname, QTYPE.NS, ttl=86400, rdata=NS(f"ns1.{zone}")))
    elif qtype == "SRV":
        reply.add_answer(RR(qname, QTYPE.SRV, ttl=300, rdata=SRV(0, 5, 443, f"sip.{zone}")))
    elif qtype == "PTR":
        reply.add_answer(RR(qname, QTYPE.PTR, ttl=3600, rdata=PTR(f"host-{rnd.randint(1, 9999)}.corp.example")))
    else:  # HTTPS, CNAME and AAAA without data: NODATA with the zone's SOA
        reply.add_auth(soa)
    return query.pack(), reply.pack()


def placeholder(length: int) -> str:
    return "q" * (length - 1) + "0"


def make_template(rnd: random.Random, prefix: str, rand_len: int, zone: str, qtype: str,
                  exact: set[str], below: set[str], upper: bool = False) -> DnsTemplate:
    """One (name shape, qtype) pair; `prefix` is the fixed part of the name, after the random label if any."""
    fixed = prefix.upper() if upper else prefix
    qname = f"{placeholder(rand_len)}.{fixed}" if rand_len else fixed
    nxdomain = rnd.random() < (0.15 if rand_len else 0.03)
    query, response = build_dns(rnd, qname, qtype, nxdomain, zone)
    # Random labels always end in a digit and rule host labels never hold one, so the placeholder decides the
    # hit as well as any label patched in later would.
    return DnsTemplate(qname, qtype, query, response, rand_len, rule_covers(qname, exact, below),
                       fixed if rand_len else "")


def benign_templates(rnd: random.Random, domains: list[str], count: int, exact: set[str],
                     below: set[str]) -> tuple[list[DnsTemplate], list[float]]:
    """Benign names, popular domains asked most (Zipf-like weights over the domain rank)."""
    qtype_names = [k for k, _ in QTYPES]
    qtype_weights = [w for _, w in QTYPES]
    domain_weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(domains))]
    cumulative = []
    total = 0.0
    for weight in domain_weights:
        total += weight
        cumulative.append(total)
    templates: list[DnsTemplate] = []
    weights: list[float] = []
    for index in range(count):
        # every domain at least once, then by popularity
        rank = index if index < len(domains) else bisect.bisect(cumulative, rnd.random() * total)
        zone = domains[rank]
        qtype = rnd.choices(qtype_names, qtype_weights)[0]
        shape = rnd.random()
        if shape < 0.15:
            prefix, rand_len = zone, 0
        elif shape < 0.60:
            prefix, rand_len = f"{rnd.choice(FIXED_SUBDOMAINS)}.{zone}", 0
        else:
            extra = rnd.choice(RANDOM_SUFFIXES)
            prefix, rand_len = (f"{extra}.{zone}" if extra else zone), rnd.randint(6, 16)
        template = make_template(rnd, prefix, rand_len, zone, qtype, exact, below, upper=rnd.random() < 0.01)
        templates.append(template)
        weights.append(domain_weights[rank] * (3.0 if rand_len == 0 else 1.0))
    for _ in range(PTR_TEMPLATES):
        octets = ".".join(str(rnd.randint(0, 255)) for _ in range(3))
        templates.append(make_template(rnd, f"{octets}.10.in-addr.arpa", 0, "10.in-addr.arpa", "PTR", exact, below))
        weights.append(0.002)
    return templates, weights


def rule_area_templates(rnd: random.Random, active: list[RuleLine], exact: set[str],
                        below: set[str]) -> list[DnsTemplate]:
    """Names in and next to the active rules: hits, and near misses (apex of `*.`, sibling of a host rule)."""
    templates: list[DnsTemplate] = []
    for rule in active:
        base = rule.name
        zone = base.split(".", 1)[1] if base.split(".")[0] in RULE_HOSTS else base
        shapes: list[tuple[str, int]] = [(base, 8), (base, 12)]  # random labels below the rule name: hit
        if rule.below_only:
            shapes += [(base, 0), (f"www.{base}", 0)]  # the apex is no hit, www is
        elif base != zone:
            shapes += [(base, 0), (f"www.{zone}", 0), (zone, 0)]  # the host itself hits; its siblings do not
        else:
            shapes += [(base, 0), (f"www.{base}", 0), (f"cdn.{base}", 0)]
        for prefix, rand_len in shapes:
            qtype = rnd.choice(("A", "A", "AAAA", "HTTPS", "TXT"))
            template = make_template(rnd, prefix, rand_len, zone, qtype, exact, below, upper=rnd.random() < 0.05)
            template.rule = base
            templates.append(template)
    return templates


# ---------------------------------------------------------------- frame headers (scapy, built once)

@dataclass(slots=True)
class HeaderTemplate:
    """Bytes of Ethernet/[VLAN]/IP/L4 headers and where to patch them."""

    data: bytes
    family: int  # 4 or 6
    proto: int  # 6, 17, 1, 58
    client_is_src: bool
    mac_off: int
    ip_off: int
    addr_off: int  # client address
    l4_off: int
    csum_base: int  # IPv4: ones' complement sum of the header with length, id, checksum and client address zero


def internet_checksum(data: bytes) -> int:
    """RFC 1071, in network order. Summing native 16-bit words is fast and gives the byte-swapped sum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(memoryview(data).cast("H"))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    total = ~total & 0xFFFF
    return ((total & 0xFF) << 8 | total >> 8) if sys.byteorder == "little" else total


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def header_template(family: int, vlan: int | None, proto: int, client_is_src: bool, peer: str) -> HeaderTemplate:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.layers.l2 import Dot1Q, Ether

    client_mac, client_ip = "02:00:00:00:00:00", ("0.0.0.0" if family == 4 else "::")
    src_mac, dst_mac = (client_mac, "02:00:5e:00:00:01") if client_is_src else ("02:00:5e:00:00:01", client_mac)
    src_ip, dst_ip = (client_ip, peer) if client_is_src else (peer, client_ip)
    packet = Ether(src=src_mac, dst=dst_mac)
    if vlan is not None:
        packet = packet / Dot1Q(vlan=vlan)
    if family == 4:
        flags = "DF" if proto == 6 else 0
        packet = packet / IP(src=src_ip, dst=dst_ip, ttl=64 if client_is_src else 57, id=0, flags=flags)
    else:
        packet = packet / IPv6(src=src_ip, dst=dst_ip, hlim=64 if client_is_src else 57)
    if proto == 17:
        packet = packet / UDP(sport=0, dport=0, chksum=0)
    elif proto == 6:
        packet = packet / TCP(sport=0, dport=0, seq=0, ack=0, flags=0, window=64240, chksum=0)
    elif proto == 1:
        packet = packet / ICMP(type=8, id=0, seq=0, chksum=0)
    else:
        packet = packet / ICMPv6EchoRequest(id=0, seq=0, cksum=0)
    data = bytes(packet)
    ip_off = 14 + (4 if vlan is not None else 0)
    l4_off = ip_off + (20 if family == 4 else 40)
    addr_len = 4 if family == 4 else 16
    addr_off = ip_off + (12 if family == 4 else 8) + (0 if client_is_src else addr_len)
    csum_base = 0
    if family == 4:
        header = bytearray(data[ip_off:l4_off])
        header[2:6] = b"\x00\x00\x00\x00"
        header[10:12] = b"\x00\x00"
        header[addr_off - ip_off:addr_off - ip_off + 4] = b"\x00\x00\x00\x00"
        csum_base = ones_sum(bytes(header))
    return HeaderTemplate(data, family, proto, client_is_src, 6 if client_is_src else 0, ip_off, addr_off,
                          l4_off, csum_base)


# ---------------------------------------------------------------- clients

@dataclass(slots=True)
class Client:
    ip: bytes
    text: str
    ip_sum: int  # IPv4: the address's two 16-bit words summed, for the header checksum
    mac: bytes
    vlan: int | None
    family: int
    resolver: int  # index into the family's resolvers


def make_clients(rnd: random.Random) -> list[Client]:
    clients: list[Client] = []
    hosts = rnd.sample(range(2, 65_534), IPV4_CLIENTS)  # 10.0.0.0/16 without network, gateway, broadcast
    vlan_ids = [v for v, _ in VLANS]
    vlan_weights = [w for _, w in VLANS]
    for host in hosts:
        ip = bytes((10, 0, host >> 8, host & 0xFF))
        clients.append(Client(ip, socket.inet_ntoa(ip), (ip[0] << 8 | ip[1]) + (ip[2] << 8 | ip[3]),
                              b"\x02\x00" + ip, rnd.choices(vlan_ids, vlan_weights)[0], 4, rnd.randrange(2)))
    prefix = ipaddress.IPv6Address("2001:db8:1:2::").packed[:8]
    for _ in range(IPV6_CLIENTS):
        ip = prefix + rnd.randbytes(8)
        clients.append(Client(ip, socket.inet_ntop(socket.AF_INET6, ip), 0, b"\x06" + ip[11:],
                              rnd.choices(vlan_ids, vlan_weights)[0], 6, rnd.randrange(2)))
    rnd.shuffle(clients)  # busy and quiet clients in both families (weights go by position)
    return clients


# ---------------------------------------------------------------- the generator

class Generator:
    """Appends whole transactions of frames; each frame is template bytes patched with struct."""

    def __init__(self, rnd: random.Random, clients: list[Client], dns: list[DnsTemplate], dns_weights: list[float],
                 rule_area: list[DnsTemplate], rule_area_share: float = RULE_AREA_SHARE) -> None:
        self.rnd = rnd
        self.rule_area_share = rule_area_share
        self.clients = clients
        # busy clients ask much more than quiet ones
        self.client_cum = self._cumulative([1.0 / (i + 1) ** 0.6 for i in range(len(clients))])
        self.dns = dns
        self.dns_cum = self._cumulative(dns_weights)
        self.rule_area = rule_area
        self.frames: list[bytes] = []
        self.expected_hits: list[tuple[str, int, str]] = []
        self.counts = {"dns_queries": 0, "dns_responses": 0, "dns_tcp_messages": 0, "dns_ipv6": 0,
                       "dns_vlan": 0, "hit_queries": 0, "near_miss_queries": 0, "background_frames": 0}
        self.hit_rules: set[str] = set()
        self.ip_id = 0
        self.random_text = b""
        self.random_pos = 0
        self.payload_pool = rnd.randbytes(1 << 16)
        self.templates: dict[tuple, HeaderTemplate] = {}
        for family, peers in ((4, RESOLVERS_V4), (6, RESOLVERS_V6)):
            for vlan, _ in VLANS:
                for proto in (17, 6):
                    for index, peer in enumerate(peers):
                        for to_server in (True, False):
                            key = ("dns", family, vlan, proto, index, to_server)
                            self.templates[key] = header_template(family, vlan, proto, to_server, peer)
                web = WEB_SERVERS_V4 if family == 4 else WEB_SERVERS_V6
                for proto in (6, 17):
                    for index, peer in enumerate(web):
                        for to_server in (True, False):
                            key = ("web", family, vlan, proto, index, to_server)
                            self.templates[key] = header_template(family, vlan, proto, to_server, peer)
                icmp_proto = 1 if family == 4 else 58
                gateway = GATEWAY_V4 if family == 4 else "2001:db8:1:2::1"
                for to_server in (True, False):
                    key = ("icmp", family, vlan, icmp_proto, 0, to_server)
                    self.templates[key] = header_template(family, vlan, icmp_proto, to_server, gateway)
        self.arp_cache: dict[int, tuple[bytes, bytes]] = {}

    @staticmethod
    def _cumulative(weights: list[float]) -> list[float]:
        out, total = [], 0.0
        for weight in weights:
            total += weight
            out.append(total)
        return out

    def pick(self, cumulative: list[float]) -> int:
        return bisect.bisect(cumulative, self.rnd.random() * cumulative[-1])

    def random_label(self, length: int) -> bytes:
        """Lowercase letters and digits, ending in a digit (see make_template)."""
        if self.random_pos + length > len(self.random_text):
            self.random_text = self.rnd.randbytes(1 << 20).translate(ALNUM_TABLE)
            self.random_pos = 0
        label = self.random_text[self.random_pos:self.random_pos + length - 1]
        self.random_pos += length
        return label + DIGITS[self.random_pos % 10:self.random_pos % 10 + 1]

    def ephemeral_port(self) -> int:
        port = self.rnd.randint(MIN_EPHEMERAL, MAX_EPHEMERAL)
        return port + 1 if port in EXCLUDED_CLIENT_PORTS else port

    # -- frames

    def frame(self, tpl: HeaderTemplate, client: Client, payload: bytes, sport: int, dport: int,
              seq: int = 0, ack: int = 0, flags: int = 0) -> None:
        buf = bytearray(tpl.data)
        buf[tpl.mac_off:tpl.mac_off + 6] = client.mac
        buf[tpl.addr_off:tpl.addr_off + len(client.ip)] = client.ip
        ip, l4 = tpl.ip_off, tpl.l4_off
        if tpl.family == 4:
            total = len(buf) - ip + len(payload)
            self.ip_id = (self.ip_id + 1) & 0xFFFF
            checksum = tpl.csum_base + total + self.ip_id + client.ip_sum
            checksum = (checksum & 0xFFFF) + (checksum >> 16)
            checksum = (checksum & 0xFFFF) + (checksum >> 16)
            struct.pack_into("!HH", buf, ip + 2, total, self.ip_id)
            struct.pack_into("!H", buf, ip + 10, ~checksum & 0xFFFF)
        else:
            struct.pack_into("!H", buf, ip + 4, len(buf) - ip - 40 + len(payload))
        if tpl.proto == 17:
            struct.pack_into("!HHH", buf, l4, sport, dport, 8 + len(payload))
        elif tpl.proto == 6:
            struct.pack_into("!HHII", buf, l4, sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF)
            buf[l4 + 13] = flags
        else:  # ICMP echo: sport is the identifier, dport the sequence number, seq the type
            buf[l4] = seq
            struct.pack_into("!HH", buf, l4 + 4, sport, dport)
        buf += payload
        pseudo = b""  # ICMP has none; UDP, TCP and ICMPv6 cover a pseudo-header
        if tpl.family == 6 and tpl.proto != 1:
            pseudo = bytes(buf[ip + 8:ip + 40]) + struct.pack("!IxxxB", len(buf) - l4, tpl.proto)
        elif tpl.family == 4 and tpl.proto in (6, 17):
            pseudo = bytes(buf[ip + 12:ip + 20]) + struct.pack("!xBH", tpl.proto, len(buf) - l4)
        value = internet_checksum(pseudo + bytes(buf[l4:]))
        struct.pack_into("!H", buf, l4 + {17: 6, 6: 16}.get(tpl.proto, 2), value or (0xFFFF if tpl.proto != 6 else 0))
        self.frames.append(bytes(buf))

    def dns_message(self, template: DnsTemplate, response: bool, dns_id: int, label: bytes) -> bytes:
        message = bytearray(template.response if response else template.query)
        struct.pack_into("!H", message, 0, dns_id)
        if template.rand_len:
            message[13:13 + template.rand_len] = label
        return bytes(message)

    def choose_dns(self) -> tuple[DnsTemplate, bytes, str]:
        """A template, its random label and the qname as sent."""
        if self.rnd.random() < self.rule_area_share:
            template = self.rule_area[self.rnd.randrange(len(self.rule_area))]
        else:
            template = self.dns[self.pick(self.dns_cum)]
        if template.rand_len:
            label = self.random_label(template.rand_len)
            return template, label, f"{label.decode()}.{template.suffix}"
        return template, b"", template.qname

    def note_query(self, client: Client, port: int, template: DnsTemplate, qname: str) -> None:
        self.counts["dns_queries"] += 1
        self.counts["dns_ipv6"] += client.family == 6
        self.counts["dns_vlan"] += client.vlan is not None
        if template.hit:
            self.counts["hit_queries"] += 1
            self.expected_hits.append((client.text, port, qname))
            self.hit_rules.add(template.rule)
        elif template.rule:
            self.counts["near_miss_queries"] += 1

    # -- transactions

    def udp_dns(self, client: Client) -> None:
        template, label, qname = self.choose_dns()
        port = self.ephemeral_port()
        dns_id = self.rnd.getrandbits(16)
        up = self.templates[("dns", client.family, client.vlan, 17, client.resolver, True)]
        down = self.templates[("dns", client.family, client.vlan, 17, client.resolver, False)]
        query = self.dns_message(template, False, dns_id, label)
        tries = 2 if self.rnd.random() < 0.01 else 1  # a retransmitted query: two hits when it is under a rule
        for _ in range(tries):
            self.frame(up, client, query, port, DNS_PORT)
            self.note_query(client, port, template, qname)
        if self.rnd.random() < 0.98:
            self.frame(down, client, self.dns_message(template, True, dns_id, label), DNS_PORT, port)
            self.counts["dns_responses"] += 1

    def tcp_dns(self, client: Client) -> None:
        """One connection: handshake, one query (split over two segments, or pipelined with a second), close."""
        port = self.ephemeral_port()
        up = self.templates[("dns", client.family, client.vlan, 6, client.resolver, True)]
        down = self.templates[("dns", client.family, client.vlan, 6, client.resolver, False)]
        cseq, sseq = self.rnd.getrandbits(32), self.rnd.getrandbits(32)
        self.frame(up, client, b"", port, DNS_PORT, cseq, 0, TCP_SYN)
        self.frame(down, client, b"", DNS_PORT, port, sseq, cseq + 1, TCP_SYN | TCP_ACK)
        cseq += 1
        sseq += 1
        self.frame(up, client, b"", port, DNS_PORT, cseq, sseq, TCP_ACK)
        asked = [self.choose_dns() for _ in range(2 if self.rnd.random() < 0.3 else 1)]
        ids = [self.rnd.getrandbits(16) for _ in asked]
        queries = [self.dns_message(t, False, i, label) for (t, label, _), i in zip(asked, ids, strict=True)]
        stream = b"".join(struct.pack("!H", len(q)) + q for q in queries)
        if len(asked) == 1 and self.rnd.random() < 0.3:
            self.frame(up, client, stream[:2], port, DNS_PORT, cseq, sseq, TCP_PSH | TCP_ACK)
            self.frame(up, client, stream[2:], port, DNS_PORT, cseq + 2, sseq, TCP_PSH | TCP_ACK)
        else:
            self.frame(up, client, stream, port, DNS_PORT, cseq, sseq, TCP_PSH | TCP_ACK)
        for template, _, qname in asked:
            self.note_query(client, port, template, qname)
            self.counts["dns_tcp_messages"] += 1
        cseq += len(stream)
        for (template, label, _), dns_id in zip(asked, ids, strict=True):
            response = self.dns_message(template, True, dns_id, label)
            segment = struct.pack("!H", len(response)) + response
            self.frame(down, client, segment, DNS_PORT, port, sseq, cseq, TCP_PSH | TCP_ACK)
            self.counts["dns_responses"] += 1
            self.counts["dns_tcp_messages"] += 1
            sseq += len(segment)
        self.frame(up, client, b"", port, DNS_PORT, cseq, sseq, TCP_FIN | TCP_ACK)
        self.frame(down, client, b"", DNS_PORT, port, sseq, cseq + 1, TCP_FIN | TCP_ACK)
        self.frame(up, client, b"", port, DNS_PORT, cseq + 1, sseq + 1, TCP_ACK)

    def payload(self, length: int) -> bytes:
        start = self.rnd.randrange(len(self.payload_pool) - length)
        return self.payload_pool[start:start + length]

    def web(self, client: Client) -> None:
        """A slice of an HTTPS connection: handshake, request, two full segments of response, ack."""
        servers = WEB_SERVERS_V4 if client.family == 4 else WEB_SERVERS_V6
        index = self.rnd.randrange(len(servers))
        up = self.templates[("web", client.family, client.vlan, 6, index, True)]
        down = self.templates[("web", client.family, client.vlan, 6, index, False)]
        port = self.ephemeral_port()
        cseq, sseq = self.rnd.getrandbits(32), self.rnd.getrandbits(32)
        self.frame(up, client, b"", port, 443, cseq, 0, TCP_SYN)
        self.frame(down, client, b"", 443, port, sseq, cseq + 1, TCP_SYN | TCP_ACK)
        cseq, sseq = cseq + 1, sseq + 1
        request = self.payload(self.rnd.randint(200, 600))
        self.frame(up, client, request, port, 443, cseq, sseq, TCP_PSH | TCP_ACK)
        cseq += len(request)
        for _ in range(2):
            data = self.payload(1448 if client.family == 4 else 1428)
            self.frame(down, client, data, 443, port, sseq, cseq, TCP_ACK)
            sseq += len(data)
        self.frame(up, client, b"", port, 443, cseq, sseq, TCP_ACK)
        self.counts["background_frames"] += 6

    def quic(self, client: Client) -> None:
        servers = WEB_SERVERS_V4 if client.family == 4 else WEB_SERVERS_V6
        index = self.rnd.randrange(len(servers))
        port = self.ephemeral_port()
        self.frame(self.templates[("web", client.family, client.vlan, 17, index, True)], client,
                   self.payload(self.rnd.randint(40, 1250)), port, 443)
        self.frame(self.templates[("web", client.family, client.vlan, 17, index, False)], client,
                   self.payload(self.rnd.randint(40, 1250)), 443, port)
        self.counts["background_frames"] += 2

    def icmp(self, client: Client) -> None:
        proto = 1 if client.family == 4 else 58
        echo, reply = (8, 0) if proto == 1 else (128, 129)
        ident, number = self.rnd.getrandbits(16), self.rnd.randint(1, 50)
        data = self.payload(56)
        for to_server, kind in ((True, echo), (False, reply)):
            template = self.templates[("icmp", client.family, client.vlan, proto, 0, to_server)]
            self.frame(template, client, data, ident, number, kind)
        self.counts["background_frames"] += 2

    def arp(self, client: Client) -> None:
        """Who-has the gateway, and its answer (IPv6 clients send ICMP instead)."""
        if client.family == 6:
            self.icmp(client)
            return
        key = id(client)
        if key not in self.arp_cache:
            from scapy.layers.l2 import ARP, Dot1Q, Ether

            gateway_mac = ":".join(f"{b:02x}" for b in GATEWAY_MAC)
            client_mac = ":".join(f"{b:02x}" for b in client.mac)
            ask = Ether(src=client_mac, dst="ff:ff:ff:ff:ff:ff")
            answer = Ether(src=gateway_mac, dst=client_mac)
            if client.vlan is not None:
                ask, answer = ask / Dot1Q(vlan=client.vlan), answer / Dot1Q(vlan=client.vlan)
            ask = ask / ARP(op=1, hwsrc=client_mac, psrc=client.text, pdst=GATEWAY_V4)
            answer = answer / ARP(op=2, hwsrc=gateway_mac, psrc=GATEWAY_V4, hwdst=client_mac, pdst=client.text)
            self.arp_cache[key] = (bytes(ask).ljust(60, b"\x00"), bytes(answer).ljust(60, b"\x00"))
        self.frames.extend(self.arp_cache[key])
        self.counts["background_frames"] += 2

    def run(self, packets: int, sink) -> None:
        """Generate transactions until `packets` frames are made, handing frames to `sink` in chunks.

        The last few frames are gratuitous ARPs, so the count is exact without cutting a transaction.
        """
        kinds = [getattr(self, k) for k in KINDS]
        made = 0
        while made < packets:
            for action in self.rnd.choices(kinds, KIND_WEIGHTS, k=1024):
                if packets - made - len(self.frames) <= MAX_TRANSACTION_FRAMES:
                    filler = packets - made - len(self.frames)
                    self.frames.extend([GRATUITOUS_ARP] * filler)
                    self.counts["background_frames"] += filler
                    break
                action(self.clients[self.pick(self.client_cum)])
            if len(self.frames) >= CHUNK or made + len(self.frames) >= packets:
                made += len(self.frames)
                sink(self.frames)
                self.frames = []


GRATUITOUS_ARP = (b"\xff" * 6 + GATEWAY_MAC + b"\x08\x06" + bytes.fromhex("0001080006040001") + GATEWAY_MAC
                  + socket.inet_aton(GATEWAY_V4) + b"\x00" * 6 + socket.inet_aton(GATEWAY_V4)).ljust(60, b"\x00")


class PcapWriter:
    """Classic pcap, little-endian, microsecond timestamps; times advance by small seeded gaps."""

    def __init__(self, path: str, rnd: random.Random) -> None:
        self.handle = open(path, "wb")
        self.handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 1))
        self.gaps = [int(rnd.expovariate(1 / 40)) + 1 for _ in range(4093)]  # about 25,000 frames a second
        self.gap_index = 0
        self.now = START_TIME * 1_000_000
        self.frames = 0
        self.bytes = 0

    def write(self, frames: list[bytes]) -> None:
        parts = []
        gaps, index, now = self.gaps, self.gap_index, self.now
        record = struct.Struct("<IIII").pack
        for frame in frames:
            now += gaps[index]
            index = (index + 1) % len(gaps)
            length = len(frame)
            parts.append(record(now // 1_000_000, now % 1_000_000, length, length))
            parts.append(frame)
            self.bytes += length
        self.gap_index, self.now = index, now
        self.frames += len(frames)
        self.handle.write(b"".join(parts))

    def close(self) -> None:
        self.handle.close()


def build(out_dir: str, packets: int, rule_count: int, seed: int, rule_area_share: float = RULE_AREA_SHARE) -> dict:
    """Make the capture, rule file, expected hits and description; return the description."""
    started = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    rnd = random.Random(seed)
    benign = make_benign_domains(rnd, REGISTERED_DOMAINS)
    rules = make_rules(rnd, rule_count, benign)
    exact = {r.name for r in rules if not r.below_only}
    below = {r.name for r in rules}
    active = rnd.sample(rules, min(ACTIVE_RULES, len(rules)))
    dns, weights = benign_templates(rnd, benign, DNS_TEMPLATES, exact, below)
    accidental = sum(t.hit for t in dns)
    if accidental:
        raise SystemExit(f"make_capture: {accidental} benign names fall under rules; the name generators overlap")
    rule_area = rule_area_templates(rnd, active, exact, below)
    clients = make_clients(rnd)
    generator = Generator(rnd, clients, dns, weights, rule_area, rule_area_share)
    prepared = time.perf_counter() - started

    paths = {name: os.path.join(out_dir, name) for name in
             ("capture.pcap", "rules.txt", "expected_hits.tsv", "capture.json")}
    with open(paths["rules.txt"], "w", encoding="utf-8") as handle:
        handle.write(f"# {len(rules)} benchmark rules made by bench/make_capture.py --seed {seed}\n")
        handle.writelines(r.text + "\n" for r in rules)
    writer = PcapWriter(paths["capture.pcap"], rnd)
    generator.run(packets, writer.write)
    writer.close()
    with open(paths["expected_hits.tsv"], "w", encoding="utf-8") as handle:
        handle.writelines(f"{ip}\t{port}\t{qname}\n" for ip, port, qname in generator.expected_hits)

    counts = generator.counts
    hit_rules = {r.name for r in active} & generator.hit_rules
    description = {
        "seed": seed,
        "rule_area_share": rule_area_share,
        "packets": writer.frames,
        "bytes": writer.bytes,
        "file_bytes": os.path.getsize(paths["capture.pcap"]),
        "rules": len(rules),
        "rules_hit": len(hit_rules),
        "clients": {"ipv4": IPV4_CLIENTS, "ipv6": IPV6_CLIENTS},
        "dns_templates": len(dns) + len(rule_area),
        "counts": counts,
        "expected_hits": len(generator.expected_hits),
        "hit_share_of_queries": counts["hit_queries"] / max(counts["dns_queries"], 1),
        "dns_share_of_frames": 1 - counts["background_frames"] / max(writer.frames, 1),
        "seconds": {"prepare": round(prepared, 2), "total": round(time.perf_counter() - started, 2)},
        "paths": paths,
    }
    with open(paths["capture.json"], "w", encoding="utf-8") as handle:
        json.dump(description, handle, indent=2)
        handle.write("\n")
    return description


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=DEFAULT_PACKETS, help="frames in the capture")
    parser.add_argument("--rules", type=int, default=DEFAULT_RULES, help="names in the rule file")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out-dir", default=DEFAULT_OUT)
    parser.add_argument("--rule-area-share", type=float, default=RULE_AREA_SHARE,
                        help="share of DNS transactions asking names in or next to the rules (0.006: about 0.6%% of "
                             "queries hit; 0.05: about 3%%, issue 15's high-hit capture)")
    args = parser.parse_args(argv)
    if args.rules < ACTIVE_RULES:
        parser.error(f"--rules must be at least {ACTIVE_RULES} (the names the capture asks for)")
    d = build(args.out_dir, args.packets, args.rules, args.seed, args.rule_area_share)
    c = d["counts"]
    print(f"capture: {d['paths']['capture.pcap']}: {d['packets']:,} frames, {d['file_bytes'] / 1e6:.1f} MB, "
          f"{d['dns_share_of_frames']:.1%} DNS ({c['dns_queries']:,} queries, {c['dns_responses']:,} responses, "
          f"{c['dns_tcp_messages']:,} over TCP, {c['dns_ipv6']:,} IPv6 queries, {c['dns_vlan']:,} tagged)")
    print(f"rules: {d['paths']['rules.txt']}: {d['rules']:,} names, {d['rules_hit']} of them hit by the capture "
          f"({d['rules_hit'] / d['rules']:.2%})")
    print(f"hits: {c['hit_queries']:,} of {c['dns_queries']:,} queries are under rule names "
          f"({d['hit_share_of_queries']:.2%}; {c['near_miss_queries']:,} near misses) "
          f"-> {d['paths']['expected_hits.tsv']}")
    print(f"took {d['seconds']['total']:.1f} s ({d['seconds']['prepare']:.1f} s preparing templates)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
