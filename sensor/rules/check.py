"""`truesource rules check PATH...`: load like the sensor does, but go on past bad lines and report them all.

Prints one line per file (its format, rules, lines skipped, errors), then the rules per kind and per format,
the lines skipped by reason, the rules that decide nothing (duplicates and shadowed rules), the files skipped,
and every error as `file:line: why`. Returns 1 when there were errors, else 0; a path that does not exist is
an operational fault (RuleError, exit 2) as in `replay`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import TextIO

from sensor.errors import RuleError
from sensor.rules.formats.registry import loaders
from sensor.rules.formats.tally import OnError, rule_kinds, skipped_lines
from sensor.rules.loader import detect_format, read_text, rule_files, why_empty
from sensor.rules.model import RuleSet

MAX_ERRORS_PER_FILE = 1000  # a file in the wrong format has an error a line: its first thousand say enough
MAX_DUPLICATES_SHOWN = 50  # a feed repeated in two files shadows thousands: the count and a sample


class _TooManyErrors(Exception):
    pass


def run_check(paths: list[str], rules_format: str | None, out: TextIO) -> int:
    formats = loaders()
    if rules_format is not None and rules_format not in formats:
        raise RuleError(f"--rules-format: {rules_format!r} is not one of {', '.join(sorted(formats))}")
    for path in paths:
        if not os.path.exists(path):
            raise RuleError(f"{path}: cannot read rules: no such file")
    ruleset = RuleSet()
    errors: list[str] = []
    files = 0
    for filename, in_directory in _files(paths):
        file_errors: list[str] = []
        try:
            text = read_text(filename)
        except RuleError as err:
            errors.append(str(err))
            print(f"{filename}: not read", file=out)
            continue
        fmt = rules_format or detect_format(text, filename)
        if fmt is None:
            if in_directory:
                ruleset.report.skipped_files.append((filename, "format not recognised"))
                print(f"{filename}: skipped (format not recognised)", file=out)
                continue
            fmt = "native"
        rules_before, skipped_before = len(ruleset), sum(skipped_lines(ruleset.report).values())
        duplicates_before, skipped_by_why = len(ruleset.report.duplicates), dict(skipped_lines(ruleset.report))
        load_collecting(formats[fmt], ruleset, text, filename, file_errors)
        files += 1
        skipped = sum(skipped_lines(ruleset.report).values()) - skipped_before
        duplicates = len(ruleset.report.duplicates) - duplicates_before
        print(f"{filename}: {fmt}, {_count(len(ruleset) - rules_before, 'rule')}"
              + (f", {_count(duplicates, 'duplicate')}" if duplicates else "")
              + (f", {_count(skipped, 'line')} skipped" if skipped else "")
              + (f", {_count(len(file_errors), 'error')}" if file_errors else ""), file=out)
        if len(ruleset) == rules_before and not file_errors:  # the sensor refuses such a file (exit 2)
            why = why_empty(text, fmt, ruleset.report, duplicates_before, skipped_by_why)
            file_errors.append(f"{filename}: no rule ({why}); the sensor refuses it without --allow-empty-rules")
        errors.extend(file_errors)
    _summary(ruleset, files, errors, out)
    return 1 if errors else 0


def load_collecting(loader: Callable[..., None], ruleset: RuleSet, text: str, filename: str,
                    errors: list[str]) -> None:
    """Load one file, every bad line's message appended to `errors` instead of stopping at the first."""
    def collect(err: RuleError) -> None:
        errors.append(str(err))
        if len(errors) >= MAX_ERRORS_PER_FILE:
            raise _TooManyErrors
    try:
        if "on_error" in inspect.signature(loader).parameters:
            loader(ruleset, text, filename, on_error=collect)
        else:
            _load_resuming(loader, ruleset, text, filename, collect)
    except _TooManyErrors:
        errors.append(f"{filename}: stopped checking after {MAX_ERRORS_PER_FILE} errors")


def _load_resuming(loader: Callable[[RuleSet, str, str], None], ruleset: RuleSet, text: str, filename: str,
                   on_error: OnError) -> None:
    """For a loader that stops at its first bad line (the native one): load again from the line after it.

    The resumed text starts with the `#@` header lines seen so far (the native format's only state), so line k
    of it is line `k - len(headers) + base` of the file; errors and duplicates are renumbered so.
    """
    base, offset = 0, 0  # lines of the file before the resumed text, and their length in characters
    headers: list[str] = []
    while True:
        chunk = "".join(headers) + text[offset:]
        marked = len(ruleset.report.duplicates)
        try:
            loader(ruleset, chunk, filename)
            failed = None
        except RuleError as err:
            failed = err
        shift = base - len(headers)
        duplicates = ruleset.report.duplicates
        for i in range(marked, len(duplicates)):
            file, line, why = duplicates[i]
            if file == filename:
                duplicates[i] = (file, line + shift, why)
        if failed is None:
            return
        found = _line_of(failed, filename)
        if found is None or found <= len(headers):
            on_error(failed)
            return
        at = found + shift  # the bad line, in the file
        on_error(RuleError(f"{filename}:{at}:{str(failed)[len(filename) + len(str(found)) + 2:]}"))
        for passed in range(at - base, 0, -1):  # the lines up to the bad one, keeping their headers
            end = text.find("\n", offset)
            end = len(text) if end == -1 else end + 1
            piece = text[offset:end]
            if passed > 1 and piece.lstrip().startswith("#@"):
                headers.append(piece if piece.endswith("\n") else piece + "\n")
            offset = end
        base = at


def _line_of(err: RuleError, filename: str) -> int | None:
    message = str(err)
    if not message.startswith(f"{filename}:"):
        return None
    number = message[len(filename) + 1:].split(":", 1)[0]
    return int(number) if number.isdigit() else None


def _files(paths: list[str]) -> list[tuple[str, bool]]:
    """Every file to check, as the loader would read them: (file, came from a directory)."""
    seen: set[str] = set()
    files: list[tuple[str, bool]] = []
    for path in paths:
        in_directory = os.path.isdir(path)
        for filename in rule_files(path):
            if filename not in seen:
                seen.add(filename)
                files.append((filename, in_directory))
    return files


def _summary(ruleset: RuleSet, files: int, errors: list[str], out: TextIO) -> None:
    report = ruleset.report
    duplicates = f", {_count(len(report.duplicates), 'duplicate')}" if report.duplicates else ""
    print(f"\n{_count(len(ruleset), 'rule')}{duplicates} from {_count(files, 'file')}", file=out)
    if len(ruleset):
        print("  by kind:   " + _listing(rule_kinds(report)), file=out)
        print("  by format: " + _listing(report.by_format), file=out)
    skipped = skipped_lines(report)
    if skipped:
        print(f"{_count(sum(skipped.values()), 'line')} skipped (valid in their format, not name rules):", file=out)
        for why, count in sorted(skipped.items()):
            print(f"  {count:>8,}  {why}", file=out)
    if report.duplicates:
        print(f"{_count(len(report.duplicates), 'rule')} deciding nothing (duplicates and shadowed rules):",
              file=out)
        for file, line, why in report.duplicates[:MAX_DUPLICATES_SHOWN]:
            print(f"  {file}:{line}: {why}", file=out)
        if len(report.duplicates) > MAX_DUPLICATES_SHOWN:
            print(f"  ... and {len(report.duplicates) - MAX_DUPLICATES_SHOWN:,} more", file=out)
    if report.skipped_files:
        print(f"{_count(len(report.skipped_files), 'file')} skipped:", file=out)
        for file, why in report.skipped_files:
            print(f"  {file}: {why}", file=out)
    if errors:
        print(f"{_count(len(errors), 'error')}:", file=out)
        for error in errors:
            print(f"  {error}", file=out)
    elif skipped or report.skipped_files:
        print("no errors, but lines or files were skipped (above): the sensor loads without them", file=out)
    else:
        print("no errors", file=out)


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in sorted(counts.items(), key=lambda kv: -kv[1]))


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
