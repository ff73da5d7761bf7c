"""Checks an event against the ECS 9.4.0 field definitions (tests/data/ecs_flat.yml, elastic/ecs v9.4.0,
Apache License 2.0: tests/data/ecs_LICENSE.txt): every field outside `truesource.` is an ECS field of the right
type, arrays only where ECS normalises to an array, allowed values for the categorisation fields, and the
required fields present."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from functools import cache
from pathlib import Path

ECS_FLAT = Path(__file__).resolve().parent / "data" / "ecs_flat.yml"
CUSTOM = "truesource"  # the one top-level field set ECS does not define
TEXT = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text"}
INTEGER = {"long", "integer", "short", "byte", "unsigned_long"}
FLOAT = {"float", "half_float", "scaled_float", "double"}
OBJECT = {"object", "nested", "flattened"}


@cache
def definitions() -> dict[str, dict]:
    import yaml

    with open(ECS_FLAT, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def leaves(obj: dict, prefix: str = "", arrays: frozenset = frozenset()):
    """(dotted path, value, whether an enclosing object was in a list) of every leaf; objects in lists keep
    their path (ECS `nested`/array-of-object fields such as `dns.answers`)."""
    for key, value in obj.items():
        path = prefix + key
        if isinstance(value, dict):
            yield path, value, path in arrays
            yield from leaves(value, path + ".", arrays)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            yield path, value, False
            for item in value:
                yield from leaves(item, path + ".", arrays | {path})
        else:
            yield path, value, False


def _type_error(kind: str, value) -> str | None:
    if kind in TEXT:
        ok = isinstance(value, str)
    elif kind in INTEGER:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind in FLOAT:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "date":
        try:
            ok = isinstance(value, str) and datetime.fromisoformat(value.replace("Z", "+00:00")) is not None
        except ValueError:
            ok = False
    elif kind == "ip":
        try:
            ok = isinstance(value, str) and ipaddress.ip_address(value) is not None
        except ValueError:
            ok = False
    elif kind in OBJECT:
        ok = isinstance(value, dict | list)
    else:
        ok = True
    return None if ok else f"{value!r} is not ECS type {kind}"


def check_event(event: dict) -> list[str]:
    """Every way the event departs from ECS, one line each (empty: it conforms)."""
    ecs = definitions()
    errors = []
    for name, field in ecs.items():
        if field.get("required") and _get(event, name) is None:
            errors.append(f"{name}: required by ECS, missing")
    for path, value, _ in leaves(event):
        if path == CUSTOM or path.startswith(CUSTOM + "."):
            continue
        field = ecs.get(path)
        if field is None:
            if isinstance(value, dict) and any(name.startswith(path + ".") for name in ecs):
                continue  # an object holding ECS fields (`source`, `dns.question`)
            errors.append(f"{path}: not an ECS field")
            continue
        kind = field["type"]
        if isinstance(value, list):
            if "array" not in field.get("normalize", []):
                errors.append(f"{path}: a list, but ECS does not normalise it to an array")
            items = value
        else:
            items = [value]
        for item in items:
            if kind in OBJECT and isinstance(item, dict):
                continue
            problem = _type_error(kind, item)
            if problem:
                errors.append(f"{path}: {problem}")
            elif field.get("pattern") and isinstance(item, str) and not re.fullmatch(field["pattern"], item):
                errors.append(f"{path}: {item!r} does not match ECS pattern {field['pattern']}")
        allowed = field.get("allowed_values")
        if allowed:
            names = {a["name"] for a in allowed}
            for item in items:
                if item not in names:
                    errors.append(f"{path}: {item!r} is not an ECS allowed value")
    categories = _get(event, "event.category") or []
    types = _get(event, "event.type") or []
    expected = {t for a in ecs["event.category"]["allowed_values"] if a["name"] in categories
                for t in a.get("expected_event_types", [])}
    for kind in types:
        if categories and kind not in expected:
            errors.append(f"event.type: {kind!r} is not expected with event.category {categories}")
    return errors


def _get(event: dict, dotted: str):
    value = event
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            if isinstance(value, dict) and dotted in value:
                return value[dotted]
            return None
        value = value[part]
    return value
