"""The `truesource` command: parse options, load rules, call one function, map faults to exit codes.

Exit codes: 0 done; 2 nothing could start; 1 failed part-way (docs/cli.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from sensor import __version__, config
from sensor.anomalies import add_decoding_options, decoding_limits
from sensor.attribution import DEFAULT_WINDOW
from sensor.capture.live import DEFAULT_BUFFER_MB, DEFAULT_SNAPLEN
from sensor.errors import SensorError, StartupError
from sensor.flows.commands import register as register_flow_commands
from sensor.flows.options import add_options as add_flow_options
from sensor.flows.profile_command import register as register_profile_command
from sensor.options import above, at_least
from sensor.outputs import DEFAULT_ENDPOINT
from sensor.outputs import commands as stream
from sensor.querylog.options import add_options as query_log_options
from sensor.querylog.options import options_from as query_log_options_from
from sensor.querylog.options import register as register_query_log_commands
from sensor.querylog.options import relative_time_argv
from sensor.records import FRAME_REASONS, MESSAGE_REASONS, TCP_EVENTS
from sensor.service import logs, runtime
from sensor.stats import DEFAULT_STATS_INTERVAL

DEFAULT_PORTS = (53,)
RULE_FORMATS = ("native", "hosts", "adblock", "zeek_intel", "rpz")
WAIT_SUBSCRIBERS_TIMEOUT = 10.0

log = logging.getLogger("truesource")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="truesource",
        description="Names the true client behind a recursive resolver's suspicious DNS queries.",
    )
    parser.add_argument("--version", action="version", version=f"truesource {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to standard error")
    logs.add_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    replay = commands.add_parser("replay", help="replay capture files through the sensor")
    replay.add_argument("files", nargs="+", metavar="FILE", help="pcap or pcapng files, in order; - is stdin")
    add_common_options(replay)
    replay.add_argument("--wait-subscribers", type=at_least(0), default=0, metavar="N",
                        help="with --publish: wait for N subscribers before reading, then never drop")
    replay.add_argument("--wait-timeout", type=above(0), default=WAIT_SUBSCRIBERS_TIMEOUT, metavar="SECONDS",
                        help="how long --wait-subscribers waits (default %(default)s)")
    replay.add_argument("--no-progress", action="store_true", help="no progress line even on a terminal")

    capture = commands.add_parser("capture", help="capture live on an interface (a SPAN/tap mirror port)")
    capture.add_argument("-i", "--interface", required=True, metavar="IFACE")
    add_common_options(capture)
    capture.add_argument("--bpf", metavar="EXPR",
                         help="capture filter (default: DNS ports, VLAN-tagged and tunnelled DNS included)")
    capture.add_argument("--workers", type=at_least(1), default=1, metavar="N",
                         help="capture processes in one AF_PACKET fanout group (default 1)")
    capture.add_argument("--snaplen", type=at_least(64), default=DEFAULT_SNAPLEN, metavar="N")
    capture.add_argument("--buffer-mb", type=at_least(1), default=DEFAULT_BUFFER_MB, metavar="N",
                         help="kernel capture buffer per worker in MiB (default %(default)s)")
    capture.add_argument("--no-promisc", action="store_true", help="do not put the interface in promiscuous mode")
    capture.add_argument("--stats-interval", type=above(0), default=DEFAULT_STATS_INTERVAL, metavar="SECONDS",
                         help="seconds between sensor.stats events (default %(default)s)")
    capture.add_argument("--duration", type=at_least(0, float), default=0, metavar="SECONDS",
                         help="stop after this long (default: until SIGINT/SIGTERM)")
    capture.add_argument("--control", metavar="ENDPOINT",
                         help="answer `truesource control` commands (reload, stats, ping) on this ZeroMQ endpoint")
    capture.add_argument("--trace-messages", metavar="PATH",
                         help="debug: write every decoded DNS message with its worker as JSON lines")
    runtime.add_options(capture)

    rules = commands.add_parser("rules", help="check, test and export rule files")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="SUBCOMMAND")
    check = rules_commands.add_parser("check", help="lint rule files: counts, duplicates, every error")
    check.add_argument("paths", nargs="+", metavar="PATH")
    check.add_argument("--rules-format", choices=RULE_FORMATS, metavar="FORMAT")
    test = rules_commands.add_parser("test", help="which rule decides for each name, and which others match")
    test.add_argument("names", nargs="+", metavar="NAME")
    test.add_argument("--rules", action="append", required=True, metavar="PATH")
    test.add_argument("--rules-format", choices=RULE_FORMATS, metavar="FORMAT")
    test.add_argument("--json", action="store_true", help="one JSON object a line")
    export = rules_commands.add_parser("export", help="write the rules as a resolver blocking policy")
    export.add_argument("--rules", action="append", required=True, metavar="PATH")
    export.add_argument("--rules-format", choices=RULE_FORMATS, metavar="FORMAT")
    export.add_argument("--format", required=True, choices=("rpz", "unbound", "hosts"), dest="export_format")
    export.add_argument("--out", default="-", metavar="PATH", help="default: standard output")
    export.add_argument("--zone", default="rpz.truesource.", metavar="ORIGIN", help="RPZ zone origin")
    export.add_argument("--strict", action="store_true",
                        help="exit 1 when a rule cannot be expressed fully in the format")

    control = commands.add_parser("control", help="send a command to a running sensor's --control endpoint")
    control.add_argument("control_command", choices=("reload", "stats", "ping"), metavar="COMMAND",
                         help="reload, stats or ping")
    control.add_argument("--connect", required=True, metavar="ENDPOINT")

    tail = commands.add_parser("tail", help="subscribe to a sensor's events and print them as JSON lines")
    tail.add_argument("--connect", default=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                      help="publisher endpoint (default %(default)s)")
    tail.add_argument("--topic", action="append", metavar="PREFIX",
                      help="topic prefix to receive (repeatable; default all)")
    tail.add_argument("--count", type=at_least(0), default=0, metavar="N", help="exit after N events")
    tail.add_argument("--idle-exit", type=at_least(0, float), default=0, metavar="SECONDS",
                      help="exit when no event arrived for this long (0: never)")
    tail.add_argument("--with-topic", action="store_true", help="prefix each line with its topic and a space")
    stream.add_client_options(tail, "CURVE: the publisher's public key file (a .key file)")
    stream.register_relay(commands)
    stream.register_keys(commands)
    config.register(commands)
    register_flow_commands(commands)
    register_profile_command(commands)
    register_query_log_commands(commands)
    config.add_config_option(parser)  # last: every command gets --config
    return parser


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
    stream.add_server_options(parser)
    add_flow_options(parser)
    query_log_options(parser)


def build_pipeline(args: argparse.Namespace, ruleset, outputs: list, blocking: bool):
    """Outputs, attribution and encoder, as the options say; the outputs list is filled for closing."""
    import ipaddress

    from sensor.attribution import ResolverAttribution
    from sensor.events import HitEncoder, Observer
    from sensor.outputs.jsonlines import JsonLinesWriter
    from sensor.pipeline import HitPipeline

    for item in args.resolver:
        for address in item.split(","):
            try:
                ipaddress.ip_address(address.strip())
            except ValueError:
                raise StartupError(f"--resolver: {address!r} is not an IP address") from None
    if args.attribution_window <= 0:
        raise StartupError("--attribution-window: must be more than 0 seconds")
    publisher = None
    for path in args.out or ([] if args.publish else ["-"]):
        outputs.append(JsonLinesWriter(path, blocking=blocking))  # capture: never waits on a pipe
    if args.publish:
        from sensor.outputs.curve import server_from_args
        from sensor.outputs.publisher import Publisher

        if args.publish_hwm is not None and args.publish_hwm < 1:
            raise StartupError("--publish-hwm: must be at least 1")
        limits = {"hwm": args.publish_hwm} if args.publish_hwm else {}
        security = server_from_args(args.publish, args.curve_secret_key, args.curve_allow, args.allow_plaintext)
        publisher = Publisher(args.publish, blocking=blocking, curve=security, **limits)
        outputs.append(publisher)
    attribution = ResolverAttribution(args.resolver, args.attribution_window, not args.no_learn_resolvers)
    encoder = HitEncoder(ruleset, Observer.local(args.sensor_name))
    return HitPipeline(encoder, outputs, attribution, heuristic_engine(args)), publisher


def heuristic_engine(args: argparse.Namespace):
    """None unless --heuristics or --heuristics-config asks for detectors."""
    if not args.heuristics and not args.heuristics_config and not getattr(args, "config_heuristics", None):
        return None
    import tomllib

    from sensor.heuristics import HeuristicEngine, HeuristicsConfig

    section: dict = dict(getattr(args, "config_heuristics", None) or {})  # [heuristics] of the --config file
    if args.heuristics_config:
        try:
            with open(args.heuristics_config, "rb") as handle:
                section = tomllib.load(handle).get("heuristics", {})
        except OSError as err:
            raise StartupError(f"{args.heuristics_config}: cannot read: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise StartupError(f"{args.heuristics_config}: not TOML: {err}") from None
    if args.heuristics:
        section = {**section, "detectors": [d.strip() for d in args.heuristics.split(",") if d.strip()]}
    return HeuristicEngine(HeuristicsConfig.from_mapping(section))


def loop_limits(args: argparse.Namespace) -> dict:
    """The decode loop's table limits the options set (docs/limits.md); the loop's defaults for the others."""
    limits = {}
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


def run_replay(args: argparse.Namespace) -> int:
    import time

    from sensor.flows.options import flow_settings, flow_sink
    from sensor.querylog import writer as query_log
    from sensor.replay import replay, terminal_progress
    from sensor.rules.loader import load_rules

    ports = parse_ports(args.ports)
    settings = flow_settings(args)
    if args.wait_subscribers and not args.publish:
        raise StartupError("--wait-subscribers needs --publish")
    loading = time.perf_counter()
    ruleset = load_rules(args.rules, args.rules_format)
    load_seconds = time.perf_counter() - loading
    log.info("loaded %d rules from %d files in %.2f s", len(ruleset), len(ruleset.files), load_seconds)
    outputs: list = []
    flows = None
    log_options = query_log_options_from(args)
    log_writer = log_sink = None
    try:
        pipeline, publisher = build_pipeline(args, ruleset, outputs, blocking=True)
        flows = flow_sink(args, settings, pipeline) if settings else None
        log_writer, log_sink = query_log.start(log_options, pipeline, blocking=True)
        if publisher is not None and args.wait_subscribers:
            publisher.wait_for_subscribers(args.wait_subscribers, args.wait_timeout)
        progress = terminal_progress if sys.stderr.isatty() and not args.no_progress else None
        result = replay(args.files, ruleset, pipeline, ports, progress, limits=loop_limits(args), flows=flows,
                        query_log=log_sink)
    finally:
        try:
            if flows is not None:
                flows.close()
            log_line = query_log.stop(log_writer, log_sink)
        finally:
            for output in outputs:
                output.close()
    if progress is not None:
        sys.stderr.write("\n")
    print_summary(result.counters, result.seconds, f"{len(result.files)} file(s)", outputs)
    if flows is not None:
        print(flows.summary(), file=sys.stderr)
    if log_line:
        print(log_line, file=sys.stderr)
    if args.summary_json:
        write_summary_json(args.summary_json, result, {"rules": len(ruleset), "load_seconds": round(load_seconds, 3)})
    if result.cut_off is not None:
        log.error("%s", result.cut_off)
        return result.cut_off.exit_code
    return 0


def print_summary(c, seconds: float, title: str, outputs) -> None:
    """The run's counters on standard error: what was seen, what was not decoded and why, the publisher."""
    rate = c["packets"] / seconds if seconds > 0 else 0.0
    lines = [
        f"{title}: {c['packets']:,} packets, {c['bytes']:,} bytes in {seconds:.3f} s ({rate:,.0f} packets/s)",
        f"DNS: {c['dns_queries']:,} queries, {c['dns_responses']:,} responses, {c['hits']:,} hits",
    ]
    for title, names in (("frames not decoded", FRAME_REASONS), ("DNS messages not read", MESSAGE_REASONS),
                         ("other", TCP_EVENTS + ("dns_extra_questions", "dns_bad_edns", "tunneled"))):
        parts = [f"{name} {c[name]:,}" for name in names if c[name]]
        if parts:
            lines.append(f"{title}: " + ", ".join(parts))
    for output in outputs:
        if hasattr(output, "dropped"):
            lines.append(f"publisher {output.endpoint}: {output.sent:,} sent, {output.dropped:,} dropped")
        if getattr(output, "lines_dropped", 0):
            lines.append(f"--out {output.path}: {output.lines:,} written, {output.lines_dropped:,} dropped "
                         "(the reader did not keep up)")
    for line in lines:
        print(line, file=sys.stderr)


def write_summary_json(path: str, result, rules: dict) -> None:
    summary = {"counters": dict(sorted(result.counters.items())), "files": result.files,
               "seconds": round(result.seconds, 6), "cut_off": str(result.cut_off) if result.cut_off else None,
               "rules": {**rules, "compile_seconds": round(result.compile_seconds, 3)},
               "decode_seconds": round(result.seconds - result.compile_seconds, 6)}
    write_json(path, summary)


def write_json(path: str, summary: dict) -> None:
    try:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=1)
            handle.write("\n")
    except OSError as err:
        raise SensorError(f"{path}: cannot write summary: {err.strerror}") from None


def run_capture(args: argparse.Namespace) -> int:
    import time

    from sensor.capture.live import CaptureOptions
    from sensor.capture.workers import CaptureJob, Stopper, run_single, run_workers
    from sensor.events import rfc3339
    from sensor.flows.options import flow_settings, flow_sink
    from sensor.loop import compile_rules
    from sensor.querylog import writer as query_log
    from sensor.rules.loader import load_rules
    from sensor.rules.reload import RELOAD_TOPIC, ReloadResult, RulesReloader
    from sensor.service.runtime import Service
    from sensor.stats import STATS_TOPIC, StatsBoard

    ports = parse_ports(args.ports)
    if args.workers < 1:
        raise StartupError("--workers: must be at least 1")
    if args.snaplen < 64 or args.buffer_mb < 1:
        raise StartupError("--snaplen must be at least 64 and --buffer-mb at least 1")
    settings = flow_settings(args)
    options = CaptureOptions(args.interface, args.bpf, ports, args.snaplen, args.buffer_mb, not args.no_promisc,
                             all_ip=settings is not None)
    ruleset = load_rules(args.rules, args.rules_format)
    log.info("loaded %d rules from %d files", len(ruleset), len(ruleset.files))
    outputs: list = []
    trace_file = None
    control = None
    service = None
    flows = None
    log_options = query_log_options_from(args)
    if log_options is not None and log_options.publish and args.workers > 1:
        raise StartupError("--publish-queries needs --workers 1 (workers send only hits to the publishing parent)")
    log_writer = log_sink = board = None
    stop = Stopper()
    stop.install()
    try:
        pipeline, publisher = build_pipeline(args, ruleset, outputs, blocking=False)
        log_writer, log_sink = query_log.start(log_options, pipeline, blocking=False)
        trace = None
        if args.trace_messages:
            trace_file = open(args.trace_messages, "w", encoding="ascii")
            trace = _message_tracer(trace_file)
        flows = flow_sink(args, settings, pipeline, with_table=args.workers == 1) if settings else None
        job = CaptureJob(options, ports, compile_rules(ruleset, keep_table=False), ruleset, trace, loop_limits(args),
                         heuristics=pipeline.heuristics is not None, flows=settings,
                         query_log=log_writer.endpoint if log_writer is not None else None)
        board = StatsBoard(args.workers)
        board.rules_loaded = len(ruleset)
        board.sources.append(pipeline.state_counters)  # bounded tables behind the loop (docs/limits.md)
        started = time.monotonic()
        next_stats = started + args.stats_interval

        def snapshot() -> dict:
            return board.snapshot(*((publisher.sent, publisher.dropped) if publisher else (0, 0)))

        service = Service(args, snapshot)

        def publish_stats(final: bool = False) -> None:
            sent, dropped = (publisher.sent, publisher.dropped) if publisher else (0, 0)
            event = board.event(pipeline.encoder.observer, args.interface, sent, dropped, final)
            pipeline.publish(STATS_TOPIC, pipeline.encoder.encode(event))
            service.status(snapshot())

        if args.control:
            from sensor.outputs.control import ControlServer

            def request_reload() -> dict:
                stop.reload_requested = True
                return {"reload": "requested"}

            control = ControlServer(args.control, {
                "reload": request_reload,
                "stats": lambda: {"total": dict(board.total())},
                "ping": lambda: {"pong": True},
            })

        def on_tick() -> None:
            nonlocal next_stats
            if control is not None:
                control.serve_pending()
            service.tick(stop.stopped)
            if stop.hangup:  # SIGHUP: the configuration again (its live keys), then the rules
                stop.hangup = False
                if service.reload_config() is not None:
                    reloader.paths, reloader.rules_format = args.rules, args.rules_format
                stop.reload_requested = True
            now = time.monotonic()
            if args.duration and now - started >= args.duration:
                stop.stopped = True
            if now >= next_stats:
                next_stats = now + args.stats_interval
                publish_stats()

        reloader = RulesReloader(args.rules, args.rules_format)  # with workers: its paths; they build themselves

        def on_reload(result: ReloadResult) -> None:
            event = {"@timestamp": rfc3339(*divmod(time.time_ns() // 1000, 1_000_000)),
                     "event": {"kind": "event", "dataset": "truesource.reload", "module": "truesource",
                               "outcome": "success" if result.ok else "failure"},
                     "observer": pipeline.encoder.observer, "truesource": {"reload": result.summary()}}
            pipeline.publish(RELOAD_TOPIC, pipeline.encoder.encode(event))
            if result.ok:
                board.reloads += 1
                board.rules_loaded = (result.counts or {}).get("rules", board.rules_loaded)
            else:
                board.reload_failures += 1
            log.info("reload %s", "done" if result.ok else "failed", extra={"fields": {
                "event": "reload", "outcome": "success" if result.ok else "failure", "generation": result.generation,
                "rules": board.rules_loaded}})
            service.reloaded()

        def on_open() -> None:
            service.opened(args.interface)

        if args.workers == 1:
            run_single(job, pipeline, board, stop, on_tick, reloader, on_reload, on_open, flows, log_sink)
            code = 0
        else:
            code = run_workers(job, args.workers, pipeline, board, stop, on_tick, reloader, on_reload, on_open,
                               flows)
        if flows is not None:
            flows.finish()
        publish_stats(final=True)
        seconds = time.monotonic() - started
    finally:
        worker_drops = board.total()["query_log_drops"] if board is not None and args.workers > 1 else 0
        try:
            if flows is not None:
                flows.close()
            log_line = query_log.stop(log_writer, log_sink, worker_drops)
        finally:
            for output in outputs:
                output.close()
        if trace_file is not None:
            trace_file.close()
        if control is not None:
            control.close()
        if service is not None:
            service.close()
    total = board.total()
    print_capture_summary(total, seconds, board, outputs)
    if flows is not None:
        print(flows.summary(), file=sys.stderr)
    if log_line:
        print(log_line, file=sys.stderr)
    if args.summary_json:
        summary = {"counters": dict(sorted(total.items())), "seconds": round(seconds, 3),
                   "workers": [w.as_dict() for w in board.workers.values()]}
        write_json(args.summary_json, summary)
    return code


def _message_tracer(handle):
    import socket

    def trace(worker: int, records: list) -> None:
        for r in records:
            family = socket.AF_INET if len(r[4]) == 4 else socket.AF_INET6
            handle.write(json.dumps({
                "worker": worker, "ts": f"{r[1]}.{r[2]:06d}", "src": socket.inet_ntop(family, r[4]),
                "dst": socket.inet_ntop(family, r[5]), "transport": r[6], "sport": r[7], "dport": r[8],
                "id": r[9], "response": bool(r[10] & 0x8000), "name": r[12], "qtype": r[13], "rule": r[15],
            }) + "\n")
    return trace


def print_capture_summary(total, seconds: float, board, outputs) -> None:
    print_summary(total, seconds, f"captured for {seconds:.1f} s", outputs)
    print(f"capture: {total['received']:,} received by the filter, {total['kernel_drops']:,} dropped by the "
          f"kernel, {total['interface_drops']:,} dropped by the interface", file=sys.stderr)
    if len(board.workers) > 1:
        for worker in board.workers.values():
            c = worker.counters
            print(f"worker {worker.worker}: {c.get('packets', 0):,} packets, {c.get('dns_queries', 0):,} queries, "
                  f"{c.get('hits', 0):,} hits, {worker.kernel_drops:,} kernel drops", file=sys.stderr)


def run_rules(args: argparse.Namespace) -> int:
    from sensor.rules.loader import load_rules

    if args.rules_command == "check":
        from sensor.rules.check import run_check

        return run_check(args.paths, args.rules_format, sys.stdout)
    ruleset = load_rules(args.rules, args.rules_format)
    if args.rules_command == "test":
        from sensor.rules.explain import run_test

        return run_test(ruleset, args.names, sys.stdout, args.json)
    from sensor.rules.export import run_export

    if args.out == "-":
        return run_export(ruleset, args.export_format, sys.stdout, sys.stderr, zone=args.zone, strict=args.strict)
    try:
        with open(args.out, "w", encoding="utf-8") as handle:
            return run_export(ruleset, args.export_format, handle, sys.stderr, zone=args.zone, strict=args.strict)
    except OSError as err:
        raise StartupError(f"{args.out}: cannot write: {err.strerror}") from None


def run_tail(args: argparse.Namespace) -> int:
    from sensor.outputs.subscriber import tail

    keys = args.curve_server_key or []
    if len(keys) > 1:
        raise StartupError("--curve-server-key: tail connects to one publisher; give one key")
    return tail(args.connect, args.topic or [""], args.count, args.idle_exit, args.with_topic,
                keys[0] if keys else None, args.curve_client_key)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = config.parse_args(parser, relative_time_argv(sys.argv[1:] if argv is None else list(argv)))
    except SensorError as err:  # the configuration file: before logging is set up
        print(f"truesource: {err}", file=sys.stderr)
        return err.exit_code
    args.argv = list(sys.argv[1:] if argv is None else argv)  # read again with the file on SIGHUP
    quiet = logging.INFO if args.command in ("capture", "relay") else logging.WARNING  # a service says it starts
    logs.setup(logging.DEBUG if args.verbose else quiet, args.log_format)
    try:
        if hasattr(args, "run"):
            return args.run(args)
        if args.command == "replay":
            return run_replay(args)
        if args.command == "capture":
            return run_capture(args)
        if args.command == "rules":
            return run_rules(args)
        if args.command == "config":
            return config.run_config(args, parser)
        if args.command == "relay":
            from sensor.outputs.relay import run_relay

            return run_relay(args)
        if args.command == "keys":
            from sensor.outputs.curve import run_keys

            return run_keys(args)
        if args.command == "control":
            from sensor.outputs.control import send_command

            print(json.dumps(send_command(args.connect, args.control_command)))
            return 0
        return run_tail(args)
    except SensorError as err:
        log.error("%s", err)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # a fault after start: one line (the traceback with -v), exit 1
        log.error("internal error: %s: %s", type(err).__name__, err, exc_info=args.verbose)
        return 1
