"""docs/events.md's field tables, generated from the event records of sensor/schema.py (the one source).

`python -m sensor.schema_doc` rewrites the tables between `<!-- schema: NAME -->` and `<!-- end schema -->` in
docs/events.md (the prose around them is written by hand); `--check` only says whether they are current (a test
runs it). NAME is a record class of sensor/schema.py, or `kinds` for the table of event kinds.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec.inspect as mi

from sensor import schema

DOC = Path(__file__).resolve().parent.parent / "docs" / "events.md"
BLOCK = re.compile(r"(<!-- schema: (\w+) -->\n)(.*?)(<!-- end schema -->)", re.S)


def _plain(t: mi.Type) -> tuple[mi.Type, bool]:
    """The type without its None option, and whether None was one."""
    if isinstance(t, mi.UnionType):
        rest = [x for x in t.types if not isinstance(x, mi.NoneType | mi.RawType)]
        if len(rest) == 1:
            return rest[0], any(isinstance(x, mi.NoneType) for x in t.types)
    return t, False


def _meta(t: mi.Type) -> tuple[mi.Type, str, object]:
    if isinstance(t, mi.Metadata):
        extra = t.extra or {}
        return t.type, t.extra_json_schema.get("description", "") if t.extra_json_schema else "", extra.get(
            "example")
    return t, "", None


def _name(t: mi.Type) -> str:
    t, _ = _plain(t)
    if isinstance(t, mi.Metadata):
        t = t.type
    simple = {mi.StrType: "string", mi.IntType: "int", mi.FloatType: "number", mi.BoolType: "bool",
              mi.AnyType: "any", mi.DictType: "object", mi.StructType: "object"}
    for cls, name in simple.items():
        if isinstance(t, cls):
            return name
    if isinstance(t, mi.ListType):
        return f"list of {_name(t.item_type)}"
    return type(t).__name__


def fields(struct: type, prefix: str = "") -> Iterator[tuple[str, str, str, bool]]:
    """(dotted name, type, meaning, always present) of every leaf and object field, depth first."""
    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType), struct
    for field in info.fields:
        t, description, example = _meta(field.type)
        t, optional = _plain(t)
        if isinstance(t, mi.Metadata):
            t, description2, example2 = _meta(t)
            description, example = description or description2, example if example is not None else example2
        name = prefix + field.encode_name
        if example is not None:
            description = f"{description} (e.g. `{example}`)" if description else f"e.g. `{example}`"
        required = field.required and not optional
        item = t.item_type if isinstance(t, mi.ListType) else None
        if item is not None:
            item, _ = _plain(_meta(item)[0])
        if isinstance(t, mi.StructType) or isinstance(item, mi.StructType):
            target = t.cls if isinstance(t, mi.StructType) else item.cls  # type: ignore[union-attr]
            if description or item is not None:
                yield name, _name(t), description, required
            yield from fields(target, name + ".")
        else:
            yield name, _name(t), description, required


def table(struct: type) -> str:
    rows = ["| field | type | present | meaning |", "| --- | --- | --- | --- |"]
    for name, kind, meaning, required in fields(struct):
        rows.append(f"| `{name}` | {kind} | {'always' if required else 'when set'} | {meaning.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def kinds_table() -> str:
    rows = ["| `event.dataset` | topic | record | what |", "| --- | --- | --- | --- |"]
    for dataset, (topic, record, title) in schema.KINDS.items():
        rows.append(f"| `{dataset}` | `{topic}` | `{record.__name__}` | {title} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    def block(match: re.Match) -> str:
        name = match.group(2)
        body = kinds_table() if name == "kinds" else table(getattr(schema, name))
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate docs/events.md's field tables from sensor/schema.py")
    parser.add_argument("--check", action="store_true", help="only say whether docs/events.md is current")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    text = args.doc.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print(f"{args.doc}: field tables are stale; run python -m sensor.schema_doc", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.doc.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
