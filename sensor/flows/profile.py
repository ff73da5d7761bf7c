"""Network profile from flow records: the DNS, VPN and mail inventory of CMU/SEI-2012-TR-006 sections 5.3-5.5.

Each step of the report is one vectorized pass over flow records (a FLOW_DTYPE array, or any record array
with its address, port, protocol, IP version and packet fields); docs/profile.md maps the steps to the
report's rwfilter/rwstats/rwset commands. Like the report's `--type=out`, the tables count outbound flows
(source inside the internal networks, destination outside): a sensor at the perimeter sees both halves of
every conversation, and the outbound half names the internal asset.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sensor.flows.record import format_addresses, in_networks
from sensor.flows.settings import DEFAULT_THRESHOLD, TOP_DESTINATIONS

# Settings (each maps to a `truesource profile` option; docs/profile.md).

TCP, UDP = 6, 17
DNS_PORT = 53
# Report Table 16: tunnel protocols (GRE for PPTP, IPsec ESP and AH) and the setup ports beside them.
VPN_TUNNEL_PROTOCOLS = (47, 50, 51)
VPN_UDP_PORTS = (500, 1701, 4500)  # IKE, L2TP, IKE NAT traversal
VPN_TCP_PORTS = (1723,)  # PPTP control
# SMTP, POP3, IMAP, SMTPS, submission, IMAPS, POP3S.
MAIL_TCP_PORTS = (25, 110, 143, 465, 587, 993, 995)

ANY_PORT = -1  # a row's port that is not one of the service's (an ephemeral port, or none: GRE, ESP, AH)

# Anomaly kinds (report section 5.4.3), in the order the table lists them.
PORT_53_TO_53 = "port_53_to_53"  # old server-to-server DNS, open to response spoofing (US-CERT 2008)
UNLISTED_SERVER = "unlisted_server"  # an internal host answering DNS that is not one of the DNS servers
DIRECT_QUERY = "direct_query"  # a DNS client other than the local resolvers querying external servers itself
LOW_VOLUME = "low_volume"  # an internal host under the threshold sending DNS queries out
ANOMALY_KINDS = (PORT_53_TO_53, UNLISTED_SERVER, DIRECT_QUERY, LOW_VOLUME)


@dataclass(frozen=True)
class Talker:
    """One address in a ranked table: its packets and their percent of the table's total."""

    ip: str
    packets: int
    share: float
    cumulative: float
    protocols: tuple[int, ...] = ()  # IP protocols of its flows in this role (DNS over UDP and TCP)


@dataclass(frozen=True)
class ServiceRow:
    """One line of an asset table: a protocol and the internal and external ports (ANY_PORT: not fixed)."""

    proto: int
    internal_port: int
    external_port: int
    packets: int
    share: float  # percent of all outbound packets of the table's service


@dataclass(frozen=True)
class Asset:
    ip: str
    packets: int
    share: float
    rows: tuple[ServiceRow, ...]


@dataclass(frozen=True)
class Anomaly:
    kind: str
    ip: str
    packets: int
    share: float  # percent of the population the kind is drawn from (docs/profile.md)
    peers: int  # distinct addresses on the other side
    peer: str | None  # the peer with the most packets


@dataclass(frozen=True)
class Profile:
    flows: int
    internal: tuple[str, ...]
    threshold: float
    top_destinations: tuple[Talker, ...]
    dns_servers: tuple[Talker, ...]
    dns_clients: tuple[Talker, ...]
    recursive: tuple[str, ...]
    iterative: tuple[str, ...]
    anomalies: tuple[Anomaly, ...]
    vpn: tuple[Asset, ...]
    mail: tuple[Asset, ...]

    def as_dict(self) -> dict:
        """The JSON shape: every table a list of objects with `ip` (docs/profile.md, "JSON")."""
        def port(value: int) -> int | None:
            return None if value == ANY_PORT else value

        def asset(a: Asset) -> dict:
            return {"ip": a.ip, "packets": a.packets, "share": _round(a.share), "services": [
                {"proto": r.proto, "internal_port": port(r.internal_port), "external_port": port(r.external_port),
                 "packets": r.packets, "share": _round(r.share)} for r in a.rows]}

        def talker(t: Talker) -> dict:
            out = {"ip": t.ip, "packets": t.packets, "share": _round(t.share), "cumulative": _round(t.cumulative)}
            if t.protocols:
                out["protocols"] = list(t.protocols)
            return out

        servers = {t.ip: t for t in self.dns_servers}
        return {
            "flows": self.flows, "internal": list(self.internal), "threshold": self.threshold,
            "top_destinations": [talker(t) for t in self.top_destinations],
            "dns_servers": [talker(t) for t in self.dns_servers],
            "dns_clients": [talker(t) for t in self.dns_clients],
            "recursive": [{"ip": ip, "packets": servers[ip].packets} for ip in self.recursive],
            "iterative": [{"ip": ip, "packets": servers[ip].packets} for ip in self.iterative],
            "anomalies": [{**asdict(a), "share": _round(a.share)} for a in self.anomalies],
            "vpn": [asset(a) for a in self.vpn],
            "mail": [asset(a) for a in self.mail],
        }


def _round(value: float) -> float:
    return round(value, 4)


def parse_networks(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`--internal` values (each may be comma separated) as networks; ValueError names the bad one."""
    networks = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an address or CIDR network") from None
    return tuple(networks)


# ---------------------------------------------------------------- grouping (numpy: one pass per table)

_KEY = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("version", "u1")])


def _keys(arr: np.ndarray, side: str) -> np.ndarray:
    keys = np.empty(len(arr), dtype=_KEY)
    keys["hi"], keys["lo"], keys["version"] = arr[f"{side}_hi"], arr[f"{side}_lo"], arr["ip_version"]
    return keys


def _text(keys: np.ndarray) -> list[str]:
    return list(format_addresses(keys["hi"], keys["lo"], keys["version"]))


def _columns(keys: np.ndarray) -> list[np.ndarray]:
    """The integer columns of a (nested) structured key array, outermost field first."""
    if keys.dtype.names is None:
        return [keys]
    return [column for name in keys.dtype.names for column in _columns(keys[name])]


def _varying(columns: list[np.ndarray]) -> list[np.ndarray]:
    """The columns that are not one value throughout (IPv4 only: the high half and version are constant);
    sorting by a constant column is a pass over the data that changes nothing."""
    varying = [c for c in columns if len(c) and c.min() != c.max()]
    return varying or columns[:1]


def _lexsort(columns: list[np.ndarray]) -> np.ndarray:
    """Order by the columns, the first the primary key (np.lexsort takes the primary last)."""
    return np.lexsort(_varying(columns)[::-1])


def _sum_by(keys: np.ndarray, packets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (in key order) and the packets of each, exact. A lexsort over the key's integer columns:
    numpy's unique() on a structured array compares records one by one, ten times slower."""
    if len(keys) == 0:
        return keys[:0], np.zeros(0, dtype=np.uint64)
    columns = _varying(_columns(keys))
    order = _lexsort(columns)
    new = np.zeros(len(keys), dtype=bool)
    new[0] = True
    for column in columns:
        ordered = column[order]
        new[1:] |= ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(new)
    totals = np.add.reduceat(packets[order].astype(np.uint64), starts)
    return keys[order[starts]], totals


def _ranked(keys: np.ndarray, packets: np.ndarray) -> list[tuple[str, int]]:
    """(address, packets) by packets descending, then address: rwstats' order with a stable tie-break."""
    uniq, totals = _sum_by(keys, packets)
    order = _lexsort([np.iinfo(np.int64).max - totals.astype(np.int64), uniq["version"], uniq["hi"], uniq["lo"]])
    return list(zip(_text(uniq[order]), totals[order].tolist(), strict=True))


def _at_least(packets: int, total: int, threshold: float) -> bool:
    """rwstats --percentage: a bin is kept when it holds at least `threshold` percent of the total."""
    return total > 0 and packets * 100 >= threshold * total


def _protocols_by_address(arr: np.ndarray, mask: np.ndarray, side: str) -> dict[str, tuple[int, ...]]:
    found: dict[str, list[int]] = {}
    if mask.any():
        sub = arr[mask]
        pairs = np.empty(len(sub), dtype=[("ip", _KEY), ("proto", "u1")])
        pairs["ip"], pairs["proto"] = _keys(sub, side), sub["proto"]
        pairs, _ = _sum_by(pairs, sub["packets"])  # a few rows per address, whatever the flows: then Python
        for ip, proto in zip(_text(pairs["ip"]), pairs["proto"].tolist(), strict=True):
            found.setdefault(ip, []).append(proto)
    return {ip: tuple(protos) for ip, protos in found.items()}


def _peers(arr: np.ndarray, mask: np.ndarray, side: str, other: str) -> dict[str, tuple[int, str]]:
    """For each address on `side`: how many distinct addresses on `other`, and the one with most packets
    (the lower address on a tie)."""
    if not mask.any():
        return {}
    sub = arr[mask]
    pair = np.empty(len(sub), dtype=[("a", _KEY), ("b", _KEY)])
    pair["a"], pair["b"] = _keys(sub, side), _keys(sub, other)
    uniq, totals = _sum_by(pair, sub["packets"])  # sorted by a, then b
    a, b = uniq["a"], uniq["b"]
    # Within each a: most packets first, then the lower b; the first row of each a is its top peer.
    order = _lexsort([a["version"], a["hi"], a["lo"], np.iinfo(np.int64).max - totals.astype(np.int64),
                      b["version"], b["hi"], b["lo"]])
    a, b = a[order], b[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = (a["lo"][1:] != a["lo"][:-1]) | (a["hi"][1:] != a["hi"][:-1]) | (a["version"][1:] != a["version"][:-1])
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(a)))
    return {ip: (count, peer) for ip, count, peer in zip(_text(a[starts]), counts.tolist(), _text(b[starts]),
                                                          strict=True)}


def _talkers(ranked: list[tuple[str, int]], total: int, protocols: dict[str, tuple[int, ...]]) -> list[Talker]:
    out, running = [], 0
    for ip, packets in ranked:
        running += packets
        out.append(Talker(ip, packets, 100.0 * packets / total, 100.0 * running / total, protocols.get(ip, ())))
    return out


# ---------------------------------------------------------------- the report's steps

def profile(arr: np.ndarray, internal: Sequence, threshold: float = DEFAULT_THRESHOLD,
            top: int = TOP_DESTINATIONS) -> Profile:
    """The whole profile of `arr` (FLOW_DTYPE records) for the given internal networks."""
    networks = tuple(ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in internal)
    src_in = in_networks(arr["src_hi"], arr["src_lo"], networks)
    dst_in = in_networks(arr["dst_hi"], arr["dst_lo"], networks)
    outbound = src_in & ~dst_in
    proto, sport, dport, packets = arr["proto"], arr["src_port"], arr["dst_port"], arr["packets"]
    udp, tcp = proto == UDP, proto == TCP

    # Step 1: where the network's DNS queries go (rwfilter --type=out --dport=53 --protocol=17 | rwstats dip).
    queries = outbound & udp & (dport == DNS_PORT)
    query_total = int(packets[queries].sum())
    destinations = _talkers(_ranked(_keys(arr[queries], "dst"), packets[queries]), query_total, {})[:top]

    # Step 2: DNS servers, internal sources of outbound UDP from port 53 over the threshold.
    answers = outbound & udp & (sport == DNS_PORT)
    answer_total = int(packets[answers].sum())
    server_protocols = _protocols_by_address(arr, outbound & (tcp | udp) & (sport == DNS_PORT), "src")
    server_ranked = _ranked(_keys(arr[answers], "src"), packets[answers])
    servers = [t for t in _talkers(server_ranked, answer_total, server_protocols)
               if _at_least(t.packets, answer_total, threshold)]

    # Step 3: DNS clients, internal sources of outbound UDP to port 53 over the threshold.
    client_protocols = _protocols_by_address(arr, outbound & (tcp | udp) & (dport == DNS_PORT), "src")
    client_ranked = _ranked(_keys(arr[queries], "src"), packets[queries])
    all_clients = _talkers(client_ranked, query_total, client_protocols)
    clients = [t for t in all_clients if _at_least(t.packets, query_total, threshold)]

    # Steps 4 and 5: recursive = servers that are also clients (rwsettool --intersect); iterative = the rest.
    server_ips = [t.ip for t in servers]
    client_ips = {t.ip for t in clients}
    recursive = tuple(ip for ip in server_ips if ip in client_ips)
    iterative = tuple(ip for ip in server_ips if ip not in client_ips)

    anomalies = _anomalies(arr, src_in, dst_in, queries, set(server_ips), clients, all_clients, bool(recursive),
                           threshold)

    # Sections 5.5 and 5.3: VPN and mail assets, from their outbound flows.
    internal_port, external_port = _service_ports(arr, {UDP: VPN_UDP_PORTS, TCP: VPN_TCP_PORTS})
    on_port = (internal_port != ANY_PORT) | (external_port != ANY_PORT)
    vpn = _assets(arr, outbound & (on_port | np.isin(proto, VPN_TUNNEL_PROTOCOLS)), internal_port, external_port)
    internal_port, external_port = _service_ports(arr, {TCP: MAIL_TCP_PORTS})
    on_port = (internal_port != ANY_PORT) | (external_port != ANY_PORT)
    mail = _assets(arr, outbound & on_port, internal_port, external_port)

    return Profile(len(arr), tuple(str(n) for n in networks), threshold, tuple(destinations), tuple(servers),
                   tuple(clients), recursive, iterative, tuple(anomalies), tuple(vpn), tuple(mail))


def _service_ports(arr: np.ndarray, ports: dict[int, tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """Each flow's internal and external port as an asset row shows it: the port when it is one of the
    service's ports for the flow's protocol, else ANY_PORT (outbound flows: internal = source)."""
    internal = np.full(len(arr), ANY_PORT, dtype=np.int32)
    external = np.full(len(arr), ANY_PORT, dtype=np.int32)
    for proto, service in ports.items():
        is_proto = arr["proto"] == proto
        src_hit = is_proto & np.isin(arr["src_port"], service)
        dst_hit = is_proto & np.isin(arr["dst_port"], service)
        internal[src_hit] = arr["src_port"][src_hit]
        external[dst_hit] = arr["dst_port"][dst_hit]
    return internal, external


def _assets(arr: np.ndarray, mask: np.ndarray, internal_port: np.ndarray, external_port: np.ndarray) -> list[Asset]:
    """Assets (internal sources of the masked outbound flows) with one row per protocol and port pair."""
    if not mask.any():
        return []
    sub = arr[mask]
    total = int(sub["packets"].sum())
    rows = np.empty(len(sub), dtype=[("ip", _KEY), ("proto", "u1"), ("iport", "<i4"), ("eport", "<i4")])
    rows["ip"], rows["proto"] = _keys(sub, "src"), sub["proto"]
    rows["iport"], rows["eport"] = internal_port[mask], external_port[mask]
    uniq, totals = _sum_by(rows, sub["packets"])
    by_ip: dict[str, list[ServiceRow]] = {}
    for ip, row, packets in zip(_text(uniq["ip"]), uniq.tolist(), totals.tolist(), strict=True):
        _, proto, iport, eport = row
        by_ip.setdefault(ip, []).append(ServiceRow(proto, iport, eport, packets, 100.0 * packets / total))
    assets = []
    for ip, service_rows in by_ip.items():
        # Services first (an internal port), then client use; by protocol and port within each.
        service_rows.sort(key=lambda r: (r.internal_port == ANY_PORT, r.proto, r.internal_port, r.external_port))
        packets = sum(r.packets for r in service_rows)
        assets.append(Asset(ip, packets, 100.0 * packets / total, tuple(service_rows)))
    return assets  # in address order: _sum_by's rows come sorted by address first


def _anomalies(arr: np.ndarray, src_in: np.ndarray, dst_in: np.ndarray, queries: np.ndarray, servers: set[str],
               clients: list[Talker], all_clients: list[Talker], have_resolvers: bool,
               threshold: float) -> list[Anomaly]:
    """The four kinds of report section 5.4.3, in ANOMALY_KINDS order (decision 0046)."""
    proto, sport, dport, packets = arr["proto"], arr["src_port"], arr["dst_port"], arr["packets"]
    dns_transport = (proto == UDP) | (proto == TCP)
    found: list[Anomaly] = []

    # Port 53 to 53, either direction, seen from the internal end (source when both are internal).
    both = dns_transport & (sport == DNS_PORT) & (dport == DNS_PORT) & (src_in | dst_in)
    if both.any():
        sub = arr[both]
        inside_is_src = src_in[both]
        pair = np.empty(len(sub), dtype=[("a", _KEY), ("b", _KEY)])
        src, dst = _keys(sub, "src"), _keys(sub, "dst")
        pair["a"] = np.where(inside_is_src, src, dst)
        pair["b"] = np.where(inside_is_src, dst, src)
        uniq, totals = _sum_by(pair, sub["packets"])
        total = int(sub["packets"].sum())
        for a, b, n in zip(_text(uniq["a"]), _text(uniq["b"]), totals.tolist(), strict=True):
            found.append(Anomaly(PORT_53_TO_53, a, n, 100.0 * n / total, 1, b))

    # Internal hosts answering DNS (from port 53, to anyone; 53-to-53 is counted above) that are not servers.
    answering = dns_transport & src_in & (sport == DNS_PORT) & (dport != DNS_PORT)
    total = int(packets[answering].sum())
    peers = _peers(arr, answering, "src", "dst")
    for ip, n in _ranked(_keys(arr[answering], "src"), packets[answering]):
        if ip not in servers:
            found.append(Anomaly(UNLISTED_SERVER, ip, n, 100.0 * n / total, *peers[ip]))

    # DNS clients that are not the local resolvers go to external servers themselves (only an anomaly when
    # the network has a local resolver), and hosts under the threshold send queries out: the report's long list.
    query_total = int(packets[queries].sum())
    peers = _peers(arr, queries, "src", "dst")
    if have_resolvers:
        for t in clients:
            if t.ip not in servers:
                found.append(Anomaly(DIRECT_QUERY, t.ip, t.packets, t.share, *peers[t.ip]))
    for t in all_clients:
        if not _at_least(t.packets, query_total, threshold):
            found.append(Anomaly(LOW_VOLUME, t.ip, t.packets, t.share, *peers[t.ip]))
    return found
