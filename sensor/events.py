"""Hit events: a decoded query that matched a rule, as the typed ECS record of sensor/schema.py.

Everything a hit shares with others is built once: the observer, a rule's `rule.*`, `threat.*` and
`truesource.rule` parts (per rule index of the set in use), the timestamp's second, the VLAN object. Per hit
remains what differs: addresses, ports, the Community ID, the name's domain parts (cached by the name's tail).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from sensor import __version__, schema
from sensor.attribution import Attribution
from sensor.cnamehits import apply_cname
from sensor.community_id import community_id
from sensor.dnscodes import header_flags, opcode_name, qclass_name, qtype_name
from sensor.hitline import HitLines
from sensor.records import DnsMessage
from sensor.rules.model import NAME_KINDS, SUFFIX, Rule, RuleSet
from sensor.schema import TRANSPORTS, log_line, logging_events, rfc3339
from sensor.spoofing import spoofing_fields
from sensor.suffixes import domain_parts

if TYPE_CHECKING:  # a hit from the runner (sensor/messages.py) has the same fields as the loop's tuple
    from collections.abc import Callable, Sequence

    from sensor.messages import DnsRecord

HIT_TOPIC = "dns.hit"
HEURISTIC_RULE = Rule(SUFFIX, "", False, "heuristic", "heuristics", 0)  # placeholder: heuristic hits have no rule
IANA = {17: "17", 6: "6"}
MAX_RULE_CACHE = 100_000  # rules whose event parts are kept (a hit's rule set is a few hot rules)
EVENT_HIT = schema.Event(kind="alert", category=["network", "threat"], type=["indicator", "protocol"],
                         dataset="truesource.hit", module="truesource")
RAW_EVENT_HIT = schema.raw(EVENT_HIT)
RAW_ECS = schema.raw(schema.ECS)


@lru_cache(maxsize=1024)
def _flags(flags: int) -> list[str]:
    return header_flags(flags)  # shared by the events of one flags word: encoded, never changed


def address_text(address: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(address) == 4 else socket.AF_INET6, address)


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


def tunnel_record(tunnel: dict) -> schema.Tunnel:
    """`truesource.tunnel` from sensor/spoofing.py's {path, outer: {source: {ip}, destination: {ip}}}."""
    outer = tunnel.get("outer")
    return schema.Tunnel(path=tunnel.get("path"), outer=schema.TunnelOuter(
        source=schema.TunnelAddress(ip=outer["source"]["ip"]),
        destination=schema.TunnelAddress(ip=outer["destination"]["ip"])) if outer is not None else None)


def rule_fields(rule: Rule) -> schema.Rule:
    """ECS `rule.*`: the rule as written, its file, and the metadata its file or line gave it."""
    meta = rule.meta
    return schema.Rule(name=rule.text, ruleset=rule.ruleset, id=meta.id, category=meta.category,
                       description=meta.description, reference=meta.reference)


def rule_detail(rule: Rule) -> schema.RuleDetail:
    """What ECS has no field for: where the rule is, what it covers, the format's own columns."""
    return schema.RuleDetail(line=rule.line, kind=rule.kind_name, format=rule.format,
                             pattern=rule.pattern or "." if rule.kind in NAME_KINDS else rule.pattern,
                             source=rule.meta.source, meta=dict(rule.meta.extra) if rule.meta.extra else None)


def rule_indicator(rule: Rule) -> schema.Indicator:
    """ECS `threat.indicator`: the rule as a domain-name indicator."""
    meta = rule.meta
    url = schema.Url(domain=rule.pattern or ".") if rule.kind in NAME_KINDS else None
    return schema.Indicator(type="domain-name", name=rule.text, url=url, provider=meta.source,
                            description=meta.description, reference=meta.reference)


@dataclass(frozen=True, slots=True)
class RuleParts:
    """A rule's share of every hit it makes, built and encoded once."""

    fields: schema.Rule
    detail: schema.RuleDetail
    indicator: schema.Indicator
    event: schema.Event
    raw_fields: schema.Raw
    raw_indicator: schema.Raw
    raw_event: schema.Raw


def rule_parts(rule: Rule) -> RuleParts:
    severity = rule.meta.severity
    event = EVENT_HIT if severity is None else schema.Event(
        kind="alert", severity=severity, category=EVENT_HIT.category, type=EVENT_HIT.type,
        dataset=EVENT_HIT.dataset, module=EVENT_HIT.module)
    fields, indicator = rule_fields(rule), rule_indicator(rule)
    return RuleParts(fields, rule_detail(rule), indicator, event, schema.raw(fields), schema.raw(indicator),
                     schema.raw(event))


def related(*groups) -> schema.Related:
    """`related.ip`: every address, each once, in order of appearance."""
    return schema.Related(ip=list(dict.fromkeys(ip for group in groups for ip in group)))


class HitEncoder:
    """Turns hit records into ECS records and JSON text; one encoder reused for every event."""

    def __init__(self, ruleset: RuleSet, observer: Observer) -> None:
        self._rules = ruleset
        self._observer = schema.Observer(hostname=observer.hostname, name=observer.name, type="sensor",
                                         vendor="truesource", product="truesource", version=__version__)
        self._observers: dict[str | None, schema.Observer] = {None: self._observer}
        self._raw_observers: dict[str | None, schema.Raw] = {}
        self._by_index: dict[int, RuleParts] = {}
        self._by_rule: dict[tuple, RuleParts] = {}
        self._vlans: dict[int, schema.Vlan] = {}
        self._lines = HitLines(self._raw_observer_of, RAW_ECS)

    @property
    def ruleset(self) -> RuleSet:
        return self._rules

    @ruleset.setter
    def ruleset(self, ruleset: RuleSet) -> None:
        """After a reload: rule indices in records decoded from now on refer to this set."""
        self._rules = ruleset
        self._by_index.clear()

    def _parts(self, index: int, rule: Rule | None) -> RuleParts:
        if rule is None:
            parts = self._by_index.get(index)
            if parts is None:
                if len(self._by_index) >= MAX_RULE_CACHE:
                    self._by_index.clear()
                parts = self._by_index[index] = rule_parts(self._rules.rule(index))
            return parts
        key = (rule.kind, rule.text, rule.ruleset, rule.line, rule.pattern)
        parts = self._by_rule.get(key)
        if parts is None or parts.fields.name != rule.text:
            if len(self._by_rule) >= MAX_RULE_CACHE:
                self._by_rule.clear()
            parts = self._by_rule[key] = rule_parts(rule)
        return parts

    def observer_for(self, interface: str | None) -> schema.Observer:
        observer = self._observers.get(interface)
        if observer is None:
            base = self._observer
            observer = self._observers[interface] = schema.Observer(
                hostname=base.hostname, name=base.name, type=base.type, vendor=base.vendor, product=base.product,
                version=base.version, ingress=schema.Ingress(interface=schema.Interface(name=interface or "")))
        return observer

    def _raw_observer_of(self, interface: str | None) -> schema.Raw:
        return self._raw_observers.get(interface) or self._raw_observer(interface)

    def _raw_observer(self, interface: str | None) -> schema.Raw:
        raw = self._raw_observers[interface] = schema.raw(self.observer_for(interface))
        return raw

    def rule_parts(self, index: int) -> RuleParts:
        """The parts of the current set's rule `index` (built once)."""
        return self._parts(index, None)

    def message(self, msg: DnsMessage | DnsRecord, origin: Origin, parts: RuleParts | None,
                attribution: Attribution | None = None) -> schema.DnsEvent:
        """The event of one query: its addresses, DNS fields and origin; with a rule's parts for a hit."""
        src = address_text(msg.src_ip)
        dst = address_text(msg.dst_ip)
        transport = msg.transport
        vlan = None
        if msg.vlan_id is not None:
            vlan = self._vlans.get(msg.vlan_id)
            if vlan is None:
                vlan = self._vlans[msg.vlan_id] = schema.Vlan(id=str(msg.vlan_id))
        network = schema.Network(
            transport=TRANSPORTS[transport], protocol="dns", type="ipv4" if len(msg.src_ip) == 4 else "ipv6",
            iana_number=IANA[transport],
            community_id=community_id(msg.src_ip, msg.dst_ip, transport, msg.src_port, msg.dst_port), vlan=vlan)
        flags = msg.flags
        opcode = (flags >> 11) & 0xF
        name = msg.qname
        lower = name.lower()
        registered, subdomain, tld = domain_parts(lower)
        qtype, qclass = msg.qtype, msg.qclass
        detail = schema.DnsDetail(
            dns=schema.NumDns(op_code=opcode, question=schema.NumQuestion(type=qtype, class_=qclass,
                                                                          name_lower=lower),
                              qdcount=msg.qdcount, flags=flags),
            rule=parts.detail if parts is not None else None,
            tunnel=schema.Tunnel(path=msg.tunnel) if msg.tunnel is not None else None,
            client_subnet=msg.client_subnet,
            capture=schema.Capture(file=origin.capture_file, frame=msg.frame)
            if origin.capture_file is not None else None)
        ips = [src, dst] if src != dst else [src]
        if attribution is not None:
            clients = [schema.ClientQuery(ip=c.ip, port=c.port, time=rfc3339(*divmod(c.time_us, 1_000_000)),
                                          name=c.name, transport=TRANSPORTS[c.transport])
                       for c in attribution.clients]
            detail.attribution = schema.AttributionDetail(
                role=attribution.role, match=attribution.match, clients=clients,
                upstream=[schema.UpstreamHit(name=hit.name, resolver=address_text(hit.resolver),
                                             time=rfc3339(*divmod(hit.time_us, 1_000_000)))
                          for hit in attribution.upstream] if attribution.role == "client" else None)
            if clients:
                ips = list(dict.fromkeys([*ips, *(c.ip for c in clients)]))
        threat = None
        if parts is not None:
            enrichment = schema.Enrichment(indicator=parts.raw_indicator, matched=schema.Matched(
                atomic=lower, field="dns.question.name", type="indicator_match_rule"))
            threat = schema.Threat(indicator=parts.raw_indicator, enrichments=[enrichment])
        return schema.DnsEvent(
            timestamp=rfc3339(msg.ts_sec, msg.ts_usec),
            ecs=RAW_ECS,
            event=parts.raw_event if parts is not None else RAW_EVENT_HIT,
            source=schema.Endpoint(ip=src, port=msg.src_port),
            destination=schema.Endpoint(ip=dst, port=msg.dst_port),
            related=schema.Related(ip=ips),
            network=network,
            dns=schema.Dns(type="query", id=str(msg.dns_id), op_code=opcode_name(opcode),
                           header_flags=_flags(flags),
                           question=schema.Question(name=name, type=qtype_name(qtype), class_=qclass_name(qclass),
                                                    registered_domain=registered, subdomain=subdomain,
                                                    top_level_domain=tld)),
            rule=parts.raw_fields if parts is not None else None,
            threat=threat,
            observer=self._raw_observers.get(origin.interface) or self._raw_observer(origin.interface),
            truesource=detail,
        )

    def event(self, msg: DnsMessage | DnsRecord, origin: Origin, attribution: Attribution | None = None,
              rule: Rule | None = None) -> schema.DnsEvent:
        """The ECS record of one hit; `attribution` when the query was a resolver's, linked to its clients;
        `rule` when the caller has it (a worker sent it), else it is read from the current rule set."""
        event = self.message(msg, origin, self._parts(msg.rule, rule), attribution)
        # ---- issue 13: source.mac, truesource.tunnel {path, outer}, truesource.tcp.handshake (sensor/spoofing.py)
        source_extra, spoofing = spoofing_fields(msg)
        if "mac" in source_extra:
            event.source.mac = source_extra["mac"]
        if "tunnel" in spoofing:
            event.truesource.tunnel = tunnel_record(spoofing["tunnel"])
        if "tcp" in spoofing:
            event.truesource.tcp = schema.Tcp(handshake=spoofing["tcp"]["handshake"])
        if msg.cname is not None:  # a response that hit through its CNAME chain (sensor/cnamehits.py)
            apply_cname(event, msg)
        return event

    def hit_line(self, msg: DnsRecord, origin: Origin, attribution: Attribution | None = None,
                 rule: Rule | None = None) -> str:
        """One hit as its JSON line: the same text as encode(event(...)), written from fragments encoded once
        (sensor/hitline.py) where it can be, by the reference otherwise."""
        return self._hit_line(msg, origin, attribution, rule, self._lines.origin(origin.capture_file, origin.interface))

    def hit_lines(self, records: Sequence[DnsRecord], origin: Origin,
                  link: Callable[[DnsRecord], Attribution | None] | None) -> list[str]:
        """hit_line() for each hit of a batch (records with rule >= 0, linked in order), the origin's texts looked
        up once for the batch (decision 0204)."""
        texts = self._lines.origin(origin.capture_file, origin.interface)
        hit_line = self._hit_line
        return [hit_line(msg, origin, link(msg) if link is not None else None, None, texts)
                for msg in records if msg.rule >= 0]

    def _hit_line(self, msg: DnsRecord, origin: Origin, attribution: Attribution | None, rule: Rule | None,
                  texts: tuple[str, str]) -> str:
        parts = self._parts(msg.rule, rule)
        if attribution is None:
            line = self._lines.write_line(msg, parts, texts)
            if line is not None:
                if logging_events():
                    log_line("truesource.hit", line)
                return line
        return self.encode(self.event(msg, origin, attribution, rule))

    def heuristic_event(self, msg: DnsMessage | DnsRecord, origin: Origin, found) -> schema.DnsEvent:
        """A hit by a heuristic detector: the same event, the detector in place of a rule (no indicator)."""
        event = self.message(msg, origin, None)
        event.rule = schema.Rule(name=f"heuristic:{found.detector}", ruleset="heuristics",
                                 category="dga" if found.detector == "dga" else "dns-tunnel")
        event.truesource.rule = schema.RuleDetail(kind="heuristic")
        event.truesource.heuristic = schema.Heuristic(detector=found.detector, score=round(found.score, 3),
                                                      threshold=found.threshold, evidence=found.evidence)
        return event

    @property
    def observer(self) -> schema.Observer:
        return self._observer

    def encode(self, event: schema.Record) -> str:
        return schema.encode(event)


EVENT_RELOAD = {ok: schema.Event(kind="event", category=["configuration"], type=["change"], dataset="truesource.reload",
                                 module="truesource", outcome="success" if ok else "failure") for ok in (True, False)}


def reload_event(result, observer: schema.Observer) -> schema.ReloadEvent:
    """`sensor.reload`: a rules reload (a ReloadResult of sensor/rules/reload.py), as a configuration change."""
    return schema.ReloadEvent(timestamp=rfc3339(*divmod(time.time_ns() // 1000, 1_000_000)), ecs=schema.ECS,
                              event=EVENT_RELOAD[bool(result.ok)], observer=observer,
                              truesource=schema.ReloadTruesource(reload=result.summary()))
