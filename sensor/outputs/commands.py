"""The event stream's options and commands on the command line (CURVE, `keys`, `relay`), apart from the modules
that do the work, so that parsing the command line does not import ZeroMQ."""

from __future__ import annotations


def add_server_options(parser) -> None:
    """For a command that binds an event endpoint (replay, capture, relay)."""
    parser.add_argument("--curve-secret-key", metavar="PATH",
                        help="CURVE: this endpoint's key pair (a .key_secret file from `truesource keys generate`)")
    parser.add_argument("--curve-allow", metavar="DIR",
                        help="CURVE: directory of subscriber public keys (.key files) allowed to subscribe")
    parser.add_argument("--allow-plaintext", action="store_true",
                        help="allow binding a non-loopback endpoint without CURVE (logged as a warning)")


def add_client_options(parser, server_help: str) -> None:
    """For a command that connects to an event endpoint (tail, relay)."""
    parser.add_argument("--curve-server-key", action="append", metavar="PATH", help=server_help)
    parser.add_argument("--curve-client-key", metavar="PATH",
                        help="CURVE: this subscriber's key pair (a .key_secret file); its public key must be in "
                             "the server's allowlist")


def register_keys(commands) -> None:
    keys = commands.add_parser("keys", help="CURVE key pairs for the event stream")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    gen = sub.add_parser("generate", help="write a key pair: DIR/NAME.key (public) and DIR/NAME.key_secret")
    gen.add_argument("directory", metavar="DIR")
    gen.add_argument("--name", default="sensor", metavar="NAME", help="file name stem (default %(default)s)")


def register_relay(commands) -> None:
    relay = commands.add_parser("relay", help="gather several sensors' event streams into one endpoint")
    relay.add_argument("--bind", required=True, metavar="ENDPOINT", help="where subscribers (the SIEM) connect")
    relay.add_argument("--connect", action="append", required=True, metavar="ENDPOINT",
                       help="a sensor's --publish endpoint (repeatable)")
    add_server_options(relay)
    add_client_options(relay, "CURVE: the sensors' public key file; one for all, or one per --connect in order")
