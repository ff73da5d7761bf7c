"""Every native rule kind and the precedence between them, through both loops (compiled and reference) and the
readable matcher: names that must and must not match, case, trailing dots, IDN and escaped names."""

from __future__ import annotations

import pytest
from dnslib import DNSRecord
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from conftest import make_batch
from sensor.decode.dnsmsg import decode_message as parse_question
from sensor.loop import compile_rules, make_loop
from sensor.rules.loader import load_rules
from sensor.rules.matcher import all_matches, decide
from sensor.rules.patterns import PatternMatcher

RULES = """\
#@ source: unit test feed
#@ category: phishing
#@ severity: 5
evil.com id=E1 description="the evil domain"
=login.evil.com category=credential severity=9
!safe.evil.com
*.cdn.evil.net
cdn.evil.net id=CDN
!*.cdn.evil.net
xyz
!ok.xyz
*-paypal-login.*
cdn??.tracker.org
!cdn00.tracker.org
~^[a-z0-9]{30,}\\.top$
!~^allowed[a-z0-9]{30,}\\.top$
xn--80ak6aa92e.com
"""

# name as sent -> the text of the deciding rule, or None when no hit
CASES = {
    "evil.com": "evil.com",
    "WWW.Evil.COM": "evil.com",
    "login.evil.com": "=login.evil.com",  # exact beats suffix on the same name
    "a.login.evil.com": "evil.com",  # exact covers that name only
    "safe.evil.com": None,  # allow, more specific than evil.com
    "x.safe.evil.com": None,
    "notevil.com": None,
    "evil.com.example": None,
    "cdn.evil.net": "cdn.evil.net",  # *.cdn.evil.net does not cover the name itself
    "a.cdn.evil.net": None,  # suffix and below rules tie on cdn.evil.net: allow wins
    "bad.xyz": "xyz",
    "ok.xyz": None,
    "www.ok.xyz": None,
    "secure-paypal-login.com": "*-paypal-login.*",
    "a.secure-paypal-login.com": "*-paypal-login.*",  # wildcards match at label boundaries, names below too
    "paypal-login.com": None,
    "cdn01.tracker.org": "cdn??.tracker.org",
    "cdn00.tracker.org": None,  # allow wildcard before deny wildcard
    "cdn1.tracker.org": None,
    "abcdefghijklmnopqrstuvwxyz0123456789.top": "~^[a-z0-9]{30,}\\.top$",
    "allowedabcdefghijklmnopqrstuvwxyz0123.top": None,  # allow regex before deny regex
    "short.top": None,
    "xn--80ak6aa92e.com": "xn--80ak6aa92e.com",
    "mail.xn--80ak6aa92e.com": "xn--80ak6aa92e.com",
    "evil\\.com": None,  # one label holding a dot: not under com
    "a\\255b.evil.com": "evil.com",
}


@pytest.fixture(scope="module")
def ruleset(tmp_path_factory):
    path = tmp_path_factory.mktemp("rules") / "kinds.rules"
    path.write_text(RULES)
    return load_rules([str(path)])


def wire_name(text: str) -> bytes:
    """Presentation form (with \\. and \\DDD escapes) to wire-format labels."""
    labels, label, i = [], bytearray(), 0
    while i < len(text):
        c = text[i]
        if c == "\\" and text[i + 1:i + 4].isdigit():
            label.append(int(text[i + 1:i + 4]))
            i += 4
            continue
        if c == "\\":
            label.append(ord(text[i + 1]))
            i += 2
            continue
        if c == ".":
            labels.append(bytes(label))
            label = bytearray()
        else:
            label.append(ord(c))
        i += 1
    labels.append(bytes(label))
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"


def query_frame(name: str) -> bytes:
    header = DNSRecord.question("x.invalid").pack()[:12]
    payload = header + wire_name(name) + b"\x00\x01\x00\x01"
    return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.53") / UDP(sport=40000, dport=53) / payload)


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "reference"])
def test_verdicts_through_the_loop(ruleset, pure):
    rules = compile_rules(ruleset, pure=pure)
    loop = make_loop(1, (53,), rules, emit_all=True, pure=pure)
    names = list(CASES)
    data, meta = make_batch([query_frame(name) for name in names])
    records = loop.run_batch(data, meta, 1)
    assert [r[12] for r in records] == names
    got = {r[12]: (ruleset.rule(r[15]).text if r[15] >= 0 else None) for r in records}
    assert got == CASES
    counters = loop.counters()
    assert counters["hits"] == sum(v is not None for v in CASES.values())
    assert counters["allowed"] == 7  # safe.evil.com twice, a.cdn.evil.net, ok.xyz twice, cdn00, allowed...top


def test_readable_matcher_agrees(ruleset):
    patterns = PatternMatcher(ruleset)
    for name, expected in CASES.items():
        question = parse_question(DNSRecord.question("x.invalid").pack()[:12] + wire_name(name) + b"\x00\x01\x00\x01")
        rule = decide(ruleset.table, patterns, question.labels)
        verdict = None if rule < 0 or ruleset.allow[rule] else ruleset.rule(rule).text
        assert verdict == expected, name


def test_metadata_from_header_and_line(ruleset):
    by_text = {rule.text: rule for rule in ruleset.rules}
    evil = by_text["evil.com"]
    assert (evil.meta.id, evil.meta.category, evil.meta.severity, evil.meta.description, evil.meta.source) == (
        "E1", "phishing", 5, "the evil domain", "unit test feed")
    login = by_text["=login.evil.com"]
    assert (login.meta.category, login.meta.severity) == ("credential", 9)


def test_all_matches_lists_the_others(ruleset):
    question = parse_question(DNSRecord.question("login.evil.com").pack())
    found = [ruleset.rule(i).text.split()[0] for i in all_matches(ruleset, question.labels)]
    assert found == ["evil.com", "=login.evil.com"]
