"""Query streams of generated clients for the tunnelling check: tunnels shaped like iodine and dnscat2, and
ordinary clients (a browser, a video watcher, a mail server, an office PC). Seeded, deterministic.

Each stream is a list of (time in seconds, client address bytes, query name, query type). The tunnels follow
the tools' documented wire formats in shape: iodine sends upstream data base32-encoded in labels of up to 63
bytes with a short command/sequence prefix and asks NULL records; dnscat2 hex-encodes its packet (id, type,
session, seq, ack, data) in the name and asks TXT, CNAME or MX at random.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
NULL, TXT, CNAME, MX, A, AAAA, SRV, HTTPS = 10, 16, 5, 15, 1, 28, 33, 65
Query = tuple[float, bytes, str, int]


def _ip(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


def _split_labels(data: str, size: int = 57) -> str:
    return ".".join(data[i : i + size] for i in range(0, len(data), size))


def iodine_like(client: str, domain: str, start: float, seconds: float, rate: float, seed: int) -> list[Query]:
    rng = random.Random(seed)
    out: list[Query] = []
    t, seq = start, 0
    while t < start + seconds:
        seq += 1
        if rng.random() < 0.3:  # a downstream poll: command, user id and sequence only
            name = f"r{seq % 4096:03x}{rng.choice('abcdefgh')}.{domain}"
        else:
            chunk = base64.b32encode(rng.randbytes(rng.randint(40, 140))).decode().rstrip("=").lower()
            name = f"{_split_labels('p' + format(seq % 4096, '03x') + chunk)}.{domain}"
        out.append((t, _ip(client), name, NULL))
        t += rng.expovariate(rate)
    return out


def dnscat2_like(client: str, domain: str, start: float, seconds: float, rate: float, seed: int) -> list[Query]:
    rng = random.Random(seed)
    session = rng.randrange(1 << 16)
    out: list[Query] = []
    t, seq = start, rng.randrange(1 << 16)
    while t < start + seconds:
        data = rng.randbytes(rng.randint(0, 110))
        packet = rng.randbytes(2) + bytes([1]) + session.to_bytes(2, "big") + seq.to_bytes(2, "big") + data
        seq = (seq + len(data)) & 0xFFFF
        out.append((t, _ip(client), f"{_split_labels(packet.hex(), 62)}.{domain}", rng.choice((TXT, CNAME, MX))))
        t += rng.expovariate(rate)
    return out


def peer_dns2tcp() -> list[Query]:
    """The real dns2tcp session in suricata-verify's dns-bug-1158-txt capture (frozen by make_ordinary.py)."""
    out: list[Query] = []
    for line in (HERE / "peer_dns2tcp.tsv").read_text().splitlines()[1:]:
        ts, src, qtype, name = line.split("\t")
        out.append((float(ts), _ip(src), name, int(qtype)))
    return out


def _popular() -> list[str]:
    return [ln.strip() for ln in (HERE / "popular.txt").read_text().splitlines() if ln.strip()[:1] not in ("#", "")]


SUBDOMAINS = ("www", "api", "cdn", "static", "img", "m", "login", "accounts", "assets", "media", "s", "t", "ws")


def browser(client: str, start: float, seconds: float, seed: int) -> list[Query]:
    """Page loads: a site and 5-15 third parties each, A/AAAA/HTTPS, every minute or so of reading."""
    rng = random.Random(seed)
    sites = _popular()
    out: list[Query] = []
    t = start
    while t < start + seconds:
        for site in [rng.choice(sites)] + rng.sample(sites, rng.randint(5, 15)):
            host = f"{rng.choice(SUBDOMAINS)}.{site}" if rng.random() < 0.8 else site
            for qtype in (A, AAAA, HTTPS):
                out.append((t, _ip(client), host, qtype))
                t += rng.uniform(0.001, 0.05)
        t += rng.uniform(5, 90)
    return out


def video_watcher(client: str, start: float, seconds: float, seed: int) -> list[Query]:
    """Many distinct CDN edge names under one domain: the ordinary look-alike of a tunnel's distinct names."""
    rng = random.Random(seed)
    out: list[Query] = []
    t = start
    while t < start + seconds:
        host = f"rr{rng.randint(1, 8)}---sn-{''.join(rng.choices('abcdefghijklmnopqrstuvwxyz0123456789', k=8))}"
        for qtype in (A, AAAA):
            out.append((t, _ip(client), f"{host}.googlevideo.com", qtype))
        t += rng.uniform(0.5, 3)
    return out


def mail_server(client: str, start: float, seconds: float, seed: int) -> list[Query]:
    """A mail relay: DNSBL lookups of connecting addresses, then MX, SPF/DMARC TXT and DKIM keys of senders."""
    rng = random.Random(seed)
    senders = _popular()
    out: list[Query] = []
    t = start
    while t < start + seconds:
        peer = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        out.append((t, _ip(client), f"{peer}.zen.spamhaus.org", A))
        sender = rng.choice(senders)
        for name, qtype in ((sender, MX), (sender, TXT), (f"_dmarc.{sender}", TXT), (f"s1._domainkey.{sender}", TXT)):
            t += rng.uniform(0.001, 0.02)
            out.append((t, _ip(client), name, qtype))
        t += rng.uniform(0.2, 2)
    return out


def office_pc(client: str, start: float, seconds: float, seed: int) -> list[Query]:
    """A domain-joined PC: directory SRV lookups, intranet hosts, update and telemetry checks."""
    rng = random.Random(seed)
    names = (
        ("_ldap._tcp.dc._msdcs.corp.example.com", SRV),
        ("_kerberos._tcp.corp.example.com", SRV),
        ("wpad.corp.example.com", A),
        ("fileserver.corp.example.com", A),
        ("intranet.corp.example.com", A),
        ("settings-win.data.microsoft.com", A),
        ("ctldl.windowsupdate.com", A),
        ("login.microsoftonline.com", A),
        ("outlook.office365.com", A),
        ("teams.microsoft.com", A),
        ("www.msftconnecttest.com", A),
    )
    out: list[Query] = []
    t = start
    while t < start + seconds:
        name, qtype = rng.choice(names)
        out.append((t, _ip(client), name, qtype))
        t += rng.uniform(0.5, 20)
    return out
