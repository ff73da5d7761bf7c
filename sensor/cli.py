"""The `truesource` command: build the parser, load the configuration, call the command's `run`, map faults to
exit codes. The commands live in sensor/commands/, one module each.

Exit codes: 0 done; 2 nothing could start; 1 failed part-way (docs/cli.md).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from sensor import config, heap
from sensor.commands.parser import build_parser
from sensor.commands.querylog import relative_time_argv
from sensor.errors import SensorError
from sensor.service import logs

__all__ = ["build_parser", "main"]

SERVICES = ("capture", "relay")  # commands that run as a service: they log that they start (INFO)

log = logging.getLogger("truesource")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = config.parse_args(parser, relative_time_argv(argv))
    except SensorError as err:  # the configuration file: before logging is set up
        print(f"truesource: {err}", file=sys.stderr)
        return err.exit_code
    heap.settle()  # start-up's objects frozen, collections rare from here (decision 0203)
    args.argv = argv  # read again with the file on SIGHUP
    args.build_parser = build_parser  # for commands that read the command line again (config check, SIGHUP)
    logs.setup(logging.DEBUG if args.verbose else logging.INFO if args.command in SERVICES else logging.WARNING,
               args.log_format)
    try:
        return int(args.run(args))
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
