"""Selects the decode loop: the compiled fast path, or the pure-Python reference when asked.

TRUESOURCE_PURE=1 forces the reference path (tests, and platforms without a compiler).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sensor.rules.model import RuleSet
from sensor.rules.patterns import PatternMatcher

log = logging.getLogger(__name__)

try:
    from sensor import _loop as compiled
except ImportError:  # not built: the reference path still gives the same records, slower
    compiled = None


def pure_requested() -> bool:
    return os.environ.get("TRUESOURCE_PURE", "") not in ("", "0")


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """A rule set in the form the loops take: built once, shared by the loops of every file or worker."""

    table: object  # a compiled SuffixSet, or the RuleSet's table for the reference loop
    allow: bytes
    patterns: Callable[[str], int] | None
    count: int

    def loop_args(self) -> dict:
        return {"allow": self.allow, "patterns": self.patterns}


def compile_rules(ruleset: RuleSet, pure: bool | None = None, keep_table: bool = True) -> CompiledRules:
    """The loops' form of a rule set; `keep_table=False` frees the RuleSet's name table once compiled."""
    if pure is None:
        pure = pure_requested()
    matcher = PatternMatcher(ruleset)
    if pure or compiled is None:
        table = ruleset.table
    elif hasattr(ruleset, "suffix_set"):  # a compiled rule-set file (sensor/rules/compiled.py): read in place
        table = ruleset.suffix_set()
    else:
        table = compiled.SuffixSet(ruleset.table)
        if not keep_table:
            ruleset.drop_table()
    return CompiledRules(table, bytes(ruleset.allow), matcher.match if matcher else None, len(ruleset))


def make_loop(linktype: int, ports: Sequence[int], rules: CompiledRules | dict, emit_all: bool = False,
              pure: bool | None = None, **limits):
    """A loop for one capture's link type; `rules` from compile_rules(), or a bare table (no allow, no patterns)."""
    if pure is None:
        pure = pure_requested()
    if isinstance(rules, dict):
        rules = CompiledRules(rules, b"", None, 0)
    if not pure and compiled is not None:
        return compiled.FastLoop(linktype, ports, rules.table, emit_all, **limits, **rules.loop_args())
    if not pure:
        log.warning("compiled fast path not built; using the pure-Python reference decoder")
    from sensor.decode.loop import ReferenceLoop

    if not hasattr(rules.table, "get"):
        raise TypeError("the reference loop needs the rule table as a mapping")
    return ReferenceLoop(linktype, ports, rules.table, emit_all, **limits, **rules.loop_args())
