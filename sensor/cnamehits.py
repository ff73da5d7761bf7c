"""A CNAME hit's event fields (decision 0160): the record is a response, so the client it went to is `source` (the
true client, as for every hit), `dns` is an answer with the chain's CNAME records, the threat matched on the
target, and `truesource.cname` says which hop matched. Imports only sensor/schema.py (sensor/events.py uses it).
"""

from __future__ import annotations

from typing import Any

from sensor import schema
from sensor.dnscodes import rcode_name


def apply_cname(event: schema.DnsEvent, msg: Any) -> None:
    """Rewrite a hit event made from a CNAME-hit record (`msg.cname` set) in place."""
    matched, records = msg.cname
    target = records[matched][2]
    event.source, event.destination = (schema.Endpoint(ip=event.destination.ip, port=event.destination.port),
                                       schema.Endpoint(ip=event.source.ip, port=event.source.port))
    event.dns.type = "answer"
    event.dns.response_code = rcode_name(msg.flags & 0xF)
    event.dns.answers = [schema.Answer(name=owner, type="CNAME", ttl=ttl, data=data) for owner, ttl, data in records]
    if event.threat is not None:
        for enrichment in event.threat.enrichments:
            enrichment.matched = schema.Matched(atomic=target.lower(), field="dns.answers.data",
                                                type="indicator_match_rule")
    event.truesource.cname = schema.CnameDetail(chain=[records[0][0], *(data for _, _, data in records)],
                                                matched=target, hop=matched + 1)
