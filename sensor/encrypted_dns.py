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
    """Takes each batch of flow records; returns AnomalyRecords for clients that bypass the resolvers."""

    def __init__(self, resolvers: Iterable[str] = (), extra_doh: Iterable[str] = ()) -> None:
        self.resolvers = {ipaddress.ip_address(a.strip()) for item in resolvers for a in item.split(",") if a.strip()}
        self.doh = {ipaddress.ip_address(a) for a in (*DOH_RESOLVERS, *extra_doh)}
        self.found = 0

    def check(self, arr: np.ndarray) -> list[AnomalyRecord]:
        from sensor.flows.record import halves_address

        if not len(arr):
            return []
        candidates = np.flatnonzero((arr["dst_port"] == DOT_PORT) | (arr["dst_port"] == HTTPS_PORT))
        found = []
        for i in candidates:
            row = arr[i]
            if row["proto"] not in (6, 17):
                continue
            src = halves_address(row["src_hi"], row["src_lo"], row["ip_version"])
            dst = halves_address(row["dst_hi"], row["dst_lo"], row["ip_version"])
            if src in self.resolvers:
                continue
            if row["dst_port"] == HTTPS_PORT and dst not in self.doh:
                continue
            usec = int(row["start_us"])
            vlan = int(row["vlan"])
            found.append(AnomalyRecord(KIND, 0, usec // 1_000_000, usec % 1_000_000, None if vlan < 0 else vlan,
                                       src.packed, dst.packed, int(row["proto"]), int(row["src_port"]),
                                       int(row["dst_port"]), None))
        self.found += len(found)
        return found
