"""The whole `truesource` command line: every command module registers its options and its `run`.

Imported by the CLI and by whatever must read the command line again (configuration documentation, SIGHUP),
never by the modules the commands call: the parser sits above them.
"""

from __future__ import annotations

import argparse

from sensor import __version__, config
from sensor.commands import capture, flows, profile, querylog, replay, rules, stream
from sensor.commands import config as config_command
from sensor.options import Parser
from sensor.service import logs


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(  # one error line and a hint to --help, not a usage block (sensor/options.py)
        prog="truesource",
        description="Names the true client behind a recursive resolver's suspicious DNS queries.",
    )
    parser.add_argument("--version", action="version", version=f"truesource {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to standard error")
    logs.add_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    replay.register(commands)
    capture.register(commands)
    rules.register(commands)
    stream.register(commands)  # control, tail, relay, keys
    config_command.register(commands)
    flows.register(commands)  # flows, ipset
    profile.register(commands)
    querylog.register(commands)  # who-asked, hunt, resolved-ip
    config.add_config_option(parser)  # last: every command gets --config
    return parser
