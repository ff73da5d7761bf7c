"""`truesource rules check`: every error of every file as `file:line: why`, counts per kind and format,
duplicates and shadowed rules, skipped lines and files; exit 1 on errors, 0 without, 2 for a missing path."""

from __future__ import annotations

import io

import pytest

from conftest import ROOT, run_cli
from sensor.errors import RuleError
from sensor.rules.check import MAX_ERRORS_PER_FILE, run_check


def check(paths: list[str], rules_format: str | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = run_check(paths, rules_format, out)
    return code, out.getvalue()


def errors_of(output: str) -> list[str]:
    """The `  file:line: why` lines after the `N errors:` line."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(("error:", "errors:")))
    return [line.strip() for line in lines[start + 1:]]


def test_shipped_rules_are_clean():
    code, output = check([str(ROOT / "rules")])
    assert code == 0, output
    # The examples show skipped lines on purpose: "no errors" alone would hide them (issue 17, item 2)
    assert output.rstrip().endswith("no errors, but lines or files were skipped (above): the sensor loads without them")
    for line in ("rules/example.hosts: hosts, 6 rules, 6 lines skipped",
                 "rules/example.rpz.zone: rpz, 7 rules, 2 lines skipped",
                 "rules/example.intel: zeek_intel, 3 rules, 2 lines skipped"):
        assert line in output, output
    by_format = next(line for line in output.splitlines() if line.startswith("  by format:"))
    for fmt in ("native", "hosts", "adblock", "zeek_intel", "rpz"):
        assert f"{fmt} " in by_format


def test_every_error_of_every_format(tmp_path):
    (tmp_path / "a.rules").write_text("#@ category: c2\ngood.example\nbad..one\nok.example\nev!l.example\n"
                                      "good.example\n~(unclosed\nlast.example\n")
    (tmp_path / "b.hosts").write_text("0.0.0.0 fine.example\n0.0.0.0 bad!.example\nnot-an-address x.example\n"
                                      "0.0.0.0 fine2.example\n")
    (tmp_path / "c.txt").write_text("[Adblock Plus 2.0]\n||a.example^\n||a..example^\n||^\n||b.example^\n")
    (tmp_path / "d.intel").write_text("#fields\tindicator\tindicator_type\nx.example\tIntel::DOMAIN\n"
                                      "y.example\n")
    (tmp_path / "e.zone").write_text("$ORIGIN rpz.example.\nbad!owner CNAME .\nok.example CNAME .\n"
                                     "@ SOA ns h ( 1 2\n")
    code, output = check([str(tmp_path)])
    assert code == 1
    p = str(tmp_path)
    assert errors_of(output) == [
        f"{p}/a.rules:3: empty label in 'bad..one'",
        f"{p}/a.rules:5: 'ev!l.example' is not a domain name (labels are letters, digits, '-' and '_'; '*.' only as "
        "the first label, or write a wildcard or '~regex')",
        f"{p}/a.rules:7: bad regex '(unclosed': missing ), unterminated subpattern at position 0",
        f"{p}/b.hosts:2: 'bad!.example' is not a domain name (labels are letters, digits, '-' and '_'; '*.' only "
        "as the first label, or write a wildcard or '~regex')",
        f"{p}/b.hosts:3: 'not-an-address' is not an address (a hosts line is 'ADDRESS NAME...')",
        f"{p}/c.txt:3: empty label in '||a..example^'",
        f"{p}/c.txt:4: '||^' has no name between '||' and '^'",
        f"{p}/d.intel:3: 1 column where '#fields' names 2 (separated by '\\t')",
        f"{p}/e.zone:2: 'bad!owner' is not a domain name (labels are letters, digits, '-' and '_'; '*.' only as "
        "the first label, or write a wildcard or '~regex')",
        f"{p}/e.zone:4: '(' is not closed before the end of the file",
    ]
    # the good lines around the bad ones are all loaded, the native file's header still applies after a bad line
    assert f"{p}/a.rules: native, 3 rules, 1 duplicate, 3 errors" in output
    assert f"{p}/b.hosts: hosts, 2 rules, 2 errors" in output
    assert f"{p}/c.txt: adblock, 2 rules, 2 errors" in output
    assert f"{p}/e.zone: rpz, 1 rule, 2 errors" in output
    assert f"  {p}/a.rules:6: 'good.example' decides nothing new" in output  # renumbered after the resumes
    assert "  by kind:   suffix 5, exact 4" in output


def test_native_header_survives_an_error(tmp_path):
    from sensor.rules.check import load_collecting
    from sensor.rules.model import RuleSet
    from sensor.rules.native import load_native

    ruleset, errors = RuleSet(), []
    text = "#@ category: c2\nbad..one\n#@ severity: 7\nbad..two\na.example\n"
    load_collecting(load_native, ruleset, text, "f", errors)
    assert errors == ["f:2: empty label in 'bad..one'", "f:4: empty label in 'bad..two'"]
    (rule,) = ruleset.rules
    assert (rule.pattern, rule.meta.category, rule.meta.severity) == ("a.example", "c2", 7)


def test_skipped_lines_and_files_are_listed(tmp_path):
    (tmp_path / "feed.hosts").write_text("127.0.0.1 localhost\n0.0.0.0 a.example\n")
    (tmp_path / "NOTES.txt").write_text("These feeds are refreshed nightly.\n")
    code, output = check([str(tmp_path)])
    assert code == 0
    assert "1 line skipped (valid in their format, not name rules):" in output
    assert "       1  hosts: the machine's own name (localhost...)" in output
    assert f"1 file skipped:\n  {tmp_path}/NOTES.txt: format not recognised" in output


def test_file_named_directly_is_checked_as_native(tmp_path):
    path = tmp_path / "NOTES"
    path.write_text("not a rule file at all\n")
    code, output = check([str(path)])
    assert code == 1
    assert errors_of(output) == [f"{path}:1: 'a' is not metadata (key=value with key one of id, category, "
                                 "severity, description, reference, source)"]


def test_forced_format(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("evil.example\n")
    assert check([str(path)], "hosts")[0] == 1
    assert check([str(path)], "native")[0] == 0
    with pytest.raises(RuleError, match="--rules-format"):
        check([str(path)], "bind")


def test_missing_path_is_an_operational_fault(tmp_path):
    with pytest.raises(RuleError, match="no such file"):
        check([str(tmp_path / "missing.rules")])


def test_a_file_in_the_wrong_format_stops_after_the_limit(tmp_path):
    path = tmp_path / "x.hosts"
    path.write_text("not-an-address a.example\n" * (MAX_ERRORS_PER_FILE + 50))
    code, output = check([str(path)])
    assert code == 1
    errors = errors_of(output)
    assert len(errors) == MAX_ERRORS_PER_FILE + 1
    assert errors[-1] == f"{path}: stopped checking after {MAX_ERRORS_PER_FILE} errors"


def test_cli_exit_codes(tmp_path):
    good = tmp_path / "good.rules"
    good.write_text("evil.example\n")
    bad = tmp_path / "bad.rules"
    bad.write_text("evil.example\nbad..name\n")
    result = run_cli("rules", "check", str(good))
    assert result.returncode == 0 and "no errors" in result.stdout, result.stderr
    result = run_cli("rules", "check", str(good), str(bad))
    assert result.returncode == 1 and f"{bad}:2: empty label" in result.stdout
    result = run_cli("rules", "check", str(tmp_path / "missing"))
    assert result.returncode == 2 and "no such file" in result.stderr
    result = run_cli("rules", "check", "--rules-format", "hosts", str(good))
    assert result.returncode == 1 and f"{good}:1: 'evil.example' is not an address" in result.stdout
