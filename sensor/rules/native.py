"""The native rule format: one rule a line, `#` comments, optional metadata (docs/rules.md).

    #@ source: abuse.ch URLhaus          file header: applies to the rules after it
    #@ category: malware
    #@ severity: 7
    #@ reference: https://example.org/feed
    evil.com                             the name and everything below it
    =login.evil.com                      that exact name
    *.cdn.evil.net                       only names below cdn.evil.net
    *-paypal-login.*                     a wildcard inside labels
    ~^[a-z0-9]{30,}\\.top$                a regex (no spaces; write \\s)
    !safe.evil.com                       allow: `!` before any kind
    evil.org id=R17 category=c2 severity=9 description="Emotet C2"
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Any

from sensor.errors import RuleError
from sensor.idn import NameError_, to_ascii
from sensor.rules.model import BELOW, EXACT, NO_META, REGEX, SUFFIX, WILDCARD, Rule, RuleMeta, RuleSet

MAX_NAME_TEXT = 253  # RFC 1035 2.3.4: 255 wire bytes is 253 characters of text without the trailing dot
MAX_LABEL = 63  # RFC 1035 2.3.4
MAX_PATTERN = 1024  # a longer regex is a typo or an attack on the matcher, not a rule
META_KEYS = ("id", "category", "severity", "description", "reference", "source")
# Letters, digits, hyphen and underscore (service labels such as _dmarc appear in feeds).
LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
WILDCARD_LABEL_RE = re.compile(r"^[a-z0-9_*?-]+$")
# Deletes every character a plain name may hold: what is left after translate() is what is wrong with it.
_NOT_NAME_CHARS = str.maketrans("", "", "abcdefghijklmnopqrstuvwxyz0123456789-_.")


def check_name(name: str, where: str, body: str) -> None:
    """RuleError unless `name` (lowercase, no trailing dot, not the root) is a domain name."""
    if len(name) > MAX_NAME_TEXT:
        raise RuleError(f"{where}: name is {len(name)} characters, longer than {MAX_NAME_TEXT}")
    for label in name.split("."):
        if not label:
            raise RuleError(f"{where}: empty label in {body!r}")
        if len(label) > MAX_LABEL:
            raise RuleError(f"{where}: label {label[:20]!r}... is {len(label)} characters, over {MAX_LABEL}")
        if not LABEL_RE.match(label):
            raise RuleError(f"{where}: {body!r} is not a domain name (labels are letters, digits, '-' and '_'; "
                            f"'*.' only as the first label, or write a wildcard or '~regex'){_other_format(body)}")


def _other_format(body: str) -> str:
    """A hint when a line that does not fit looks like another format's: one file holds one format."""
    if body.startswith(("||", "@@")) or body.endswith("^"):
        return "; it looks like an Adblock filter: a file holds one format (split it, or --rules-format adblock)"
    return ""


def parse_meta(words: list[str], where: str) -> RuleMeta:
    fields: dict[str, Any] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or key not in META_KEYS:
            raise RuleError(f"{where}: {word!r} is not metadata (key=value with key one of {', '.join(META_KEYS)})")
        fields[key] = value
    if "severity" in fields:
        try:
            fields["severity"] = int(fields["severity"])
        except ValueError:
            raise RuleError(f"{where}: severity {fields['severity']!r} is not a whole number") from None
    return RuleMeta(**fields)


def parse_rule(body: str, filename: str, line: int, meta: RuleMeta = NO_META) -> Rule:
    """One rule line (comments already removed) to a Rule; RuleError names file and line."""
    where = f"{filename}:{line}"
    words = body.split(None, 1)
    head = text = words[0]  # the rule as written, without its metadata (that goes to `meta`)
    if len(words) > 1:
        try:
            extra = shlex.split(words[1])
        except ValueError as err:
            raise RuleError(f"{where}: {err} in {words[1]!r}") from None
        meta = meta.merged(parse_meta(extra, where))
    allow = head.startswith("!")
    if allow:
        head = head[1:]
    if head.startswith("~"):
        pattern = head[1:]
        if not pattern or len(pattern) > MAX_PATTERN:
            raise RuleError(f"{where}: a regex rule needs 1 to {MAX_PATTERN} characters after '~'")
        try:
            re.compile(pattern)
        except re.error as err:
            raise RuleError(f"{where}: bad regex {pattern!r}: {err}") from None
        return Rule(REGEX, pattern, allow, text, filename, line, "native", meta)
    name = head.lower()
    kind = SUFFIX
    if name.startswith("="):
        kind, name = EXACT, name[1:]
    elif name.startswith("*.") and "*" not in name[2:] and "?" not in name:
        kind, name = BELOW, name[2:]
    if name in (".", ""):
        if kind == BELOW or (kind == EXACT and name == ""):
            raise RuleError(f"{where}: {head!r} needs a name after it; '.' alone covers every name")
        return Rule(kind, "", allow, text, filename, line, "native", meta)
    if name.endswith("."):
        name = name[:-1]
    if not name.isascii():  # `müller.de`: the A-label form a query carries, as every format converts it
        try:
            name = to_ascii(name)
        except NameError_ as err:
            raise RuleError(f"{where}: {head!r} is not a domain name ({err})") from None
    if kind in (SUFFIX, EXACT) and ("*" in name or "?" in name):
        if kind == EXACT:
            raise RuleError(f"{where}: '=' takes a name, not a wildcard")
        if len(name) > MAX_PATTERN or not all(WILDCARD_LABEL_RE.match(label) for label in name.split(".")):
            raise RuleError(f"{where}: {head!r} is not a wildcard (labels of letters, digits, '-', '_', '*', '?')")
        return Rule(WILDCARD, name, allow, text, filename, line, "native", meta)
    check_name(name, where, head)
    return Rule(kind, name, allow, text, filename, line, "native", meta)


def parse_header(body: str, where: str) -> RuleMeta | None:
    """`#@ key: value` to the metadata it sets, None for an ordinary comment."""
    if not body.startswith("#@"):
        return None
    key, sep, value = body[2:].partition(":")
    key = key.strip()
    if not sep or key not in META_KEYS:
        raise RuleError(f"{where}: header {body!r} is not '#@ key: value' with key one of {', '.join(META_KEYS)}")
    return parse_meta([f"{key}={value.strip()}"], where)


def load_native(ruleset: RuleSet, text: str, filename: str,
                on_error: Callable[[RuleError], None] | None = None) -> None:
    """`on_error`: each bad line's RuleError goes there and the load goes on (`rules check`); without it the first
    one raises. The common line (a plain name) is checked with string methods that run in C and added without making a
    Rule: at a million rules, each Python call per line is a second of start-up. Anything else goes through
    parse_rule, which also gives the precise error."""
    file_index = ruleset.file_index(filename)
    format_index = _format_index(ruleset, "native")
    add = ruleset.add_fields
    table, patterns, texts, kinds = ruleset.table, ruleset._pattern, ruleset._text, ruleset._kind
    files, lines, metas, formats, allow = ruleset._file, ruleset._line, ruleset._meta, ruleset._format, ruleset.allow
    inline = 0
    not_name_chars = _NOT_NAME_CHARS
    header = NO_META
    meta_index = 0
    for number, line in enumerate(iter_lines(text), 1):
        body = line.strip()
        if not body:
            continue
        if body[0] == "#":
            try:
                found = parse_header(body, f"{filename}:{number}")
            except RuleError as err:
                if on_error is None:
                    raise
                on_error(err)
                continue
            if found is not None:
                header = header.merged(found)
                meta_index = ruleset.meta_index(header)
            continue
        if "#" in body and body[0] != "~":
            body = body.split("#", 1)[0].rstrip()
        elif " #" in body:
            body = body.split(" #", 1)[0].rstrip()
        name = body.lower()
        if name[-1:] == ".":
            name = name[:-1]
        if (
            name and not name.translate(not_name_chars) and len(name) <= MAX_NAME_TEXT
            and name[0] not in ".-" and name[-1] != "-" and ".." not in name and "-." not in name
            and ".-" not in name and (len(name) <= MAX_LABEL or max(map(len, name.split("."))) <= MAX_LABEL)
        ):
            if name in table:  # precedence against what is there: the general path
                add(SUFFIX, name, False, body, file_index, number, meta_index, format_index)
                continue
            index = len(patterns)  # a new name: the rule decides both slots; added inline (see docstring)
            table[name] = (index + 1) | ((index + 1) << 32)  # pack_slots(index, index)
            kinds.append(SUFFIX)
            patterns.append(name)
            if body != name:
                texts[index] = body
            files.append(file_index)
            lines.append(number)
            metas.append(meta_index)
            formats.append(format_index)
            allow.append(0)
            inline += 1
            continue
        try:
            rule = parse_rule(body, filename, number, header)
        except RuleError as err:
            if on_error is None:
                raise
            on_error(err)
            continue
        own_meta = meta_index if rule.meta is header else ruleset.meta_index(rule.meta)
        add(rule.kind, rule.pattern, rule.allow, rule.text, file_index, number, own_meta, format_index)
    if inline:
        report = ruleset.report
        report.by_kind["suffix"] = report.by_kind.get("suffix", 0) + inline
        report.by_format["native"] = report.by_format.get("native", 0) + inline


def iter_lines(text: str, chunk: int = 1 << 20):
    """The text's lines, split a megabyte at a time: a list of a million lines (or a StringIO, which holds the
    text four bytes a character) would add 70-80 MB to the peak of a large load."""
    start, end_of_text = 0, len(text)
    while start < end_of_text:
        end = text.find("\n", start + chunk)
        if end == -1:
            end = end_of_text
        yield from text[start:end].split("\n")
        start = end + 1


def _format_index(ruleset: RuleSet, name: str) -> int:
    if name not in ruleset.formats:
        ruleset.formats.append(name)
    return ruleset.formats.index(name)
