"""Rule files: meaning of each line, errors with file and line, and matching by both matchers."""

from __future__ import annotations

import pytest

from sensor._loop import SuffixSet  # noqa: F401  (the compiled set must exist)
from sensor.errors import RuleError
from sensor.rules.loader import load_rules, parse_rule_line
from sensor.rules.matcher import match_labels


def write(tmp_path, text: str, name: str = "r.rules"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_line_meanings(tmp_path):
    rules = load_rules([write(tmp_path, "# feed\nEvil.COM.\n*.cdn.net  # below only\nxyz\n\n")])
    assert [(r.suffix, r.below_only, r.line) for r in rules.rules] == [
        ("evil.com", False, 2), ("cdn.net", True, 3), ("xyz", False, 4)]


def test_root_rule_covers_everything(tmp_path):
    rules = load_rules([write(tmp_path, ".\n")])
    assert match_labels(rules, ["anything", "at", "all"]) == 0
    assert match_labels(rules, []) == 0


@pytest.mark.parametrize("line,why", [
    ("evil..com", "empty label"),
    ("bad name.com", "is not metadata"),
    ("ev!l.com", "not a domain name"),
    ("a" * 64 + ".com", "over 63"),
    ("*.", "needs a name"),
    ("-lead.com", "not a domain name"),
    ("mid.*!.com", "not a wildcard"),
    ("=*.evil.com", "not a wildcard"),
    ("~(unclosed", "bad regex"),
    ("evil.com severity=high", "not a whole number"),
])
def test_bad_line_names_file_and_line(tmp_path, line, why):
    path = write(tmp_path, f"good.com\n{line}\n")
    with pytest.raises(RuleError) as err:
        load_rules([path])
    assert str(err.value).startswith(f"{path}:2: ")
    assert why in str(err.value)


def test_name_too_long(tmp_path):
    name = ".".join(["a" * 60] * 5)
    with pytest.raises(RuleError, match="longer than 253"):
        parse_rule_line(name, "f", 7)


def test_missing_file():
    with pytest.raises(RuleError, match="cannot read rules"):
        load_rules(["/nonexistent/rules.txt"])


def test_directory_skips_documentation(tmp_path):
    write(tmp_path, "a.com\n", "one.rules")
    write(tmp_path, "not a rule at all\n", "README.md")
    write(tmp_path, "b.com\n", "two.txt")
    rules = load_rules([str(tmp_path)])
    assert sorted(r.suffix for r in rules.rules) == ["a.com", "b.com"]


def test_duplicates_are_counted_once(tmp_path):
    rules = load_rules([write(tmp_path, "a.com\nA.com.\n*.a.com\n")])
    assert len(rules) == 1 and rules.duplicates == 2


def test_most_specific_rule_wins(tmp_path):
    rules = load_rules([write(tmp_path, "com\nevil.com\n*.x.evil.com\n")])
    assert rules.rules[match_labels(rules, ["a", "EVIL", "com"])].suffix == "evil.com"
    assert rules.rules[match_labels(rules, ["a", "x", "evil", "com"])].suffix == "x.evil.com"
    # *.x.evil.com does not cover x.evil.com itself: the next rule up decides
    assert rules.rules[match_labels(rules, ["x", "evil", "com"])].suffix == "evil.com"
    assert rules.rules[match_labels(rules, ["other", "com"])].suffix == "com"
    assert match_labels(rules, ["other", "org"]) == -1
