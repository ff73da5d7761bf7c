"""`truesource capture -i IFACE`: live capture (one process, or fanout workers) as a service: statistics,
control endpoint, reloads on SIGHUP, systemd readiness; the summary on standard error when it stops."""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from sensor.capture.live import DEFAULT_BUFFER_MB, DEFAULT_SNAPLEN
from sensor.commands.common import (
    add_common_options,
    flow_settings,
    loop_limits,
    parse_ports,
    query_log_options,
    rules_for_run,
)
from sensor.errors import StartupError
from sensor.options import above, at_least
from sensor.service import runtime
from sensor.stats import DEFAULT_STATS_INTERVAL

log = logging.getLogger("truesource")


def register(commands: Any) -> None:
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
    capture.set_defaults(run=run_capture)


def run_capture(args: argparse.Namespace) -> int:
    import functools

    from sensor.capture.live import CaptureOptions
    from sensor.capture.workers import CaptureJob, Stopper, run_single, run_workers
    from sensor.commands.sinks import attach_sinks, open_outputs
    from sensor.events import reload_event
    from sensor.loop import compile_rules
    from sensor.outputs.jsonlines import LateFile, check_writable
    from sensor.querylog import writer  # noqa: F401  before the privilege drop, as everything the run may need
    from sensor.rules.cache import preload_readers
    from sensor.rules.reload import RELOAD_TOPIC, ReloadResult, RulesReloader
    from sensor.runner import BatchRunner
    from sensor.service.runtime import Service
    from sensor.stats import STATS_TOPIC, StatsBoard
    from sensor.summary import Summary

    ports = parse_ports(args.ports)
    if args.summary_json:
        check_writable(args.summary_json, "--summary-json")
    if args.workers < 1:
        raise StartupError("--workers: must be at least 1")
    if args.snaplen < 64 or args.buffer_mb < 1:
        raise StartupError("--snaplen must be at least 64 and --buffer-mb at least 1")
    settings = flow_settings(args)
    options = CaptureOptions(args.interface, args.bpf, ports, args.snaplen, args.buffer_mb, not args.no_promisc,
                             all_ip=settings is not None)
    ruleset = rules_for_run(args)
    preload_readers()  # a reload after the privilege drop may not be able to read the Python library any more
    log.info("loaded %d rules from %d files", len(ruleset), len(ruleset.files))
    log_options = query_log_options(args)
    if log_options is not None and log_options.publish and args.workers > 1:
        raise StartupError("--publish-queries needs --workers 1 (workers send only hits to the publishing parent)")
    trace_file: LateFile | None = None
    outputs_to_open: list[Any] = []  # besides the outputs: files opened once the interface is
    control = None
    service = None
    board = StatsBoard(args.workers)
    stop = Stopper()
    stop.install()
    compiled = compile_rules(ruleset, keep_table=False)
    runner = BatchRunner(ports, compiled, limits=loop_limits(args))
    try:
        publisher = attach_sinks(runner, args, ruleset, blocking=False, flows=settings, flow_table=args.workers == 1)
        pipeline = runner.pipeline
        assert pipeline is not None
        if args.trace_messages:
            trace_file = LateFile(args.trace_messages, "--trace-messages")  # opened with the outputs
            outputs_to_open.append(trace_file)
            runner.trace = message_tracer(trace_file)
        job = CaptureJob(options, ports, compiled, ruleset, runner.trace, runner.limits,
                         heuristics=pipeline.heuristics is not None, flows=settings,
                         query_log=runner.query_log_writer.endpoint if runner.query_log_writer is not None else None)
        runner.emit_all = runner.emit_all or job.every_message
        board.rules_loaded = len(ruleset)
        board.sources.append(pipeline.state_counters)  # bounded tables behind the loop (docs/limits.md)
        started = time.monotonic()
        next_stats = started + args.stats_interval

        def snapshot() -> dict[str, Any]:
            return board.snapshot(*((publisher.sent, publisher.dropped) if publisher else (0, 0)))

        service = Service(args, snapshot, reparse=reparse_with(args))

        def publish_stats(final: bool = False) -> None:
            sent, dropped = (publisher.sent, publisher.dropped) if publisher else (0, 0)
            event = board.event(pipeline.encoder.observer, args.interface, sent, dropped, final)
            pipeline.publish(STATS_TOPIC, pipeline.encoder.encode(event))
            service.status(snapshot())

        if args.control:
            from sensor.outputs.control import ControlServer

            def request_reload(force: bool = False) -> dict[str, Any]:
                stop.reload_requested = True
                reloader.force = reloader.force or force
                return {"reload": "requested", **({"force": True} if force else {})}

            control = ControlServer(args.control, {
                "reload": request_reload,
                "reload --force": lambda: request_reload(force=True),
                "stats": lambda: {"total": dict(board.total())},
                "ping": lambda: {"pong": True},
            })

        def on_tick() -> None:
            nonlocal next_stats
            if control is not None:
                control.serve_pending()
            service.tick(stop.stopped)
            for output in runner.outputs:  # a log shipper sees lines within a tick
                if hasattr(output, "flush"):
                    output.flush()
            if stop.hangup:  # SIGHUP: --out files reopened (logrotate), the configuration again, then the rules
                stop.hangup = False
                for output in runner.outputs:
                    if hasattr(output, "reopen"):
                        output.reopen()
                if service.reload_config() is not None:
                    reloader.paths, reloader.rules_format = args.rules, args.rules_format
                stop.reload_requested = True
            now = time.monotonic()
            if args.duration and now - started >= args.duration:
                stop.stopped = True
            if now >= next_stats:
                next_stats = now + args.stats_interval
                publish_stats()

        # with workers: the reloader's paths and checks; the workers build themselves
        reloader = RulesReloader(args.rules, args.rules_format, functools.partial(compile_rules, keep_table=False),
                                 cache=args.rules_cache, allow_empty=args.allow_empty_rules, loaded=len(ruleset))

        def on_reload(result: ReloadResult) -> None:
            event = reload_event(result, pipeline.encoder.observer)
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
            open_outputs(runner.outputs + outputs_to_open)
            service.opened(args.interface)

        if args.workers == 1:
            run_single(job, runner, board, stop, on_tick, reloader, on_reload, on_open)
        else:
            run_workers(job, args.workers, runner, board, stop, on_tick, reloader, on_reload, on_open)
    except BaseException:
        try:
            runner.abort()
        finally:
            _close(trace_file, control, service)
        raise
    if args.workers > 1:
        runner.query_log_drops = board.total()["query_log_drops"]

    def summary(done: BatchRunner) -> Summary:
        seconds = time.monotonic() - started
        total = board.total()
        return Summary(capture_lines(total, seconds, board, done.outputs), args.summary_json,
                       {"counters": dict(sorted(total.items())), "seconds": round(seconds, 3),
                        "workers": [w.as_dict() for w in board.workers.values()]})

    try:
        return runner.finish(final=lambda: publish_stats(final=True), summary=summary)
    finally:
        _close(trace_file, control, service)


def reparse_with(args: argparse.Namespace) -> Any:
    """SIGHUP: the command line again with the configuration file as it is now, on a fresh parser."""
    from sensor import config

    def reparse(argv: list[str]) -> argparse.Namespace:
        return config.parse_args(args.build_parser(), argv)
    return reparse


def _close(trace_file: Any, control: Any, service: Any) -> None:
    if trace_file is not None:
        trace_file.close()
    if control is not None:
        control.close()
    if service is not None:
        service.close()


def message_tracer(handle: Any) -> Any:
    import socket

    def trace(worker: int, records: list[Any]) -> None:
        for r in records:
            family = socket.AF_INET if len(r.src_ip) == 4 else socket.AF_INET6
            handle.write(json.dumps({
                "worker": worker, "ts": f"{r.ts_sec}.{r.ts_usec:06d}", "src": socket.inet_ntop(family, r.src_ip),
                "dst": socket.inet_ntop(family, r.dst_ip), "transport": r.transport, "sport": r.src_port,
                "dport": r.dst_port, "id": r.dns_id, "response": r.is_response, "name": r.qname, "qtype": r.qtype,
                "rule": r.rule,
            }) + "\n")
    return trace


def capture_lines(total: Any, seconds: float, board: Any, outputs: Any) -> list[str]:
    from sensor.summary import counter_lines

    lines = counter_lines(total, seconds, f"captured for {seconds:.1f} s", outputs)
    lines.append(f"capture: {total['received']:,} received by the filter, {total['kernel_drops']:,} dropped by "
                 f"the kernel, {total['interface_drops']:,} dropped by the interface")
    if len(board.workers) > 1:
        for worker in board.workers.values():
            c = worker.counters
            lines.append(f"worker {worker.worker}: {c.get('packets', 0):,} packets, {c.get('dns_queries', 0):,} "
                         f"queries, {c.get('hits', 0):,} hits, {worker.kernel_drops:,} kernel drops")
    return lines
