"""Rule formats as analysts have them (hosts, Adblock, Zeek Intel, RPZ) and their detection: each line means what
it means in its own tool; names that must and must not match, case, trailing dots, IDN and escaped names;
skipped lines counted; bad lines as `file:line: why`; directory loads skip what is not a rule file."""

from __future__ import annotations

from pathlib import Path

import pytest
from dnslib import DNSRecord
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from conftest import ROOT, make_batch
from sensor.errors import RuleError
from sensor.loop import compile_rules, make_loop
from sensor.rules import loader
from sensor.rules.formats import LOADERS
from sensor.rules.formats.detect import detect
from sensor.rules.formats.tally import skipped_lines
from sensor.rules.loader import load_rules
from sensor.rules.matcher import match_table
from sensor.rules.model import BELOW, EXACT, SUFFIX, RuleSet


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """What loader.py does once it registers the formats: `FORMAT_LOADERS.update(LOADERS)`."""
    for name, load in LOADERS.items():
        monkeypatch.setitem(loader.FORMAT_LOADERS, name, load)


def load(tmp_path: Path, text: str, filename: str, rules_format: str | None = None) -> RuleSet:
    path = tmp_path / filename
    path.write_text(text, encoding="utf-8")
    return load_rules([str(path)], rules_format)


def verdict(ruleset: RuleSet, name: str) -> str | None:
    """'deny <rule text>' / 'allow <rule text>' for the deciding exact/suffix/below rule, None for no match.
    `name` in presentation form: `\\.` inside a label is kept in that label, as the decoders give it."""
    name = name[:-1] if name.endswith(".") and not name.endswith("\\.") else name
    labels = [] if name in ("", ".") else name.replace("\\.", "\0").split(".")
    index = match_table(ruleset.table, [label.replace("\0", "\\.") for label in labels])
    if index < 0:
        return None
    rule = ruleset.rule(index)
    return f"{'allow' if rule.allow else 'deny'} {rule.text}"


def bad_line(tmp_path: Path, text: str, filename: str) -> str:
    path = tmp_path / filename
    path.write_text(text)
    with pytest.raises(RuleError) as err:
        load_rules([str(path)])
    message = str(err.value)
    assert message.startswith(f"{path}:"), message
    return message[len(str(path)) + 1:]


# -- hosts ---------------------------------------------------------------------------------------------------

HOSTS = """\
# StevenBlack-style header
127.0.0.1 localhost
127.0.0.1 localhost.localdomain
::1 localhost ip6-localhost ip6-loopback
fe80::1%lo0 localhost
0.0.0.0 0.0.0.0

0.0.0.0 Ads.Example.          # case and trailing dot do not matter
127.0.0.1 a.test b.test c.test
:: v6.example
::1 loop6.example
192.0.2.1 sinkholed.example
0.0.0.0 bücher.example
0.0.0.0 xn--80ak6aa92e.example
0.0.0.0 _dmarc.mail.example
"""


def test_hosts_names_are_exact(tmp_path):
    rules = load(tmp_path, HOSTS, "feed.txt")
    assert {r.format for r in rules.rules} == {"hosts"}
    assert {r.kind for r in rules.rules} == {EXACT}
    assert [(r.pattern, r.line) for r in rules.rules] == [
        ("ads.example", 8), ("a.test", 9), ("b.test", 9), ("c.test", 9), ("v6.example", 10),
        ("loop6.example", 11), ("sinkholed.example", 12), ("xn--bcher-kva.example", 13),
        ("xn--80ak6aa92e.example", 14), ("_dmarc.mail.example", 15)]
    must = {"ads.example": "deny Ads.Example.", "ADS.EXAMPLE.": "deny Ads.Example.", "b.test": "deny b.test",
            "xn--bcher-kva.example": "deny bücher.example", "XN--80AK6AA92E.example": "deny xn--80ak6aa92e.example",
            "sinkholed.example": "deny sinkholed.example", "_dmarc.mail.example": "deny _dmarc.mail.example"}
    must_not = ["www.ads.example", "example", "notads.example", "ads.example.net", "ads\\.example", "test",
                "localhost", "ip6-localhost", "mail.example", "bücher.example"]
    assert {name: verdict(rules, name) for name in must} == must
    assert [verdict(rules, name) for name in must_not] == [None] * len(must_not)


def test_hosts_local_names_skipped_and_counted(tmp_path):
    rules = load(tmp_path, HOSTS, "feed.txt")
    assert skipped_lines(rules.report) == {"hosts: the machine's own name (localhost...)": 7}
    assert sum(rules.report.by_format.values()) == len(rules) == 10


@pytest.mark.parametrize("line,why", [
    ("0.0.0.0 bad!name.example", "not a domain name"),
    ("0.0.0.0 ads..example", "empty label"),
    ("ads.example", "'ads.example' is not an address"),
    ("300.1.1.1 ads.example", "is not an address"),
    ("0.0.0.0", "no name after it"),
    ("0.0.0.0 " + "a" * 64 + ".example", "over 63"),
])
def test_hosts_bad_lines(tmp_path, line, why):
    message = bad_line(tmp_path, f"0.0.0.0 good.example\n{line}\n", "x.hosts")
    assert message.startswith("2: ") and why in message, message


# -- Adblock ---------------------------------------------------------------------------------------------------

ADBLOCK = """\
[Adblock Plus 2.0]
! Title: Unit list
! Homepage: https://lists.example/unit
||ads.example^
||Tracker.Example^$important
@@||ok.ads.example^
||end.example^|
||bücher.example^
example.com##.banner
##.ad-box
example.org#@#.ad
||ads.example/banner.png
||ads.example^path
|http://ads.example/
/ads[0-9]+\\.example/
||cdn*.example^
||prefix.example
||third.example^$third-party
||script.example^$script,domain=site.example
||dns.example^$dnstype=AAAA
@@||allow.example^$badfilter
0.0.0.0 hostsline.example
banner
!#include other.txt
# an AdGuard Home comment
"""


def test_adblock_domain_filters_are_suffixes(tmp_path):
    rules = load(tmp_path, ADBLOCK, "list.txt")
    assert [(r.kind, r.pattern, r.allow, r.line) for r in rules.rules] == [
        (SUFFIX, "ads.example", False, 4), (SUFFIX, "tracker.example", False, 5), (SUFFIX, "ok.ads.example", True, 6),
        (SUFFIX, "end.example", False, 7), (SUFFIX, "xn--bcher-kva.example", False, 8)]
    must = {"ads.example": "deny ads.example", "x.y.ADS.example.": "deny ads.example",
            "tracker.example": "deny ||Tracker.Example^$important", "ok.ads.example": "allow @@||ok.ads.example^",
            "www.ok.ads.example": "allow @@||ok.ads.example^", "cdn.xn--bcher-kva.example": "deny ||bücher.example^"}
    must_not = ["notads.example", "ads.example.net", "example", "third.example", "prefix.example",
                "cdn1.example", "hostsline.example", "banner", "ads\\.example"]
    assert {name: verdict(rules, name) for name in must} == must
    assert [verdict(rules, name) for name in must_not] == [None] * len(must_not)
    assert {r.format for r in rules.rules} == {"adblock"}
    meta = rules.rules[0].meta
    assert (meta.source, meta.reference) == ("Unit list", "https://lists.example/unit")


def test_adblock_skips_what_is_not_a_domain_filter(tmp_path):
    rules = load(tmp_path, ADBLOCK, "list.txt")
    assert skipped_lines(rules.report) == {
        "adblock: cosmetic or HTML filter (##, #@#, #?#, $$...)": 3,
        "adblock: URL or path filter": 2,
        "adblock: regular expression or path filter": 1,
        "adblock: wildcard in the name": 1,
        "adblock: no '^' after the name (a prefix: '||ads.example' also matches ads.example.net)": 1,
        "adblock: option $third-party (the filter applies in some contexts only)": 1,
        "adblock: option $script (the filter applies in some contexts only)": 1,
        "adblock: option $dnstype (the filter applies in some contexts only)": 1,
        "adblock: option $badfilter (the filter applies in some contexts only)": 1,
        "adblock: hosts-style line (load the list as a hosts file)": 1,
        "adblock: URL filter, not '||name^'": 2,  # `|http://...` and a plain `banner`
        "adblock: preprocessor directive (!#if, !#include)": 1,
    }


@pytest.mark.parametrize("line,why", [
    ("||ads..example^", "empty label"),
    ("||^", "no name between"),
    ("@@||bad!name.example^", "not a domain name"),
    ("||" + "a" * 64 + ".example^$important", "over 63"),
])
def test_adblock_bad_filters(tmp_path, line, why):
    message = bad_line(tmp_path, f"[Adblock Plus 2.0]\n||good.example^\n{line}\n", "list.txt")
    assert message.startswith("3: ") and why in message, message


# -- Zeek Intel ------------------------------------------------------------------------------------------------

INTEL = (
    "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\tmeta.do_notice\tmeta.cif_confidence\n"
    "# a comment\n"
    "c2.example\tIntel::DOMAIN\tfeed-a\tC2 server\thttps://feed.example/1\tT\t90\n"
    "Exfil.Example.\tIntel::DOMAIN\tfeed-a\texfil\\x09tab\t-\tF\t(empty)\n"
    "\n"
    "192.0.2.1\tIntel::ADDR\tfeed-a\t-\t-\tT\t-\n"
    "http://c2.example/x\tIntel::URL\tfeed-a\t-\t-\tT\t-\n"
    "xn--bcher-kva.example\tIntel::DOMAIN\tfeed-b\t-\t-\t-\t-\n"
    "c2.example\tIntel::DOMAIN\tfeed-b\tagain\t-\t-\t-\n"
)


def test_zeek_intel_domains_are_exact_with_meta(tmp_path):
    rules = load(tmp_path, INTEL, "feed.intel")
    assert [(r.kind, r.pattern, r.line) for r in rules.rules] == [
        (EXACT, "c2.example", 3), (EXACT, "exfil.example", 4), (EXACT, "xn--bcher-kva.example", 8)]
    c2, exfil, idn = rules.rules
    assert (c2.meta.source, c2.meta.description, c2.meta.reference) == ("feed-a", "C2 server", "https://feed.example/1")
    assert c2.meta.extra == (("source", "feed-a"), ("desc", "C2 server"), ("url", "https://feed.example/1"),
                             ("do_notice", "T"), ("cif_confidence", "90"))
    assert exfil.meta.description == "exfil\ttab" and exfil.meta.reference is None  # \x09 unescaped; '-' unset
    assert exfil.meta.extra == (("source", "feed-a"), ("desc", "exfil\ttab"), ("do_notice", "F"))
    assert idn.meta.extra == (("source", "feed-b"),)
    must = {"c2.example": "deny c2.example", "EXFIL.example.": "deny Exfil.Example.",
            "xn--bcher-kva.example": "deny xn--bcher-kva.example"}
    must_not = ["www.c2.example", "example", "192.0.2.1", "c2.example.net", "c2\\.example"]
    assert {name: verdict(rules, name) for name in must} == must
    assert [verdict(rules, name) for name in must_not] == [None] * len(must_not)
    assert skipped_lines(rules.report) == {"zeek_intel: Intel::ADDR rows": 1, "zeek_intel: Intel::URL rows": 1}
    assert rules.report.duplicates == [(str(tmp_path / "feed.intel"), 9, "'c2.example' decides nothing new")]


def test_zeek_intel_separator_directive(tmp_path):
    text = "#separator \\x2c\n#fields,indicator,indicator_type,meta.source\nevil.example,Intel::DOMAIN,csv feed\n"
    rules = load(tmp_path, text, "feed.intel")
    assert [(r.pattern, r.meta.source) for r in rules.rules] == [("evil.example", "csv feed")]


@pytest.mark.parametrize("text,line,why", [
    ("evil.example\tIntel::DOMAIN\n", 1, "a row before the '#fields' line"),
    ("#fields\tindicator\tindicator_type\tmeta.source\na.example\tIntel::DOMAIN\n", 2,
     "2 columns where '#fields' names 3"),
    ("#fields indicator indicator_type\n", 1, "names no 'indicator' and 'indicator_type' columns"),
    ("#fields\tindicator\tindicator_type\na.example\tDOMAIN\n", 2, "'DOMAIN' is not an Intel:: type"),
    ("#fields\tindicator\tindicator_type\nbad!.example\tIntel::DOMAIN\n", 2, "not a domain name"),
])
def test_zeek_intel_bad_rows(tmp_path, text, line, why):
    message = bad_line(tmp_path, text, "feed.intel")
    assert message.startswith(f"{line}: ") and why in message, message


# -- RPZ -------------------------------------------------------------------------------------------------------

RPZ = """\
$TTL 1h
$ORIGIN rpz.example.
@ IN SOA ns.rpz.example. hostmaster.rpz.example. (
        1 ; serial
        3600 600 86400 60 )
@ IN NS ns.rpz.example.
  IN NS ns2.rpz.example.
evil.example CNAME .                       ; line 8
*.evil.example CNAME .
nodata.example 300 IN CNAME *.
drop.example IN 300 CNAME rpz-drop.
local.example A 192.0.2.1
              AAAA 2001:db8::1
walled.example CNAME garden.example.net.
Www.Evil.Example CNAME rpz-passthru.
self.example CNAME self.example.
Abs.Example.RPZ.Example. CNAME .
*.below.example.rpz.example. CNAME .
other.zone.example. CNAME .
32.1.2.0.192.rpz-ip CNAME .
ns.evil.example.rpz-nsdname CNAME .
24.0.2.0.192.rpz-client-ip CNAME .
ns1.rpz-nsip CNAME .
tcp.example CNAME rpz-tcp-only.
dname.example DNAME elsewhere.example.
txt.example TXT "blocked; by policy (see wiki)"
sub NS ns.elsewhere.example.
$INCLUDE more.zone
"""


def test_rpz_triggers(tmp_path):
    rules = load(tmp_path, RPZ, "policy.zone")
    assert [(r.kind, r.pattern, r.allow, r.line) for r in rules.rules] == [
        (EXACT, "evil.example", False, 8), (BELOW, "evil.example", False, 9), (EXACT, "nodata.example", False, 10),
        (EXACT, "drop.example", False, 11), (EXACT, "local.example", False, 12),
        (EXACT, "walled.example", False, 14), (EXACT, "www.evil.example", True, 15),
        (EXACT, "self.example", True, 16), (EXACT, "abs.example", False, 17), (BELOW, "below.example", False, 18),
        (EXACT, "txt.example", False, 26)]
    assert {r.meta.source for r in rules.rules} == {"rpz.example"}
    must = {"evil.example": "deny evil.example", "a.evil.example": "deny *.evil.example",
            "a.b.EVIL.example.": "deny *.evil.example", "www.evil.example": "allow Www.Evil.Example",
            "abs.example": "deny Abs.Example.RPZ.Example.", "x.below.example": "deny *.below.example.rpz.example.",
            "local.example": "deny local.example", "self.example": "allow self.example"}
    must_not = ["example", "www.drop.example", "below.example", "sub.local.example", "evil\\.example",
                "other.zone.example", "evil.example.rpz.example", "tcp.example", "dname.example"]
    assert {name: verdict(rules, name) for name in must} == must
    assert [verdict(rules, name) for name in must_not] == [None] * len(must_not)


def test_rpz_skips_other_triggers_and_records(tmp_path):
    rules = load(tmp_path, RPZ, "policy.zone")
    assert skipped_lines(rules.report) == {
        "rpz: owner outside the zone": 1, "rpz: rpz-ip trigger": 1, "rpz: rpz-nsdname trigger": 1,
        "rpz: rpz-client-ip trigger": 1, "rpz: rpz-nsip trigger": 1, "rpz: CNAME rpz-tcp-only. (not a block)": 1,
        "rpz: DNAME (not an RPZ action)": 1, "rpz: NS below the apex": 1,
        "rpz: $INCLUDE (load the records it names with their own --rules)": 1}
    assert rules.report.duplicates == []  # local.example's A and AAAA are one rule


def test_rpz_origin_from_soa_and_relative_without_origin(tmp_path):
    from_soa = load(tmp_path, "rpz.test. 60 IN SOA ns.test. h.test. 1 2 3 4 5\nx.example.rpz.test. CNAME .\n"
                    "y.example CNAME .\n", "a.rpz")
    assert [r.pattern for r in from_soa.rules] == ["x.example", "y.example"]
    no_origin = load(tmp_path, "@ IN SOA ns h 1 2 3 4 5\nz.example CNAME .\n*.w.example CNAME .\n* CNAME .\n",
                     "b.rpz")
    assert [(r.kind, r.pattern) for r in no_origin.rules] == [(EXACT, "z.example"), (BELOW, "w.example"), (BELOW, "")]
    assert verdict(no_origin, "anything.at.all") == "deny *" and verdict(no_origin, ".") is None


def test_rpz_zone_transfer_output(tmp_path):
    """`dig @resolver zone AXFR > file`: absolute owners, the SOA first and last, `;` lines around."""
    text = ("\n; <<>> DiG 9.18 <<>> @127.0.0.1 rpz.example AXFR\n;; global options: +cmd\n"
            "rpz.example.\t300\tIN\tSOA\tns.rpz.example. h.rpz.example. 7 3600 600 86400 60\n"
            "rpz.example.\t300\tIN\tNS\tns.rpz.example.\n"
            "evil.example.rpz.example. 300 IN\tCNAME\t.\n"
            "*.evil.example.rpz.example. 300 IN\tCNAME\t.\n"
            "ok.evil.example.rpz.example. 300 IN\tCNAME\trpz-passthru.\n"
            "rpz.example.\t300\tIN\tSOA\tns.rpz.example. h.rpz.example. 7 3600 600 86400 60\n"
            ";; XFR size: 6 records (messages 1, bytes 300)\n")
    assert detect(text, "transfer.out") == "rpz"
    rules = load(tmp_path, text, "transfer.out")
    assert [(r.kind, r.pattern, r.allow) for r in rules.rules] == [
        (EXACT, "evil.example", False), (BELOW, "evil.example", False), (EXACT, "ok.evil.example", True)]
    assert skipped_lines(rules.report) == {} and rules.report.duplicates == []


@pytest.mark.parametrize("text,line,why", [
    ("$ORIGIN rpz.example.\nbad!name CNAME .\n", 2, "not a domain name"),
    ("$ORIGIN rpz.example.\na..b CNAME .\n", 2, "empty label"),
    ("$ORIGIN rpz.example.\na.*.b CNAME .\n", 2, "not a domain name"),
    ("x.example.rpz.example. CNAME .\n", 1, "the zone's name is unknown"),
    ("$ORIGIN rpz.example.\nok CNAME rpz-passthru\n", 2, "without its final dot"),
    ("$ORIGIN rpz.example.\n@ SOA ns h (1 2\n 3 4 5\n", 2, "'(' is not closed"),
    ("$ORIGIN rpz.example.\nx.example\n", 2, "no record type"),
    ("$ORIGIN rpz.example.\nx.example 3600 IN\n", 2, "no record type"),
    ("$ORIGIN rpz.example.\nx.example CNAME\n", 2, "CNAME with no target"),
    ("$ORIGIN rpz.example.\nx TXT \"open\n", 2, "quoted string not closed"),
    ("$ORIGIN rpz.example.\nx CNAME . )\n", 2, "')' with no '('"),
    ("$ORIGIN rpz.example.\n$FOO bar\n", 2, "not a master-file directive"),
    ("$ORIGIN bad..origin.\n", 1, "empty label"),
    ("$TTL 1h\n  CNAME .\n", 2, "no owner name"),
])
def test_rpz_bad_records(tmp_path, text, line, why):
    message = bad_line(tmp_path, text, "policy.zone")
    assert message.startswith(f"{line}: ") and why in message, message


# -- detection -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,filename,expected", [
    ("evil.example\n=login.example\n*.cdn.test\n", "feed.txt", "native"),
    ("# a list\nevil.example\nbad line here\nok.example\n", "feed.txt", "native"),  # a typo does not hide it
    ("!safe.example\nevil.example\n", "x", "native"),  # `!name` is a native allow rule
    ("#@ source: x\n", "x", "native"),
    ("# comments only\n", "x", "native"),
    ("", "x", None),
    ("", "x.hosts", "hosts"),
    ("# header\n127.0.0.1 localhost\n0.0.0.0 ads.example\n", "x", "hosts"),
    ("::1 localhost\n:: a.example b.example\n", "x.txt", "hosts"),
    ("127.0.0.1 a b\n", "x", "hosts"),  # not an A record
    ("[Adblock Plus 2.0]\nads.example\n", "x", "adblock"),
    ("! Title: x\n||ads.example^\n", "x", "adblock"),
    ("@@||ok.example^\n", "x", "adblock"),
    ("example.com##.ad\nexample.org##.banner\n", "x", "adblock"),
    ("#fields\tindicator\tindicator_type\tmeta.source\n", "x", "zeek_intel"),
    ("a.example\tIntel::DOMAIN\tsrc\n", "x", "zeek_intel"),
    ("$TTL 3600\n", "x", "rpz"),
    ("; zone\n@ IN SOA ns h 1 2 3 4 5\n", "x", "rpz"),
    ("evil.example CNAME .\nx.example 60 IN A 192.0.2.1\n", "x", "rpz"),
    ("This folder holds the feeds.\nRefresh them with cron.\n", "README", None),
    ("id,dateadded,url,url_status\n1,2024-01-01,http://x.example/,online\n", "urlhaus.csv", None),
    ('{"rules": ["evil.example"]}\n', "x.json", None),
    ("\x7fELF\x02\x01\x01\x00\x00\x00", "binary", None),
    ("bad line here\n", "broken.rules", "native"),  # the name says rules: load it and report its errors
])
def test_detect(text, filename, expected):
    assert detect(text, filename) == expected


def test_detect_reads_only_the_head():
    text = "evil.example\n" * 100_000 + "0.0.0.0 late.example\n"
    assert detect(text, "big") == "native"


def test_shipped_examples_are_detected():
    found = {path.name: detect(path.read_text(), str(path)) for path in (ROOT / "rules").iterdir()
             if path.name != "README.md"}
    assert found == {"demo.rules": "native", "examples.native.rules": "native", "example.hosts": "hosts",
                     "example.adblock.txt": "adblock", "example.intel": "zeek_intel", "example.rpz.zone": "rpz"}


def test_directory_load_skips_docs_and_unknown_files(tmp_path):
    (tmp_path / "a.hosts").write_text("0.0.0.0 ads.example\n")
    (tmp_path / "b.txt").write_text("||track.example^\n")
    (tmp_path / "c.rules").write_text("evil.example\n")
    (tmp_path / "README").write_text("Feeds go here.\n")
    (tmp_path / "notes.md").write_text("# notes\n")
    (tmp_path / "NOTES.txt").write_text("These files are refreshed nightly by cron.\n")
    (tmp_path / "export.csv").write_text("id,url\n1,http://x.example/\n")
    (tmp_path / ".hidden").write_text("hidden.example\n")
    rules = load_rules([str(tmp_path)])
    assert sorted((r.format, r.pattern) for r in rules.rules) == [
        ("adblock", "track.example"), ("hosts", "ads.example"), ("native", "evil.example")]
    assert rules.report.skipped_files == [(str(tmp_path / "NOTES.txt"), "format not recognised"),
                                          (str(tmp_path / "export.csv"), "format not recognised")]


def test_forced_format_overrides_detection(tmp_path):
    rules = load(tmp_path, "evil.example CNAME .\n", "x.txt", rules_format="rpz")
    assert [(r.format, r.pattern) for r in rules.rules] == [("rpz", "evil.example")]
    with pytest.raises(RuleError, match=r":1: 'evil.example' is not an address"):
        load(tmp_path, "evil.example\n", "y.txt", rules_format="hosts")


# -- the shipped examples, through the compiled and the reference loop -------------------------------------------

SHIPPED = {
    "ads.example": "ads.example", "img.ads.example": "ads.example", "static.ads.example": None,  # `||ads.example^`
    "tracker.example": "tracker.example", "www.tracker.example": None, "malware-drop.test": "Malware-Drop.TEST.",
    "c2.intel.example": "c2.intel.example", "exfil.intel.example": "Exfil.Intel.Example.",
    "blocked.example": "blocked.example", "x.blocked.example": "*.blocked.example", "www.blocked.example": None,
    "partner.test": None, "sinkhole.example": "sinkhole.example", "c2.example": "c2.example",
    "login.phish.example": "=login.phish.example", "www.login.phish.example": None,
    "unlisted.example": None, "evil.example": "evil.example",
}


def query_frame(name: str) -> bytes:
    return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.53") / UDP(sport=40000, dport=53)
                 / DNSRecord.question(name).pack())


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "reference"])
def test_shipped_rules_through_the_loop(pure):
    ruleset = load_rules([str(ROOT / "rules")])
    assert set(ruleset.report.by_format) == {"native", "hosts", "adblock", "zeek_intel", "rpz"}
    loop = make_loop(1, (53,), compile_rules(ruleset, pure=pure), emit_all=True, pure=pure)
    data, meta = make_batch([query_frame(name) for name in SHIPPED])
    records = loop.run_batch(data, meta, 1)
    got = {r[12]: (ruleset.rule(r[15]).text if r[15] >= 0 and not ruleset.allow[r[15]] else None)
           for r in records}
    assert got == SHIPPED
