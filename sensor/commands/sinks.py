"""What replay and capture build from their options around the BatchRunner: the hit outputs and pipeline
(attribution, detectors, encoder), the flow sink and the query-log writer. Heavy modules load only when used."""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from sensor.commands.common import memory_budget, query_log_options
from sensor.errors import StartupError
from sensor.flows.settings import FlowSettings
from sensor.pipeline import HitPipeline
from sensor.rules.model import RuleSet
from sensor.runner import BatchRunner


def attach_sinks(runner: BatchRunner, args: argparse.Namespace, ruleset: RuleSet, blocking: bool,
                 flows: FlowSettings | None, flow_table: bool = True,
                 before_stores: Callable[[Any], None] | None = None) -> Any:
    """Outputs, pipeline, flow sink and query log as the options ask, attached to `runner` one by one (a
    failure part-way leaves what was opened to `runner.abort()`). Returns the ZeroMQ publisher, or None.
    `blocking`: replay waits for slow readers, capture never does. `flow_table`: False in a parent whose workers
    build the flows. `before_stores`: called with the publisher (or None) before the flow store and query log
    are created (--wait-subscribers, which may time out: a failed start changes no file)."""
    log_options = query_log_options(args)
    pipeline, publisher = build_pipeline(args, ruleset, runner.outputs, blocking)
    runner.attach(pipeline=pipeline)
    if before_stores is not None:
        before_stores(publisher)
    if flows is not None:
        runner.attach(flows=flow_sink(args, flows, pipeline, with_table=flow_table))
    if log_options is not None and blocking:  # a replay writes its query log itself (decision 0207)
        from sensor.querylog.events import publisher
        from sensor.querylog.inline import InlineQueryLog

        inline = InlineQueryLog(log_options, memory_budget(args).query_log,
                                publisher(pipeline) if log_options.publish else None)
        runner.attach(query_log=inline, query_log_writer=inline)
    elif log_options is not None:  # imported only when asked: zmq and multiprocessing are 30 ms of every start-up
        from sensor.querylog import writer as query_log

        writer, sink = query_log.start(log_options, pipeline, blocking=blocking,
                                        limits=memory_budget(args).query_log)
        runner.attach(query_log=sink, query_log_writer=writer)
    return publisher


def build_pipeline(args: argparse.Namespace, ruleset: RuleSet, outputs: list[Any],
                   blocking: bool) -> tuple[HitPipeline, Any]:
    """Outputs, attribution and encoder, as the options say; the outputs list is filled for closing."""
    from sensor.attribution import ResolverAttribution
    from sensor.events import HitEncoder, Observer
    from sensor.outputs.jsonlines import JsonLinesWriter

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
        # capture: never waits on a pipe, and appends (a restart keeps what a shipper has not read)
        outputs.append(JsonLinesWriter(path, blocking=blocking, append=not blocking))
    if args.publish:
        from sensor.outputs import check_endpoint
        from sensor.outputs.curve import server_from_args
        from sensor.outputs.publisher import Publisher

        check_endpoint(args.publish)  # before the CURVE check, whose message would call garbage "not loopback"
        if args.publish_hwm is not None and args.publish_hwm < 1:
            raise StartupError("--publish-hwm: must be at least 1")
        limits = {"hwm": args.publish_hwm or memory_budget(args).publish_hwm}
        security = server_from_args(args.publish, args.curve_secret_key, args.curve_allow, args.allow_plaintext)
        publisher = Publisher(args.publish, blocking=blocking, curve=security, **limits)
        outputs.append(publisher)
    from sensor.outputs.kafka import kafka_output

    budget = memory_budget(args)  # librdkafka's queue (1 GiB by default) takes the publisher's share at most
    kafka = kafka_output(args, budget.shares.get("publisher", 0) // (1024 * 1024))
    if kafka is not None:
        outputs.append(kafka)
    attribution = ResolverAttribution(args.resolver, args.attribution_window, not args.no_learn_resolvers)
    encoder = HitEncoder(ruleset, Observer.local(args.sensor_name))
    return HitPipeline(encoder, outputs, attribution, heuristic_engine(args)), publisher


def open_outputs(outputs: Sequence[Any]) -> None:
    """Open the --out files (and --trace-messages): only once every check of the run has passed (a failed
    start changes no file)."""
    for output in outputs:
        if hasattr(output, "open"):
            output.open()


def heuristic_engine(args: argparse.Namespace) -> Any:
    """None unless --heuristics or --heuristics-config asks for detectors."""
    if not args.heuristics and not args.heuristics_config and not getattr(args, "config_heuristics", None):
        return None
    import tomllib

    from sensor.heuristics import HeuristicEngine, HeuristicsConfig

    section: dict[str, Any] = dict(getattr(args, "config_heuristics", None) or {})  # [heuristics] of --config
    if args.heuristics_config:
        try:
            with open(args.heuristics_config, "rb") as handle:
                section = tomllib.load(handle).get("heuristics", {})
        except OSError as err:
            raise StartupError(f"{args.heuristics_config}: cannot read: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise StartupError(f"{args.heuristics_config}: not TOML: {err}") from None
    if args.heuristics:
        from sensor.heuristics.config import DETECTORS

        detectors = [d.strip() for d in args.heuristics.split(",") if d.strip()]
        for name in detectors:  # named by the option given, not the configuration key it maps to
            if name not in DETECTORS:
                raise StartupError(f"--heuristics: unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
        section = {**section, "detectors": detectors}
    return HeuristicEngine(HeuristicsConfig.from_mapping(section))


def flow_sink(args: argparse.Namespace, settings: FlowSettings, pipeline: HitPipeline,
              with_table: bool = True) -> Any:
    """The run's FlowSink: its table (unless workers build flows), store, IPFIX exporter and topic."""
    from sensor.flows.sink import FlowSink
    from sensor.loop import make_flow_table

    store = ipfix = None
    if args.flow_store:  # imported only when used: pyarrow alone takes ~0.3 s to import
        from sensor.flows.store import FlowStoreWriter

        store = FlowStoreWriter(args.flow_store, row_group=memory_budget(args).flow_store_row_group,
                                sensor=pipeline.encoder.observer.name)
    if args.ipfix:
        from sensor.flows.ipfix import IpfixExporter

        ipfix = IpfixExporter(args.ipfix)
    publish = pipeline.publish if args.publish or getattr(args, "kafka", None) else None  # ZeroMQ, Kafka
    table = make_flow_table(settings) if with_table else None
    sink = FlowSink(settings, table, store, ipfix, publish, pipeline.encoder.observer)
    sink.on_records = pipeline.encrypted_dns_hook(args.resolver)  # issue 13: DoT/DoH bypassing the resolvers
    return sink
