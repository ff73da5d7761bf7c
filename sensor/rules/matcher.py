"""The readable matcher: the reference the compiled suffix-hash set (ext/suffixset.pxi) must agree with."""

from __future__ import annotations

from sensor.rules.loader import RuleSet


def match_labels(ruleset: RuleSet, labels: list[str]) -> int:
    """Index of the most specific rule of `ruleset` covering the name, -1 if none (see match_table)."""
    return match_table(ruleset.table, labels)


def match_table(table: dict[str, list[int]], labels: list[str]) -> int:
    """Index of the most specific rule covering the name, -1 if none.

    `table` is RuleSet.table (lowercase suffix -> [rule for the name itself, rule for names below]).
    `labels` are the name's labels in presentation form (escaped), any case. The name itself is checked
    first, then each shorter suffix at a label boundary, the root last.
    """
    lowered = [label.lower() for label in labels]
    for start in range(len(lowered) + 1):
        slots = table.get(".".join(lowered[start:]))
        if slots is not None:
            rule = slots[0] if start == 0 else slots[1]
            if rule != -1:
                return rule
    return -1
