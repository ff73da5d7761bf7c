"""Read rule files (one domain a line, `#` comments) into a RuleSet.

Meaning of a line (docs/rules.md):
  evil.com     the name and every name below it
  xyz          a whole TLD
  .            the root: every name
  *.evil.net   only the names below evil.net (as in RPZ)
Names are case-insensitive and may end with a dot.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from sensor.errors import RuleError

MAX_NAME_TEXT = 253  # RFC 1035 2.3.4: 255 wire bytes is 253 characters of text without the trailing dot
MAX_LABEL = 63  # RFC 1035 2.3.4
# Letters, digits, hyphen and underscore (service labels such as _dmarc appear in feeds).
LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$|^[a-z0-9_]$")


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: `suffix` is the lowercase name without trailing dot ('' for the root)."""

    suffix: str
    below_only: bool
    text: str
    ruleset: str
    line: int


@dataclass(slots=True)
class RuleSet:
    """Rules in load order; `table` maps a suffix to [rule for the name itself, rule for names below]."""

    rules: list[Rule] = field(default_factory=list)
    table: dict[str, list[int]] = field(default_factory=dict)
    duplicates: int = 0
    files: list[str] = field(default_factory=list)

    def add(self, rule: Rule) -> None:
        slots = self.table.setdefault(rule.suffix, [-1, -1])
        wanted = (1,) if rule.below_only else (0, 1)
        if all(slots[i] != -1 for i in wanted):
            self.duplicates += 1
            return
        index = len(self.rules)
        self.rules.append(rule)
        for i in wanted:
            if slots[i] == -1:
                slots[i] = index

    def __len__(self) -> int:
        return len(self.rules)


def parse_rule_line(text: str, ruleset: str, line: int) -> Rule | None:
    """One line to a Rule, None for blank and comment lines; RuleError names file and line."""
    body = text.split("#", 1)[0].strip()
    if not body:
        return None
    if any(c.isspace() for c in body):
        raise RuleError(f"{ruleset}:{line}: more than one word in {body!r}; a rule is one domain name")
    name = body.lower()
    below_only = False
    if name.startswith("*."):
        below_only = True
        name = name[2:]
        if name in ("", "."):
            raise RuleError(f"{ruleset}:{line}: '*.' needs a name after it; '.' alone covers every name")
    if name == ".":
        return Rule("", below_only, body, ruleset, line)
    if name.endswith("."):
        name = name[:-1]
    if len(name) > MAX_NAME_TEXT:
        raise RuleError(f"{ruleset}:{line}: name is {len(name)} characters, longer than {MAX_NAME_TEXT}")
    for label in name.split("."):
        if not label:
            raise RuleError(f"{ruleset}:{line}: empty label in {body!r}")
        if len(label) > MAX_LABEL:
            raise RuleError(f"{ruleset}:{line}: label {label[:20]!r}... is {len(label)} characters, over {MAX_LABEL}")
        if not LABEL_RE.match(label):
            raise RuleError(
                f"{ruleset}:{line}: {body!r} is not a domain name "
                "(labels are letters, digits, '-' and '_'; '*.' only as the first label)"
            )
    return Rule(name, below_only, body, ruleset, line)


def rule_files(path: str) -> list[str]:
    """A file, or every rule file of a directory (documentation skipped), in name order."""
    if os.path.isdir(path):
        names = sorted(
            n for n in os.listdir(path)
            if not n.startswith((".", "README")) and not n.endswith(".md") and os.path.isfile(os.path.join(path, n))
        )
        return [os.path.join(path, n) for n in names]
    return [path]


def load_rules(paths: list[str]) -> RuleSet:
    """Load every rule of every path; the first bad line stops the load with its file and line."""
    ruleset = RuleSet()
    for path in paths:
        for filename in rule_files(path):
            try:
                handle = open(filename, encoding="utf-8")
            except OSError as err:
                raise RuleError(f"{filename}: cannot read rules: {err.strerror}") from None
            with handle:
                try:
                    for number, text in enumerate(handle, 1):
                        rule = parse_rule_line(text, filename, number)
                        if rule is not None:
                            ruleset.add(rule)
                except UnicodeDecodeError as err:
                    raise RuleError(f"{filename}: not UTF-8 text ({err.reason})") from None
            ruleset.files.append(filename)
    return ruleset
