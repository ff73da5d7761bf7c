"""`truesource rules check|test|compile|export`: lint rule files, explain a verdict, compile a memory-mapped rule
set, write a resolver blocking policy."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sensor.commands.common import RULE_FORMATS
from sensor.errors import StartupError
from sensor.rules import commands as rules_options


def register(commands: Any) -> None:
    rules = commands.add_parser("rules", help="check, test and export rule files")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="SUBCOMMAND")
    check = rules_commands.add_parser("check", help="lint rule files: counts, duplicates, every error")
    check.add_argument("paths", nargs="+", metavar="PATH")
    check.add_argument("--rules-format", choices=RULE_FORMATS, metavar="FORMAT")
    test = rules_commands.add_parser("test", help="which rule decides for each name, and which others match")
    test.add_argument("names", nargs="+", metavar="NAME")
    test.add_argument("--rules", action="append", required=True, metavar="PATH",
                      help="rule file or directory, as `replay --rules` takes (repeatable)")
    test.add_argument("--rules-format", choices=RULE_FORMATS, metavar="FORMAT",
                      help=f"read every rule file as this format ({', '.join(RULE_FORMATS)}; default: detected)")
    test.add_argument("--json", action="store_true", help="one JSON object a line")
    rules_options.add_options(test)
    rules_options.register_compile(rules_commands, RULE_FORMATS)
    export = rules_commands.add_parser("export", help="write the rules as a resolver blocking policy")
    export.add_argument("--rules", action="append", required=True, metavar="PATH")
    export.add_argument("--rules-format", choices=RULE_FORMATS, metavar="FORMAT")
    export.add_argument("--format", required=True, choices=("rpz", "unbound", "hosts"), dest="export_format")
    export.add_argument("--out", default="-", metavar="PATH", help="default: standard output")
    export.add_argument("--zone", default="rpz.truesource.", metavar="ORIGIN", help="RPZ zone origin")
    export.add_argument("--strict", action="store_true",
                        help="exit 1 when a rule cannot be expressed fully in the format")
    export.add_argument("--allow-empty-rules", action="store_true",
                        help="export even when a --rules source yields no rule (default: exit 2 naming it)")
    rules.set_defaults(run=run_rules)


def run_rules(args: argparse.Namespace) -> int:
    from sensor.rules.loader import load_rules

    if args.rules_command == "check":
        from sensor.rules.check import run_check

        return run_check(args.paths, args.rules_format, sys.stdout)
    if args.rules_command == "compile":
        import sensor.loop  # noqa: F401  the selector: the compiled SuffixSet builds the file's table (fast)
        from sensor.rules.commands import run_compile

        return run_compile(args)
    if args.rules_command == "test":
        from sensor.commands.common import rules_for_run

        ruleset = rules_for_run(args)
    else:
        from sensor.rules.cache import check_not_empty, say_skipped

        ruleset = load_rules(args.rules, args.rules_format)
        check_not_empty(ruleset, args.allow_empty_rules, args.rules)
        say_skipped(ruleset)
    if args.rules_command == "test":
        from sensor.rules.explain import run_test

        return run_test(ruleset, args.names, sys.stdout, args.json)
    from sensor.rules.export import run_export

    if args.out == "-":
        return run_export(ruleset, args.export_format, sys.stdout, sys.stderr, zone=args.zone, strict=args.strict)
    try:
        with open(args.out, "w", encoding="utf-8") as handle:
            return run_export(ruleset, args.export_format, handle, sys.stderr, zone=args.zone, strict=args.strict)
    except OSError as err:
        raise StartupError(f"{args.out}: cannot write: {err.strerror}") from None
