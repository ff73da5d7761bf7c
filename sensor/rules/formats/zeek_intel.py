"""Zeek Intel framework files (what `Intel::read_files` reads): `Intel::DOMAIN` rows are exact names.

    #fields<TAB>indicator<TAB>indicator_type<TAB>meta.source<TAB>meta.desc<TAB>meta.url
    evil.example<TAB>Intel::DOMAIN<TAB>feed-a<TAB>C2 server<TAB>https://feed.example/1
    192.0.2.1<TAB>Intel::ADDR<TAB>feed-a<TAB>-<TAB>-

Columns are tab-separated (or what a `#separator \\xHH` line says); `-` is an unset field, `(empty)` an empty
one (or what `#unset_field` / `#empty_field` say). Other `#` lines are comments. An `Intel::DOMAIN` row is that
exact name, as Zeek's intel framework matches it; `meta.source` becomes the rule's source, `meta.desc` its
description, `meta.url` its reference, and every set `meta.*` column is kept in the rule's extra metadata (key
without `meta.`) so a hit carries it. Rows of other indicator types (`Intel::ADDR`, `Intel::URL`,
`Intel::FILE_HASH`...) are skipped and counted.

Errors (`file:line: why`): a row before `#fields`, a `#fields` line without `indicator` and `indicator_type`, a
row with a different number of columns, a type that is not `Intel::...`, a DOMAIN indicator that is not a name.
"""

from __future__ import annotations

import io
import re
from typing import Any

from sensor.errors import RuleError
from sensor.rules.formats.names import to_name
from sensor.rules.formats.tally import FileTally, OnError, format_index
from sensor.rules.model import EXACT, RuleMeta, RuleSet

FORMAT = "zeek_intel"
DOMAIN_TYPE = "Intel::DOMAIN"
META_FIELDS = {"meta.source": "source", "meta.desc": "description", "meta.url": "reference"}
_HEX_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def unescape(value: str) -> str:
    """Zeek's `\\xHH` escapes (a separator inside a value is written so) to the characters."""
    return _HEX_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value) if "\\x" in value else value


class _Columns:
    """What the header lines said: the separator, the unset and empty markers, the columns."""

    def __init__(self) -> None:
        self.separator = "\t"
        self.unset = "-"
        self.empty = "(empty)"
        self.fields: list[str] | None = None
        self.broken = False  # a bad `#fields` line was reported once; its rows are not reported again
        self.indicator = self.indicator_type = -1
        self.meta: list[tuple[int, str]] = []  # (column, key without `meta.`)

    def directive(self, body: str, where: str) -> None:
        """`#separator`, `#unset_field`, `#empty_field` or `#fields`; other `#` lines are comments."""
        key, _, value = body.partition(" ") if not body.startswith("#fields") else ("#fields", "", body[7:])
        if key == "#separator":
            self.separator = unescape(value.strip())
        elif key == "#unset_field":
            self.unset = unescape(value.strip())
        elif key == "#empty_field":
            self.empty = unescape(value.strip())
        elif key == "#fields":
            fields = [f.strip() for f in value.lstrip(self.separator + " ").split(self.separator)]
            if "indicator" not in fields or "indicator_type" not in fields:
                self.fields, self.broken = None, True
                raise RuleError(f"{where}: '#fields' names no 'indicator' and 'indicator_type' columns "
                                f"(columns are separated by {self.separator!r})")
            self.fields, self.broken = fields, False
            self.indicator = fields.index("indicator")
            self.indicator_type = fields.index("indicator_type")
            self.meta = [(i, f[5:]) for i, f in enumerate(fields) if f.startswith("meta.") and len(f) > 5]

    def value(self, text: str) -> str | None:
        return None if text in (self.unset, self.empty, "") else unescape(text)


def load_zeek_intel(ruleset: RuleSet, text: str, filename: str, on_error: OnError | None = None) -> None:
    tally = FileTally(ruleset, FORMAT, on_error)
    file_index = ruleset.file_index(filename)
    fmt = format_index(ruleset, FORMAT)
    columns = _Columns()
    meta_indices: dict[tuple[str, ...], int] = {}  # meta.* values as written -> metadata: rows share a few
    for number, line in enumerate(io.StringIO(text), 1):
        row = line.rstrip("\r\n")
        if not row.strip():
            continue
        try:
            if row[0] == "#":
                meta_indices.clear()  # a directive may change what the values mean
                columns.directive(row, f"{filename}:{number}")
                continue
            if columns.fields is None:
                if columns.broken:
                    tally.skip("rows under a broken '#fields' line")
                    continue
                raise RuleError(f"{filename}:{number}: a row before the '#fields' line that names the columns")
            values = row.split(columns.separator)
            if len(values) != len(columns.fields):
                raise RuleError(f"{filename}:{number}: {len(values)} column{'s' if len(values) > 1 else ''} "
                                f"where '#fields' names {len(columns.fields)} (separated by {columns.separator!r})")
            kind = values[columns.indicator_type].strip()
            if kind != DOMAIN_TYPE:
                if not kind.startswith("Intel::") or len(kind) == 7:
                    raise RuleError(f"{filename}:{number}: indicator type {kind!r} is not an Intel:: type")
                tally.skip(f"{kind} rows")
                continue
            indicator = values[columns.indicator].strip()
            name = to_name(indicator, filename, number, indicator)
            key = tuple([values[i] for i, _ in columns.meta])
            meta_index = meta_indices.get(key)
            if meta_index is None:
                meta_index = meta_indices[key] = ruleset.meta_index(_row_meta(columns, values))
            ruleset.add_fields(EXACT, name, False, indicator, file_index, number, meta_index, fmt)
        except RuleError as err:
            tally.error(err)
    tally.close()


def _row_meta(columns: _Columns, values: list[str]) -> RuleMeta:
    fields: dict[str, Any] = {}
    extra: list[tuple[str, str]] = []
    for index, key in columns.meta:
        value = columns.value(values[index])
        if value is None:
            continue
        extra.append((key, value))
        field = META_FIELDS.get(f"meta.{key}")
        if field is not None:
            fields[field] = value
    return RuleMeta(extra=tuple(extra), **fields)
