"""`truesource who-asked`, `hunt`, `resolved-ip` and `querylog export`: questions to the query log.
Registering them is light; the store and the searches (sensor/querylog/lookup.py) load when a command runs.

`who-asked` has a short way in (`quick_who_asked`, called by sensor/entry.py): an analyst's lookup over 10 M
stored queries takes a few ms in the store, and the whole command line's imports took most of its ~250 ms
(decision 0180)."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from sensor.querylog.options import (
    DEFAULT_AROUND_WINDOW,
    DEFAULT_RESOLVER_TOLERANCE,
    QUERY_LOG_ENV,
    RELATIVE,
)
from sensor.querylog.options import (
    DEFAULT_ATTRIBUTION_WINDOW as DEFAULT_WINDOW,
)

TIME_OPTIONS = ("--since", "--until", "--around", "--resolver-query")


def register(commands: Any) -> None:
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
    who.set_defaults(run=run_who_asked)

    hunt = commands.add_parser("hunt", help="run a rule set over the stored queries (retrospective hits)")
    hunt.add_argument("--rules", action="append", required=True, metavar="PATH")
    hunt.add_argument("--rules-format", metavar="FORMAT")
    hunt.add_argument("--since", metavar="T", help="from this time (RFC 3339, or relative: -2h)")
    hunt.add_argument("--until", metavar="T", help="before this time")
    hunt.add_argument("--sensor-name", metavar="NAME", help="observer.name in events (default: host name)")
    hunt.add_argument("--query-log", metavar="PATH", help=f"the store (default: ${QUERY_LOG_ENV})")
    hunt.set_defaults(run=run_hunt)

    querylog = commands.add_parser("querylog", help="the query log as a whole: export it for other engines")
    actions = querylog.add_subparsers(dest="querylog_action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write the stored queries as Parquet partitioned by date and sensor")
    export.add_argument("out", metavar="OUT", help="the export directory (OUT/date=.../sensor=.../*.parquet)")
    export.add_argument("--since", metavar="T", help="from this time (RFC 3339, or relative: -2h)")
    export.add_argument("--until", metavar="T", help="before this time")
    export.add_argument("--sensor-name", metavar="NAME", help="the sensor= partition (default: host name)")
    export.add_argument("--query-log", metavar="PATH", help=f"the store (default: ${QUERY_LOG_ENV})")
    export.set_defaults(run=run_export)

    resolved = commands.add_parser("resolved-ip", help="which names resolved to an address, and who asked them")
    resolved.add_argument("address", metavar="ADDR")
    add_reader_options(resolved)
    resolved.set_defaults(run=run_resolved_ip)


def add_reader_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    parser.add_argument("--query-log", metavar="PATH", help=f"the store (default: ${QUERY_LOG_ENV})")


def relative_time_argv(argv: list[str]) -> list[str]:
    """`--since -2h` as `--since=-2h`: argparse takes a value starting with '-' for an option of its own."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in TIME_OPTIONS and arg.startswith("-") and RELATIVE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def run_who_asked(args: argparse.Namespace) -> int:
    from sensor.querylog import lookup

    return lookup.run_who_asked(args)


def run_hunt(args: argparse.Namespace) -> int:
    from sensor.querylog import lookup

    return lookup.run_hunt(args)


def run_resolved_ip(args: argparse.Namespace) -> int:
    from sensor.querylog import lookup

    return lookup.run_resolved_ip(args)


def run_export(args: argparse.Namespace) -> int:
    from sensor.querylog import export

    return export.run_export(args)


class _NotQuick(Exception):
    """The short way cannot take this command line: the whole one does."""


def quick_who_asked(argv: list[str]) -> int | None:
    """`truesource who-asked ...` with only this module's parser and the store: None when the command line
    needs the whole CLI (a configuration file, --help, an error in the options: the whole parser words them)."""
    import os
    import sys

    if any(arg in ("-h", "--help") or arg.startswith("--config") for arg in argv):
        return None
    if os.path.exists("/etc/truesource/sensor.toml"):  # sensor.config.DEFAULT_CONFIG: it may set options
        return None

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise _NotQuick(message)

    parser = Parser(prog="truesource", add_help=False)
    register(parser.add_subparsers(dest="command", parser_class=Parser))
    try:
        args = parser.parse_args(relative_time_argv(argv))
    except (_NotQuick, SystemExit):
        return None
    if args.command != "who-asked":
        return None
    from sensor.errors import SensorError

    try:
        return int(run_who_asked(args))
    except SensorError as err:
        import logging

        from sensor.service import logs

        logs.setup(logging.WARNING, "auto")
        logging.getLogger("truesource").error("%s", err)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        sys.stdout.flush()
