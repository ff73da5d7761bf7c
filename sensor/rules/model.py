"""The rule model every format loads into: kinds, metadata, precedence, and the columnar RuleSet.

Kinds, from most to least specific (docs/rules.md):
  exact     `=login.evil.com`   that name only
  suffix    `evil.com`          the name and every name below it (`xyz`: a TLD; `.`: every name)
  below     `*.evil.net`        only the names below (RPZ's wildcard owner)
  wildcard  `*-paypal-login.*`  `*` any run of characters within a label, `?` one; matched at label boundaries
  regex     `~^[a-z0-9]{30,}\\.top$`  searched in the lowercase name, no trailing dot
Suffix and below rules rank by label count: more labels is more specific; an exact rule outranks a suffix rule
on the same name. `!` before any kind makes an allow rule; on a tie, allow wins.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

EXACT, SUFFIX, BELOW, WILDCARD, REGEX = 0, 1, 2, 3, 4
KIND_NAMES = ("exact", "suffix", "below", "wildcard", "regex")
NAME_KINDS = (EXACT, SUFFIX, BELOW)  # matched by the suffix-hash table; the others by the pattern matcher


@dataclass(frozen=True, slots=True)
class RuleMeta:
    """What a hit says about why: from the file's header, overridden per rule."""

    id: str | None = None
    category: str | None = None
    severity: int | None = None
    description: str | None = None
    reference: str | None = None
    source: str | None = None
    extra: tuple[tuple[str, str], ...] = ()  # format-specific columns (Zeek intel meta.*), in file order

    def merged(self, other: RuleMeta) -> RuleMeta:
        """`other`'s fields where set, else this one's (a rule's own metadata over its file header)."""
        return RuleMeta(
            id=other.id if other.id is not None else self.id,
            category=other.category if other.category is not None else self.category,
            severity=other.severity if other.severity is not None else self.severity,
            description=other.description if other.description is not None else self.description,
            reference=other.reference if other.reference is not None else self.reference,
            source=other.source if other.source is not None else self.source,
            extra=self.extra + other.extra,
        )


NO_META = RuleMeta()


def pack_slots(own: int, below: int) -> int:
    """A table value: the rules deciding for the name itself and for names below it (-1: none) in one int,
    32 bytes where a tuple of two ints costs 84: a million-rule table is 50 MB lighter."""
    return (own + 1) | ((below + 1) << 32)


def unpack_slots(value) -> tuple[int, int]:
    """(own, below) of a table value: a packed int, or a pair (tables written by hand in tests)."""
    if isinstance(value, int):
        return (value & 0xFFFFFFFF) - 1, (value >> 32) - 1
    return value[0], value[1]


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule. `pattern` is the lowercase name without trailing dot ('' is the root) for exact, suffix and
    below rules, the wildcard or the regex text otherwise. `text` is the line (or row) as written."""

    kind: int
    pattern: str
    allow: bool
    text: str
    ruleset: str
    line: int
    format: str = "native"
    meta: RuleMeta = NO_META

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    @property
    def suffix(self) -> str:  # the name an exact/suffix/below rule is about
        return self.pattern

    @property
    def below_only(self) -> bool:
        return self.kind == BELOW


@dataclass(slots=True)
class LoadReport:
    """What a load found besides the rules: per kind and format counts, duplicates, shadowed rules."""

    by_kind: dict[str, int] = field(default_factory=dict)
    by_format: dict[str, int] = field(default_factory=dict)
    duplicates: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, why)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    empty_files: list[tuple[str, str, bool]] = field(default_factory=list)  # (file, why, came from a directory)


class RuleSet:
    """Rules in load order, kept in columns (a million Rule objects would cost hundreds of MB).

    `table` maps a name to (rule deciding for the name itself, rule deciding for names below it), -1 for none,
    packed in one int (pack_slots/unpack_slots):
    precedence among exact, suffix and below rules on one name is settled here, at load, so a lookup is one
    probe per label. `allow[i]` is 1 for allow rules. Wildcard and regex rules are listed in `patterns`.
    """

    __slots__ = ("table", "allow", "files", "formats", "metas", "patterns", "report",
                 "_kind", "_pattern", "_text", "_file", "_line", "_meta", "_format")

    def __init__(self) -> None:
        self.table: dict[str, int] = {}
        self.allow = bytearray()
        self.files: list[str] = []
        self.formats: list[str] = []
        self.metas: list[RuleMeta] = [NO_META]
        self.patterns: list[int] = []
        self.report = LoadReport()
        self._kind = bytearray()
        self._pattern: list[str] = []
        self._text: dict[int, str] = {}  # only where the text is not the pattern itself (most lines are)
        self._file = array("H")
        self._line = array("I")
        self._meta = array("I")
        self._format = bytearray()

    def __len__(self) -> int:
        return len(self._pattern)

    # -- loading ---------------------------------------------------------------------------------------------

    def file_index(self, filename: str) -> int:
        if filename not in self.files:
            self.files.append(filename)
        return self.files.index(filename)

    def meta_index(self, meta: RuleMeta) -> int:
        """Index of a metadata record; callers reuse the index of a file header for all its rules."""
        if meta == NO_META:
            return 0
        self.metas.append(meta)
        return len(self.metas) - 1

    def add(self, rule: Rule) -> int:
        """Add one rule; returns its index, or -1 when an equal or stronger rule already decides the same."""
        fmt = self.formats.index(rule.format) if rule.format in self.formats else len(self.formats)
        if fmt == len(self.formats):
            self.formats.append(rule.format)
        return self.add_fields(rule.kind, rule.pattern, rule.allow, rule.text, self.file_index(rule.ruleset),
                               rule.line, self.meta_index(rule.meta), fmt)

    def add_fields(self, kind: int, pattern: str, allow: bool, text: str, file_index: int, line: int,
                   meta_index: int = 0, format_index: int = 0) -> int:
        index = len(self._pattern)
        if kind in NAME_KINDS and not self._place(kind, pattern, allow, index):
            self.report.duplicates.append((self.files[file_index], line, f"{text!r} decides nothing new"))
            return -1
        if kind not in NAME_KINDS:
            self.patterns.append(index)
        self._kind.append(kind)
        self._pattern.append(pattern)
        if text != pattern:
            self._text[index] = text
        self._file.append(file_index)
        self._line.append(line)
        self._meta.append(meta_index)
        self._format.append(format_index)
        self.allow.append(allow)
        kind_name = KIND_NAMES[kind] + (" allow" if allow else "")
        self.report.by_kind[kind_name] = self.report.by_kind.get(kind_name, 0) + 1
        fmt = self.formats[format_index] if self.formats else "native"
        self.report.by_format[fmt] = self.report.by_format.get(fmt, 0) + 1
        return index

    def _place(self, kind: int, name: str, allow: bool, index: int) -> bool:
        """Put the rule in the slots it decides; False if it decides none (a duplicate or shadowed rule)."""
        own, below = unpack_slots(self.table.get(name, 0))
        placed = False
        if kind in (EXACT, SUFFIX) and self._wins(kind, allow, own):
            own, placed = index, True
        if kind in (SUFFIX, BELOW) and self._wins(SUFFIX, allow, below):
            below, placed = index, True
        if placed:
            self.table[name] = pack_slots(own, below)
        return placed

    def _wins(self, kind: int, allow: bool, current: int) -> bool:
        """Does a new rule beat the one deciding a slot now? More specific kind first, then allow over deny."""
        if current == -1:
            return True
        rank, current_rank = _RANK[kind], _RANK[self._kind[current]]
        if rank != current_rank:
            return rank > current_rank
        return allow and not self.allow[current]

    def drop_table(self) -> None:
        """Free the name table once a compiled rule set holds it: 60 MB at a million rules (the dict and its
        packed values; the names stay, in the columns). The compiled loop and the events need only the columns;
        the reference loop and `rules test` need the table."""
        self.table = {}

    # -- reading ---------------------------------------------------------------------------------------------

    def rule(self, index: int) -> Rule:
        text = self._text.get(index)
        pattern = self._pattern[index]
        return Rule(self._kind[index], pattern, bool(self.allow[index]), pattern if text is None else text,
                    self.files[self._file[index]], self._line[index],
                    self.formats[self._format[index]] if self.formats else "native",
                    self.metas[self._meta[index]])

    @property
    def rules(self) -> list[Rule]:
        return [self.rule(i) for i in range(len(self._pattern))]

    @property
    def duplicates(self) -> int:
        return len(self.report.duplicates)


_RANK = {EXACT: 2, SUFFIX: 1, BELOW: 1}  # within one name; label count is settled by the lookup order
