"""`truesource rules test`: for a name, the deciding rule and every other rule that also covers it."""

from __future__ import annotations

import json
import re
from typing import TextIO

from sensor.errors import StartupError
from sensor.idn import NameError_, to_ascii
from sensor.rules.matcher import all_matches, decide
from sensor.rules.model import RuleSet
from sensor.rules.patterns import PatternMatcher

_UNESCAPED_DOT = re.compile(r"(?<!\\)\.")


def labels_of(name: str) -> list[str]:
    """Presentation form (as in events: `\\.` and `\\DDD` escapes allowed) to labels; the root is []. A Unicode
    name is converted as rules are (`müller.de` -> `xn--mller-kva.de`, sensor/idn.py); StartupError if it cannot."""
    name = name.strip()
    if not name.isascii():
        try:
            name = to_ascii(name)
        except NameError_ as err:
            raise StartupError(f"{name!r} is not a domain name ({err})") from None
    if name in ("", "."):
        return []
    if name.endswith(".") and not name.endswith("\\."):
        name = name[:-1]
    return _UNESCAPED_DOT.split(name)


def explain(ruleset: RuleSet, name: str, patterns: PatternMatcher | None = None) -> dict:
    labels = labels_of(name)
    deciding = decide(ruleset.table, patterns if patterns is not None else PatternMatcher(ruleset), labels)
    others = [i for i in all_matches(ruleset, labels) if i != deciding]
    verdict = "no match" if deciding < 0 else ("allowed" if ruleset.allow[deciding] else "hit")
    return {"name": name, "verdict": verdict,
            "rule": _describe(ruleset, deciding) if deciding >= 0 else None,
            "also_matched": [_describe(ruleset, i) for i in others]}


def _describe(ruleset: RuleSet, index: int) -> dict:
    rule = ruleset.rule(index)
    described = {"rule": rule.text, "kind": rule.kind_name, "allow": rule.allow, "file": rule.ruleset,
                 "line": rule.line, "format": rule.format}
    meta = {k: getattr(rule.meta, k) for k in ("id", "category", "severity", "description", "reference", "source")
            if getattr(rule.meta, k) is not None}
    if meta:
        described["meta"] = meta
    return described


def run_test(ruleset: RuleSet, names: list[str], out: TextIO, as_json: bool = False) -> int:
    """Print the verdict of each name; exit 0 (a test command: no match is an answer, not an error)."""
    patterns = PatternMatcher(ruleset)
    for name in names:
        result = explain(ruleset, name, patterns)
        if as_json:
            out.write(json.dumps(result) + "\n")
            continue
        rule = result["rule"]
        if rule is None:
            out.write(f"{name}: no match\n")
        else:
            kind = rule["kind"] + (", allow" if rule["allow"] else "")
            out.write(f"{name}: {result['verdict']} by {rule['rule']!r} ({kind}) at {rule['file']}:{rule['line']}\n")
        for other in result["also_matched"]:
            out.write(f"    also: {other['rule']!r} ({other['kind']}) at {other['file']}:{other['line']}\n")
    return 0
