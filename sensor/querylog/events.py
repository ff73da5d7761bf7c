"""Query-log entries as ECS events: `dns.query` (every logged query) and retrospective hits (`truesource hunt`).

Both start from the hit event of sensor/events.py, so the fields a SIEM already parses are the same. An entry
carries the response's flags, not the query's: the query's opcode, RD and CD bits are read from the response,
which copies them (RFC 1035 4.1.1, RFC 4035 3.2.2); an unanswered query has no flags.
"""

from __future__ import annotations

from functools import cache

from sensor.events import HitEncoder, Origin
from sensor.querylog.record import STATUS_ANSWERED, STATUS_NAMES, QueryLogEntry
from sensor.records import DnsMessage
from sensor.rules.model import Rule

QUERY_TOPIC = "dns.query"
QUERY_COPIED_FLAGS = 0x7800 | 0x0100 | 0x0010  # opcode, RD, CD: the response repeats the query's
A, AAAA = 1, 28


@cache
def _rcodes() -> dict[int, str]:
    from dnslib import RCODE

    return RCODE.forward


def rcode_name(code: int) -> str:
    return _rcodes().get(code) or f"RCODE{code}"


def entry_message(entry: QueryLogEntry, rule: int = -1) -> DnsMessage:
    """The entry as the loop's record of its query, for the hit encoder."""
    flags = entry.response_flags & QUERY_COPIED_FLAGS if entry.status == STATUS_ANSWERED else 0
    return DnsMessage(entry.frame, entry.ts_sec, entry.ts_usec, entry.vlan_id, entry.client_ip, entry.server_ip,
                      entry.transport, entry.client_port, entry.server_port, entry.dns_id, flags, 1, entry.qname,
                      entry.qtype, entry.qclass, rule, entry.tunnel)


def add_response(event: dict, entry: QueryLogEntry) -> dict:
    """ECS `dns.response_code`, `dns.answers`, `dns.resolved_ip`, and the correlation under `truesource.`."""
    from sensor.dnscodes import qtype_name

    dns = event["dns"]
    if entry.status == STATUS_ANSWERED or entry.rcode >= 0:
        dns["response_code"] = rcode_name(entry.rcode)
        dns["answers"] = [{"name": owner, "type": qtype_name(rrtype), "ttl": ttl, "data": data}
                          for owner, rrtype, ttl, data in entry.answers]
        resolved = [data for _, rrtype, _, data in entry.answers if rrtype in (A, AAAA)]
        if resolved:
            dns["resolved_ip"] = resolved
    query = {"status": STATUS_NAMES.get(entry.status, str(entry.status)), "rcode": entry.rcode,
             "response_flags": entry.response_flags, "latency_us": entry.latency_us,
             "retransmissions": entry.retransmissions, "truncated": bool(entry.response_flags & 0x0200)}
    if entry.answers_dropped:  # the store's per-entry cap (docs/querylog.md): dns.answers is not all there was
        query["answers_dropped"] = entry.answers_dropped
    event["truesource"]["query"] = query
    return event


class QueryEventEncoder:
    """`dns.query` events, with the hit encoder's observer and network fields."""

    PLACEHOLDER = Rule(1, "", False, "", "", 0)

    def __init__(self, encoder: HitEncoder) -> None:
        self.encoder = encoder

    def event(self, entry: QueryLogEntry, origin: Origin) -> dict:
        event = self.encoder.event(entry_message(entry), origin, rule=self.PLACEHOLDER)
        del event["rule"]
        del event["truesource"]["rule"]
        event["event"] = {"kind": "event", "category": ["network"], "type": ["protocol", "info"],
                          "dataset": "truesource.query", "module": "truesource"}
        event["dns"]["type"] = "answer" if entry.status == STATUS_ANSWERED else "query"
        return add_response(event, entry)

    def encode(self, entry: QueryLogEntry, origin: Origin) -> str:
        return self.encoder.encode(self.event(entry, origin))


def retrospective_hit(encoder: HitEncoder, entry: QueryLogEntry, rule_index: int, origin: Origin) -> dict:
    """A stored query that matches a rule today: the live hit's JSON, marked retrospective, with its response."""
    event = encoder.event(entry_message(entry, rule_index), origin)
    event["event"]["type"] = ["indicator"]
    event["event"]["dataset"] = "truesource.hunt"
    event["truesource"]["retrospective"] = True
    return add_response(event, entry)
