"""`truesource rules test`: the deciding rule with its file and line, and the others that also matched."""

from __future__ import annotations

import json

from conftest import run_cli


def test_rules_test_explains_each_name(tmp_path):
    rules = tmp_path / "r.rules"
    rules.write_text("evil.com id=E1\n=login.evil.com\n!safe.evil.com\n~^x[0-9]+\\.evil\\.com$\n")
    result = run_cli("rules", "test", "--rules", str(rules), "--json", "login.evil.com", "SAFE.evil.com.",
                     "x12.evil.com", "other.org")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["verdict"], x["rule"] and x["rule"]["rule"]) for x in lines] == [
        ("hit", "=login.evil.com"), ("allowed", "!safe.evil.com"), ("hit", "evil.com"), ("no match", None)]
    assert [(o["rule"], o["line"]) for o in lines[0]["also_matched"]] == [("evil.com", 1)]
    assert lines[0]["rule"]["file"] == str(rules) and lines[0]["rule"]["line"] == 2
    assert [o["rule"] for o in lines[2]["also_matched"]] == ["~^x[0-9]+\\.evil\\.com$"]  # less specific: not deciding
    assert lines[2]["rule"]["meta"] == {"id": "E1"}


def test_rules_test_bad_rule_file_exits_2(tmp_path):
    rules = tmp_path / "r.rules"
    rules.write_text("good.com\nbad..name\n")
    result = run_cli("rules", "test", "--rules", str(rules), "good.com")
    assert result.returncode == 2 and f"{rules}:2:" in result.stderr
