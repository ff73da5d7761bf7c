"""DNS that bypasses the resolver: clients other than the resolvers talking DNS over TLS (TCP 853), DNS over QUIC
(UDP 853, RFC 9250) or HTTPS/QUIC (443) to a known public DoH resolver, found in flow records (--flows), reported
as the anomaly `encrypted_dns_bypass` (docs/decoding.md, "Encrypted DNS that bypasses the resolver").

A client that does this hides its queries from the resolver and from the sensor: the event is how the sensor says
so. The DoH list is the public resolvers' documented service addresses (each provider's own page, 2026); a
deployment adds its own with --doh-resolver.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import numpy as np

from sensor.anomalies import AnomalyRecord

DOT_PORT = 853  # RFC 7858 (TCP) and RFC 9250 (DNS over QUIC, UDP)
HTTPS_PORT = 443
KIND = "encrypted_dns_bypass"
# Public DoH resolvers' service addresses, as each provider documents them.
DOH_RESOLVERS = (
    # Cloudflare 1.1.1.1 (developers.cloudflare.com/1.1.1.1/ip-addresses/), with its malware and family variants
    "1.1.1.1", "1.0.0.1", "1.1.1.2", "1.0.0.2", "1.1.1.3", "1.0.0.3",
    "2606:4700:4700::1111", "2606:4700:4700::1001", "2606:4700:4700::1112", "2606:4700:4700::1002",
    "2606:4700:4700::1113", "2606:4700:4700::1003",
    # Google Public DNS (developers.google.com/speed/public-dns/docs/using)
    "8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844",
    # Quad9 (quad9.net/service/service-addresses-and-features)
    "9.9.9.9", "149.112.112.112", "9.9.9.10", "149.112.112.10", "9.9.9.11", "149.112.112.11",
    "2620:fe::fe", "2620:fe::9", "2620:fe::10", "2620:fe::fe:10", "2620:fe::11", "2620:fe::fe:11",
    # OpenDNS (support.opendns.com)
    "208.67.222.222", "208.67.220.220", "2620:119:35::35", "2620:119:53::53",
    # AdGuard DNS (adguard-dns.io/kb/general/dns-providers/)
    "94.140.14.14", "94.140.15.15", "2a10:50c0::ad1:ff", "2a10:50c0::ad2:ff",
    # NextDNS anycast (nextdns.io)
    "45.90.28.0", "45.90.30.0", "2a07:a8c0::", "2a07:a8c1::",
)


class EncryptedDnsCheck:
    """Takes each batch of flow records; returns AnomalyRecords for clients that bypass the resolvers.

    Vectorized over the batch (decision 0191): the port and protocol test, then the address sets, are numpy
    comparisons; only the flows found become Python objects. Addresses compare as ipaddress objects of the
    flow's family did: an IPv4 flow by its 32 bits, an IPv6 flow by all 128 (so ::ffff:1.1.1.1 is not 1.1.1.1).
    """

    def __init__(self, resolvers: Iterable[str] = (), extra_doh: Iterable[str] = ()) -> None:
        self.resolvers = {ipaddress.ip_address(a.strip()) for item in resolvers for a in item.split(",") if a.strip()}
        self.doh = {ipaddress.ip_address(a) for a in (*DOH_RESOLVERS, *extra_doh)}
        self.found = 0
        self._resolvers = _AddressSet(self.resolvers)
        self._doh = _AddressSet(self.doh)

    def check(self, arr: np.ndarray) -> list[AnomalyRecord]:
        if not len(arr):
            return []
        port = arr["dst_port"]
        proto = arr["proto"]
        candidates = np.flatnonzero(((port == DOT_PORT) | (port == HTTPS_PORT)) & ((proto == 6) | (proto == 17)))
        if not len(candidates):
            return []
        rows = arr[candidates]
        version = rows["ip_version"]
        keep = ~self._resolvers.contains(rows["src_hi"], rows["src_lo"], version)
        keep &= (rows["dst_port"] == DOT_PORT) | self._doh.contains(rows["dst_hi"], rows["dst_lo"], version)
        found = []
        for (start, _, src_hi, src_lo, dst_hi, dst_lo, sport, dport, proto_, ip_version, _, _, _, vlan, _,
             _) in rows[keep].tolist():
            found.append(AnomalyRecord(KIND, 0, start // 1_000_000, start % 1_000_000, None if vlan < 0 else vlan,
                                       _packed(src_hi, src_lo, ip_version), _packed(dst_hi, dst_lo, ip_version),
                                       proto_, sport, dport, None))
        self.found += len(found)
        return found


def _packed(hi: int, lo: int, version: int) -> bytes:
    """An address's bytes from its halves: 4 for an IPv4 flow, 16 for IPv6 (as ipaddress's .packed)."""
    if version == 4:
        return (lo & 0xFFFFFFFF).to_bytes(4, "big")
    return ((hi << 64) | lo).to_bytes(16, "big")


class _AddressSet:
    """A few addresses, tested against columns of address halves at once."""

    def __init__(self, addresses: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> None:
        v4 = sorted(int(a) for a in addresses if a.version == 4)
        v6 = sorted(int(a) for a in addresses if a.version == 6)
        self.v4 = np.array(v4, np.uint64)
        self.v6_lo = np.array(sorted(a & 0xFFFFFFFFFFFFFFFF for a in v6), np.uint64)
        self.v6 = {(a >> 64, a & 0xFFFFFFFFFFFFFFFF) for a in v6}

    def contains(self, hi: np.ndarray, lo: np.ndarray, version: np.ndarray) -> np.ndarray:
        v4 = version == 4
        found = v4 & _member(lo & np.uint64(0xFFFFFFFF), self.v4)
        maybe = np.flatnonzero(~v4 & _member(lo, self.v6_lo))  # the low half first, then both halves
        for i in maybe.tolist():
            found[i] = (int(hi[i]), int(lo[i])) in self.v6
        return found


def _member(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Which values are in `members` (sorted): a binary search each (np.isin would sort both, and its np.unique
    imports numpy.ma, 8-16 ms of a run's start-up)."""
    if not len(members):
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(members, values), len(members) - 1)
    return members[at] == values
