"""The hit event: ECS nesting, field values, Community ID against the reference implementation."""

from __future__ import annotations

import json

import communityid
import pytest

from sensor import schema
from sensor.community_id import community_id
from sensor.events import HitEncoder, Observer, Origin, rfc3339
from sensor.records import DnsMessage
from sensor.rules.model import SUFFIX, Rule, RuleMeta, RuleSet


@pytest.mark.parametrize("src,dst,proto,sport,dport", [
    ("10.0.0.1", "10.0.0.2", 17, 40000, 53),
    ("10.0.0.2", "10.0.0.1", 17, 53, 40000),
    ("192.168.1.1", "192.168.1.1", 6, 53, 53),
    ("2001:db8::1", "2001:db8::53", 17, 5353, 53),
    ("fe80::2", "fe80::1", 6, 1, 65535),
])
def test_community_id_matches_reference(src, dst, proto, sport, dport):
    import ipaddress

    expected = communityid.CommunityID().calc(communityid.FlowTuple(proto, src, dst, sport, dport))
    got = community_id(ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed, proto, sport, dport)
    assert got == expected


def test_rfc3339_microseconds_utc():
    assert rfc3339(0, 5) == "1970-01-01T00:00:00.000005Z"
    assert rfc3339(1700000000, 123456) == "2023-11-14T22:13:20.123456Z"


def dotted_keys(obj, path=""):
    if isinstance(obj, dict):
        for key, value in obj.items():
            if "." in key:
                yield path + key
            yield from dotted_keys(value, path + key + ">")


def test_hit_event_fields():
    ruleset = RuleSet()
    ruleset.add(Rule(SUFFIX, "evil.example", False, "evil.example", "rules/demo.rules", 3,
                     meta=RuleMeta(id="R3", category="c2", severity=8, reference="https://example.org/r3")))
    msg = DnsMessage(7, 1700000000, 42, 100, bytes([10, 1, 0, 23]), bytes([10, 1, 0, 53]), 17, 51000, 53,
                     0xBEEF, 0x0100, 1, "WWW.Evil.example", 65, 1, 0)
    encoder = HitEncoder(ruleset, Observer(hostname="appliance", name="dc1-span"))
    event = json.loads(schema.encode(encoder.event(msg, Origin(capture_file="x.pcap"))))
    assert list(dotted_keys(event)) == []  # SIEMs ingest nested objects as they are
    assert event["@timestamp"] == "2023-11-14T22:13:20.000042Z"
    assert event["event"]["kind"] == "alert"
    assert event["source"] == {"ip": "10.1.0.23", "port": 51000}
    assert event["destination"] == {"ip": "10.1.0.53", "port": 53}
    assert event["network"]["transport"] == "udp"
    assert event["network"]["vlan"] == {"id": "100"}
    assert event["network"]["community_id"].startswith("1:")
    assert event["dns"]["id"] == str(0xBEEF)  # ECS keyword
    assert event["dns"]["op_code"] == "QUERY"
    assert event["dns"]["header_flags"] == ["RD"]
    assert event["dns"]["question"] == {"name": "WWW.Evil.example", "type": "HTTPS", "class": "IN",
                                        "registered_domain": "evil.example", "subdomain": "www",
                                        "top_level_domain": "example"}
    assert event["ecs"] == {"version": "9.4.0"}
    assert event["threat"]["indicator"] == {"type": "domain-name", "name": "evil.example",
                                            "url": {"domain": "evil.example"}, "reference": "https://example.org/r3"}
    assert event["threat"]["enrichments"][0]["matched"] == {
        "atomic": "www.evil.example", "field": "dns.question.name", "type": "indicator_match_rule"}
    assert event["rule"] == {"name": "evil.example", "ruleset": "rules/demo.rules", "id": "R3", "category": "c2",
                             "reference": "https://example.org/r3"}
    assert event["event"]["severity"] == 8
    assert event["truesource"]["rule"] == {"line": 3, "kind": "suffix", "format": "native",
                                           "pattern": "evil.example"}
    assert event["observer"]["hostname"] == "appliance" and event["observer"]["name"] == "dc1-span"
    assert event["truesource"]["capture"] == {"file": "x.pcap", "frame": 7}
    assert event["truesource"]["dns"]["question"] == {"type": 65, "class": 1, "name_lower": "www.evil.example"}
    line = encoder.encode(encoder.event(msg, Origin(capture_file="x.pcap")))
    assert line.startswith('{"@timestamp":"2023-11-14T22:13:20.000042Z","ecs":{"version":"9.4.0"}')


def test_unknown_codes_use_rfc3597_names():
    ruleset = RuleSet()
    ruleset.add(Rule(SUFFIX, "", False, ".", "r", 1))
    msg = DnsMessage(1, 0, 0, None, bytes(16), bytes(15) + b"\x01", 6, 1, 53, 1, 3 << 11, 2, ".", 65534, 77, 0)
    event = json.loads(schema.encode(HitEncoder(ruleset, Observer("h", "h")).event(msg, Origin(interface="eth1"))))
    assert event["dns"]["question"]["type"] == "TYPE65534"
    assert event["dns"]["question"]["class"] == "CLASS77"
    assert event["dns"]["op_code"] == "OPCODE3"
    assert event["source"]["ip"] == "::" and event["network"]["type"] == "ipv6"
    assert "vlan" not in event["network"]
    assert event["observer"]["ingress"] == {"interface": {"name": "eth1"}}
    assert "capture" not in event["truesource"]


@pytest.mark.parametrize("proto,src,dst,icmp_type,code", [
    (1, "10.0.0.1", "10.0.0.2", 8, 0),  # echo request: shares its ID with the reply
    (1, "10.0.0.2", "10.0.0.1", 0, 0),
    (1, "10.0.0.9", "10.0.0.1", 3, 1),  # unreachable: one-way
    (1, "10.0.0.1", "10.0.0.9", 11, 0),
    (58, "2001:db8::1", "2001:db8::2", 128, 0),
    (58, "2001:db8::2", "2001:db8::1", 136, 0),
    (58, "2001:db8::2", "2001:db8::1", 1, 4),
])
def test_icmp_community_id_matches_reference(proto, src, dst, icmp_type, code):
    import ipaddress

    from sensor.community_id import icmp_community_id

    make = communityid.FlowTuple.make_icmp if proto == 1 else communityid.FlowTuple.make_icmp6
    expected = communityid.CommunityID().calc(make(src, dst, icmp_type, code))
    got = icmp_community_id(ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed, proto,
                            icmp_type, code)
    assert got == expected


def test_resolver_hit_relates_its_clients_for_pivoting():
    from sensor.attribution import ResolverAttribution

    ruleset = RuleSet()
    ruleset.add(Rule(SUFFIX, "evil.example", False, "evil.example", "r", 1))
    attribution = ResolverAttribution()
    client = DnsMessage(1, 100, 0, None, bytes([10, 1, 0, 23]), bytes([10, 1, 0, 53]), 17, 5000, 53, 1, 0x0100, 1,
                        "Login.EVIL.example", 1, 1, 0)
    upstream = DnsMessage(2, 100, 5, None, bytes([10, 1, 0, 53]), bytes([192, 0, 2, 1]), 17, 6000, 53, 2, 0, 1,
                          "evil.example", 1, 1, 0)
    assert attribution.link(client) is None
    found = attribution.link(upstream)
    event = json.loads(schema.encode(HitEncoder(ruleset, Observer("h", "h")).event(upstream, Origin(), found)))
    assert event["related"]["ip"] == ["10.1.0.53", "192.0.2.1", "10.1.0.23"]
    assert event["truesource"]["attribution"]["clients"][0]["name"] == "login.evil.example"


def test_domain_parts_agree_with_publicsuffixlist_on_every_rule_shape():
    """The cached lookup (by the last labels that can matter) gives what the library gives for the whole name."""
    from pathlib import Path

    import publicsuffixlist

    from sensor.suffixes import domain_parts

    psl = publicsuffixlist.PublicSuffixList()
    text = Path(publicsuffixlist.__file__).with_name("public_suffix_list.dat").read_text(encoding="utf-8")
    rules = [line.strip().lstrip("!").replace("*", "wild") for line in text.splitlines()
             if line.strip() and not line.startswith("//")]
    rules.sort(key=lambda rule: not rule.isascii())  # the Unicode rules last: they load on the first xn-- name
    checked = 0
    for rule in rules[::3]:
        try:
            rule = rule.encode("idna").decode("ascii").lower()
        except UnicodeError:
            continue
        for prefix in ("", "a.", "x9f3k2.b.", "q.a.b.c.d."):
            name = prefix + rule
            registered, subdomain, tld = domain_parts(name)
            assert (registered, tld) == (psl.privatesuffix(name), psl.publicsuffix(name)), name
            if registered and name != registered:
                assert subdomain + "." + registered == name
            checked += 1
    assert checked > 4000
    assert domain_parts(".") == (None, None, None) and domain_parts("a\\.b.example")[0] is None


def test_literal_dns_name_tables_are_dnslibs():
    from dnslib import CLASS, OPCODE, QTYPE, RCODE

    from sensor.dnsnames import CLASSES, OPCODES, QTYPES, RCODES

    assert (QTYPES, CLASSES, OPCODES, RCODES) == (QTYPE.forward, CLASS.forward, OPCODE.forward, RCODE.forward)


def _answered_entry():
    from sensor.querylog.record import STATUS_ANSWERED, QueryLogEntry

    flags = 0x8000 | 0x0400 | 0x0100 | 0x0080  # QR AA RD RA
    return QueryLogEntry(1700000000, 5, None, bytes([10, 1, 0, 23]), bytes([10, 1, 0, 53]), 5000, 53, 17, 77,
                         "Login.Evil.example", 1, 1, STATUS_ANSWERED, 0, flags, 900,
                         (("login.evil.example", 1, 60, "203.0.113.7"),), 3)


def test_query_event_carries_the_responses_ra_aa_and_relates_resolved_addresses():
    from sensor.querylog.events import QueryEventEncoder

    encoder = HitEncoder(RuleSet(), Observer("h", "h"))
    event = json.loads(QueryEventEncoder(encoder).encode(_answered_entry(), Origin()))
    assert event["dns"]["header_flags"] == ["AA", "RD", "RA"]
    assert event["dns"]["type"] == "answer" and event["dns"]["id"] == "77"
    assert event["related"]["ip"] == ["10.1.0.23", "10.1.0.53", "203.0.113.7"]
    assert "rule" not in event and "threat" not in event


def test_hunt_event_with_answers_is_dns_type_answer():
    from sensor.querylog.events import retrospective_hit

    ruleset = RuleSet()
    ruleset.add(Rule(SUFFIX, "evil.example", False, "evil.example", "r", 1, meta=RuleMeta(severity=5)))
    encoder = HitEncoder(ruleset, Observer("h", "h"))
    event = json.loads(schema.encode(retrospective_hit(encoder, _answered_entry(), 0, Origin())))
    assert event["dns"]["type"] == "answer" and event["dns"]["answers"][0]["data"] == "203.0.113.7"
    assert event["event"]["dataset"] == "truesource.hunt" and event["event"]["severity"] == 5
    assert event["threat"]["enrichments"][0]["matched"]["atomic"] == "login.evil.example"


def test_reload_event_is_a_configuration_change():
    from sensor.events import reload_event
    from sensor.rules.reload import ReloadResult

    event = json.loads(schema.encode(reload_event(ReloadResult(3, False, 0.5, error="bad line"),
                                                   HitEncoder(RuleSet(), Observer("h", "h")).observer)))
    assert event["event"]["category"] == ["configuration"] and event["event"]["type"] == ["change"]
    assert event["event"]["outcome"] == "failure" and event["truesource"]["reload"]["error"] == "bad line"
    assert event["ecs"] == {"version": "9.4.0"}


def test_tunnel_is_one_object_on_hits_query_and_hunt_events():
    """`truesource.tunnel` has one JSON type everywhere (decision 0173): an object with `path` on query-log events
    (`dns.query`, hunt), with `path` and `outer` on hits, as a Struct in every case."""
    from sensor.querylog.events import QueryEventEncoder, retrospective_hit

    ruleset = RuleSet()
    ruleset.add(Rule(SUFFIX, "evil.example", False, "evil.example", "r", 1, meta=RuleMeta(severity=5)))
    encoder = HitEncoder(ruleset, Observer("h", "h"))
    entry = _answered_entry()._replace(tunnel="gre/vxlan")
    query = QueryEventEncoder(encoder).event(entry, Origin())
    hunt = retrospective_hit(encoder, entry, 0, Origin())
    hit = encoder.event(DnsMessage(7, 1700000000, 42, None, bytes([10, 1, 0, 23]), bytes([10, 1, 0, 53]), 17, 51000,
                                   53, 1, 0x0100, 1, "login.evil.example", 1, 1, 0, "gre/vxlan", None, None,
                                   (bytes([192, 0, 2, 66]), bytes([192, 0, 2, 1]))), Origin())
    for event in (query, hunt, hit):
        assert isinstance(event.truesource.tunnel, schema.Tunnel)
    assert json.loads(schema.encode(query))["truesource"]["tunnel"] == {"path": "gre/vxlan"}
    assert json.loads(schema.encode(hunt))["truesource"]["tunnel"] == {"path": "gre/vxlan"}
    assert json.loads(schema.encode(hit))["truesource"]["tunnel"] == {
        "path": "gre/vxlan", "outer": {"source": {"ip": "192.0.2.66"}, "destination": {"ip": "192.0.2.1"}}}
    record = DnsMessage(7, 1700000000, 42, None, bytes([10, 1, 0, 23]), bytes([10, 1, 0, 53]), 17, 51000, 53, 1,
                        0x0100, 1, "login.evil.example", 1, 1, 0, "pppoe")
    line = json.loads(encoder.hit_line(record, Origin()))  # the hit-line path leaves it to the reference
    assert line["truesource"]["tunnel"] == {"path": "pppoe"}
