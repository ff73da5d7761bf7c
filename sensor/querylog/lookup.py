"""The commands that read the query log: `who-asked`, `hunt`, `resolved-ip` (docs/querylog.md).

Each opens the store read-only, so they run beside a sensor that is writing it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable

from sensor.dnscodes import rcode_name
from sensor.errors import StartupError
from sensor.querylog.options import (
    DEFAULT_AROUND_WINDOW,
    DEFAULT_RESOLVER_TOLERANCE,
    QUERY_LOG_ENV,
    RELATIVE,
    UNITS,
)
from sensor.querylog.record import STATUS_ANSWERED, QueryLogEntry
from sensor.querylog.store import (
    QueryStore,
    address_bytes,
    address_text,
    entries_at,
    reversed_name,
    split_labels,
)

RD = 0x0100
DECODE_CHUNK = 512  # hunt's CNAME candidates decoded this many at a time (one call each, little memory)


# --- times -------------------------------------------------------------------------------------------------

def parse_time(text: str, option: str, now: float | None = None) -> int:
    """RFC 3339 / ISO 8601 (no zone: UTC), `now`, or relative to now (`-2h`, `-30m`, `-1.5d`); microseconds."""
    now = time.time() if now is None else now
    value = text.strip()
    if value == "now":
        return int(now * 1_000_000)
    match = RELATIVE.match(value)
    if match and (match.group(1) or match.group(3)):
        sign = 1 if match.group(1) == "+" else -1
        return int((now + sign * float(match.group(2)) * UNITS[match.group(3) or "s"]) * 1_000_000)
    from datetime import UTC, datetime, timedelta

    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise StartupError(f"{option}: {text!r} is not a time (RFC 3339 like 2026-11-23T10:00:01Z, "
                           "or relative like -2h)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def parse_duration(text: str, option: str) -> float:
    """`90`, `90s`, `5m`, `2h`, `1d` in seconds."""
    match = RELATIVE.match(text.strip())
    if not match or match.group(1):
        raise StartupError(f"{option}: {text!r} is not a duration (like 30s, 5m, 2h)")
    return float(match.group(2)) * UNITS[match.group(3) or "s"]


def time_text(us: int) -> str:
    """As sensor.events.rfc3339 (RFC 3339 UTC with microseconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000)) + f".{us % 1_000_000:06d}Z"


def open_store(args: argparse.Namespace) -> QueryStore:
    path = args.query_log or os.environ.get(QUERY_LOG_ENV)
    if not path:
        raise StartupError(f"no query log: give --query-log PATH (or set {QUERY_LOG_ENV})")
    store = QueryStore.open_reader(path)
    store.decode = compiled_decode  # for reads of many entries: the loop's selector loads only then
    return store


def compiled_decode(data: bytes, caps: tuple[int, int, int]) -> list[QueryLogEntry]:
    from sensor.loop import decode_query_log

    return decode_query_log(data, caps=caps)


def entry_time(entry: QueryLogEntry) -> int:
    return entry.ts_sec * 1_000_000 + entry.ts_usec


# --- who-asked ----------------------------------------------------------------------------------------------

class Asker:
    """One client's queries for one name."""

    __slots__ = ("client_ip", "name", "first_seen", "last_seen", "count", "servers", "response_codes", "answers")

    def __init__(self, client_ip: str, name: str, first_seen: int, last_seen: int) -> None:
        self.client_ip = client_ip
        self.name = name
        self.first_seen = first_seen
        self.last_seen = last_seen
        self.count = 0
        self.servers: set[str] = set()
        self.response_codes: dict[str, int] = {}
        self.answers: dict[str, None] = {}  # distinct answer data, first seen first

    def add(self, entry: QueryLogEntry, ts: int) -> None:
        self.count += 1
        self.first_seen = min(self.first_seen, ts)
        self.last_seen = max(self.last_seen, ts)
        self.servers.add(address_text(entry.server_ip))
        code = rcode_name(entry.rcode) if entry.rcode >= 0 else "no response"
        self.response_codes[code] = self.response_codes.get(code, 0) + 1
        for answer in entry.answers:
            self.answers.setdefault(answer[3], None)

    def as_dict(self) -> dict:
        return {"client_ip": self.client_ip, "name": self.name, "first_seen": time_text(self.first_seen),
                "last_seen": time_text(self.last_seen), "count": self.count, "servers": sorted(self.servers),
                "response_codes": self.response_codes, "answers": list(self.answers)}


def group_askers(entries: Iterable[tuple[int, QueryLogEntry]]) -> list[Asker]:
    askers: dict[tuple[bytes, str], Asker] = {}
    for ts, entry in entries:
        key = (entry.client_ip, entry.qname.lower())
        asker = askers.get(key)
        if asker is None:
            asker = askers[key] = Asker(address_text(entry.client_ip), key[1], ts, ts)
        asker.add(entry, ts)
    return sorted(askers.values(), key=lambda a: (a.first_seen, a.client_ip, a.name))


def run_who_asked(args: argparse.Namespace) -> int:
    args.name = wire_name(args.name)
    since = parse_time(args.since, "--since") if args.since else None
    until = parse_time(args.until, "--until") if args.until else None
    if args.around and args.resolver_query:
        raise StartupError("--around and --resolver-query: give one")
    if args.window and not (args.around or args.resolver_query):
        raise StartupError("--window needs --around or --resolver-query")
    if args.attribution_window <= 0:
        raise StartupError("--attribution-window: must be more than 0 seconds")
    for item in args.resolver:
        for address in item.split(","):
            address_bytes(address)
    if args.around:
        centre = parse_time(args.around, "--around")
        window = parse_duration(args.window, "--window") if args.window else DEFAULT_AROUND_WINDOW
        since, until = centre - int(window * 1_000_000), centre + int(window * 1_000_000) + 1
    store = open_store(args)
    if args.resolver_query:
        return resolver_query(args, store)
    askers = group_askers(store.by_name(args.name, args.subdomains, since, until))
    out = sys.stdout
    if args.json:
        import json

        for asker in askers:
            out.write(json.dumps(asker.as_dict()) + "\n")
        return 0
    if not askers:
        print(f"nobody asked for {args.name}{' or below it' if args.subdomains else ''} in the query log",
              file=sys.stderr)
        return 0
    out.write(f"{'client':<39} {'count':>7}  {'first seen':<27} {'last seen':<27} name -> answers\n")
    for a in askers:
        codes = ",".join(f"{code}" if n == a.count else f"{code}x{n}" for code, n in a.response_codes.items())
        answers = " ".join(a.answers) or "-"
        out.write(f"{a.client_ip:<39} {a.count:>7}  {time_text(a.first_seen):<27} {time_text(a.last_seen):<27} "
                  f"{a.name} -> {codes} {answers}\n")
    return 0


def wire_name(name: str) -> str:
    """NAME as queries carry it: a Unicode name as its A-labels (sensor/idn.py, as rules are converted)."""
    from sensor.idn import NameError_, to_ascii

    try:
        return to_ascii(name) if not name.isascii() else name
    except NameError_ as err:
        raise StartupError(f"NAME: {name!r} is not a domain name ({err})") from None


def resolver_query(args: argparse.Namespace, store: QueryStore) -> int:
    """The resolver's upstream queries for NAME within the tolerance of T, each with the client queries that
    caused it: the same name or one below it, asked in the attribution window before (sensor/attribution.py)."""
    import json

    from sensor.attribution import ResolverAttribution
    from sensor.querylog.events import entry_message
    at = parse_time(args.resolver_query, "--resolver-query")
    tolerance = int((parse_duration(args.window, "--window") if args.window else DEFAULT_RESOLVER_TOLERANCE)
                    * 1_000_000)
    window = int(args.attribution_window * 1_000_000)
    rows = sorted(store.by_name(args.name, True, at - tolerance - window, at + tolerance + 1),
                  key=lambda row: row[0])
    attribution = ResolverAttribution(args.resolver, args.attribution_window, learn=True)
    wanted = reversed_name(args.name)
    found = []
    for ts, entry in rows:
        msg = entry_message(entry)
        if entry.status != STATUS_ANSWERED:  # no response to read its RD bit from: take it for a client's
            msg = msg._replace(flags=msg.flags | RD)
        link = attribution.link(msg)
        if link is not None and abs(ts - at) <= tolerance and reversed_name(entry.qname) == wanted:
            found.append((ts, entry, link))
    if not found:
        print(f"no upstream query for {args.name} within {tolerance / 1e6:g} s of {time_text(at)} in the query log",
              file=sys.stderr)
        return 0
    out = sys.stdout
    for ts, entry, link in found:
        upstream = {"time": time_text(ts), "resolver_ip": address_text(entry.client_ip),
                    "server_ip": address_text(entry.server_ip), "name": entry.qname, "match": link.match}
        grouped: dict[tuple[str, str], dict] = {}
        for client in link.clients:
            key = (client.ip, client.name)
            item = grouped.get(key)
            if item is None:
                item = grouped[key] = {"client_ip": client.ip, "name": client.name, "first_seen": client.time_us,
                                       "last_seen": client.time_us, "count": 0, "ports": []}
            item["count"] += 1
            item["first_seen"] = min(item["first_seen"], client.time_us)
            item["last_seen"] = max(item["last_seen"], client.time_us)
            item["ports"].append(client.port)
        if args.json:
            for item in grouped.values():
                out.write(json.dumps({**item, "first_seen": time_text(item["first_seen"]),
                                      "last_seen": time_text(item["last_seen"]), "resolver_query": upstream}) + "\n")
            continue
        out.write(f"{upstream['resolver_ip']} asked {upstream['server_ip']} for {entry.qname} at {upstream['time']} "
                  f"({link.match}); caused by {len(grouped)} client queries:\n" if grouped else
                  f"{upstream['resolver_ip']} asked {upstream['server_ip']} for {entry.qname} at {upstream['time']}; "
                  f"no client query for it in the {args.attribution_window:g} s before\n")
        for item in grouped.values():
            out.write(f"  {item['client_ip']:<39} {item['count']:>5}  {time_text(item['first_seen'])}  "
                      f"{item['name']}\n")
    return 0


# --- hunt ---------------------------------------------------------------------------------------------------

def run_hunt(args: argparse.Namespace) -> int:
    from sensor.events import HitEncoder, Observer, Origin
    from sensor.querylog.events import retrospective_cname_hit, retrospective_hit, stored_cname_hit
    from sensor.rules.loader import load_rules
    from sensor.rules.matcher import decide
    from sensor.rules.patterns import PatternMatcher

    since = parse_time(args.since, "--since") if args.since else None
    until = parse_time(args.until, "--until") if args.until else None
    store = open_store(args)
    ruleset = load_rules(args.rules, args.rules_format)
    table = ruleset.table
    allow = bytes(ruleset.allow)
    patterns = PatternMatcher(ruleset) or None
    encoder = HitEncoder(ruleset, Observer.local(args.sensor_name))
    origin = Origin()
    hits = scanned = 0
    out = sys.stdout
    cname_hits = 0
    targets: dict[str, int] = {}  # CNAME targets' verdicts (stored_cname_hit)
    for data, rows in store.names_and_cnames_by_segment(since, until):
        # the labels from the stored name (lowercase; matching ignores case), the entry decoded only on a hit;
        # an entry whose name makes no hit (none, or an allow rule) is a CNAME hit when a stored CNAME target hits
        # (decision 0163): the segment's candidates (responses that may hold a CNAME) decoded together
        scanned += len(rows)
        rules = []
        candidates = []
        for qname, offset, maybe_cname in rows:
            rule = decide(table, patterns, split_labels(qname.lower()) if qname != "." else [])
            if rule >= 0 and rule < len(allow) and allow[rule]:
                rule = -1
            rules.append(rule)
            if rule < 0 and maybe_cname:
                candidates.append(entries_at(data, (offset,)))
        decoded = (entry for at in range(0, len(candidates), DECODE_CHUNK)
                   for entry in store.decode_many(candidates[at:at + DECODE_CHUNK]))
        for (_, offset, maybe_cname), rule in zip(rows, rules, strict=True):
            if rule >= 0:
                hits += 1
                entry = store.decode_one(entries_at(data, (offset,)))
                out.write(encoder.encode(retrospective_hit(encoder, entry, rule, origin)) + "\n")
            elif maybe_cname:
                entry = next(decoded)
                found = stored_cname_hit(entry, table, patterns, allow, targets)
                if found is not None:
                    hits += 1
                    cname_hits += 1
                    out.write(encoder.encode(retrospective_cname_hit(encoder, entry, *found, origin)) + "\n")
        del data, rows  # the segment is unmapped once the walk leaves it
    print(f"hunt: {scanned:,} stored queries, {hits:,} hits ({cname_hits:,} through a CNAME)", file=sys.stderr)
    return 0


# --- resolved-ip --------------------------------------------------------------------------------------------

def run_resolved_ip(args: argparse.Namespace) -> int:
    address = address_bytes(args.address)
    store = open_store(args)
    text = address_text(address)
    import json

    askers = group_askers((entry_time(e), e) for e in store.by_resolved_ip(address))
    out = sys.stdout
    if args.json:
        for asker in askers:
            out.write(json.dumps({**asker.as_dict(), "resolved_ip": text}) + "\n")
        return 0
    if not askers:
        print(f"no stored answer resolved to {text}", file=sys.stderr)
        return 0
    names = sorted({a.name for a in askers})
    out.write(f"{text} was the answer for: {', '.join(names)}\n")
    out.write(f"{'client':<39} {'count':>7}  {'first seen':<27} {'last seen':<27} name\n")
    for a in askers:
        out.write(f"{a.client_ip:<39} {a.count:>7}  {time_text(a.first_seen):<27} {time_text(a.last_seen):<27} "
                  f"{a.name}\n")
    return 0
