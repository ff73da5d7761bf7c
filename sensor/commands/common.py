"""The options of the commands that run the loop (replay, capture) and what they build: rules, ports, hit
outputs and pipeline, flow and query-log settings, and the BatchRunner that owns them."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from collections.abc import Sequence
from typing import Any

from sensor import budget
from sensor.anomalies import add_decoding_options, decoding_limits
from sensor.attribution import DEFAULT_WINDOW
from sensor.commands import stream
from sensor.errors import StartupError
from sensor.flows.settings import ACTIVE_TIMEOUT, IDLE_TIMEOUT, MAX_FLOWS, FlowSettings
from sensor.options import above
from sensor.outputs import DEFAULT_ENDPOINT
from sensor.querylog.options import DEFAULT_MAX_MB, SEGMENT_ROWS, QueryLogOptions, Retention
from sensor.rules import commands as rules_options

DEFAULT_PORTS = (53,)
RULE_FORMATS = ("native", "hosts", "adblock", "zeek_intel", "rpz")

log = logging.getLogger("truesource")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every command that runs the loop takes: rules, outputs, ports, attribution."""
    parser.add_argument("--rules", action="append", required=True, metavar="PATH",
                        help="rule file or directory (repeatable)")
    parser.add_argument("--rules-format", choices=RULE_FORMATS, metavar="FORMAT",
                        help=f"read every rule file as this format ({', '.join(RULE_FORMATS)}; default: detected)")
    parser.add_argument("--out", action="append", metavar="PATH",
                        help="write hits as JSON lines (repeatable; - is stdout; the default without --publish)")
    parser.add_argument("--publish", nargs="?", const=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                        help=f"publish events on a ZeroMQ endpoint (default {DEFAULT_ENDPOINT})")
    parser.add_argument("--publish-hwm", type=int, metavar="N",
                        help="events queued per subscriber before the publisher drops (capture) or waits (replay); "
                             "default 100000")
    # Defaults live with the table (sensor/decode/tcpstream.py), not imported here: the run path never loads the
    # reference decoder.
    parser.add_argument("--max-tcp-streams", type=int, metavar="N",
                        help="DNS-over-TCP stream directions tracked at once; the least recently used goes first "
                             "(default 4096, docs/limits.md)")
    parser.add_argument("--tcp-idle-timeout", type=float, metavar="SECONDS",
                        help="packet time after which a silent TCP stream is dropped (default 30)")
    parser.add_argument("--memory-budget", type=float, default=budget.DEFAULT_BUDGET_MB, metavar="MB",
                        help="memory every table and buffer that traffic can fill may take together, split over "
                             "them and over --workers (default %(default)s; 0: each table at its own limit; "
                             "docs/limits.md)")
    parser.add_argument("--ports", action="append", metavar="LIST",
                        help="DNS ports, comma separated (repeatable; default 53)")
    add_decoding_options(parser)  # --checksums, --mirror-source (sensor/anomalies.py)
    parser.add_argument("--sensor-name", metavar="NAME", help="observer.name in events (default: host name)")
    parser.add_argument("--summary-json", metavar="PATH", help="also write the summary as JSON")
    parser.add_argument("--resolver", action="append", default=[], metavar="ADDR",
                        help="a recursive resolver whose upstream queries are linked to clients: its address, or "
                             "its addresses comma separated (repeatable; resolvers are also learned)")
    parser.add_argument("--attribution-window", type=above(0), default=DEFAULT_WINDOW, metavar="SECONDS",
                        help="how far back a resolver's upstream query looks for its clients (default %(default)s)")
    parser.add_argument("--no-learn-resolvers", action="store_true",
                        help="only the --resolver addresses are resolvers")
    parser.add_argument("--heuristics", metavar="LIST",
                        help="heuristic detectors to run on every query: dga,tunnel (default: none; each costs a "
                             "Python object per DNS message)")
    parser.add_argument("--heuristics-config", metavar="PATH",
                        help="TOML file whose [heuristics] table tunes the detectors (docs/heuristics.md)")
    rules_options.add_options(parser)
    stream.add_server_options(parser)
    from sensor.outputs.kafka import add_kafka_options

    add_kafka_options(parser)
    add_flow_options(parser)
    add_query_log_options(parser)


def add_flow_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("flows (docs/flows.md)")
    group.add_argument("--flows", action="store_true",
                       help="build flow records from every IP packet (implied by --flow-store and --ipfix); "
                            "with --publish they go out on topic `flow`")
    group.add_argument("--flow-store", metavar="DIR", help="write flow records to Parquet files in DIR")
    group.add_argument("--ipfix", metavar="HOST:PORT", help="export flow records over IPFIX/UDP (port default 4739)")
    group.add_argument("--flow-idle-timeout", type=float, default=IDLE_TIMEOUT, metavar="SECONDS",
                       help="a flow without packets for this long ends (default %(default)s)")
    group.add_argument("--flow-active-timeout", type=float, default=ACTIVE_TIMEOUT, metavar="SECONDS",
                       help="a flow this long after its first packet is reported and restarted (default %(default)s)")
    group.add_argument("--max-flows", type=int, default=MAX_FLOWS, metavar="N",
                       help="flows held at once; a new one beyond evicts the least recent (default %(default)s)")
    group.add_argument("--internal", action="append", default=[], metavar="CIDR",
                       help="an internal network, for flow direction (repeatable)")


def add_query_log_options(parser: argparse.ArgumentParser) -> None:
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


# --- from options to settings -------------------------------------------------------------------------------

def rules_for_run(args: argparse.Namespace) -> Any:
    """The rules as a run uses them: compiled and cached (sensor/rules/cache.py); a RuleSet or the mapped file."""
    import sensor.loop  # noqa: F401  the selector: the compiled SuffixSet writes a cached file's table (fast)
    from sensor import suffixes
    from sensor.rules.cache import cache_directory, load_rule_set

    suffixes.keep_parsed_in(cache_directory(args.rules_cache))  # the Public Suffix List's sets (decision 0208)
    return load_rule_set(args.rules, args.rules_format, args.rules_cache, args.allow_empty_rules)


def parse_ports(values: Sequence[str] | None) -> tuple[int, ...]:
    """`--ports 53,5353 --ports 5355` to a sorted tuple; StartupError names the bad item."""
    if not values:
        return DEFAULT_PORTS
    ports: set[int] = set()
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item.isdigit() or not 0 < int(item) < 65536:
                raise StartupError(f"--ports: {item!r} is not a port number (1-65535)")
            ports.add(int(item))
    return tuple(sorted(ports))


def memory_budget(args: argparse.Namespace) -> budget.Budget:
    """The limits --memory-budget gives each table (sensor/budget.py), split over --workers."""
    try:
        return budget.split(args.memory_budget, getattr(args, "workers", 1) or 1)
    except ValueError as err:
        raise StartupError(f"--memory-budget: {err}") from None


def loop_limits(args: argparse.Namespace) -> dict[str, Any]:
    """The decode loop's table limits: --memory-budget's, then the options set (docs/limits.md)."""
    budget = memory_budget(args)
    log.debug("%s", budget.describe())  # with -v: what each table got of --memory-budget
    limits: dict[str, Any] = budget.loop_limits()
    if args.max_tcp_streams is not None:
        if args.max_tcp_streams < 1:
            raise StartupError("--max-tcp-streams: must be at least 1")
        limits["max_tcp_streams"] = args.max_tcp_streams
    if args.tcp_idle_timeout is not None:
        if args.tcp_idle_timeout <= 0:
            raise StartupError("--tcp-idle-timeout: must be more than 0 seconds")
        limits["tcp_idle_timeout"] = args.tcp_idle_timeout
    limits.update(decoding_limits(args))
    return limits


def flow_settings(args: argparse.Namespace) -> FlowSettings | None:
    """None unless flows are asked for; StartupError names the bad option."""
    for cidr in args.internal:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise StartupError(f"--internal: {cidr!r} is not a network (CIDR such as 10.0.0.0/8)") from None
    if not (args.flows or args.flow_store or args.ipfix):
        return None
    try:
        # --max-flows given explicitly wins; left at its default, the budget may lower it.
        max_flows = args.max_flows if args.max_flows != MAX_FLOWS else memory_budget(args).max_flows
        return FlowSettings(args.flow_idle_timeout, args.flow_active_timeout, max_flows, tuple(args.internal))
    except ValueError as err:
        raise StartupError(f"--flow-idle-timeout/--flow-active-timeout/--max-flows: {err}") from None


def query_log_options(args: argparse.Namespace) -> QueryLogOptions | None:
    """The query log the options ask for, None without --query-log; StartupError for a bad value."""
    if args.publish_queries and not args.publish and not getattr(args, "kafka", None):
        raise StartupError("--publish-queries needs --publish or --kafka")
    if not args.query_log:
        if args.publish_queries:
            raise StartupError("--publish-queries needs --query-log")
        return None
    if os.path.isdir(args.query_log):  # sqlite would say only "unable to open database file"
        from sensor.querylog.options import directory_message

        raise StartupError(directory_message(args.query_log))
    if args.query_log_retention_days < 0 or args.query_log_max_mb < 0:
        raise StartupError("--query-log-retention-days and --query-log-max-mb: must be 0 (no limit) or more")
    if args.query_log_segment_rows < 1:
        raise StartupError("--query-log-segment-rows: must be at least 1")
    retention = Retention(args.query_log_retention_days * 86400.0, int(args.query_log_max_mb * 1024 * 1024))
    return QueryLogOptions(args.query_log, retention, args.query_log_segment_rows, args.publish_queries)
