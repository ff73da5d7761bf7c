"""Load rule files and directories into one RuleSet, each file in its own format (docs/rules.md)."""

from __future__ import annotations

import os

from sensor.errors import RuleError
from sensor.rules.formats import LOADERS
from sensor.rules.formats.detect import detect
from sensor.rules.formats.tally import skipped_lines
from sensor.rules.model import Rule, RuleSet
from sensor.rules.native import load_native, parse_rule

__all__ = ["Rule", "RuleSet", "load_rules", "parse_rule_line", "rule_files"]

FORMAT_LOADERS = {"native": load_native, **LOADERS}  # the other formats: sensor/rules/formats


def rule_files(path: str) -> list[str]:
    """A file, or every file of a directory in name order, documentation and hidden files skipped."""
    if os.path.isdir(path):
        names = sorted(
            n for n in os.listdir(path)
            if not n.startswith((".", "README")) and not n.endswith(".md") and os.path.isfile(os.path.join(path, n))
        )
        return [os.path.join(path, n) for n in names]
    return [path]


def parse_rule_line(text: str, ruleset: str, line: int) -> Rule | None:
    """One native line to a Rule (None for blank lines and comments); RuleError names file and line."""
    body = text.split("#", 1)[0].strip() if not text.lstrip().startswith("~") else text.strip()
    if not body:
        return None
    return parse_rule(body, ruleset, line)


def read_bytes(filename: str) -> bytes:
    try:
        with open(filename, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise RuleError(f"{filename}: cannot read rules: no such file") from None
    except IsADirectoryError:
        raise RuleError(f"{filename}: cannot read rules: is a directory") from None
    except OSError as err:
        raise RuleError(f"{filename}: cannot read rules: {err.strerror}") from None


def decode(filename: str, data: bytes) -> str:
    """UTF-8 text without its byte-order mark (Windows editors write one; every format reads the same)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise RuleError(f"{filename}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_text(filename: str) -> str:
    return decode(filename, read_bytes(filename))


def decode_sources(sources: list[tuple[str, bytes, bool]]) -> list[tuple[str, str, bool]]:
    return [(filename, decode(filename, data), in_directory) for filename, data, in_directory in sources]


def read_sources(paths: list[str]) -> list[tuple[str, str, bool]]:
    """Every rule file's text, read once: (file name, text, came from a directory). A reload snapshots the files
    this way so that every worker builds from the same bytes."""
    sources: list[tuple[str, str, bool]] = []
    seen: set[str] = set()
    for path in paths:
        in_directory = os.path.isdir(path)
        for filename in rule_files(path):
            if filename not in seen:
                seen.add(filename)
                sources.append((filename, read_text(filename), in_directory))
    return sources


def build_ruleset(sources: list[tuple[str, str, bool]], rules_format: str | None = None) -> RuleSet:
    """Parse read sources into one RuleSet; the first bad line raises RuleError with its file and line. A file
    that yields no rule is noted in the report's `empty_files` with why (cache.check_not_empty decides)."""
    ruleset = RuleSet()
    report = ruleset.report
    for filename, text, in_directory in sources:
        fmt = rules_format or detect_format(text, filename)
        if fmt is None:
            if in_directory:
                report.skipped_files.append((filename, "format not recognised"))
                report.empty_files.append((filename, "format not recognised", True))
                continue
            fmt = "native"
        loader = FORMAT_LOADERS.get(fmt)
        if loader is None:
            raise RuleError(f"--rules-format: {fmt!r} is not one of {', '.join(sorted(FORMAT_LOADERS))}")
        rules, duplicates, skipped = len(ruleset), len(report.duplicates), dict(skipped_lines(report))
        loader(ruleset, text, filename)
        if len(ruleset) == rules:
            report.empty_files.append((filename, why_empty(text, fmt, report, duplicates, skipped), in_directory))
    return ruleset


def why_empty(text: str, fmt: str, report, duplicates: int, skipped: dict[str, int]) -> str:
    if not text.strip():
        return "the file is empty"
    lines = {why: n - skipped.get(why, 0) for why, n in skipped_lines(report).items() if n > skipped.get(why, 0)}
    if lines:
        return f"{fmt}, every line skipped: " + "; ".join(f"{n} {why}" for why, n in lines.items())
    if len(report.duplicates) > duplicates:
        return f"{fmt}, every rule repeats an earlier one"
    return f"{fmt}, only comments and blank lines"


def load_rules(paths: list[str], rules_format: str | None = None) -> RuleSet:
    """Load every rule of every path; the first bad line stops the load with its file and line."""
    return build_ruleset(read_sources(paths), rules_format)


def detect_format(text: str, filename: str) -> str | None:
    """The format of a file from its content; None when no format recognises it."""
    return detect(text, filename)
