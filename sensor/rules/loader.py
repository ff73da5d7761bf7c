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
from array import array
from dataclasses import dataclass

from sensor.errors import RuleError

MAX_NAME_TEXT = 253  # RFC 1035 2.3.4: 255 wire bytes is 253 characters of text without the trailing dot
MAX_LABEL = 63  # RFC 1035 2.3.4
# Letters, digits, hyphen and underscore (service labels such as _dmarc appear in feeds).
LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$|^[a-z0-9_]$")


# Deletes every character a rule name may hold: what is left of a name after translate() is what is wrong with it.
_NOT_NAME_CHARS = str.maketrans("", "", "abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: `suffix` is the lowercase name without trailing dot ('' for the root)."""

    suffix: str
    below_only: bool
    text: str
    ruleset: str
    line: int


class RuleSet:
    """Rules in load order, kept in columns (a million Rule objects would cost hundreds of MB).

    `table` maps a suffix to (rule for the name itself, rule for names below), -1 for none; this is what
    both matchers read. `rule(i)` builds the Rule record of one index, for hits and tools.
    """

    __slots__ = ("table", "duplicates", "files", "_suffix", "_below", "_text", "_file", "_line")

    def __init__(self) -> None:
        self.table: dict[str, tuple[int, int]] = {}
        self.duplicates = 0
        self.files: list[str] = []
        self._suffix: list[str] = []
        self._below = bytearray()
        self._text: list[str | None] = []  # None when the text is the suffix itself
        self._file = array("H")
        self._line = array("L")

    def add(self, rule: Rule) -> None:
        if rule.ruleset not in self.files:
            self.files.append(rule.ruleset)
        self._add(rule.suffix, rule.below_only, rule.text, self.files.index(rule.ruleset), rule.line)

    def _add(self, suffix: str, below_only: bool, text: str, file_index: int, line: int) -> None:
        slots = self.table.get(suffix, (-1, -1))
        index = len(self._suffix)
        if below_only:
            if slots[1] != -1:
                self.duplicates += 1
                return
            self.table[suffix] = (slots[0], index)
        else:
            if slots[0] != -1 and slots[1] != -1:
                self.duplicates += 1
                return
            self.table[suffix] = (index if slots[0] == -1 else slots[0], index if slots[1] == -1 else slots[1])
        self._suffix.append(suffix)
        self._below.append(below_only)
        self._text.append(None if text == suffix else text)
        self._file.append(file_index)
        self._line.append(line)

    def rule(self, index: int) -> Rule:
        text = self._text[index]
        suffix = self._suffix[index]
        return Rule(suffix, bool(self._below[index]), suffix if text is None else text,
                    self.files[self._file[index]], self._line[index])

    @property
    def rules(self) -> list[Rule]:
        return [self.rule(i) for i in range(len(self._suffix))]

    def __len__(self) -> int:
        return len(self._suffix)


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
                with open(filename, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as err:
                raise RuleError(f"{filename}: cannot read rules: {err.strerror}") from None
            except UnicodeDecodeError as err:
                raise RuleError(f"{filename}: not UTF-8 text ({err.reason})") from None
            if filename in ruleset.files:
                continue
            ruleset.files.append(filename)
            _load_text(ruleset, text, filename, len(ruleset.files) - 1)
    return ruleset


def _load_text(ruleset: RuleSet, text: str, filename: str, file_index: int) -> None:
    """The common line (a plain name) is checked with string methods that run in C, and added inline:
    at a million rules, each Python call per line is a second of start-up. Anything unusual goes through
    parse_rule_line, which gives the precise error."""
    table = ruleset.table
    suffixes, below_flags, texts = ruleset._suffix, ruleset._below, ruleset._text
    files, lines = ruleset._file, ruleset._line
    not_name_chars = _NOT_NAME_CHARS
    for number, line in enumerate(text.splitlines(), 1):
        body = line.strip()
        if not body or body[0] == "#":
            continue
        if "#" in body:
            body = body.split("#", 1)[0].rstrip()
        name = body.lower()
        below = name[:2] == "*."
        if below:
            name = name[2:]
        if name[-1:] == ".":
            name = name[:-1]
        if not (
            name and not name.translate(not_name_chars) and len(name) <= MAX_NAME_TEXT
            and name[0] not in ".-" and name[-1] != "-" and ".." not in name and "-." not in name
            and ".-" not in name and (len(name) <= MAX_LABEL or max(map(len, name.split("."))) <= MAX_LABEL)
        ):
            rule = parse_rule_line(body, filename, number)  # raises with the reason, or handles '.'
            if rule is None:
                continue
            name, below = rule.suffix, rule.below_only
        slots = table.get(name)
        index = len(suffixes)
        if slots is None:
            table[name] = (-1, index) if below else (index, index)
        elif below:
            if slots[1] != -1:
                ruleset.duplicates += 1
                continue
            table[name] = (slots[0], index)
        else:
            if slots[0] != -1 and slots[1] != -1:
                ruleset.duplicates += 1
                continue
            table[name] = (index if slots[0] == -1 else slots[0], index if slots[1] == -1 else slots[1])
        suffixes.append(name)
        below_flags.append(below)
        texts.append(None if body == name else body)
        files.append(file_index)
        lines.append(number)
