"""Rule files from the wild, as a new user meets them (issue 17): each test runs the real command and is named
after the item it keeps fixed."""

from __future__ import annotations

import json

import pytest

from conftest import PCAPS, ROOT, run_cli

CAPTURE = PCAPS / "demo-resolver.pcap"  # asks login-verify.evil.example (a hit under pcaps.rules)


def replay(*args: str):
    return run_cli("replay", str(CAPTURE), "--out", "-", "--rules-cache", "off", *args)


# -- item 2: silent empty runs and mixed formats ------------------------------------------------------------


def test_item2_one_adblock_line_does_not_turn_a_native_file_into_adblock(tmp_path):
    rules = tmp_path / "mixed.rules"
    rules.write_text("evil.example\nbadcdn.test\n||ads.example^\nother.example\n")
    result = replay("--rules", str(rules))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"truesource: {rules}:3: '||ads.example^' is not a domain name (labels are letters, digits, '-' and '_'; "
        "'*.' only as the first label, or write a wildcard or '~regex'); it looks like an Adblock filter: a file "
        "holds one format (split it, or --rules-format adblock)"]
    checked = run_cli("rules", "check", str(rules))
    assert checked.returncode == 1
    assert "no errors" not in checked.stdout
    assert f"{rules}:3: '||ads.example^' is not a domain name" in checked.stdout


def test_item2_adblock_file_with_a_native_line_says_the_skipped_line(tmp_path):
    rules = tmp_path / "list.txt"
    rules.write_text("||evil.example^\n||ads.example^\nbadcdn.test\n")
    result = replay("--rules", str(rules))
    assert result.returncode == 0
    assert "rules: 1 line skipped: adblock: URL filter, not '||name^'" in result.stderr
    assert result.stderr.count("line skipped") == 1  # said once
    checked = run_cli("rules", "check", str(rules))
    assert checked.returncode == 0
    assert checked.stdout.rstrip().endswith("no errors, but lines or files were skipped (above): the sensor loads "
                                            "without them")


@pytest.mark.parametrize("content, why", [
    ("", "the file is empty"),
    ("# a feed with nothing in it yet\n\n", "native, only comments and blank lines"),
    ("127.0.0.1 localhost\n::1 localhost\n",
     "hosts, every line skipped: 2 hosts: the machine's own name (localhost...)"),
])
def test_item2_rules_file_yielding_no_rule_is_an_error(tmp_path, content, why):
    rules = tmp_path / ("h.hosts" if "localhost" in content else "empty.rules")
    rules.write_text(content)
    result = replay("--rules", str(rules))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == (f"truesource: {rules}: no rule ({why}); --allow-empty-rules to run anyway")
    allowed = replay("--rules", str(rules), "--allow-empty-rules")
    assert allowed.returncode == 0, allowed.stderr
    assert f"{rules}: no rule ({why}); going on (--allow-empty-rules)" in allowed.stderr


def test_item2_rules_directory_with_no_usable_file_is_an_error(tmp_path):
    folder = tmp_path / "rules.d"
    folder.mkdir()
    (folder / "notes.csv").write_text("a,b,c\n1,2,3\n")
    (folder / "empty.rules").write_text("")
    result = replay("--rules", str(folder))
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"truesource: {folder}: no rule (no usable rule file in the directory (")
    assert "empty.rules: the file is empty" in line and "notes.csv: format not recognised" in line
    (folder / "good.rules").write_text("evil.example\n")
    ok = replay("--rules", str(folder))
    assert ok.returncode == 0
    assert f"{folder}/notes.csv: skipped (format not recognised)" in ok.stderr
    assert f"{folder}/empty.rules: no rule (the file is empty)" in ok.stderr
    assert len(ok.stdout.splitlines()) > 0


def test_item2_rules_check_of_a_file_of_duplicates_says_rules_and_duplicates(tmp_path):
    rules = tmp_path / "d.rules"
    rules.write_text("evil.example\nevil.example\nevil.example\n")
    result = run_cli("rules", "check", str(rules))
    assert f"{rules}: native, 1 rule, 2 duplicates" in result.stdout
    assert "1 rule, 2 duplicates from 1 file" in result.stdout
    assert "0 rules" not in result.stdout


# -- item 7: byte-order marks ---------------------------------------------------------------------------------

BOM = "\ufeff"
NAME = "login-verify.evil.example"  # hosts, Zeek intel and RPZ rules are exact names: the name the capture asks
FORMATS = {
    "native": ("r.rules", f"{NAME}\n"),
    "hosts": ("h.hosts", f"0.0.0.0 {NAME}\n"),
    "adblock": ("a.txt", f"[Adblock Plus 2.0]\n||{NAME}^\n"),
    "zeek_intel": ("z.intel", f"#fields\tindicator\tindicator_type\n{NAME}\tIntel::DOMAIN\n"),
    "rpz": ("z.rpz", f"$ORIGIN rpz.example.\n@ SOA ns h 1 2 3 4 5\n{NAME} CNAME .\n"),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_item7_byte_order_mark_is_stripped_in_every_format(tmp_path, fmt):
    name, text = FORMATS[fmt]
    rules = tmp_path / name
    rules.write_text(BOM + text, encoding="utf-8")
    result = replay("--rules", str(rules))
    assert result.returncode == 0, result.stderr
    names = {json.loads(line)["dns"]["question"]["name"] for line in result.stdout.splitlines()}
    assert NAME in names
    checked = run_cli("rules", "check", str(rules))
    assert checked.returncode == 0, checked.stdout
    assert f"{rules}: {fmt}, 1 rule" in checked.stdout


# -- item 8: internationalised names --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_item8_unicode_rule_names_become_a_labels_in_every_format(tmp_path, fmt):
    name, text = FORMATS[fmt]
    rules = tmp_path / name
    rules.write_text(text.replace(NAME, "müller.example"), encoding="utf-8")
    result = run_cli("rules", "test", "--rules", str(rules), "--rules-cache", "off", "xn--mller-kva.example",
                     "müller.example", "MÜLLER.EXAMPLE")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(" hit by " in line for line in lines), result.stdout


def test_item8_uts46_non_transitional_not_idna2003(tmp_path):
    """`faß.example` is xn--fa-hia.example (IDNA 2008, UTS 46 non-transitional), not IDNA 2003's fass.example."""
    rules = tmp_path / "r.rules"
    rules.write_text("faß.example\n", encoding="utf-8")
    result = run_cli("rules", "test", "--rules", str(rules), "xn--fa-hia.example", "fass.example", "faß.example")
    assert result.stdout.splitlines() == [
        f"xn--fa-hia.example: hit by 'faß.example' (suffix) at {rules}:1",
        "fass.example: no match",
        f"faß.example: hit by 'faß.example' (suffix) at {rules}:1",
    ]


def test_item8_who_asked_converts_a_unicode_name(tmp_path):
    """who-asked müller.example reads the same stored name as who-asked xn--mller-kva.example."""
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    capture = tmp_path / "idn.pcap"
    wrpcap(str(capture), [Ether() / IP(src="10.9.0.2", dst="10.9.0.1") / UDP(sport=40000, dport=53)
                          / DNS(id=7, rd=1, qd=DNSQR(qname="www.xn--mller-kva.example"))])
    store = tmp_path / "q.log"
    rules = tmp_path / "r.rules"
    rules.write_text("nothing.example\n")
    made = run_cli("replay", str(capture), "--rules", str(rules), "--out", "-", "--query-log", str(store))
    assert made.returncode == 0, made.stderr
    unicode = run_cli("who-asked", "www.müller.example", "--query-log", str(store))
    alabel = run_cli("who-asked", "www.xn--mller-kva.example", "--query-log", str(store))
    assert unicode.returncode == 0, unicode.stderr
    assert "10.9.0.2" in unicode.stdout
    assert unicode.stdout == alabel.stdout
    bad = run_cli("who-asked", "a..ü", "--query-log", str(store))
    assert bad.returncode == 2 and "NAME: 'a..ü' is not a domain name" in bad.stderr


# -- item 12: messages ------------------------------------------------------------------------------------------


def test_item12_rules_test_help_describes_rules_and_format():
    result = run_cli("rules", "test", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--rules PATH rule file or directory" in text
    assert "--rules-format FORMAT read every rule file as this format" in text


def test_item12_unknown_heuristic_names_the_option():
    result = replay("--rules", str(ROOT / "rules" / "demo.rules"), "--heuristics", "foo")
    assert result.returncode == 2
    assert result.stderr.strip() == "truesource: --heuristics: unknown detector 'foo'; valid: dga, tunnel"


def test_item2_rules_export_of_an_empty_source_is_an_error(tmp_path):
    rules = tmp_path / "empty.rules"
    rules.write_text("# nothing yet\n")
    result = run_cli("rules", "export", "--rules", str(rules), "--format", "rpz")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == (f"truesource: {rules}: no rule (native, only comments and blank lines); "
                                     "--allow-empty-rules to run anyway")
    allowed = run_cli("rules", "export", "--rules", str(rules), "--format", "rpz", "--allow-empty-rules")
    assert allowed.returncode == 0, allowed.stderr
