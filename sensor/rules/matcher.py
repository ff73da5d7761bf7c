"""The readable matcher: the reference the compiled suffix-hash set (ext/suffixset.pxi) must agree with."""

from __future__ import annotations

from sensor.rules.loader import RuleSet


def match_labels(ruleset: RuleSet, labels: list[str]) -> int:
    """Index of the most specific rule covering the name, -1 if none.

    `labels` are the name's labels in presentation form (escaped), any case. The name itself is checked
    first, then each shorter suffix at a label boundary, the root last.
    """
    lowered = [label.lower() for label in labels]
    table = ruleset.table
    for start in range(len(lowered) + 1):
        slots = table.get(".".join(lowered[start:]))
        if slots is not None:
            rule = slots[0] if start == 0 else slots[1]
            if rule != -1:
                return rule
    return -1
