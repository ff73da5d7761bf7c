"""Query-log entries as ECS events: `dns.query` (every logged query) and retrospective hits (`truesource hunt`).

Both start from the hit event of sensor/events.py, so the fields a SIEM already parses are the same. An entry
carries the response's flags, not the query's: the query's opcode, RD and CD bits are read from the response,
which copies them (RFC 1035 4.1.1, RFC 4035 3.2.2); an unanswered query has no flags.
"""

from __future__ import annotations

from sensor import schema
from sensor.dnscodes import rcode_name
from sensor.events import HitEncoder, Origin
from sensor.querylog.record import STATUS_ANSWERED, STATUS_NAMES, QueryLogEntry
from sensor.querylog.segment import split_labels
from sensor.records import DnsMessage
from sensor.rules.matcher import decide

QUERY_TOPIC = "dns.query"
QUERY_COPIED_FLAGS = 0x7800 | 0x0100 | 0x0010  # opcode, RD, CD: the response repeats the query's
A, AAAA = 1, 28


def entry_message(entry: QueryLogEntry, rule: int = -1) -> DnsMessage:
    """The entry as the loop's record of its query, for the hit encoder."""
    flags = entry.response_flags & QUERY_COPIED_FLAGS if entry.status == STATUS_ANSWERED else 0
    return DnsMessage(entry.frame, entry.ts_sec, entry.ts_usec, entry.vlan_id, entry.client_ip, entry.server_ip,
                      entry.transport, entry.client_port, entry.server_port, entry.dns_id, flags, 1, entry.qname,
                      entry.qtype, entry.qclass, rule, entry.tunnel)


def add_response(event: schema.DnsEvent, entry: QueryLogEntry) -> schema.DnsEvent:
    """ECS `dns.response_code`, `dns.answers`, `dns.resolved_ip` (also in `related.ip`), the response's header
    flags, and the correlation under `truesource.`."""
    from sensor.dnscodes import header_flags, qtype_name

    dns = event.dns
    answered = entry.status == STATUS_ANSWERED
    dns.type = "answer" if answered else "query"
    if answered:
        dns.header_flags = header_flags(entry.response_flags)  # with the response's own AA and RA
    if answered or entry.rcode >= 0:
        dns.response_code = rcode_name(entry.rcode)
        dns.answers = [schema.Answer(name=owner, type=qtype_name(rrtype), ttl=ttl, data=data)
                       for owner, rrtype, ttl, data in entry.answers]
        resolved = [data for _, rrtype, _, data in entry.answers if rrtype in (A, AAAA)]
        if resolved:
            dns.resolved_ip = resolved
            event.related = schema.Related(ip=list(dict.fromkeys([*event.related.ip, *resolved])))
    event.truesource.query = schema.QueryDetail(
        status=STATUS_NAMES.get(entry.status, str(entry.status)), rcode=entry.rcode,
        response_flags=entry.response_flags, latency_us=entry.latency_us, retransmissions=entry.retransmissions,
        truncated=bool(entry.response_flags & 0x0200),
        answers_dropped=entry.answers_dropped)  # the store's per-entry cap (docs/querylog.md); 0 is not written
    return event


EVENT_QUERY = schema.Event(kind="event", category=["network"], type=["protocol", "info"],
                           dataset="truesource.query", module="truesource")


class QueryEventEncoder:
    """`dns.query` events, with the hit encoder's observer and network fields."""

    def __init__(self, encoder: HitEncoder) -> None:
        self.encoder = encoder

    def event(self, entry: QueryLogEntry, origin: Origin) -> schema.DnsEvent:
        event = self.encoder.message(entry_message(entry), origin, None)
        event.event = EVENT_QUERY
        return add_response(event, entry)

    def encode(self, entry: QueryLogEntry, origin: Origin) -> str:
        return schema.encode(self.event(entry, origin))


def retrospective_hit(encoder: HitEncoder, entry: QueryLogEntry, rule_index: int, origin: Origin) \
        -> schema.DnsEvent:
    """A stored query that matches a rule today: the live hit's record, marked retrospective, with its response."""
    event = encoder.event(entry_message(entry, rule_index), origin)
    hit = encoder.rule_parts(rule_index).event
    event.event = schema.Event(kind=hit.kind, severity=hit.severity, category=hit.category, type=["indicator"],
                               dataset="truesource.hunt", module=hit.module)
    event.truesource.retrospective = True
    return add_response(event, entry)


TYPE_CNAME = 5
MAX_CNAME_HOPS = 16  # as sensor/decode/cnames.py: the live walk reads at most 16 CNAME records


MAX_TARGET_CACHE = 65536  # CNAME targets repeat (a CDN's names): their verdicts are kept, emptied when full


def stored_cname_hit(entry: QueryLogEntry, table: dict, patterns, allow: bytes, cache: dict[str, int]) \
        -> tuple[int, tuple[int, tuple[tuple[str, int, str], ...]]] | None:
    """(rule, (matched hop, chain)) of a stored response whose CNAME target a rule (not an allow rule) matches,
    the first in answer order, as the live CNAME hit (sensor/decode/cnames.py; decision 0163); None when none does.
    The caller has found that the question's own name makes no hit (one alert, decision 0160). `cache`: lowercase
    target to its rule (-1: none, or an allow rule), kept by the caller across entries."""
    records: list[tuple[str, int, str]] = []
    matched, rule = -1, -1
    for owner, rrtype, ttl, data in entry.answers:
        if rrtype != TYPE_CNAME:
            continue
        if len(records) == MAX_CNAME_HOPS:
            break
        records.append((owner, ttl, data))
        if matched < 0:
            key = data.lower()
            found = cache.get(key)
            if found is None:
                found = decide(table, patterns, split_labels(key) if key != "." else [])
                if found >= 0 and found < len(allow) and allow[found]:
                    found = -1
                if len(cache) >= MAX_TARGET_CACHE:
                    cache.clear()
                cache[key] = found
            if found >= 0:
                matched, rule = len(records) - 1, found
    if matched < 0:
        return None
    return rule, (matched, tuple(records))


def retrospective_cname_hit(encoder: HitEncoder, entry: QueryLogEntry, rule_index: int, cname, origin: Origin) \
        -> schema.DnsEvent:
    """A stored response that is a CNAME hit today: the live CNAME hit's event (an answer, `source` the client,
    `dns.answers` the chain, `truesource.cname`), at the response's time, marked retrospective, with the stored
    response's correlation. The answers are the chain's CNAMEs, as live (add_response would list them all)."""
    message = entry_message(entry, rule_index)
    ts = entry.ts_sec * 1_000_000 + entry.ts_usec + max(entry.latency_us, 0)  # the response's time, as live
    # the live record is the response's: its flags, and its addresses as it travelled (server to client)
    message = message._replace(ts_sec=ts // 1_000_000, ts_usec=ts % 1_000_000, flags=entry.response_flags,
                               src_ip=entry.server_ip, dst_ip=entry.client_ip, src_port=entry.server_port,
                               dst_port=entry.client_port, cname=cname)
    event = encoder.event(message, origin)
    hit = encoder.rule_parts(rule_index).event
    event.event = schema.Event(kind=hit.kind, severity=hit.severity, category=hit.category, type=["indicator"],
                               dataset="truesource.hunt", module=hit.module)
    event.truesource.retrospective = True
    answers = event.dns.answers
    add_response(event, entry)
    event.dns.type = "answer"  # a response-only entry too: the hit is its response
    event.dns.answers = answers
    return event


def publisher(pipeline):
    """--publish-queries: each logged query as a `dns.query` event to the pipeline's outputs (the ZeroMQ
    publisher; JSON-lines outputs keep to hits)."""
    encoder = QueryEventEncoder(pipeline.encoder)
    default = Origin()

    def publish(entries, origin) -> None:
        for entry in entries:
            pipeline.publish(QUERY_TOPIC, encoder.encode(entry, origin or default))
    return publish
