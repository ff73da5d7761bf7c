"""The lab's DNS tree: a test root, TLDs and zones, good and suspicious, as data the tests can read too.

Answers point into documentation ranges (RFC 5737, RFC 3849), so nothing ever contacts them.
Every zone has a wildcard `*.u.<zone>`: a test that needs the resolver to go upstream again asks a
fresh name under it (see NetLab.unique_name), since the resolver caches what it has already asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from .topology import (
    ROOT_SERVER4,
    ROOT_SERVER6,
    TLD_SERVER4,
    TLD_SERVER6,
    ZONE_SERVER4,
    ZONE_SERVER6,
)

# Which upstream address serves which level of the tree (a named view each, see named.conf).
SERVERS = {
    "root": (ROOT_SERVER4, ROOT_SERVER6),
    "tld": (TLD_SERVER4, TLD_SERVER6),
    "zone": (ZONE_SERVER4, ZONE_SERVER6),
}
ROOT_NS = "a.root-servers.lab."  # under an undelegated TLD, so the root zone holds its address itself

INFRA_TTL = 3600  # delegations and glue: cached for the whole run, as on the real internet
LEAF_TTL = 30  # answers: short, but longer than any test


@dataclass(frozen=True)
class Zone:
    origin: str  # absolute, "." for the root
    server: str  # key of SERVERS
    records: tuple[tuple[str, str, str], ...] = ()  # (owner relative to origin or "@", type, rdata)
    suspicious: bool = False
    signed: bool = True  # with NetLab(dnssec=True); an unsigned zone is an insecure delegation (no DS)


ZONES: tuple[Zone, ...] = (
    Zone(".", "root"),
    Zone("test.", "tld"),
    Zone(
        "zip.", "tld",
        (
            ("invoice", "A", "198.51.100.30"),
            ("setup", "A", "198.51.100.31"),
            ("setup", "AAAA", "2001:db8:30::31"),
            ("*.u", "A", "198.51.100.39"),
        ),
        suspicious=True,
    ),
    Zone(
        "good.test.", "zone",
        (
            ("@", "A", "198.51.100.10"),
            ("www", "A", "198.51.100.10"),
            ("www", "AAAA", "2001:db8:10::10"),
            ("mail", "A", "198.51.100.11"),
            ("@", "MX", "10 mail"),
            ("@", "TXT", '"v=spf1 -all"'),
            # A good name whose answer goes through a suspicious zone: the resolver asks upstream for a
            # name the client never asked.
            ("alias", "CNAME", "cdn.badcdn.test."),
            # Three hops through two other good zones to a suspicious name (tests/test_cname_live.py)
            ("chain", "CNAME", "hop1.corp.test."),
            ("*.u", "A", "198.51.100.19"),
        ),
    ),
    Zone(
        "corp.test.", "zone",
        (
            ("intranet", "A", "198.51.100.20"),
            ("vpn", "A", "198.51.100.21"),
            ("vpn", "AAAA", "2001:db8:20::21"),
            ("hop1", "CNAME", "hop2.eu.corp.test."),
            ("*.u", "A", "198.51.100.29"),
        ),
    ),
    Zone(
        "evil.test.", "zone",
        (
            ("@", "A", "198.51.100.66"),
            ("c2", "A", "198.51.100.66"),
            ("c2", "AAAA", "2001:db8:66::66"),
            ("beacon", "A", "198.51.100.65"),  # the end of chain.good.test's three hops
            # Deep name: with QNAME minimisation the resolver asks c.evil.test and b.c.evil.test first.
            ("a.b.c", "A", "198.51.100.67"),
            ("*.t", "TXT", '"tunnel"'),  # DNS-tunnel style: any label, a TXT answer
            ("*.u", "A", "198.51.100.69"),
        ),
        suspicious=True,
    ),
    # A child zone on the same server as its parent: no referral reaches the resolver, so a validating
    # resolver asks its DS record explicitly (a DS query upstream, as real resolvers send).
    Zone(
        "cdn.evil.test.", "zone",
        (
            ("@", "A", "198.51.100.68"),
            ("files", "A", "198.51.100.68"),
            ("*.u", "A", "198.51.100.68"),
        ),
        suspicious=True,
    ),
    Zone(
        "eu.corp.test.", "zone",
        (
            ("portal", "A", "198.51.100.22"),
            ("hop2", "CNAME", "beacon.evil.test."),
            ("*.u", "A", "198.51.100.22"),
        ),
    ),
    Zone(
        "badcdn.test.", "zone",
        (
            ("@", "A", "198.51.100.70"),
            ("cdn", "A", "198.51.100.71"),
            ("track", "CNAME", "www.good.test."),
            ("*.u", "A", "198.51.100.79"),
        ),
        suspicious=True,
        signed=False,
    ),
    Zone(
        "download.zip.", "zone",
        (
            ("@", "A", "198.51.100.35"),
            ("*.u", "A", "198.51.100.38"),
        ),
        suspicious=True,
    ),
)

# What a client should get for a few names (A records, following CNAMEs): the tests' expectations.
EXPECTED_A = {
    "www.good.test": "198.51.100.10",
    "mail.good.test": "198.51.100.11",
    "intranet.corp.test": "198.51.100.20",
    "c2.evil.test": "198.51.100.66",
    "a.b.c.evil.test": "198.51.100.67",
    "cdn.badcdn.test": "198.51.100.71",
    "files.cdn.evil.test": "198.51.100.68",
    "portal.eu.corp.test": "198.51.100.22",
    "invoice.zip": "198.51.100.30",
    "download.zip": "198.51.100.35",
    "alias.good.test": "198.51.100.71",
    "track.badcdn.test": "198.51.100.10",
    "chain.good.test": "198.51.100.65",
}
GOOD_ZONES = tuple(z.origin.rstrip(".") for z in ZONES if z.server == "zone" and not z.suspicious)
SUSPICIOUS_ZONES = tuple(z.origin.rstrip(".") for z in ZONES if z.suspicious)


def parent(origin: str) -> str:
    return "." if origin.count(".") <= 1 else origin.split(".", 1)[1]


def ns_name(zone: Zone) -> str:
    return ROOT_NS if zone.origin == "." else f"ns1.{zone.origin}"


def _address_lines(owner: str, server: str) -> list[str]:
    v4, v6 = SERVERS[server]
    return [f"{owner} {INFRA_TTL} IN A {v4}", f"{owner} {INFRA_TTL} IN AAAA {v6}"]


def render_zone(zone: Zone) -> str:
    """The zone file: SOA, NS and its address, one delegation with glue per child zone, then the data."""
    ns = ns_name(zone)
    lines = [
        f"$ORIGIN {zone.origin}",
        f"$TTL {INFRA_TTL}",
        f"@ {INFRA_TTL} IN SOA {ns} hostmaster.{zone.origin if zone.origin != '.' else 'lab.'} 1 1800 900 604800 60",
        f"@ {INFRA_TTL} IN NS {ns}",
        *_address_lines(ns, zone.server),
    ]
    for child in ZONES:
        if child.origin != "." and parent(child.origin) == zone.origin:
            lines.append(f"{child.origin} {INFRA_TTL} IN NS {ns_name(child)}")
            lines += _address_lines(ns_name(child), child.server)
    lines += [f"{owner} {LEAF_TTL} IN {rtype} {rdata}" for owner, rtype, rdata in zone.records]
    return "\n".join(lines) + "\n"


def zone_file_name(zone: Zone) -> str:
    return "root.zone" if zone.origin == "." else f"{zone.origin.rstrip('.')}.zone"


def root_hints() -> str:
    """unbound's root hints: only the lab's root, so the real root servers are never tried."""
    v4, v6 = SERVERS["root"]
    return f". 3600000 NS {ROOT_NS}\n{ROOT_NS} 3600000 A {v4}\n{ROOT_NS} 3600000 AAAA {v6}\n"
