"""CNAME hits: a response whose answer section aliases a name to one a rule matches (the reference twin of
ext/cnames.pxi; docs/decoding.md, "CNAME hits", decision 0160).

A resolver that follows a CNAME from a good name to a suspicious one sends the suspicious name upstream, where a
mirror may not see it (a forwarder's upstream is encrypted or elsewhere); the chain in the response is the one
place it shows. Every CNAME record's target is matched, in answer-section order; the first that a rule (not an
allow rule) matches makes the response a hit, unless the question's own name hits (its query is the hit: one
alert, not two). Only CNAME records are decoded: other records are skipped by their
lengths, so a capture without CNAMEs costs a walk over each answer's owner name and fixed fields.

The walk stops at the first malformed part (a name the question's limits refuse, a record past the message's
end, a CNAME whose target does not fill its data exactly), counted once as `dns_bad_answers`; targets read before
it still count.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from sensor.decode.anomaly import Anomaly
from sensor.decode.dnsmsg import Question, presentation_name, read_name

TYPE_CNAME = 5
MAX_CNAME_HOPS = 16  # resolvers give up after 8-16 (unbound: 11, BIND: 16); more is a crafted chain
RR_FIXED = struct.Struct("!HHIH")  # type, class, TTL, rdata length
QUESTION_FIXED = 4
ANCOUNT = struct.Struct("!H")
ANCOUNT_OFFSET = 6
NO_RULE = -1

# What a hit's record carries: the index of the hop whose target matched, and every CNAME read, in order, as
# (owner, TTL, target), names in presentation form as sent.
CnameChain = tuple[int, tuple[tuple[str, int, str], ...]]


def cname_hit(message: bytes, question: Question, rule_of: Callable[[list[str]], int],
              counters: dict[str, int]) -> tuple[int, CnameChain | None]:
    """(rule, chain) of a response: the rule of the first CNAME target it matches and the chain; (NO_RULE, None)
    when none matches. `rule_of` is the loop's matcher for a name's labels (allow rules already give NO_RULE)."""
    ancount = ANCOUNT.unpack_from(message, ANCOUNT_OFFSET)[0]
    if ancount == 0:
        return NO_RULE, None
    records: list[tuple[str, int, str]] = []
    matched = -1
    rule = NO_RULE
    position = question.end
    try:
        for _ in range(question.qdcount - 1):  # later questions: skipped (only the first is decoded)
            _, position = read_name(message, position)
            position += QUESTION_FIXED
            if position > len(message):
                raise Anomaly("dns_bad_answers")
        for _ in range(ancount):
            owner, position = read_name(message, position)
            if position + RR_FIXED.size > len(message):
                raise Anomaly("dns_bad_answers")
            rrtype, _, ttl, rdlength = RR_FIXED.unpack_from(message, position)
            start = position + RR_FIXED.size
            position = start + rdlength
            if position > len(message):
                raise Anomaly("dns_bad_answers")
            if rrtype != TYPE_CNAME:
                continue
            if len(records) == MAX_CNAME_HOPS:
                break
            target, end = read_name(message, start)
            if end != position:
                raise Anomaly("dns_bad_answers")
            records.append((presentation_name(owner), ttl, presentation_name(target)))
            if matched < 0:
                rule = rule_of(target)
                if rule != NO_RULE:
                    matched = len(records) - 1
    except Anomaly:
        counters["dns_bad_answers"] += 1
    if matched < 0 or rule_of(question.labels) != NO_RULE:  # the question's own name hits: its query was the hit
        return NO_RULE, None
    counters["dns_cname_hits"] += 1
    return rule, (matched, tuple(records))
