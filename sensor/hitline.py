"""A client's hit as one line of JSON, from fragments encoded once: the per-hit fast path of sensor/events.py.

A hit event is ~60 fields, and most of them repeat: everything a name, its question and its rule decide (the
`dns` fields but the ID, `rule.*`, `threat.*`, `truesource.dns` and `truesource.rule`) is the same for every
client asking that name, and the observer and the capture file are the same for the whole run. Building the
schema's Structs for each hit and encoding them cost ~15 us; here the repeated parts are encoded once (with the
schema's own encoder, from the schema's own Structs) and kept per (name, type, class, flags, rule), and a hit
costs a dictionary lookup and one string join of its own few values: addresses, ports, ID, time, Community ID.

The reference is `HitEncoder.event()` and `schema.encode()`: tests/test_hitline.py checks that both write the
same bytes for every hit of every shipped capture and for generated records. Records this path does not cover
(a resolver's query linked to its clients, a tunnelled or ECS-subnet query) are left to the reference.

Hits are written by `write_line`: the compiled HitLineWriter (ext/hitline.pxi, decisions 0205 and 0206) over this
object's caches when it is built, else `line()`, its twin. The writer makes a new name's fragments itself when the
name needs no escaping; everything else in the caches (shapes, rule and question texts, escaped names, address,
MAC and second texts) is made here.
"""

from __future__ import annotations

import binascii
import hashlib
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from sensor import schema
from sensor.dnscodes import header_flags, opcode_name, qclass_name, qtype_name
from sensor.loop import hit_line_writer
from sensor.suffixes import domain_parts

if TYPE_CHECKING:
    from sensor.messages import DnsRecord


class RuleParts(Protocol):
    """A rule's encoded share of its hits (sensor/events.py's RuleParts; named here so that this module, which
    events.py imports, imports nothing back)."""

    @property
    def raw_event(self) -> schema.Raw: ...
    @property
    def raw_fields(self) -> schema.Raw: ...
    @property
    def raw_indicator(self) -> schema.Raw: ...
    @property
    def detail(self) -> schema.RuleDetail: ...

MAX_NAMES = 16_384  # (name, question, rule) fragments kept; the table is emptied when full (hits repeat names)
MAX_ADDRESSES = 65_536  # address texts kept (clients and resolvers)
TRANSPORT_TEXT = {17: '"udp","protocol":"dns","type":"ipv', 6: '"tcp","protocol":"dns","type":"ipv'}
IANA = {17: '","iana_number":"17","community_id":"1:', 6: '","iana_number":"6","community_id":"1:'}
THREAT_END = ',"field":"dns.question.name","type":"indicator_match_rule"}}]},"observer":'  # after the matched name
_FLOW4 = struct.Struct("!H4s4sBBHH")  # Community ID's hash input: seed, addresses, protocol, pad, ports
_FLOW6 = struct.Struct("!H16s16sBBHH")
_sha1 = hashlib.sha1
_b64 = binascii.b2a_base64


class _Question:
    """What a question's type, class, flags and QDCOUNT give every hit asked that way, whatever its rule."""

    __slots__ = ("question", "type_class", "detail", "detail_end")

    def __init__(self, qtype: int, qclass: int, flags: int, qdcount: int) -> None:
        opcode = (flags >> 11) & 0xF
        self.question = (f'","op_code":{_text(opcode_name(opcode))}'
                         f',"header_flags":{schema.encode_value(header_flags(flags))},"question":{{"name":')
        self.type_class = f',"type":{_text(qtype_name(qtype))},"class":{_text(qclass_name(qclass))}'
        self.detail = f'{{"dns":{{"op_code":{opcode},"question":{{"type":{qtype},"class":{qclass},"name_lower":'
        self.detail_end = f'}},"qdcount":{qdcount},"flags":{flags}}},"rule":'


class _Shape:
    """What a hit's question (type, class, flags, QDCOUNT) and rule give every name asked that way, in runs of
    encoded fields around the places where the name goes: the question's and the rule's texts, joined once."""

    __slots__ = ("parts", "event", "question", "type_class", "rule_threat", "detail", "detail_end")

    def __init__(self, rule: _RuleTexts, question: _Question) -> None:
        self.parts = rule.parts  # the rule parts these fragments were made with (a reload makes new ones)
        self.event = rule.event
        self.question = question.question
        self.type_class = question.type_class
        self.rule_threat = rule.rule_threat
        self.detail = question.detail
        self.detail_end = question.detail_end + rule.detail


class _RuleTexts:
    """A rule's encoded fields, made once per rule (not once per question shape: a rule is asked many ways)."""

    __slots__ = ("parts", "event", "rule_threat", "detail")

    def __init__(self, parts: RuleParts) -> None:
        self.parts = parts
        self.event = schema.encode_value(parts.raw_event)
        indicator = schema.encode_value(parts.raw_indicator)
        self.rule_threat = (f'}}}},"rule":{schema.encode_value(parts.raw_fields)},"threat":{{"indicator":{indicator}'
                            f',"enrichments":[{{"indicator":{indicator},"matched":{{"atomic":')
        self.detail = schema.encode_value(parts.detail)


def _name_texts(shape: _Shape, name: str) -> tuple[str, ...]:
    """The line's runs in their order for one (name, type, class, flags, QDCOUNT, rule): the shape's, with the
    question's name fields and the lower-case name between them (small texts: the shape's long runs are joined
    into the line, not copied per name, and most hits' names are new). ext/hitline.pxi makes the same runs for a
    name that needs no escaping."""
    lower = name.lower()
    registered, subdomain, tld = domain_parts(lower)
    if _needs_no_escape(name):  # the parts are pieces of the name: when it needs no escaping, none of them does
        registered_text = "" if registered is None else ',"registered_domain":"' + registered + '"'
        subdomain_text = "" if subdomain is None else ',"subdomain":"' + subdomain + '"'
        tld_text = "" if tld is None else ',"top_level_domain":"' + tld + '"'
        question = f'"{name}"{shape.type_class}{registered_text}{subdomain_text}{tld_text}'
        lower_text = f'"{lower}"'
    else:
        pieces = [_text(name), shape.type_class]
        if registered is not None:
            pieces += (',"registered_domain":', _text(registered))
        if subdomain is not None:
            pieces += (',"subdomain":', _text(subdomain))
        if tld is not None:
            pieces += (',"top_level_domain":', _text(tld))
        question = "".join(pieces)
        lower_text = _text(lower)
    return (shape.event, shape.question, question, shape.rule_threat, lower_text, shape.detail, shape.detail_end)


def _needs_no_escape(value: str) -> bool:
    return value.isascii() and value.isprintable() and '"' not in value and "\\" not in value


def _plain(value: str) -> str:
    return f'"{value}"'


def _text(value: str) -> str:
    """A JSON string literal as schema.encode writes it (ASCII: \\u escapes)."""
    return _plain(value) if _needs_no_escape(value) else schema.encode_value(value)


class HitLines:
    """Per-hit JSON for the encoder's common case; `line()` returns None for a record it leaves to the reference."""

    max_names = MAX_NAMES  # read by the compiled writer, which adds names' fragments itself, with
    domain_parts = staticmethod(domain_parts)  # these parts (ext/ imports nothing from sensor/)

    def __init__(self, observer_raw: Callable[[str | None], schema.Raw], raw_ecs: schema.Raw) -> None:
        self._observer_raw = observer_raw
        self._ecs = '","ecs":' + schema.encode_value(raw_ecs) + ',"event":'
        # The compiled writer holds these same dicts (names, addresses, MACs, seconds): they are emptied, never
        # replaced
        self._names: dict[tuple, tuple[RuleParts, tuple[str, ...]]] = {}
        self._shapes: dict[tuple, _Shape] = {}
        self._questions: dict[tuple, _Question] = {}
        self._rules: dict[int, _RuleTexts] = {}
        self._addresses: dict[bytes, str] = {}
        self._macs: dict[bytes, str] = {}
        self._origins: dict[tuple[str | None, str | None], tuple[str, str]] = {}
        self._seconds: dict[int, str] = {}
        # The line writer hits use: the compiled one (ext/hitline.pxi) over these caches, else line() itself
        writer = hit_line_writer(self)
        self.write_line: Callable[[DnsRecord, RuleParts, tuple[str, str]], str | None] = (
            writer.line if writer is not None else self.line)

    # The texts kept per address, MAC and second: line() looks each up itself and calls these on a miss only.

    def _new_address(self, address: bytes) -> str:
        if len(self._addresses) >= MAX_ADDRESSES:
            self._addresses.clear()
        text = self._addresses[address] = socket.inet_ntop(socket.AF_INET if len(address) == 4 else socket.AF_INET6,
                                                           address)
        return text

    def _new_mac(self, mac: bytes) -> str:
        if len(self._macs) >= MAX_ADDRESSES:
            self._macs.clear()
        text = self._macs[mac] = f',"mac":"{mac.hex("-").upper()}"'
        return text

    def _new_second(self, sec: int) -> str:
        if len(self._seconds) >= 4096:
            self._seconds.clear()
        text = self._seconds[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return text

    def origin(self, capture_file: str | None, interface: str | None) -> tuple[str, str]:
        """What one origin gives its hits: the `"observer":` value with the comma before truesource, and the
        capture part's head. Asked once a batch (a batch has one origin), handed to line()."""
        key = (capture_file, interface)
        found = self._origins.get(key)
        if found is None:
            observer = schema.encode_value(self._observer_raw(interface))
            capture = ',"capture":{"file":' + _text(capture_file) + ',"frame":' if capture_file is not None else ""
            found = self._origins[key] = (observer + ',"truesource":', capture)
        return found

    def _new_name(self, key: tuple, parts: RuleParts) -> tuple[RuleParts, tuple[str, ...]]:
        """The fragments of a (name, type, class, flags, QDCOUNT, rule) not kept (or kept from another rule set),
        now kept: (the rule parts they were made with, the line's runs)."""
        if len(self._names) >= MAX_NAMES:
            self._names.clear()
        shape_key = key[1:]
        shape = self._shapes.get(shape_key)
        if shape is None or shape.parts is not parts:
            shape = self._new_shape(shape_key, parts)
        fragments = self._names[key] = (parts, _name_texts(shape, key[0]))
        return fragments

    def _new_shape(self, key: tuple, parts: RuleParts) -> _Shape:
        """The runs of a (type, class, flags, QDCOUNT, rule), from its question's and its rule's, now kept."""
        if len(self._shapes) >= MAX_NAMES:
            self._shapes.clear()
        index = key[4]
        rule = self._rules.get(index)
        if rule is None or rule.parts is not parts:
            if len(self._rules) >= MAX_NAMES:
                self._rules.clear()
            rule = self._rules[index] = _RuleTexts(parts)
        question_key = key[:4]
        question = self._questions.get(question_key)
        if question is None:
            if len(self._questions) >= MAX_NAMES:
                self._questions.clear()
            question = self._questions[question_key] = _Question(*question_key)
        shape = self._shapes[key] = _Shape(rule, question)
        return shape

    def line(self, msg: DnsRecord, parts: RuleParts, origin: tuple[str, str]) -> str | None:
        """The hit's JSON line, or None: a tunnelled or ECS-subnet query, or a CNAME hit, is left to the reference."""
        if msg.tunnel is not None or msg.client_subnet is not None or msg.cname is not None:
            return None
        key = (msg.qname, msg.qtype, msg.qclass, msg.flags, msg.qdcount, msg.rule)
        fragments = self._names.get(key)
        if fragments is None or fragments[0] is not parts:
            fragments = self._new_name(key, parts)
        event, question_head, question, rule_threat, lower, detail, detail_end = fragments[1]
        src_ip, dst_ip = msg.src_ip, msg.dst_ip
        addresses = self._addresses
        src = addresses.get(src_ip) or self._new_address(src_ip)
        dst = addresses.get(dst_ip) or self._new_address(dst_ip)
        sport, dport, transport = msg.src_port, msg.dst_port, msg.transport
        # Community ID v1 (sensor/community_id.py is the reference): the lower (address, port) end first
        flow = _FLOW4 if len(src_ip) == 4 else _FLOW6
        if (src_ip, sport) > (dst_ip, dport):
            community = _b64(_sha1(flow.pack(0, dst_ip, src_ip, transport, 0, dport, sport)).digest(), newline=False)
        else:
            community = _b64(_sha1(flow.pack(0, src_ip, dst_ip, transport, 0, sport, dport)).digest(), newline=False)
        observer, capture = origin
        src_mac = msg.src_mac
        mac = "" if src_mac is None else self._macs.get(src_mac) or self._new_mac(src_mac)
        second = self._seconds.get(msg.ts_sec) or self._new_second(msg.ts_sec)
        vlan = f',"vlan":{{"id":"{msg.vlan_id}"}}' if msg.vlan_id is not None else ""
        related = f'{src}","{dst}' if src != dst else src
        tcp = ("" if transport != 6 else
               ',"tcp":{"handshake":true}' if msg.tcp_handshake else ',"tcp":{"handshake":false}')
        if capture:
            capture = f"{capture}{msg.frame}}}"
        return (f'{{"@timestamp":"{second}.{msg.ts_usec:06d}Z{self._ecs}{event}'
                f',"source":{{"ip":"{src}","port":{sport}{mac}}},"destination":{{"ip":"{dst}","port":{dport}}}'
                f',"related":{{"ip":["{related}"]}},"network":{{"transport":{TRANSPORT_TEXT[transport]}'
                f'{4 if len(src_ip) == 4 else 6}{IANA[transport]}{community.decode()}"{vlan}}}'
                f',"dns":{{"type":"query","id":"{msg.dns_id}{question_head}{question}{rule_threat}'
                f'{lower}{THREAT_END}{observer}{detail}{lower}{detail_end}{tcp}'
                f'{capture}}}}}')
