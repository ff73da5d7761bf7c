"""The event schema's one source (sensor/schema.py) and what is made from it: docs/events.md's tables and the
Elasticsearch assets of siem/elasticsearch/, checked against the ECS 9.4.0 definitions."""

from __future__ import annotations

import json
import subprocess
import sys

from ecs_check import definitions

from conftest import ROOT

ES = ROOT / "siem" / "elasticsearch"


def flat_properties(properties: dict, prefix: str = ""):
    for name, mapping in properties.items():
        path = prefix + name
        if "type" in mapping:
            yield path, mapping
        if "properties" in mapping:
            yield from flat_properties(mapping["properties"], path + ".")


def test_events_doc_tables_are_generated_from_the_records():
    result = subprocess.run([sys.executable, "-m", "sensor.schema_doc", "--check"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    text = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    assert "truesource.rule.suffix" not in text and "below_only" not in text  # never emitted
    for field in ("truesource.rule.kind", "truesource.rule.format", "truesource.rule.pattern",
                  "truesource.rule.source", "`rule.id`", "`rule.category`", "`event.severity`",
                  "truesource.heuristic", "dns.question.registered_domain", "threat.enrichments.matched.atomic"):
        assert field in text, field


def test_elasticsearch_assets_are_current():
    result = subprocess.run([sys.executable, str(ES / "make_assets.py"), "--check"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_ecs_component_template_maps_fields_as_ecs_defines_them():
    ecs = definitions()
    mapped = dict(flat_properties(json.loads((ES / "component-ecs.json").read_text())["template"]["mappings"]
                                  ["properties"]))
    assert mapped
    for path, mapping in mapped.items():
        assert path in ecs, f"{path}: not an ECS field"
        assert mapping["type"] == ecs[path]["type"], f"{path}: {mapping['type']} where ECS says {ecs[path]['type']}"
    assert mapped["dns.id"]["type"] == "keyword" and mapped["threat.enrichments"]["type"] == "nested"
    assert mapped["related.ip"]["type"] == "ip" and mapped["ecs.version"]["type"] == "keyword"


def test_every_field_an_event_can_carry_is_mapped():
    sys.path.insert(0, str(ES))
    import make_assets

    mapped = set()
    for name in ("component-ecs.json", "component-truesource.json"):
        body = json.loads((ES / name).read_text())
        mapped |= {p for p, _ in flat_properties(body["template"]["mappings"]["properties"])}
    missing = [p for p in make_assets.all_leaves() if p not in mapped]
    assert not missing
    custom = json.loads((ES / "component-truesource.json").read_text())["template"]["mappings"]["properties"]
    assert set(custom) == {"truesource"}  # everything ECS lacks is under truesource.*


def test_index_template_and_pipeline_fit_together():
    ecs = definitions()
    template = json.loads((ES / "index-template.json").read_text())
    assert template["composed_of"] == ["truesource-ecs", "truesource-custom"]
    assert template["template"]["settings"]["index"]["default_pipeline"] == "truesource"
    pipeline = json.loads((ES / "ingest-pipeline.json").read_text())
    for processor in pipeline["processors"]:
        (kind, options), = processor.items()
        for key in ("target_field",) if kind == "rename" else ("field", "target_field"):  # rename: from legacy
            field = options.get(key)
            if field and not field.startswith("truesource."):
                assert field in ecs or any(f.startswith(field + ".") for f in ecs), f"{kind}.{key}: {field}"
