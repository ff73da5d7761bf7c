#!/usr/bin/env python3
"""Writes the Elasticsearch assets of this folder from the event records (sensor/schema.py) and the ECS 9.4.0
field definitions (tests/data/ecs_flat.yml): two component templates, the index template, the ingest pipeline.

  component-ecs.json        ECS mappings of every ECS field an event can carry, as ECS defines them
  component-truesource.json the `truesource.*` mappings, from the records' types
  index-template.json       `truesource-*` indices (and data streams `logs-truesource-*`) composed of both
  ingest-pipeline.json      the `truesource` pipeline: event.ingested; for older sensors' events a Community ID, a
                            string dns.id, and ICMP type/code moved from the non-ECS `icmp.*` to truesource.flow.icmp

`python siem/elasticsearch/make_assets.py` rewrites them; `--check` says whether they are current (a test runs it
and checks every mapping against the ECS definitions).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

import msgspec.inspect as mi  # noqa: E402

from sensor import schema  # noqa: E402

ECS_FLAT = ROOT / "tests" / "data" / "ecs_flat.yml"
KEYWORD_IGNORE_ABOVE = 1024  # ECS's own setting for keywords


def record_leaves(struct: type, prefix: str = "") -> dict[str, mi.Type]:
    """Dotted path -> type of every field the record can carry (objects in lists keep their path)."""
    out: dict[str, mi.Type] = {}
    for field in mi.type_info(struct).fields:
        t = _bare(field.type)
        path = prefix + field.encode_name
        item = _bare(t.item_type) if isinstance(t, mi.ListType) else None
        target = t if isinstance(t, mi.StructType) else item if isinstance(item, mi.StructType) else None
        if target is not None:
            out.update(record_leaves(target.cls, path + "."))
            if item is not None:
                out[path] = t
        else:
            out[path] = t
    return out


def _bare(t: mi.Type) -> mi.Type:
    while True:
        if isinstance(t, mi.Metadata):
            t = t.type
        elif isinstance(t, mi.UnionType):
            rest = [x for x in t.types if not isinstance(x, mi.NoneType | mi.RawType)]
            if len(rest) != 1:
                return mi.AnyType()
            t = rest[0]
        else:
            return t


def all_leaves() -> dict[str, mi.Type]:
    out: dict[str, mi.Type] = {}
    for _, record, _ in schema.KINDS.values():
        out.update(record_leaves(record))
    return dict(sorted(out.items()))


def ecs_definitions() -> dict[str, dict]:
    import yaml

    with open(ECS_FLAT, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def ecs_mapping(field: dict) -> dict:
    kind = field["type"]
    mapping: dict[str, Any] = {"type": kind}
    if kind == "keyword":
        mapping["ignore_above"] = field.get("ignore_above", KEYWORD_IGNORE_ABOVE)
    if kind == "scaled_float":
        mapping["scaling_factor"] = field.get("scaling_factor", 1000)
    for multi in field.get("multi_fields", []):
        mapping.setdefault("fields", {})[multi["name"]] = {"type": multi["type"]}
    return mapping


def truesource_mapping(t: mi.Type) -> dict:
    if isinstance(t, mi.StrType):
        return {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
    if isinstance(t, mi.BoolType):
        return {"type": "boolean"}
    if isinstance(t, mi.IntType):
        return {"type": "long"}
    if isinstance(t, mi.FloatType):
        return {"type": "double"}
    if isinstance(t, mi.ListType):
        item = _bare(t.item_type)
        return {"type": "object"} if isinstance(item, mi.StructType | mi.DictType) else truesource_mapping(item)
    return {"type": "flattened"}  # open maps (counters, reload bodies, evidence): one field, no mapping explosion


def nest(flat: dict[str, dict]) -> dict:
    """Dotted mappings -> Elasticsearch `properties` nesting."""
    root: dict = {}
    for path, mapping in flat.items():
        node = root
        parts = path.split(".")
        for part in parts[:-1]:
            entry = node.setdefault(part, {})
            entry.setdefault("properties", {})
            node = entry["properties"]
        leaf = node.setdefault(parts[-1], {})
        leaf.update(mapping)
    return root


def assets() -> dict[str, dict]:
    ecs = ecs_definitions()
    leaves = all_leaves()
    ecs_flat, custom = {}, {}
    for path, t in leaves.items():
        if path.startswith("truesource."):
            custom[path] = truesource_mapping(t)
            if isinstance(t, mi.StrType) and path.endswith(".ip"):
                custom[path] = {"type": "ip"}
            elif isinstance(t, mi.StrType) and path.endswith((".time", ".last_packet")):
                custom[path] = {"type": "date"}
        elif path in ecs:
            ecs_flat[path] = ecs_mapping(ecs[path])
    for path in list(ecs_flat):  # ECS object/nested parents of mapped fields (dns.answers, threat.enrichments)
        parts = path.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent in ecs and ecs[parent]["type"] in ("nested", "object") and parent not in ecs_flat:
                ecs_flat[parent] = {"type": ecs[parent]["type"]}
    ecs_flat = dict(sorted(ecs_flat.items()))
    meta = {"description": "made by siem/elasticsearch/make_assets.py from sensor/schema.py", "ecs_version":
            schema.ECS_VERSION}
    component_ecs = {"template": {"mappings": {"properties": nest(ecs_flat)}}, "_meta": meta}
    component_custom = {"template": {"mappings": {"properties": nest(custom)}}, "_meta": meta}
    index_template = {
        "index_patterns": ["truesource-*", "logs-truesource-*"],
        "composed_of": ["truesource-ecs", "truesource-custom"],
        "priority": 200,
        "template": {"settings": {"index": {"default_pipeline": "truesource", "mapping": {
            "total_fields": {"limit": 2000}}}},
            "mappings": {"dynamic": "false", "date_detection": False}},
        "_meta": meta,
    }
    pipeline = {
        "description": "truesource events: ingest time, and older sensors' events made ECS 9.4.0 exact",
        "processors": [
            {"set": {"field": "event.ingested", "value": "{{{_ingest.timestamp}}}", "tag": "ingested"}},
            {"community_id": {"if": "ctx.network?.community_id == null && ctx.source?.port != null",
                              "source_ip": "source.ip", "source_port": "source.port",
                              "destination_ip": "destination.ip", "destination_port": "destination.port",
                              "iana_number": "network.iana_number", "target_field": "network.community_id",
                              "ignore_missing": True, "tag": "community_id"}},
            {"rename": {"if": "ctx.icmp != null", "field": "icmp", "target_field": "truesource.flow.icmp",
                        "ignore_missing": True, "tag": "icmp"}},  # flows of sensors before ECS 9.4.0 exactness
            {"convert": {"field": "dns.id", "type": "string", "ignore_missing": True, "tag": "dns_id"}},
        ],
        "on_failure": [{"set": {"field": "error.message", "value": "{{{_ingest.on_failure_message}}}"}}],
        "_meta": meta,
    }
    return {"component-ecs.json": component_ecs, "component-truesource.json": component_custom,
            "index-template.json": index_template, "ingest-pipeline.json": pipeline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether the files are current")
    args = parser.parse_args(argv)
    stale = []
    for name, body in assets().items():
        text = json.dumps(body, indent=2, sort_keys=False) + "\n"
        path = HERE / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"siem/elasticsearch: stale: {', '.join(stale)}; run python siem/elasticsearch/make_assets.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
