"""The flow options of `replay` and `capture`, and the FlowSink they describe."""

from __future__ import annotations

import argparse
import ipaddress

from sensor.errors import StartupError
from sensor.flows.settings import ACTIVE_TIMEOUT, IDLE_TIMEOUT, MAX_FLOWS, FlowSettings


def add_options(parser: argparse.ArgumentParser) -> None:
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
        return FlowSettings(args.flow_idle_timeout, args.flow_active_timeout, args.max_flows, tuple(args.internal))
    except ValueError as err:
        raise StartupError(f"--flow-idle-timeout/--flow-active-timeout/--max-flows: {err}") from None


def flow_sink(args: argparse.Namespace, settings: FlowSettings, pipeline, with_table: bool = True):
    """The run's FlowSink: its table (unless workers build flows), store, IPFIX exporter and topic."""
    from sensor.flows.build import make_flow_table
    from sensor.flows.sink import FlowSink

    store = ipfix = None
    if args.flow_store:  # imported only when used: pyarrow alone takes ~0.3 s to import
        from sensor.flows.store import FlowStoreWriter

        store = FlowStoreWriter(args.flow_store)
    if args.ipfix:
        from sensor.flows.ipfix import IpfixExporter

        ipfix = IpfixExporter(args.ipfix)
    publish = pipeline.publish if args.publish else None
    table = make_flow_table(settings) if with_table else None
    sink = FlowSink(settings, table, store, ipfix, publish, pipeline.encoder.observer)
    sink.on_records = pipeline.encrypted_dns_hook(args.resolver)  # issue 13: DoT/DoH bypassing the resolvers
    return sink
