"""The query log's options and commands as argparse sees them: light to import, since every `truesource`
command builds the whole parser (the store, writer and commands are imported only when used)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from sensor.attribution import DEFAULT_WINDOW
from sensor.errors import StartupError

SEGMENT_ROWS = 200_000  # queries per segment: readers scan the open one unindexed (45-67 ms here when full)
DEFAULT_MAX_MB = 10_240  # a store left to itself stops at 10 GiB (about 40 M queries at 244 bytes each)
QUERY_LOG_ENV = "TRUESOURCE_QUERY_LOG"  # where the commands read when --query-log is not given
DEFAULT_AROUND_WINDOW = 300.0  # seconds either side of --around
DEFAULT_RESOLVER_TOLERANCE = 1.0  # seconds either side of --resolver-query: clocks of the IDS and the sensor differ
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
RELATIVE = re.compile(r"^([+-]?)(\d+(?:\.\d+)?)([smhdw]?)$")


@dataclass(frozen=True, slots=True)
class Retention:
    """How much the writer keeps: queries newer than `max_age_seconds` (packet time against the clock) and a
    file of at most `max_bytes`. 0: no limit. Both drop whole segments, oldest first; the open segment stays."""

    max_age_seconds: float = 0.0
    max_bytes: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.max_age_seconds or self.max_bytes)


@dataclass(frozen=True, slots=True)
class QueryLogOptions:
    path: str
    retention: Retention = Retention()
    segment_rows: int = SEGMENT_ROWS
    publish: bool = False  # --publish-queries: every logged query on topic dns.query too


def add_options(parser: argparse.ArgumentParser) -> None:
    """The query-log options of `replay` and `capture`."""
    group = parser.add_argument_group("query log (docs/querylog.md)")
    group.add_argument("--query-log", metavar="PATH",
                       help="store every query with its response in this SQLite file (created if missing)")
    group.add_argument("--query-log-retention-days", type=float, default=0, metavar="DAYS",
                       help="drop stored queries older than this (packet time; default: keep)")
    group.add_argument("--query-log-max-mb", type=float, default=DEFAULT_MAX_MB, metavar="MB",
                       help="keep the store under this size, dropping the oldest queries (default %(default)s; "
                            "0: no limit)")
    group.add_argument("--query-log-segment-rows", type=int, default=SEGMENT_ROWS, metavar="N",
                       help="queries per store segment, the unit retention drops (default %(default)s)")
    group.add_argument("--publish-queries", action="store_true",
                       help="with --publish: also publish every logged query on topic dns.query")


def options_from(args: argparse.Namespace) -> QueryLogOptions | None:
    """The query log the options ask for, None without --query-log; StartupError for a bad value."""
    if args.publish_queries and not args.publish and not getattr(args, "kafka", None):
        raise StartupError("--publish-queries needs --publish or --kafka")
    if not args.query_log:
        if args.publish_queries:
            raise StartupError("--publish-queries needs --query-log")
        return None
    if args.query_log_retention_days < 0 or args.query_log_max_mb < 0:
        raise StartupError("--query-log-retention-days and --query-log-max-mb: must be 0 (no limit) or more")
    if args.query_log_segment_rows < 1:
        raise StartupError("--query-log-segment-rows: must be at least 1")
    retention = Retention(args.query_log_retention_days * 86400.0, int(args.query_log_max_mb * 1024 * 1024))
    return QueryLogOptions(args.query_log, retention, args.query_log_segment_rows, args.publish_queries)


def register(commands) -> None:
    """Add who-asked, hunt and resolved-ip to the `truesource` subcommands."""
    who = commands.add_parser("who-asked", help="the clients that asked for a name, from the query log")
    who.add_argument("name", metavar="NAME")
    who.add_argument("--subdomains", action="store_true", help="also every name below NAME")
    who.add_argument("--since", metavar="T", help="from this time (RFC 3339, or relative: -2h)")
    who.add_argument("--until", metavar="T", help="before this time")
    who.add_argument("--around", metavar="T", help="within --window of this time")
    who.add_argument("--window", metavar="D",
                     help=f"with --around: how far either side (default {DEFAULT_AROUND_WINDOW:.0f}s); with "
                          f"--resolver-query: the clock tolerance (default {DEFAULT_RESOLVER_TOLERANCE:.0f}s)")
    who.add_argument("--resolver-query", metavar="T",
                     help="the client queries that caused the resolver's upstream query for NAME at T")
    who.add_argument("--attribution-window", type=float, default=DEFAULT_WINDOW, metavar="SECONDS",
                     help="how far before the upstream query its clients are looked for (default %(default)s)")
    who.add_argument("--resolver", action="append", default=[], metavar="ADDR",
                     help="a resolver's addresses, comma separated (repeatable; resolvers are also learned)")
    add_reader_options(who)
    who.set_defaults(run=_runner("run_who_asked"))

    hunt = commands.add_parser("hunt", help="run a rule set over the stored queries (retrospective hits)")
    hunt.add_argument("--rules", action="append", required=True, metavar="PATH")
    hunt.add_argument("--rules-format", metavar="FORMAT")
    hunt.add_argument("--since", metavar="T", help="from this time (RFC 3339, or relative: -2h)")
    hunt.add_argument("--until", metavar="T", help="before this time")
    hunt.add_argument("--sensor-name", metavar="NAME", help="observer.name in events (default: host name)")
    hunt.add_argument("--query-log", metavar="PATH", help=f"the store (default: ${QUERY_LOG_ENV})")
    hunt.set_defaults(run=_runner("run_hunt"))

    resolved = commands.add_parser("resolved-ip", help="which names resolved to an address, and who asked them")
    resolved.add_argument("address", metavar="ADDR")
    add_reader_options(resolved)
    resolved.set_defaults(run=_runner("run_resolved_ip"))


def add_reader_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    parser.add_argument("--query-log", metavar="PATH", help=f"the store (default: ${QUERY_LOG_ENV})")


TIME_OPTIONS = ("--since", "--until", "--around", "--resolver-query")


def relative_time_argv(argv: list[str]) -> list[str]:
    """`--since -2h` as `--since=-2h`: argparse takes a value starting with '-' for an option of its own."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in TIME_OPTIONS and arg.startswith("-") and RELATIVE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _runner(name: str):
    """The command's function in sensor/querylog/commands.py, imported when the command runs (main() calls
    `args.run`, as for every command that registers itself)."""
    def run(args: argparse.Namespace) -> int:
        from sensor.querylog import commands

        return getattr(commands, name)(args)
    return run
