"""Wildcard and regex rules, combined into one regular expression per kind and verdict.

Consulted only for names no exact, suffix or below rule decided (they are the least specific kinds), so the
fast path calls this only when such rules are loaded and nothing else matched. Within the patterns: wildcards
before regexes, and allow before deny in each, as the precedence says (docs/rules.md).
"""

from __future__ import annotations

import re

from sensor.rules.model import REGEX, WILDCARD, RuleSet


def wildcard_regex(pattern: str) -> str:
    """`*` any run of characters within a label, `?` one; the pattern matches the name or a parent of it, at a
    label boundary, like a suffix rule."""
    body = "".join("[^.]*" if c == "*" else "[^.]" if c == "?" else re.escape(c) for c in pattern)
    return rf"(?:^|\.){body}$"


class PatternMatcher:
    """`match(name)` -> index of the deciding wildcard or regex rule, or -1. `name` lowercase, no trailing dot."""

    def __init__(self, ruleset: RuleSet) -> None:
        # Compiled on the first name it is asked about: a compiled rule-set file keeps these rules as source text,
        # and a start-up that never meets an undecided name pays nothing for them.
        self._ruleset: RuleSet | None = ruleset
        self._count = len(ruleset.patterns)
        self._searches: list | None = None

    def _compile(self) -> list:
        groups: dict[tuple[int, bool], list[str]] = {}
        ruleset = self._ruleset
        assert ruleset is not None  # compiled once: then the rule set is let go
        for index in ruleset.patterns:
            rule = ruleset.rule(index)
            text = wildcard_regex(rule.pattern) if rule.kind == WILDCARD else f"(?:{rule.pattern})"
            groups.setdefault((rule.kind, rule.allow), []).append(f"(?P<r{index}>{text})")
        order = ((WILDCARD, True), (WILDCARD, False), (REGEX, True), (REGEX, False))
        self._ruleset = None
        return [re.compile("|".join(groups[key])).search for key in order if key in groups]

    def __bool__(self) -> bool:
        return self._count > 0

    def match(self, name: str) -> int:
        if self._searches is None:
            self._searches = self._compile()
        for search in self._searches:
            found = search(name)
            if found is not None:
                return int(str(found.lastgroup)[1:])  # the group is named "r<index>"
        return -1
