"""The `truesource` command: parse options, load rules, call one function, map faults to exit codes.

Exit codes: 0 done; 2 nothing could start; 1 failed part-way (docs/cli.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from sensor import __version__
from sensor.errors import SensorError, StartupError
from sensor.records import FRAME_REASONS, MESSAGE_REASONS, TCP_EVENTS

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"  # loopback: the stream is not for the network unless asked
DEFAULT_PORTS = (53,)
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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    replay = commands.add_parser("replay", help="replay capture files through the sensor")
    replay.add_argument("files", nargs="+", metavar="FILE", help="pcap or pcapng files, in order; - is stdin")
    replay.add_argument("--rules", action="append", required=True, metavar="PATH",
                        help="rule file or directory (repeatable)")
    replay.add_argument("--out", action="append", metavar="PATH",
                        help="write hits as JSON lines (repeatable; - is stdout; the default without --publish)")
    replay.add_argument("--publish", nargs="?", const=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                        help=f"publish hits on a ZeroMQ endpoint (default {DEFAULT_ENDPOINT})")
    replay.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                        help="with --publish: wait for N subscribers before reading, then never drop")
    replay.add_argument("--wait-timeout", type=float, default=WAIT_SUBSCRIBERS_TIMEOUT, metavar="SECONDS",
                        help="how long --wait-subscribers waits (default %(default)s)")
    replay.add_argument("--ports", action="append", metavar="LIST",
                        help="DNS ports, comma separated (repeatable; default 53)")
    replay.add_argument("--sensor-name", metavar="NAME", help="observer.name in events (default: host name)")
    replay.add_argument("--summary-json", metavar="PATH", help="also write the summary as JSON")
    replay.add_argument("--no-progress", action="store_true", help="no progress line even on a terminal")

    tail = commands.add_parser("tail", help="subscribe to a sensor's events and print them as JSON lines")
    tail.add_argument("--connect", default=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                      help="publisher endpoint (default %(default)s)")
    tail.add_argument("--topic", action="append", metavar="PREFIX",
                      help="topic prefix to receive (repeatable; default all)")
    tail.add_argument("--count", type=int, default=0, metavar="N", help="exit after N events")
    tail.add_argument("--idle-exit", type=float, default=0, metavar="SECONDS",
                      help="exit when no event arrived for this long (0: never)")
    tail.add_argument("--with-topic", action="store_true", help="prefix each line with its topic and a space")
    return parser


def run_replay(args: argparse.Namespace) -> int:
    from sensor.events import HitEncoder, Observer
    from sensor.outputs.jsonlines import JsonLinesWriter
    from sensor.replay import replay, terminal_progress
    from sensor.rules.loader import load_rules

    ports = parse_ports(args.ports)
    if args.wait_subscribers and not args.publish:
        raise StartupError("--wait-subscribers needs --publish")
    ruleset = load_rules(args.rules)
    log.info("loaded %d rules from %d files", len(ruleset), len(ruleset.files))
    outputs = []
    try:
        out_paths = args.out or ([] if args.publish else ["-"])
        for path in out_paths:
            outputs.append(JsonLinesWriter(path))
        if args.publish:
            from sensor.outputs.publisher import Publisher

            publisher = Publisher(args.publish, blocking=True)
            outputs.append(publisher)
            if args.wait_subscribers:
                publisher.wait_for_subscribers(args.wait_subscribers, args.wait_timeout)
        encoder = HitEncoder(ruleset, Observer.local(args.sensor_name))
        progress = terminal_progress if sys.stderr.isatty() and not args.no_progress else None
        result = replay(args.files, ruleset, encoder, outputs, ports, progress)
    finally:
        for output in outputs:
            output.close()
    if progress is not None:
        sys.stderr.write("\n")
    print_summary(result, outputs)
    if args.summary_json:
        write_summary_json(args.summary_json, result)
    if result.cut_off is not None:
        log.error("%s", result.cut_off)
        return result.cut_off.exit_code
    return 0


def print_summary(result, outputs) -> None:
    c = result.counters
    rate = c["packets"] / result.seconds if result.seconds > 0 else 0.0
    lines = [
        f"{len(result.files)} file(s): {c['packets']:,} packets, {c['bytes']:,} bytes in {result.seconds:.3f} s "
        f"({rate:,.0f} packets/s)",
        f"DNS: {c['dns_queries']:,} queries, {c['dns_responses']:,} responses, {c['hits']:,} hits",
    ]
    for title, names in (("frames not decoded", FRAME_REASONS), ("DNS messages not read", MESSAGE_REASONS),
                         ("TCP", TCP_EVENTS + ("dns_extra_questions",))):
        parts = [f"{name} {c[name]:,}" for name in names if c[name]]
        if parts:
            lines.append(f"{title}: " + ", ".join(parts))
    for output in outputs:
        if hasattr(output, "dropped"):
            lines.append(f"publisher {output.endpoint}: {output.sent:,} sent, {output.dropped:,} dropped")
    for line in lines:
        print(line, file=sys.stderr)


def write_summary_json(path: str, result) -> None:
    summary = {"counters": dict(sorted(result.counters.items())), "files": result.files,
               "seconds": round(result.seconds, 6), "cut_off": str(result.cut_off) if result.cut_off else None}
    try:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=1)
            handle.write("\n")
    except OSError as err:
        raise SensorError(f"{path}: cannot write summary: {err.strerror}") from None


def run_tail(args: argparse.Namespace) -> int:
    from sensor.outputs.subscriber import tail

    return tail(args.connect, args.topic or [""], args.count, args.idle_exit, args.with_topic)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="truesource: %(message)s", stream=sys.stderr)
    try:
        if args.command == "replay":
            return run_replay(args)
        return run_tail(args)
    except SensorError as err:
        log.error("%s", err)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
