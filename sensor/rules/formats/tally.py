"""What a loader found besides rules: lines skipped by reason, and bad lines (raised, or handed on)."""

from __future__ import annotations

from collections.abc import Callable

from sensor.errors import RuleError
from sensor.rules.model import LoadReport, RuleSet

OnError = Callable[[RuleError], None]
# Skipped lines are counted in LoadReport.by_kind under this prefix (`skipped hosts: localhost entry`), apart
# from the rule kinds by their prefix, until LoadReport has a field of its own for them.
SKIPPED = "skipped "


class FileTally:
    """One file's bookkeeping. `skip(why)` counts a line that is valid in its format but not a name rule (a
    hosts file's `localhost`, an Adblock cosmetic filter, a Zeek `Intel::ADDR` row); `error(err)` raises a bad
    line's RuleError, or hands it to `on_error` so that `rules check` sees every bad line of a file."""

    __slots__ = ("format", "report", "on_error", "skipped")

    def __init__(self, ruleset: RuleSet, fmt: str, on_error: OnError | None) -> None:
        self.format = fmt
        self.report = ruleset.report
        self.on_error = on_error
        self.skipped: dict[str, int] = {}

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def error(self, err: RuleError) -> None:
        if self.on_error is None:
            raise err
        self.on_error(err)

    def close(self) -> None:
        """Counts into the report (once, at the end of the file: a dict update per skipped line would cost)."""
        by_kind = self.report.by_kind
        for why, count in self.skipped.items():
            key = f"{SKIPPED}{self.format}: {why}"
            by_kind[key] = by_kind.get(key, 0) + count
        self.skipped = {}


def skipped_lines(report: LoadReport) -> dict[str, int]:
    """`format: why` -> lines skipped, from a report."""
    return {k[len(SKIPPED):]: v for k, v in report.by_kind.items() if k.startswith(SKIPPED)}


def rule_kinds(report: LoadReport) -> dict[str, int]:
    """Kind -> rules loaded, without the skipped-line counts."""
    return {k: v for k, v in report.by_kind.items() if not k.startswith(SKIPPED)}


def format_index(ruleset: RuleSet, fmt: str) -> int:
    if fmt not in ruleset.formats:
        ruleset.formats.append(fmt)
    return ruleset.formats.index(fmt)
