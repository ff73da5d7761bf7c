"""`truesource config check [PATH]`: validate a configuration file and print every key's effective value.

`python -m sensor.commands.configdoc docs/config.md` rewrites the table of keys in that file from the parser.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sensor import config


def register(commands: Any) -> None:
    """The `config` command."""
    parser = commands.add_parser("config", help="check the configuration file and print the effective values")
    sub = parser.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    check = sub.add_parser("check", help="validate a configuration file and print every key's effective value")
    check.add_argument("path", nargs="?", metavar="PATH",
                       help=f"the file (default: --config, else {config.DEFAULT_CONFIG})")
    parser.set_defaults(run=run_config)


def run_config(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Validate, then print the effective configuration (the parser: `args.build_parser`, set by the CLI)."""
    if parser is None:
        parser = args.build_parser()
    loaded = config.load(args.path or args.config, parser)
    sys.stdout.write(config.render_toml(parser, loaded))
    return 0
