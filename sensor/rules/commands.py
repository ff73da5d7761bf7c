"""The rule options of the commands that run rules, and `truesource rules compile` (light imports: --help)."""

from __future__ import annotations

import argparse
import sys


def add_options(parser: argparse.ArgumentParser) -> None:
    """--rules-cache and --allow-empty-rules, for every command that loads rules to run them."""
    parser.add_argument("--rules-cache", metavar="DIR",
                        help="where compiled rule sets are kept, keyed by the rule files' content (default "
                             "$CACHE_DIRECTORY, else ~/.cache/truesource; 'off': compile in memory at each start)")
    parser.add_argument("--allow-empty-rules", action="store_true",
                        help="run even when a --rules file or directory yields no rule (default: exit 2 naming it)")


def register_compile(commands, formats: tuple[str, ...]) -> None:
    """`rules compile --rules PATH --out FILE`: a compiled rule set for `--rules FILE` (docs/rules.md)."""
    compile_ = commands.add_parser("compile", help="compile rule files into one memory-mapped rule-set file")
    compile_.add_argument("--rules", action="append", required=True, metavar="PATH",
                          help="rule file or directory (repeatable)")
    compile_.add_argument("--rules-format", choices=formats, metavar="FORMAT",
                          help=f"read every rule file as this format ({', '.join(formats)}; default: detected)")
    compile_.add_argument("--out", required=True, metavar="FILE",
                          help="the compiled file (written to a temporary file, then renamed)")
    compile_.add_argument("--allow-empty-rules", action="store_true",
                          help="write it even when a --rules source yields no rule")


def add_control_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="reload: load the rules even when they hold less than half as many as now")


def run_compile(args: argparse.Namespace) -> int:
    from sensor.rules.cache import compile_to

    compiled = compile_to(args.rules, args.rules_format, args.out, args.allow_empty_rules)
    print(f"{args.out}: {len(compiled):,} rules from {len(compiled.files):,} file"
          f"{'' if len(compiled.files) == 1 else 's'}", file=sys.stdout)
    return 0
