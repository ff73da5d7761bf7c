"""Hit events: a decoded query that matched a rule, as an ECS-nested JSON object (schema: docs/events.md)."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sensor import __version__
from sensor.attribution import Attribution
from sensor.community_id import community_id
from sensor.dnscodes import header_flags, opcode_name, qclass_name, qtype_name
from sensor.records import DnsMessage
from sensor.rules.model import NAME_KINDS, SUFFIX, Rule, RuleSet
from sensor.spoofing import spoofing_fields

if TYPE_CHECKING:  # a hit from the runner (sensor/messages.py) has the same fields as the loop's tuple
    from sensor.messages import DnsRecord

HIT_TOPIC = "dns.hit"
HEURISTIC_RULE = Rule(SUFFIX, "", False, "heuristic", "heuristics", 0)  # placeholder: heuristic hits have no rule
TRANSPORTS = {17: "udp", 6: "tcp"}


def rfc3339(sec: int, usec: int) -> str:
    """Packet time as RFC 3339 UTC with microseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{usec:06d}Z"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the frames came from: a capture file, or (later) a live interface."""

    capture_file: str | None = None
    interface: str | None = None


@dataclass(frozen=True, slots=True)
class Observer:
    """The sensor itself, named in every event so that many sensors can share one stream."""

    hostname: str
    name: str

    @classmethod
    def local(cls, name: str | None = None) -> Observer:
        host = socket.gethostname()
        return cls(hostname=host, name=name or host)


def rule_fields(rule: Rule) -> dict:
    """ECS `rule.*`: the rule as written, its file, and the metadata its file or line gave it."""
    fields = {"name": rule.text, "ruleset": rule.ruleset}
    meta = rule.meta
    for key in ("id", "category", "description", "reference"):
        value = getattr(meta, key)
        if value is not None:
            fields[key] = value
    return fields


def rule_detail(rule: Rule) -> dict:
    """What ECS has no field for: where the rule is, what it covers, the format's own columns."""
    detail = {"line": rule.line, "kind": rule.kind_name, "format": rule.format}
    detail["pattern"] = rule.pattern or "." if rule.kind in NAME_KINDS else rule.pattern
    if rule.meta.source is not None:
        detail["source"] = rule.meta.source
    if rule.meta.extra:
        detail["meta"] = dict(rule.meta.extra)
    return detail


class HitEncoder:
    """Turns hit records into ECS dicts and JSON text; one encoder reused for every event."""

    def __init__(self, ruleset: RuleSet, observer: Observer) -> None:
        self._rules = ruleset
        self._observer = {
            "hostname": observer.hostname,
            "name": observer.name,
            "type": "sensor",
            "vendor": "truesource",
            "product": "truesource",
            "version": __version__,
        }
        self._json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)

    @property
    def ruleset(self) -> RuleSet:
        return self._rules

    @ruleset.setter
    def ruleset(self, ruleset: RuleSet) -> None:
        """After a reload: rule indices in records decoded from now on refer to this set."""
        self._rules = ruleset

    def event(self, msg: DnsMessage | DnsRecord, origin: Origin, attribution: Attribution | None = None,
              rule: Rule | None = None) -> dict:
        """The ECS object of one hit; `attribution` when the query was a resolver's, linked to its clients;
        `rule` when the caller has it (a worker sent it), else it is read from the current rule set."""
        rule = rule or self._rules.rule(msg.rule)
        src = socket.inet_ntop(socket.AF_INET if len(msg.src_ip) == 4 else socket.AF_INET6, msg.src_ip)
        dst = socket.inet_ntop(socket.AF_INET if len(msg.dst_ip) == 4 else socket.AF_INET6, msg.dst_ip)
        transport = TRANSPORTS[msg.transport]
        network: dict[str, Any] = {
            "transport": transport,
            "protocol": "dns",
            "type": "ipv4" if len(msg.src_ip) == 4 else "ipv6",
            "iana_number": str(msg.transport),
            "community_id": community_id(msg.src_ip, msg.dst_ip, msg.transport, msg.src_port, msg.dst_port),
        }
        if msg.vlan_id is not None:
            network["vlan"] = {"id": str(msg.vlan_id)}
        observer: dict[str, Any] = dict(self._observer)
        if origin.interface is not None:
            observer["ingress"] = {"interface": {"name": origin.interface}}
        opcode = msg.opcode
        extra: dict[str, Any] = {
            "dns": {
                "op_code": opcode,
                "question": {"type": msg.qtype, "class": msg.qclass},
                "qdcount": msg.qdcount,
                "flags": msg.flags,
            },
            "rule": rule_detail(rule),
        }
        if msg.client_subnet is not None:
            extra["client_subnet"] = msg.client_subnet
        if origin.capture_file is not None:
            extra["capture"] = {"file": origin.capture_file, "frame": msg.frame}
        if attribution is not None:
            extra["attribution"] = {
                "role": "resolver",
                "match": attribution.match,
                "clients": [
                    {"ip": c.ip, "port": c.port, "time": rfc3339(c.time_us // 1_000_000, c.time_us % 1_000_000),
                     "name": c.name, "transport": TRANSPORTS[c.transport]}
                    for c in attribution.clients
                ],
            }
        # ---- issue 13: source.mac, truesource.tunnel.{path,outer}, truesource.tcp.handshake (sensor/spoofing.py)
        source_extra, spoofing = spoofing_fields(msg)
        extra.update(spoofing)
        return {
            "@timestamp": rfc3339(msg.ts_sec, msg.ts_usec),
            "event": {
                "kind": "alert",
                **({"severity": rule.meta.severity} if rule.meta.severity is not None else {}),
                "category": ["network", "threat"],
                "type": ["indicator", "protocol"],
                "dataset": "truesource.hit",
                "module": "truesource",
            },
            "source": {"ip": src, "port": msg.src_port, **source_extra},
            "destination": {"ip": dst, "port": msg.dst_port},
            "related": {"ip": [src, dst] if src != dst else [src]},
            "network": network,
            "dns": {
                "type": "query",
                "id": msg.dns_id,
                "op_code": opcode_name(opcode),
                "header_flags": header_flags(msg.flags),
                "question": {
                    "name": msg.qname,
                    "type": qtype_name(msg.qtype),
                    "class": qclass_name(msg.qclass),
                },
            },
            "rule": rule_fields(rule),
            "observer": observer,
            "truesource": extra,
        }

    def heuristic_event(self, msg: DnsMessage | DnsRecord, origin: Origin, found) -> dict:
        """A hit by a heuristic detector: the same event, the detector in place of a rule."""
        event = self.event(msg, origin, rule=HEURISTIC_RULE)
        event["rule"] = {"name": f"heuristic:{found.detector}", "ruleset": "heuristics",
                         "category": "dga" if found.detector == "dga" else "dns-tunnel"}
        event["truesource"]["rule"] = {"kind": "heuristic"}
        event["truesource"]["heuristic"] = {"detector": found.detector, "score": round(found.score, 3),
                                            "threshold": found.threshold, "evidence": found.evidence}
        return event

    @property
    def observer(self) -> dict:
        return self._observer

    def encode(self, event: dict) -> str:
        return self._json.encode(event)
