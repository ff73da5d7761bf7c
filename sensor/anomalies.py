"""Anomalies that can hide a query, as events (docs/events.md, "Anomaly events"), and the options that shape
decoding against evasion: --checksums and --mirror-source (docs/decoding.md).

Both loops hand over AnomalyRecord tuples (take_anomalies()); AnomalyLimiter keeps at most one event per client,
kind and RATE_WINDOW of packet time, in a bounded table; AnomalyEncoder makes the ECS object. Nothing here runs
per packet: anomalies are rare, and the loops build a record only when one happens.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

ANOMALY_TOPIC = "dns.anomaly"
ANOMALY_DATASET = "truesource.anomaly"
# Each name with what it means; docs/events.md lists the same.
KINDS = {
    "tcp_overlap_conflict": "overlapping TCP segments carried different bytes (the resolver kept the first)",
    "stream_evicted_mid_message": "a TCP stream holding part of a DNS message was pushed out of a full table",
    "fragment_overlap": "overlapping IP fragments: the datagram was dropped, or a different copy was ignored",
    "tunnel_untrusted": "a tunnel from a sender that is not a configured mirror carried a query that would hit",
    "bad_checksum_query": "a query that would hit had a bad checksum: the resolver drops it",
    "bad_checksum_response": "a response that would be a CNAME hit had a bad checksum: the client drops it",
    "encrypted_dns_bypass": "a client that is not a resolver talked DNS over TLS or to a known DoH resolver",
}
CHECKSUM_MODES = {"off": 0, "verify": 1, "auto": 2}  # as sensor/decode/checksum.py (not imported: the run path
# never loads the reference decoder)
RATE_WINDOW = 60.0  # seconds of packet time: one event per client and kind, then counted as suppressed
MAX_RATE_ENTRIES = 4096  # clients x kinds remembered; the least recently seen goes first


class AnomalyRecord(NamedTuple):
    """What a loop saw: the anomaly's name, the frame, the client side's addresses and the partial name."""

    kind: str
    frame: int
    ts_sec: int
    ts_usec: int
    vlan_id: int | None
    src_ip: bytes
    dst_ip: bytes
    transport: int  # 6, 17, or 0 (an IP fragment without its transport header)
    src_port: int
    dst_port: int
    qname: str | None  # the query's name, or as much of it as arrived; None when none
    outer_src: bytes | None = None  # a tunnel's outer addresses (tunnel_untrusted)
    outer_dst: bytes | None = None


def ip_text(address: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(address) == 4 else socket.AF_INET6, address)


class MirrorSources:
    """The senders whose tunnels are decapsulated: CIDRs, or every sender (`any`, unsafe: any host on the mirrored
    segment can then forge an inner packet and blame any address)."""

    def __init__(self, specs: Iterable[str] = ()) -> None:
        self.any = False
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for spec in specs:
            if spec.strip().lower() == "any":
                self.any = True
            else:
                self.networks.append(ipaddress.ip_network(spec.strip(), strict=False))

    def packed(self) -> list[tuple[int, bytes, int]]:
        """(family 4/6, address bytes, prefix length) for the compiled loop."""
        return [(n.version, n.network_address.packed, n.prefixlen) for n in self.networks]

    def trusts(self, address: bytes) -> bool:
        if self.any:
            return True
        ip = ipaddress.ip_address(address)
        return any(ip.version == n.version and ip in n for n in self.networks)


def mirror_source(text: str) -> str:
    """argparse type of --mirror-source: a CIDR (or address), or `any`."""
    if text.strip().lower() != "any":
        try:
            ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a CIDR, an address or 'any'") from None
    return text


def add_decoding_options(parser: argparse.ArgumentParser) -> None:
    """--checksums and --mirror-source, for every command that decodes traffic (replay, capture)."""
    parser.add_argument("--checksums", choices=("verify", "off", "auto"), default="auto",
                        help="verify IPv4 header, UDP and TCP checksums and ignore frames the resolver would drop; "
                             "auto (default) decides once from the first 1,000 checks: off when more than 1 in 10 "
                             "are bad (checksum offload on the capturing host), else verify (docs/decoding.md)")
    parser.add_argument("--mirror-source", action="append", default=[], type=mirror_source, metavar="CIDR",
                        help="decapsulate GRE, ERSPAN, VXLAN and Geneve only from these senders (repeatable); "
                             "'any' trusts every sender, which lets any host on the segment forge a client "
                             "(unsafe). Tunnels from others are counted, and reported when they would hit")


def decoding_limits(args: argparse.Namespace) -> dict:
    """The loop arguments the decoding options set."""
    return {"checksums": CHECKSUM_MODES[getattr(args, "checksums", "auto")],
            "mirror_sources": tuple(getattr(args, "mirror_source", None) or ())}


class AnomalyLimiter:
    """One event per (client address, kind) per RATE_WINDOW of packet time; a bounded table (counted)."""

    def __init__(self, window: float = RATE_WINDOW, capacity: int = MAX_RATE_ENTRIES) -> None:
        self._window_us = int(window * 1_000_000)
        self._capacity = capacity
        self._last: OrderedDict[tuple[bytes, str], int] = OrderedDict()
        self.suppressed = 0
        self.evicted = 0
        self.emitted = 0

    def allow(self, record: AnomalyRecord) -> bool:
        key = (record.src_ip, record.kind)
        now = record.ts_sec * 1_000_000 + record.ts_usec
        last = self._last.get(key)
        if last is not None and now - last < self._window_us:
            self.suppressed += 1
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        if len(self._last) > self._capacity:
            self._last.popitem(last=False)
            self.evicted += 1
        self.emitted += 1
        return True

    def counters(self) -> dict[str, int]:
        return {"anomaly_events": self.emitted, "anomaly_suppressed": self.suppressed,
                "anomaly_rate_evicted": self.evicted, "anomaly_rate_entries": len(self._last)}


def anomaly_event(record: AnomalyRecord, observer: Any, capture_file: str | None = None) -> Any:
    """The ECS record of one anomaly (sensor/schema.py AnomalyEvent; docs/events.md). `observer`: the
    schema.Observer of the interface it came in on."""
    from sensor import schema
    from sensor.schema import TRANSPORTS, rfc3339

    src, dst = ip_text(record.src_ip), ip_text(record.dst_ip)
    ported = record.transport in (6, 17)
    vlan = schema.Vlan(id=str(record.vlan_id)) if record.vlan_id is not None else None
    network = schema.Network(type="ipv4" if len(record.src_ip) == 4 else "ipv6", protocol="dns",
                             iana_number=str(record.transport), transport=TRANSPORTS.get(record.transport), vlan=vlan)
    anomaly: dict = {"name": record.kind, "description": KINDS.get(record.kind, record.kind)}
    if record.qname is not None:
        anomaly["partial_name"] = record.qname
    related = [src, dst] if src != dst else [src]
    tunnel = None
    if record.outer_src is not None and record.outer_dst is not None:
        outer_src, outer_dst = ip_text(record.outer_src), ip_text(record.outer_dst)
        tunnel = schema.Tunnel(outer=schema.TunnelOuter(source=schema.TunnelAddress(ip=outer_src),
                                                        destination=schema.TunnelAddress(ip=outer_dst)))
        related += [ip for ip in (outer_src, outer_dst) if ip not in related]
    capture = schema.Capture(file=capture_file, frame=record.frame) if capture_file is not None else None
    return schema.AnomalyEvent(
        timestamp=rfc3339(record.ts_sec, record.ts_usec),
        ecs=schema.ECS,
        event=schema.Event(kind="alert", category=["network", "intrusion_detection"], type=["info"],
                           dataset=ANOMALY_DATASET, module="truesource", action=record.kind),
        source=schema.Endpoint(ip=src, port=record.src_port if ported else None),
        destination=schema.Endpoint(ip=dst, port=record.dst_port if ported else None),
        related=schema.Related(ip=related),
        network=network,
        observer=observer,
        truesource=schema.AnomalyTruesource(anomaly=anomaly, tunnel=tunnel, capture=capture),
    )


def take_anomalies(loop) -> list[AnomalyRecord]:
    """The anomalies a loop saw since the last take (both loops have take_anomalies; anything else has none)."""
    take = getattr(loop, "take_anomalies", None)
    return [] if take is None else [AnomalyRecord._make(r) for r in take()]


class AnomalySink:
    """Takes a loop's anomalies after each batch: rate-limited, encoded, and written to every output on
    ANOMALY_TOPIC."""

    def __init__(self, observer_for: Callable[[str | None], Any]) -> None:
        """`observer_for`: the schema.Observer of an interface (HitEncoder.observer_for)."""
        self.observer_for = observer_for
        self.limiter = AnomalyLimiter()

    def encode(self, records: Iterable[Sequence], origin=None) -> list[str]:
        """Anomaly records (a loop's, a worker's as plain tuples, or the flows'), rate-limited and encoded."""
        from sensor import schema

        file = origin.capture_file if origin is not None else None
        interface = origin.interface if origin is not None else None
        out = []
        for r in records:
            record = r if isinstance(r, AnomalyRecord) else AnomalyRecord._make(r)
            if self.limiter.allow(record):
                out.append(schema.encode(anomaly_event(record, self.observer_for(interface), file)))
        return out

    def counters(self) -> dict[str, int]:
        return self.limiter.counters()
