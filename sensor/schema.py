"""Every event the sensor emits, as typed records (msgspec Structs): the one source of the event schema.

docs/events.md is generated from these classes (`python -m sensor.schema --markdown`; a test checks it is
current), the Elasticsearch template's `truesource.*` mappings are checked against them, and every producer
builds one of these records and encodes it with the one reused encoder below. Field names and nesting are the
Elastic Common Schema's (ECS 9.4.0); what ECS has no field for lives under `truesource.`. A field left at its
default (None, or an omitted list) is not written.
"""

from __future__ import annotations

import json
import os
import re
from typing import Annotated, Any

import msgspec

ECS_VERSION = "9.4.0"
Raw = msgspec.Raw  # a part encoded once (a rule's fields, the observer) where the hot path reuses it: same JSON


def doc(kind: Any, text: str, example: Any = None) -> Any:
    """A field type with the line docs/events.md shows for it."""
    extra = {"example": example} if example is not None else None
    return Annotated[kind, msgspec.Meta(description=text, extra=extra)]


class Record(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """Base of every part of an event: fields left at their default are not written. gc=False: records hold no
    cycles, so the collector need not track the ~15 made per hit."""


# --- ECS field sets shared by several events -------------------------------------------------------------------


class Ecs(Record, kw_only=True, gc=False):
    version: doc(str, "the ECS version the event follows", ECS_VERSION)


ECS = Ecs(version=ECS_VERSION)


class Event(Record, kw_only=True, gc=False):
    kind: doc(str, "`alert` (hits), `event`, `metric` (statistics)")
    severity: doc(int | None, "the rule's severity, when its file gives one") = None
    category: doc(list[str] | None, "ECS categorisation, e.g. `[\"network\",\"threat\"]`") = None
    type: doc(list[str] | None, "ECS categorisation, e.g. `[\"indicator\",\"protocol\"]`") = None
    action: doc(str | None, "what happened, e.g. `flow`") = None
    outcome: doc(str | None, "`success` / `failure` (reloads)") = None
    dataset: doc(str, "the event's kind, `truesource.hit`, `truesource.query`, ...")
    module: doc(str, "always `truesource`")
    start: doc(str | None, "first packet time (flows)") = None
    end: doc(str | None, "last packet time (flows)") = None
    duration: doc(int | None, "nanoseconds (flows)") = None
    reason: doc(str | None, "why the flow record was emitted: `idle`, `active`, `end`, `forced`, `evicted`") = None


class Endpoint(Record, kw_only=True, gc=False):
    ip: doc(str, "address, text form", "10.1.0.23")
    port: doc(int | None, "transport port; absent for ICMP and other portless protocols", 51234) = None
    mac: doc(str | None, "Ethernet source address, when the frame had one (ECS form `00-11-22-33-44-55`)") = None
    packets: doc(int | None, "packets sent by this end (flows)") = None
    bytes: doc(int | None, "bytes sent by this end (flows)") = None


class Related(Record, kw_only=True, gc=False):
    ip: doc(list[str], "every address in the event: source, destination, attributed clients, resolved addresses")


class Vlan(Record, kw_only=True, gc=False):
    id: doc(str, "outer 802.1Q/802.1ad tag (ECS keyword, hence a string)", "100")


class Network(Record, kw_only=True, gc=False):
    transport: doc(str | None, "`udp`, `tcp`, `icmp`, `ipv6-icmp`, `gre`, `esp`, `ah`, `sctp`") = None
    protocol: doc(str | None, "`dns` (hits and queries)") = None
    type: doc(str, "`ipv4` / `ipv6`")
    iana_number: doc(str, "IP protocol number", "17")
    community_id: doc(str | None, "Community ID v1 flow hash, seed 0 (TCP, UDP, SCTP, ICMP, ICMPv6)") = None
    packets: doc(int | None, "packets (flows)") = None
    bytes: doc(int | None, "bytes, the sum of IP total lengths (flows)") = None
    direction: doc(str | None, "`inbound`, `outbound`, `internal`, `external`, `unknown` (flows)") = None
    vlan: doc(Vlan | None, "only when tagged") = None


class Interface(Record, kw_only=True, gc=False):
    name: doc(str, "capture interface", "eth1")


class Ingress(Record, kw_only=True, gc=False):
    interface: Interface


class Observer(Record, kw_only=True, gc=False):
    hostname: doc(str, "the sensor's host name")
    name: doc(str, "`--sensor-name`, default the host name")
    type: doc(str, "`sensor`")
    vendor: doc(str, "`truesource`")
    product: doc(str, "`truesource`")
    version: doc(str, "the sensor's version")
    ingress: doc(Ingress | None, "live capture only") = None


class Question(Record, kw_only=True, gc=False):
    name: doc(str, "as sent (case kept), escaped: `\\DDD` for bytes outside 0x21-0x7e, `\\.` for a dot in a "
                   "label, `\\\\` for a backslash; the root is `.`", "WWW.Evil.example")
    type: doc(str, "dnslib's mnemonic, RFC 3597 `TYPEn` when unknown", "A")
    class_: doc(str, "dnslib's mnemonic, `CLASSn` when unknown", "IN") = msgspec.field(name="class")
    registered_domain: doc(str | None, "the name's registrable domain by the Public Suffix List", "evil.example") \
        = None
    subdomain: doc(str | None, "what is left of the name before the registered domain", "www") = None
    top_level_domain: doc(str | None, "the name's public suffix", "co.uk") = None


class Answer(Record, kw_only=True, gc=False):
    name: doc(str, "owner name")
    type: doc(str, "record type mnemonic")
    ttl: doc(int, "seconds")
    data: doc(str, "record data in the text forms of sensor/querylog/record.py")


class Dns(Record, kw_only=True, gc=False):
    type: doc(str, "`query`; `answer` when the event carries a response")
    id: doc(str, "the message ID (ECS keyword, hence a string)", "48879")
    op_code: doc(str, "dnslib's mnemonic, `OPCODEn` when unknown", "QUERY")
    header_flags: doc(list[str], "of AA, TC, RD, RA, AD, CD")
    question: Question
    response_code: doc(str | None, "the response's rcode, `RCODEn` when unknown") = None
    answers: doc(list[Answer] | None, "the answer section") = None
    resolved_ip: doc(list[str] | None, "the A and AAAA answers' addresses") = None


class Rule(Record, kw_only=True, gc=False):
    name: doc(str, "the rule as written in its file", "*.badcdn.test")
    ruleset: doc(str, "the file it came from", "rules/demo.rules")
    id: doc(str | None, "the rule's id, from its file (header or column)") = None
    category: doc(str | None, "the rule's category, from its file; `dga`/`dns-tunnel` for heuristics") = None
    description: doc(str | None, "the rule's description, from its file") = None
    reference: doc(str | None, "a reference URL, from its file") = None


class Url(Record, kw_only=True, gc=False):
    domain: doc(str, "the indicator's domain (the rule's name, lower case)")


class Indicator(Record, kw_only=True, gc=False):
    type: doc(str, "`domain-name`")
    name: doc(str, "the indicator as displayed (the rule as written)")
    url: doc(Url | None, "name rules only (exact, suffix, below)") = None
    provider: doc(str | None, "the rule's source, from its file") = None
    description: doc(str | None, "the rule's description") = None
    reference: doc(str | None, "the rule's reference") = None


class Matched(Record, kw_only=True, gc=False):
    atomic: doc(str, "the value that matched: the queried name, lower case")
    field: doc(str, "`dns.question.name`")
    type: doc(str, "`indicator_match_rule`")


class Enrichment(Record, kw_only=True, gc=False):
    indicator: Indicator | Raw
    matched: Matched


class Threat(Record, kw_only=True, gc=False):
    indicator: doc(Indicator | Raw, "the matched indicator")
    enrichments: doc(list[Enrichment], "the same indicator with what matched it")


# --- truesource.* parts -----------------------------------------------------------------------------------------


class NumQuestion(Record, kw_only=True, gc=False):
    type: doc(int, "question type number")
    class_: doc(int, "question class number") = msgspec.field(name="class")
    name_lower: doc(str | None, "the name in lower case (resolvers send 0x20 mixed case); what rules match") = None


class NumDns(Record, kw_only=True, gc=False):
    op_code: doc(int, "opcode number")
    question: NumQuestion
    qdcount: doc(int, "QDCOUNT as on the wire (only the first question is decoded)")
    flags: doc(int, "the header's second word")


class RuleDetail(Record, kw_only=True, gc=False):
    kind: doc(str, "`exact`, `suffix`, `below`, `wildcard`, `regex`; `heuristic` for detector hits")
    line: doc(int | None, "line of the rule in its file") = None
    format: doc(str | None, "`native`, `hosts`, `adblock`, `zeek`, `rpz`, ...") = None
    pattern: doc(str | None, "what the rule covers: the lower-case name (`.` for the root), the wildcard or "
                             "the regex") = None
    source: doc(str | None, "the rule's source, from its file") = None
    meta: doc(dict[str, str] | None, "the format's own columns (Zeek intel `meta.*`)") = None


class Capture(Record, kw_only=True, gc=False):
    file: doc(str, "the capture file (`<stdin>` for `-`)")
    frame: doc(int, "1-based frame number (for TCP, the frame that completed the message)")


class ClientQuery(Record, kw_only=True, gc=False):
    ip: doc(str, "the client's address")
    port: doc(int, "the client's port")
    time: doc(str, "when it asked")
    name: doc(str, "the name it asked (lower case)")
    transport: doc(str, "`udp` / `tcp`")


class AttributionDetail(Record, kw_only=True, gc=False):
    role: doc(str, "`resolver`: the query was a resolver's (configured, learned, or iterative: RD clear)")
    match: doc(str, "`resolver_address`: the clients asked this resolver; `name_and_time`: only name and time "
                    "agree")
    clients: doc(list[ClientQuery], "the client queries that caused this upstream query (empty when none was seen "
                                    "in the window)")


class Heuristic(Record, kw_only=True, gc=False):
    detector: doc(str, "`dga` / `tunnel`")
    score: doc(float, "the detector's score")
    threshold: doc(float, "the score at which it fires")
    evidence: doc(dict[str, Any], "what the detector measured")


class QueryDetail(Record, kw_only=True, gc=False):
    status: doc(str, "`answered`, `unanswered`, `response_only`")
    rcode: doc(int, "-1 when unanswered")
    response_flags: doc(int, "the response's flags word (0 when unanswered)")
    latency_us: doc(int, "response time minus query time; -1 unless answered")
    retransmissions: doc(int, "identical queries seen again before the answer")
    truncated: doc(bool, "the response's TC bit")
    answers_dropped: doc(int, "only when the query log's per-entry cap cut `dns.answers`: the response's answers "
                              "not kept ([querylog.md](querylog.md#the-store))", 106) = 0


class Tcp(Record, kw_only=True, gc=False):
    handshake: doc(Any, "how the query's TCP stream started (issue13)") = None


class DnsDetail(Record, kw_only=True, gc=False):
    """`truesource.*` of hit, hunt and query events."""

    dns: NumDns
    rule: doc(RuleDetail | None, "hits and hunt events") = None
    heuristic: doc(Heuristic | None, "heuristic hits only") = None
    tunnel: doc(Any, "tunnels outer to inner, when the query arrived encapsulated (`gre/vxlan`); with issue13's "
                     "decoder also `tunnel.outer`") = None
    tcp: doc(Tcp | None, "TCP stream facts (issue13)") = None
    client_subnet: doc(str | None, "the query's EDNS Client Subnet option (RFC 7871)") = None
    capture: doc(Capture | None, "replay only") = None
    attribution: doc(AttributionDetail | None, "resolver queries only") = None
    retrospective: doc(bool | None, "`true` on hunt events") = None
    query: doc(QueryDetail | None, "query and hunt events: the response correlation") = None


# --- the events -------------------------------------------------------------------------------------------------


class DnsEvent(Record, kw_only=True, gc=False):
    """A DNS message event: hits (`dns.hit`), logged queries (`dns.query`), retrospective hits (hunt)."""

    timestamp: doc(str, "packet time, RFC 3339 UTC, microseconds") = msgspec.field(name="@timestamp")
    ecs: Ecs | Raw
    event: Event | Raw
    source: doc(Endpoint, "**the true client**: the query's sender as seen on the mirror")
    destination: doc(Endpoint, "the server the query went to (usually the recursive resolver)")
    related: Related
    network: Network
    dns: Dns
    rule: doc(Rule | Raw | None, "hits and hunt events") = None
    threat: doc(Threat | None, "rule hits and hunt events (not heuristic hits)") = None
    observer: Observer | Raw
    truesource: DnsDetail


class FlowIcmp(Record, kw_only=True, gc=False):
    type: doc(int, "ICMP type")
    code: doc(int, "ICMP code")


class FlowDetail(Record, kw_only=True, gc=False):
    tcp_flags: doc(str, "letters of the flags seen (OR of all packets), in SiLK's order F S R P A U E C")
    tcp_flags_value: doc(int, "the same as a number")
    end_reason: doc(int, "the number behind `event.reason` (docs/flows.md)")
    direction: doc(int, "the number behind `network.direction`")
    icmp: doc(FlowIcmp | None, "ICMP and ICMPv6 flows (ECS has no ICMP field set)") = None


class FlowTruesource(Record, kw_only=True, gc=False):
    flow: FlowDetail


class FlowEvent(Record, kw_only=True, gc=False):
    timestamp: doc(str, "the flow's last packet time") = msgspec.field(name="@timestamp")
    ecs: Ecs
    event: Event
    source: Endpoint
    destination: Endpoint
    related: Related
    network: Network
    observer: Observer | None = None
    truesource: FlowTruesource


class StatsDetail(Record, kw_only=True, gc=False):
    final: doc(bool, "the last statistics of the run")
    uptime: doc(float, "seconds since capture started")
    total: doc(dict[str, int], "every counter of docs/decoding.md summed over the workers, and the tables' sizes "
                               "and evictions (docs/limits.md)")
    drops: doc(dict[str, int], "what was lost, by cause: `kernel`, `interface`, `publisher`, `kafka`")
    rules: doc(dict[str, int], "`loaded`, `reloads`, `reload_failures`")
    last_packet: doc(str | None, "wall-clock time the packet count last grew; `null` before the first packet")
    workers: doc(list[dict[str, int]], "the same per worker, each with its `id`")


class StatsTruesource(Record, kw_only=True, gc=False):
    stats: StatsDetail


class StatsEvent(Record, kw_only=True, gc=False):
    timestamp: doc(str, "wall-clock time of the snapshot") = msgspec.field(name="@timestamp")
    ecs: Ecs
    event: Event
    observer: Observer
    truesource: StatsTruesource


class ReloadTruesource(Record, kw_only=True, gc=False):
    reload: doc(dict[str, Any], "`generation`, `ok`, `seconds`; on success the rule counts (`rules`, `by_kind`, "
                                "`by_format`, `duplicates`, `files`), on failure `error`")


class ReloadEvent(Record, kw_only=True, gc=False):
    timestamp: doc(str, "wall-clock time of the reload") = msgspec.field(name="@timestamp")
    ecs: Ecs
    event: Event
    observer: Observer
    truesource: ReloadTruesource


class AnomalyTruesource(Record, kw_only=True, gc=False):
    anomaly: doc(dict[str, Any], "the anomaly's name and what was measured (issue13: docs/decoding.md)")
    capture: doc(Capture | None, "replay only") = None


class AnomalyEvent(Record, kw_only=True, gc=False):
    """Traffic the decoder judged evasive or malformed (issue13's decoder fills these)."""

    timestamp: doc(str, "packet time") = msgspec.field(name="@timestamp")
    ecs: Ecs
    event: Event
    source: Endpoint | None = None
    destination: Endpoint | None = None
    related: Related | None = None
    network: Network | None = None
    observer: Observer
    truesource: AnomalyTruesource


# One entry per kind: event.dataset -> (topic, record, title). The ECS test requires each to be seen in a full run.
KINDS: dict[str, tuple[str, type, str]] = {
    "truesource.hit": ("dns.hit", DnsEvent, "a query whose name matched a rule or a heuristic"),
    "truesource.query": ("dns.query", DnsEvent, "every logged query, with its response"),
    "truesource.hunt": ("(printed by `hunt`)", DnsEvent, "a stored query that matches today's rules"),
    "truesource.flow": ("flow", FlowEvent, "a flow record"),
    "truesource.stats": ("sensor.stats", StatsEvent, "the sensor's own counters"),
    "truesource.reload": ("sensor.reload", ReloadEvent, "a rules reload"),
    "truesource.anomaly": ("dns.anomaly", AnomalyEvent, "traffic judged evasive or malformed"),
}


# --- the one encoder --------------------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()
_NON_ASCII = re.compile("[^\x00-\x7f]+")
_encode = _encoder.encode
EVENT_LOG_ENV = "TRUESOURCE_EVENT_LOG"  # tests: every encoded event is appended to this file (tests/conftest.py)
EVENT_LOG_CAP = 2_000  # per kind and process: enough to check every field shape, bounded for long tests
_log_fd: int | None = None
_log_counts: dict[str, int] = {}


def encode(event: Record) -> str:
    """One event as one line of JSON (no newline), ASCII: text outside it (a rule file's Unicode) as \\u escapes,
    as the outputs and subscribers have always had it."""
    line = _encode(event)
    if not line.isascii():
        line = _NON_ASCII.sub(_escape, line.decode()).encode()
    if _log_fd is not None:
        _log(event, line)
    return line.decode()


def _escape(match: re.Match) -> str:
    return json.dumps(match.group())[1:-1]  # \\uXXXX, surrogate pairs beyond the BMP


def raw(part: Record) -> Raw:
    """A record part encoded once, for the parts every hit of a rule (or of the sensor) shares."""
    return Raw(_encode(part))


def encode_bytes(event: Record) -> bytes:
    return encode(event).encode()


def _log(event: Record, line: bytes) -> None:
    part = getattr(event, "event", None)
    kind = part.dataset if isinstance(part, Event) else "truesource.hit"  # pre-encoded: only hits have it
    count = _log_counts.get(kind, 0)
    if count < EVENT_LOG_CAP:
        _log_counts[kind] = count + 1
        try:
            os.write(_log_fd, line + b"\n")  # one write on an O_APPEND file: lines of processes never interleave
        except OSError:
            pass  # the test's disk is full: the check then sees fewer events, the sensor runs on


def _open_log() -> None:
    global _log_fd
    path = os.environ.get(EVENT_LOG_ENV)
    if path:
        try:
            _log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError:
            _log_fd = None  # a sandboxed or unprivileged child cannot reach the test's file: it just logs nothing


_open_log()
