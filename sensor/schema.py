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
import time
from functools import lru_cache
from typing import Annotated, Any

import msgspec

ECS_VERSION = "9.4.0"
Raw = msgspec.Raw  # a part encoded once (a rule's fields, the observer) where the hot path reuses it: same JSON


def meta(text: str, example: Any = None) -> msgspec.Meta:
    """A field's line in docs/events.md (and its example), for `Annotated[type, meta(...)]`: a type the checker
    reads as it is written."""
    extra = {"example": example} if example is not None else None
    return msgspec.Meta(description=text, extra=extra)


class Record(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """Base of every part of an event: fields left at their default are not written. gc=False: records hold no
    cycles, so the collector need not track the ~15 made per hit."""


# --- ECS field sets shared by several events -------------------------------------------------------------------


class Ecs(Record, kw_only=True, gc=False):
    version: Annotated[str, meta("the ECS version the event follows", ECS_VERSION)]


ECS = Ecs(version=ECS_VERSION)
TRANSPORTS = {17: "udp", 6: "tcp"}  # network.transport of an IANA protocol number


def rfc3339(sec: int, usec: int) -> str:
    """Packet time as RFC 3339 UTC with microseconds (@timestamp)."""
    return _second(sec) + f".{usec:06d}Z"


@lru_cache(maxsize=4096)
def _second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


class Event(Record, kw_only=True, gc=False):
    kind: Annotated[str, meta("`alert` (hits), `event`, `metric` (statistics)")]
    severity: Annotated[int | None, meta("the rule's severity, when its file gives one")] = None
    category: Annotated[list[str] | None, meta("ECS categorisation, e.g. `[\"network\",\"threat\"]`")] = None
    type: Annotated[list[str] | None, meta("ECS categorisation, e.g. `[\"indicator\",\"protocol\"]`")] = None
    action: Annotated[str | None, meta("what happened, e.g. `flow`")] = None
    outcome: Annotated[str | None, meta("`success` / `failure` (reloads)")] = None
    dataset: Annotated[str, meta("the event's kind, `truesource.hit`, `truesource.query`, ...")]
    module: Annotated[str, meta("always `truesource`")]
    start: Annotated[str | None, meta("first packet time (flows)")] = None
    end: Annotated[str | None, meta("last packet time (flows)")] = None
    duration: Annotated[int | None, meta("nanoseconds (flows)")] = None
    reason: Annotated[str | None,
            meta("why the flow record was emitted: `idle`, `active`, `end`, `forced`, `evicted`")] = None


class Endpoint(Record, kw_only=True, gc=False):
    ip: Annotated[str, meta("address, text form", "10.1.0.23")]
    port: Annotated[int | None, meta("transport port; absent for ICMP and other portless protocols", 51234)] = None
    mac: Annotated[str | None,
            meta("Ethernet source address, when the frame had one (ECS form `00-11-22-33-44-55`)")] = None
    packets: Annotated[int | None, meta("packets sent by this end (flows)")] = None
    bytes: Annotated[int | None, meta("bytes sent by this end (flows)")] = None


class Related(Record, kw_only=True, gc=False):
    ip: Annotated[list[str],
            meta("every address in the event: source, destination, attributed clients, resolved addresses")]


class Vlan(Record, kw_only=True, gc=False):
    id: Annotated[str, meta("outer 802.1Q/802.1ad tag (ECS keyword, hence a string)", "100")]


class Network(Record, kw_only=True, gc=False):
    transport: Annotated[str | None, meta("`udp`, `tcp`, `icmp`, `ipv6-icmp`, `gre`, `esp`, `ah`, `sctp`")] = None
    protocol: Annotated[str | None, meta("`dns` (hits and queries)")] = None
    type: Annotated[str, meta("`ipv4` / `ipv6`")]
    iana_number: Annotated[str, meta("IP protocol number", "17")]
    community_id: Annotated[str | None, meta("Community ID v1 flow hash, seed 0 (TCP, UDP, SCTP, ICMP, ICMPv6)")] = None
    packets: Annotated[int | None, meta("packets (flows)")] = None
    bytes: Annotated[int | None, meta("bytes, the sum of IP total lengths (flows)")] = None
    direction: Annotated[str | None, meta("`inbound`, `outbound`, `internal`, `external`, `unknown` (flows)")] = None
    vlan: Annotated[Vlan | None, meta("only when tagged")] = None


class Interface(Record, kw_only=True, gc=False):
    name: Annotated[str, meta("capture interface", "eth1")]


class Ingress(Record, kw_only=True, gc=False):
    interface: Interface


class Observer(Record, kw_only=True, gc=False):
    hostname: Annotated[str, meta("the sensor's host name")]
    name: Annotated[str, meta("`--sensor-name`, default the host name")]
    type: Annotated[str, meta("`sensor`")]
    vendor: Annotated[str, meta("`truesource`")]
    product: Annotated[str, meta("`truesource`")]
    version: Annotated[str, meta("the sensor's version")]
    ingress: Annotated[Ingress | None, meta("live capture only")] = None


class Question(Record, kw_only=True, gc=False):
    name: Annotated[str, meta("as sent (case kept), escaped: `\\DDD` for bytes outside 0x21-0x7e, `\\.` for a dot in a "
                   "label, `\\\\` for a backslash; the root is `.`", "WWW.Evil.example")]
    type: Annotated[str, meta("dnslib's mnemonic, RFC 3597 `TYPEn` when unknown", "A")]
    class_: Annotated[str, meta("dnslib's mnemonic, `CLASSn` when unknown", "IN")] = msgspec.field(name="class")
    registered_domain: Annotated[str | None,
            meta("the name's registrable domain by the Public Suffix List", "evil.example")] \
        = None
    subdomain: Annotated[str | None, meta("what is left of the name before the registered domain", "www")] = None
    top_level_domain: Annotated[str | None, meta("the name's public suffix", "co.uk")] = None


class Answer(Record, kw_only=True, gc=False):
    name: Annotated[str, meta("owner name")]
    type: Annotated[str, meta("record type mnemonic")]
    ttl: Annotated[int, meta("seconds")]
    data: Annotated[str, meta("record data in the text forms of sensor/querylog/record.py")]


class Dns(Record, kw_only=True, gc=False):
    type: Annotated[str, meta("`query`; `answer` when the event carries a response")]
    id: Annotated[str, meta("the message ID (ECS keyword, hence a string)", "48879")]
    op_code: Annotated[str, meta("dnslib's mnemonic, `OPCODEn` when unknown", "QUERY")]
    header_flags: Annotated[list[str], meta("of AA, TC, RD, RA, AD, CD")]
    question: Question
    response_code: Annotated[str | None, meta("the response's rcode, `RCODEn` when unknown")] = None
    answers: Annotated[list[Answer] | None, meta("the answer section")] = None
    resolved_ip: Annotated[list[str] | None, meta("the A and AAAA answers' addresses")] = None


class Rule(Record, kw_only=True, gc=False):
    name: Annotated[str, meta("the rule as written in its file", "*.badcdn.test")]
    ruleset: Annotated[str, meta("the file it came from", "rules/demo.rules")]
    id: Annotated[str | None, meta("the rule's id, from its file (header or column)")] = None
    category: Annotated[str | None,
            meta("the rule's category, from its file; `dga`/`dns-tunnel` for heuristics")] = None
    description: Annotated[str | None, meta("the rule's description, from its file")] = None
    reference: Annotated[str | None, meta("a reference URL, from its file")] = None


class Url(Record, kw_only=True, gc=False):
    domain: Annotated[str, meta("the indicator's domain (the rule's name, lower case)")]


class Indicator(Record, kw_only=True, gc=False):
    type: Annotated[str, meta("`domain-name`")]
    name: Annotated[str, meta("the indicator as displayed (the rule as written)")]
    url: Annotated[Url | None, meta("name rules only (exact, suffix, below)")] = None
    provider: Annotated[str | None, meta("the rule's source, from its file")] = None
    description: Annotated[str | None, meta("the rule's description")] = None
    reference: Annotated[str | None, meta("the rule's reference")] = None


class Matched(Record, kw_only=True, gc=False):
    atomic: Annotated[str, meta("the value that matched: the queried name, lower case")]
    field: Annotated[str, meta("`dns.question.name`")]
    type: Annotated[str, meta("`indicator_match_rule`")]


class Enrichment(Record, kw_only=True, gc=False):
    indicator: Indicator | Raw
    matched: Matched


class Threat(Record, kw_only=True, gc=False):
    indicator: Annotated[Indicator | Raw, meta("the matched indicator")]
    enrichments: Annotated[list[Enrichment], meta("the same indicator with what matched it")]


# --- truesource.* parts -----------------------------------------------------------------------------------------


class NumQuestion(Record, kw_only=True, gc=False):
    type: Annotated[int, meta("question type number")]
    class_: Annotated[int, meta("question class number")] = msgspec.field(name="class")
    name_lower: Annotated[str | None,
            meta("the name in lower case (resolvers send 0x20 mixed case); what rules match")] = None


class NumDns(Record, kw_only=True, gc=False):
    op_code: Annotated[int, meta("opcode number")]
    question: NumQuestion
    qdcount: Annotated[int, meta("QDCOUNT as on the wire (only the first question is decoded)")]
    flags: Annotated[int, meta("the header's second word")]


class RuleDetail(Record, kw_only=True, gc=False):
    kind: Annotated[str, meta("`exact`, `suffix`, `below`, `wildcard`, `regex`; `heuristic` for detector hits")]
    line: Annotated[int | None, meta("line of the rule in its file")] = None
    format: Annotated[str | None, meta("`native`, `hosts`, `adblock`, `zeek`, `rpz`, ...")] = None
    pattern: Annotated[str | None, meta("what the rule covers: the lower-case name (`.` for the root), the wildcard or "
                             "the regex")] = None
    source: Annotated[str | None, meta("the rule's source, from its file")] = None
    meta: Annotated[dict[str, str] | None, meta("the format's own columns (Zeek intel `meta.*`)")] = None


class Capture(Record, kw_only=True, gc=False):
    file: Annotated[str, meta("the capture file (`<stdin>` for `-`)")]
    frame: Annotated[int, meta("1-based frame number (for TCP, the frame that completed the message)")]


class ClientQuery(Record, kw_only=True, gc=False):
    ip: Annotated[str, meta("the client's address")]
    port: Annotated[int, meta("the client's port")]
    time: Annotated[str, meta("when it asked")]
    name: Annotated[str, meta("the name it asked (lower case)")]
    transport: Annotated[str, meta("`udp` / `tcp`")]


class UpstreamHit(Record, kw_only=True, gc=False):
    name: Annotated[str, meta("the name of the chain it hit on (lower case)")]
    resolver: Annotated[str, meta("the resolver that asked for it or received the chain")]
    time: Annotated[str, meta("when")]


class AttributionDetail(Record, kw_only=True, gc=False):
    role: Annotated[str, meta("`resolver`: the query was a resolver's (configured, learned, or iterative: RD clear); "
                              "`client`: a CNAME hit on a response to a client, which `clients` names")]
    match: Annotated[str,
            meta("`resolver_address`: the clients asked this resolver (for `client`: the resolver-side hits "
                 "were this resolver's); `name_and_time`: only name and time agree")]
    clients: Annotated[list[ClientQuery],
            meta("the client queries that caused this upstream query (empty when none was seen "
                                    "in the window); for `client`, the client the response went to")]
    upstream: Annotated[list[UpstreamHit] | None,
            meta("`client` only: the resolver-side hits on names of the response's CNAME chain, in the window "
                 "(upstream queries that hit, chains in upstream responses): what the client caused")] = None


class CnameDetail(Record, kw_only=True, gc=False):
    chain: Annotated[list[str], meta("the first CNAME's owner, then each CNAME's target, in answer order",
                                     ["alias.good.test", "hop1.mid.test", "x.evil.test"])]
    matched: Annotated[str, meta("the target a rule matched, as sent", "x.evil.test")]
    hop: Annotated[int, meta("which CNAME's target matched: 1 for the first", 2)]


class Heuristic(Record, kw_only=True, gc=False):
    detector: Annotated[str, meta("`dga` / `tunnel`")]
    score: Annotated[float, meta("the detector's score")]
    threshold: Annotated[float, meta("the score at which it fires")]
    evidence: Annotated[dict[str, Any], meta("what the detector measured")]


class QueryDetail(Record, kw_only=True, gc=False):
    status: Annotated[str, meta("`answered`, `unanswered`, `response_only`")]
    rcode: Annotated[int, meta("-1 when unanswered")]
    response_flags: Annotated[int, meta("the response's flags word (0 when unanswered)")]
    latency_us: Annotated[int, meta("response time minus query time; -1 unless answered")]
    retransmissions: Annotated[int, meta("identical queries seen again before the answer")]
    truncated: Annotated[bool, meta("the response's TC bit")]
    answers_dropped: Annotated[int,
            meta("only when the query log's per-entry cap cut `dns.answers`: the response's answers "
                              "not kept ([querylog.md](querylog.md#the-store))", 106)] = 0


class TunnelAddress(Record, kw_only=True, gc=False):
    ip: Annotated[str, meta("address, text form")]


class TunnelOuter(Record, kw_only=True, gc=False):
    source: Annotated[TunnelAddress, meta("the mirror that sent the tunnel")]
    destination: Annotated[TunnelAddress, meta("where the tunnel was sent (the collector)")]


class Tunnel(Record, kw_only=True, gc=False):
    """`truesource.tunnel`: one object on every event that has it (decision 0173)."""

    path: Annotated[str | None,
            meta("tunnels outer to inner; absent on anomalies",
                 "gre/vxlan")] = None
    outer: Annotated[TunnelOuter | None,
            meta("the first mirror tunnel's outer addresses (not PPPoE's); hits and `tunnel_untrusted` anomalies, "
                 "not query-log events (the query log does not store them)")] = None


class Tcp(Record, kw_only=True, gc=False):
    handshake: Annotated[Any, meta("how the query's TCP stream started (issue13)")] = None


class DnsDetail(Record, kw_only=True, gc=False):
    """`truesource.*` of hit, hunt and query events."""

    dns: NumDns
    rule: Annotated[RuleDetail | None, meta("hits and hunt events")] = None
    heuristic: Annotated[Heuristic | None, meta("heuristic hits only")] = None
    tunnel: Annotated[Tunnel | None, meta("when the query arrived encapsulated (issue13)")] = None
    tcp: Annotated[Tcp | None, meta("TCP stream facts (issue13)")] = None
    client_subnet: Annotated[str | None, meta("the query's EDNS Client Subnet option (RFC 7871)")] = None
    capture: Annotated[Capture | None, meta("replay only")] = None
    attribution: Annotated[AttributionDetail | None,
            meta("resolver queries, and CNAME hits on responses to clients")] = None
    cname: Annotated[CnameDetail | None,
            meta("CNAME hits only: a response whose CNAME chain reached a name a rule matches "
                 "([decoding.md](decoding.md#cname-hits))")] = None
    retrospective: Annotated[bool | None, meta("`true` on hunt events")] = None
    query: Annotated[QueryDetail | None, meta("query and hunt events: the response correlation")] = None


# --- the events -------------------------------------------------------------------------------------------------


class DnsEvent(Record, kw_only=True, gc=False):
    """A DNS message event: hits (`dns.hit`), logged queries (`dns.query`), retrospective hits (hunt)."""

    timestamp: Annotated[str, meta("packet time, RFC 3339 UTC, microseconds")] = msgspec.field(name="@timestamp")
    ecs: Ecs | Raw
    event: Event | Raw
    source: Annotated[Endpoint, meta("**the true client**: the query's sender as seen on the mirror")]
    destination: Annotated[Endpoint, meta("the server the query went to (usually the recursive resolver)")]
    related: Related
    network: Network
    dns: Dns
    rule: Annotated[Rule | Raw | None, meta("hits and hunt events")] = None
    threat: Annotated[Threat | None, meta("rule hits and hunt events (not heuristic hits)")] = None
    observer: Observer | Raw
    truesource: DnsDetail


class FlowIcmp(Record, kw_only=True, gc=False):
    type: Annotated[int, meta("ICMP type")]
    code: Annotated[int, meta("ICMP code")]


class FlowDetail(Record, kw_only=True, gc=False):
    tcp_flags: Annotated[str, meta("letters of the flags seen (OR of all packets), in SiLK's order F S R P A U E C")]
    tcp_flags_value: Annotated[int, meta("the same as a number")]
    end_reason: Annotated[int, meta("the number behind `event.reason` (docs/flows.md)")]
    direction: Annotated[int, meta("the number behind `network.direction`")]
    icmp: Annotated[FlowIcmp | None, meta("ICMP and ICMPv6 flows (ECS has no ICMP field set)")] = None


class FlowTruesource(Record, kw_only=True, gc=False):
    flow: FlowDetail


class FlowEvent(Record, kw_only=True, gc=False):
    timestamp: Annotated[str, meta("the flow's last packet time")] = msgspec.field(name="@timestamp")
    ecs: Ecs
    event: Event
    source: Endpoint
    destination: Endpoint
    related: Related
    network: Network
    observer: Observer | None = None
    truesource: FlowTruesource


class StatsDetail(Record, kw_only=True, gc=False):
    final: Annotated[bool, meta("the last statistics of the run")]
    uptime: Annotated[float, meta("seconds since capture started")]
    total: Annotated[dict[str, int],
            meta("every counter of docs/decoding.md summed over the workers, and the tables' sizes "
                               "and evictions (docs/limits.md)")]
    drops: Annotated[dict[str, int], meta("what was lost, by cause: `kernel`, `interface`, `publisher`, `kafka`")]
    rules: Annotated[dict[str, int], meta("`loaded`, `reloads`, `reload_failures`")]
    last_packet: Annotated[str | None,
            meta("wall-clock time the packet count last grew; `null` before the first packet")]
    workers: Annotated[list[dict[str, int]], meta("the same per worker, each with its `id`")]


class StatsTruesource(Record, kw_only=True, gc=False):
    stats: StatsDetail


class StatsEvent(Record, kw_only=True, gc=False):
    timestamp: Annotated[str, meta("wall-clock time of the snapshot")] = msgspec.field(name="@timestamp")
    ecs: Ecs
    event: Event
    observer: Observer
    truesource: StatsTruesource


class ReloadTruesource(Record, kw_only=True, gc=False):
    reload: Annotated[dict[str, Any],
            meta("`generation`, `ok`, `seconds`; on success the rule counts (`rules`, `by_kind`, "
                                "`by_format`, `duplicates`, `files`), on failure `error`")]


class ReloadEvent(Record, kw_only=True, gc=False):
    timestamp: Annotated[str, meta("wall-clock time of the reload")] = msgspec.field(name="@timestamp")
    ecs: Ecs
    event: Event
    observer: Observer
    truesource: ReloadTruesource


class AnomalyTruesource(Record, kw_only=True, gc=False):
    anomaly: Annotated[dict[str, Any], meta("the anomaly's name and what was measured (issue13: docs/decoding.md)")]
    tunnel: Annotated[Tunnel | None, meta("`tunnel_untrusted`: the tunnel's outer addresses (`tunnel.outer`)")] = None
    capture: Annotated[Capture | None, meta("replay only")] = None


class AnomalyEvent(Record, kw_only=True, gc=False):
    """Traffic the decoder judged evasive or malformed (issue13's decoder fills these)."""

    timestamp: Annotated[str, meta("packet time")] = msgspec.field(name="@timestamp")
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
    line = encode_value(event)
    if _log_fd is not None:
        part = getattr(event, "event", None)
        log_line(part.dataset if isinstance(part, Event) else "truesource.hit", line)  # pre-encoded: hits
    return line


def encode_value(value: Any) -> str:
    """Any value (a record, a part of one, a string) as JSON text the way encode() writes it: ASCII."""
    line = _encode(value)
    if not line.isascii():
        line = _NON_ASCII.sub(_escape, line.decode()).encode()
    return line.decode()


def _escape(match: re.Match) -> str:
    return json.dumps(match.group())[1:-1]  # \\uXXXX, surrogate pairs beyond the BMP


def raw(part: Record) -> Raw:
    """A record part encoded once, for the parts every hit of a rule (or of the sensor) shares."""
    return Raw(_encode(part))


def encode_bytes(event: Record) -> bytes:
    return encode(event).encode()


def logging_events() -> bool:
    """Whether tests asked for every event to be logged (TRUESOURCE_EVENT_LOG): a producer that writes its JSON
    without encode() (sensor/hitline.py) then hands its lines to log_line()."""
    return _log_fd is not None


def log_line(kind: str, line: str) -> None:
    count = _log_counts.get(kind, 0)
    if count < EVENT_LOG_CAP and _log_fd is not None:
        _log_counts[kind] = count + 1
        try:
            # one write on an O_APPEND file: lines of processes never interleave
            os.write(_log_fd, line.encode() + b"\n")
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
