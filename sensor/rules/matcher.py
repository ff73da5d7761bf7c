"""The readable matcher: the verdict the compiled loop (ext/suffixset.pxi + sensor/rules/patterns.py) must
agree with. Most specific rule decides; allow wins a tie (settled in RuleSet.table at load)."""

from __future__ import annotations

import re

from sensor.rules.model import BELOW, EXACT, REGEX, SUFFIX, WILDCARD, Rule, RuleSet, unpack_slots
from sensor.rules.patterns import PatternMatcher, wildcard_regex


def match_table(table: dict, labels: list[str]) -> int:
    """Index of the most specific exact, suffix or below rule covering the name, -1 if none.

    `labels` are the name's labels in presentation form (escaped), any case. The name itself is checked first
    (slot 0), then each shorter suffix at a label boundary (slot 1), the root last.
    """
    lowered = [label.lower() for label in labels]
    for start in range(len(lowered) + 1):
        slots = table.get(".".join(lowered[start:]))
        if slots is not None:
            own, below = unpack_slots(slots)
            rule = own if start == 0 else below
            if rule != -1:
                return rule
    return -1


def match_labels(ruleset: RuleSet, labels: list[str]) -> int:
    """Index of the most specific exact, suffix or below rule of `ruleset` covering the name, -1 if none."""
    return match_table(ruleset.table, labels)


def decide(table: dict, patterns: PatternMatcher | None, labels: list[str]) -> int:
    """The deciding rule of any kind (allow or deny), -1 when no rule covers the name."""
    rule = match_table(table, labels)
    if rule == -1 and patterns:
        rule = patterns.match(".".join(labels).lower() if labels else ".")
    return rule


def all_matches(ruleset: RuleSet, labels: list[str]) -> list[int]:
    """Every rule that covers the name, deciding or not (for `rules test`), most specific first."""
    lowered = [label.lower() for label in labels]
    name = ".".join(lowered) if lowered else "."
    found: list[int] = []
    for index, rule in enumerate(ruleset.rules):
        if covers(rule, lowered, name):
            found.append(index)
    return found


def covers(rule: Rule, lowered: list[str], name: str) -> bool:
    """Does `rule` cover the name (labels lowercased, and joined), whether or not it decides?"""
    if rule.kind == REGEX:
        return re.search(rule.pattern, name) is not None
    if rule.kind == WILDCARD:
        return re.search(wildcard_regex(rule.pattern), name) is not None
    suffixes = [".".join(lowered[i:]) for i in range(len(lowered) + 1)]
    if rule.kind == EXACT:
        return suffixes[0] == rule.pattern
    if rule.kind == SUFFIX:
        return rule.pattern in suffixes
    if rule.kind == BELOW:
        return rule.pattern in suffixes[1:]
    return False
