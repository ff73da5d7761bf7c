"""The event stream's commands (`tail`, `relay`, `keys`, `control`) and its CURVE options, apart from the modules
that do the work (sensor/outputs/), so that parsing the command line does not import ZeroMQ."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sensor.errors import StartupError
from sensor.options import at_least
from sensor.outputs import DEFAULT_ENDPOINT
from sensor.rules import commands as rules_options


def register(commands: Any) -> None:
    """`control` and `tail` (in the order `truesource --help` lists them), then `relay` and `keys`."""
    control = commands.add_parser("control", help="send a command to a running sensor's --control endpoint")
    control.add_argument("control_command", choices=("reload", "stats", "ping"), metavar="COMMAND",
                         help="reload, stats or ping")
    control.add_argument("--connect", required=True, metavar="ENDPOINT")
    rules_options.add_control_options(control)
    control.set_defaults(run=run_control)

    tail = commands.add_parser("tail", help="subscribe to a sensor's events and print them as JSON lines")
    tail.add_argument("--connect", default=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                      help="publisher endpoint (default %(default)s)")
    tail.add_argument("--topic", action="append", metavar="PREFIX",
                      help="topic prefix to receive (repeatable; default all)")
    tail.add_argument("--count", type=at_least(0), default=0, metavar="N", help="exit after N events")
    tail.add_argument("--idle-exit", type=at_least(0, float), default=0, metavar="SECONDS",
                      help="exit when no event arrived for this long (0: never)")
    tail.add_argument("--with-topic", action="store_true", help="prefix each line with its topic and a space")
    add_client_options(tail, "CURVE: the publisher's public key file (a .key file)")
    tail.set_defaults(run=run_tail)
    register_relay(commands)
    register_keys(commands)


def run_control(args: argparse.Namespace) -> int:
    from sensor.outputs.control import send_command

    command = args.control_command + (" --force" if getattr(args, "force", False) else "")
    print(json.dumps(send_command(args.connect, command)))
    return 0


def run_tail(args: argparse.Namespace) -> int:
    from sensor.outputs import check_endpoint
    from sensor.outputs.subscriber import tail

    check_endpoint(args.connect, "--connect")
    keys = args.curve_server_key or []
    if len(keys) > 1:
        raise StartupError("--curve-server-key: tail connects to one publisher; give one key")
    return tail(args.connect, args.topic or [""], args.count, args.idle_exit, args.with_topic,
                keys[0] if keys else None, args.curve_client_key)


def run_relay(args: argparse.Namespace) -> int:
    from sensor.outputs.relay import run_relay as relay

    return relay(args)


def run_keys(args: argparse.Namespace) -> int:
    from sensor.outputs.curve import run_keys as keys

    return keys(args)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """For a command that binds an event endpoint (replay, capture, relay)."""
    parser.add_argument("--curve-secret-key", metavar="PATH",
                        help="CURVE: this endpoint's key pair (a .key_secret file from `truesource keys generate`)")
    parser.add_argument("--curve-allow", metavar="DIR",
                        help="CURVE: directory of subscriber public keys (.key files) allowed to subscribe")
    parser.add_argument("--allow-plaintext", action="store_true",
                        help="allow binding a non-loopback endpoint without CURVE (logged as a warning)")


def add_client_options(parser: argparse.ArgumentParser, server_help: str) -> None:
    """For a command that connects to an event endpoint (tail, relay)."""
    parser.add_argument("--curve-server-key", action="append", metavar="PATH", help=server_help)
    parser.add_argument("--curve-client-key", metavar="PATH",
                        help="CURVE: this subscriber's key pair (a .key_secret file); its public key must be in "
                             "the server's allowlist")


def register_keys(commands: Any) -> None:
    keys = commands.add_parser("keys", help="CURVE key pairs for the event stream")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    gen = sub.add_parser("generate", help="write a key pair: DIR/NAME.key (public) and DIR/NAME.key_secret")
    gen.add_argument("directory", metavar="DIR")
    gen.add_argument("--name", default="sensor", metavar="NAME", help="file name stem (default %(default)s)")
    keys.set_defaults(run=run_keys)


def register_relay(commands: Any) -> None:
    relay = commands.add_parser("relay", help="gather several sensors' event streams into one endpoint")
    relay.add_argument("--bind", required=True, metavar="ENDPOINT", help="where subscribers (the SIEM) connect")
    relay.add_argument("--connect", action="append", required=True, metavar="ENDPOINT",
                       help="a sensor's --publish endpoint (repeatable)")
    add_server_options(relay)
    add_client_options(relay, "CURVE: the sensors' public key file; one for all, or one per --connect in order")
    relay.set_defaults(run=run_relay)
