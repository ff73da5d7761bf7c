"""nfdump's flow filter language (the common subset), compiled to one vectorized numpy predicate.

`compile_filter("dst port 53 and not dst ip 192.168.0.1")` parses once and returns a FlowFilter whose
`mask(columns)` is a boolean array over flow records: any mapping of FLOW_DTYPE field names to equal-length
arrays (a structured array, or the columns read from a store) — no Python work per record. The grammar is in
docs/flows-analysis.md; where nfdump and this parser could differ, nfdump's behaviour (nfdump 1.7, `man nfdump`)
is the reference and tests/test_flows_nfdump.py checks it against the real program.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from sensor.errors import StartupError

MAX_FILTER_LENGTH = 65536  # a filter is typed or kept in a file; longer is a mistake, not a filter
MAX_NESTING = 200  # parentheses and `not` chains: deeper would exhaust Python's stack in the parser

# Protocol names nfdump knows for `proto NAME` (its table is longer; these are the ones flows here carry).
PROTOCOL_NUMBERS = {
    "icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "egp": 8, "udp": 17, "ipv6": 41, "rsvp": 46, "gre": 47,
    "esp": 50, "ah": 51, "icmp6": 58, "eigrp": 88, "ospf": 89, "pim": 103, "vrrp": 112, "l2tp": 115,
    "sctp": 132,
}
COMPARATORS = {"=": "eq", "==": "eq", "eq": "eq", ">": "gt", "gt": "gt", "<": "lt", "lt": "lt",
               ">=": "ge", "ge": "ge", "<=": "le", "le": "le"}
SCALES = {"k": 1000, "m": 1000 ** 2, "g": 1000 ** 3, "t": 1000 ** 4}  # nfdump scales by powers of 1000
MAX_COUNTER = (1 << 64) - 1

_V4_MAPPED_LO = 0xFFFF << 32
_LOW64 = (1 << 64) - 1

_TOKEN = re.compile(r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<op>&&|\|\||==|>=|<=|!=|[=<>!()\[\],])
  | (?P<word>[A-Za-z0-9_.:/\-]+)
""", re.VERBOSE)

Columns = Mapping[str, np.ndarray]
Predicate = Callable[[Columns, int], np.ndarray]


class FilterError(StartupError):
    """A filter that is not a filter: the reason and the column it was found at (1-based)."""

    def __init__(self, reason: str, expression: str, position: int) -> None:
        self.reason, self.expression, self.position = reason, expression, position
        super().__init__(f"--filter: {reason} at column {position + 1}")

    def pointer(self) -> str:
        """The expression on one line and a caret under the position on the next (tabs kept for alignment)."""
        line_start = self.expression.rfind("\n", 0, self.position) + 1
        line_end = self.expression.find("\n", self.position)
        line = self.expression[line_start:None if line_end < 0 else line_end]
        lead = "".join(c if c == "\t" else " " for c in self.expression[line_start:self.position])
        return f"  {line}\n  {lead}^"


@dataclass(frozen=True)
class Token:
    kind: str  # "word", "op" or "end"
    text: str
    position: int

    @property
    def lower(self) -> str:
        return self.text.lower()


@dataclass(frozen=True)
class FlowFilter:
    """A compiled filter: the source text, the record fields it reads, and the predicate."""

    expression: str
    fields: frozenset[str]
    predicate: Predicate

    def mask(self, columns: Columns, n: int | None = None) -> np.ndarray:
        """Boolean array: which of the n records (default: the length of a column) pass."""
        if n is None:
            n = len(columns) if isinstance(columns, np.ndarray) else len(next(iter(columns.values()), ()))
        result = self.predicate(columns, n)
        return np.asarray(result, dtype=bool)


def tokenize(expression: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(expression):
        found = _TOKEN.match(expression, position)
        if found is None:
            raise FilterError(f"unexpected character {expression[position]!r}", expression, position)
        if found.lastgroup != "space":
            tokens.append(Token(str(found.lastgroup), found.group(), position))
        position = found.end()
    tokens.append(Token("end", "", len(expression)))
    return tokens


def compile_filter(expression: str) -> FlowFilter:
    """Parse an nfdump filter; an empty (or all-comment) filter passes every record. Raises FilterError."""
    if len(expression) > MAX_FILTER_LENGTH:
        raise FilterError(f"longer than {MAX_FILTER_LENGTH} characters", expression[:80], 0)
    parser = _Parser(expression, tokenize(expression))
    if parser.peek().kind == "end":
        return FlowFilter(expression, frozenset(), _always(True))
    predicate = parser.expression()
    if parser.peek().kind != "end":
        token = parser.peek()
        raise FilterError(f"unexpected {_describe(token)}", expression, token.position)
    return FlowFilter(expression, frozenset(parser.fields), predicate)


def _describe(token: Token) -> str:
    return "end of filter" if token.kind == "end" else repr(token.text)


def _always(value: bool) -> Predicate:
    return lambda columns, n: np.full(n, value, dtype=bool)


class _Parser:
    """Recursive descent; precedence as nfdump's grammar: not binds tighter than and, and tighter than or."""

    def __init__(self, expression: str, tokens: list[Token]) -> None:
        self.text = expression
        self.tokens = tokens
        self.index = 0
        self.depth = 0
        self.fields: set[str] = set()

    # token helpers
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.peek()
        self.index += 1
        return token

    def error(self, reason: str, token: Token | None = None) -> FilterError:
        token = token or self.peek()
        return FilterError(reason, self.text, token.position)

    def expect_word(self, what: str) -> Token:
        token = self.peek()
        if token.kind != "word":
            raise self.error(f"expected {what}, found {_describe(token)}")
        return self.take()

    def is_word(self, *words: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == "word" and token.lower in words

    def is_op(self, *ops: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == "op" and token.text in ops

    def use(self, *fields: str) -> None:
        self.fields.update(fields)

    # grammar
    def expression(self) -> Predicate:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"nested deeper than {MAX_NESTING}")
        parts = [self.conjunction()]
        while self.is_word("or") or self.is_op("||"):
            self.take()
            parts.append(self.conjunction())
        self.depth -= 1
        return parts[0] if len(parts) == 1 else _any_of(parts)

    def conjunction(self) -> Predicate:
        parts = [self.negation()]
        while self.is_word("and") or self.is_op("&&"):
            self.take()
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else _all_of(parts)

    def negation(self) -> Predicate:
        if self.is_word("not") or self.is_op("!"):
            self.take()
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise self.error(f"nested deeper than {MAX_NESTING}")
            inner = self.negation()
            self.depth -= 1
            return lambda columns, n: ~inner(columns, n)
        return self.primary()

    def primary(self) -> Predicate:
        if self.is_op("("):
            self.take()
            inner = self.expression()
            if not self.is_op(")"):
                raise self.error(f"expected ')', found {_describe(self.peek())}")
            self.take()
            return inner
        return self.term()

    def term(self) -> Predicate:
        token = self.peek()
        if token.kind != "word":
            raise self.error(f"expected a filter primitive, found {_describe(token)}")
        word = token.lower
        if word == "any":
            self.take()
            return _always(True)
        if word in ("ipv4", "inet", "ipv6", "inet6"):
            self.take()
            self.use("ip_version")
            version = np.uint8(4 if word in ("ipv4", "inet") else 6)
            return lambda columns, n: columns["ip_version"] == version
        if word == "proto":
            self.take()
            return self.protocol()
        if word in ("packets", "bytes"):
            self.take()
            return self.counter(word)
        if word == "duration":
            self.take()
            return self.duration()
        if word == "flags":
            self.take()
            return self.tcp_flags()
        if word == "vlan":
            self.take()
            return self.vlan()
        sides = self.direction_qualifier()
        token = self.peek()
        if token.kind == "word" and token.lower in ("ip", "host"):
            self.take()
            return self.address(sides)
        if token.kind == "word" and token.lower == "net":
            self.take()
            return self.network(sides)
        if token.kind == "word" and token.lower == "port":
            self.take()
            return self.port(sides)
        if sides is not None:
            raise self.error(f"expected ip, host, net or port, found {_describe(token)}")
        raise self.error(f"unknown filter primitive {token.text!r}")

    def direction_qualifier(self) -> tuple[tuple[str, ...], str] | None:
        """src, dst, `src and dst`, `src or dst`: the record sides a primitive tests and how they combine."""
        if not self.is_word("src", "dst"):
            return None
        first = self.take().lower
        if (self.is_word("and", ahead=0) or self.is_word("or", ahead=0)) and self.is_word(
                "dst" if first == "src" else "src", ahead=1):
            joined = self.take().lower
            self.take()
            return ("src", "dst"), joined
        return (first,), "or"

    # primitives
    def protocol(self) -> Predicate:
        token = self.expect_word("a protocol name or number")
        if token.text.isdigit():
            number = int(token.text)
            if number > 255:
                raise self.error("protocol number > 255", token)
        elif token.lower in PROTOCOL_NUMBERS:
            number = PROTOCOL_NUMBERS[token.lower]
        else:
            raise self.error(f"unknown protocol {token.text!r}", token)
        self.use("proto")
        value = np.uint8(number)
        return lambda columns, n: columns["proto"] == value

    def comparator(self) -> str:
        token = self.peek()
        if (token.kind == "op" and token.text in COMPARATORS) or (token.kind == "word" and token.lower in COMPARATORS):
            self.take()
            return COMPARATORS[token.lower]
        if token.kind == "op" and token.text == "!=":
            raise self.error("'!=' is not a comparator here (use: not ... = N)", token)
        return "eq"

    def number(self, what: str, scaled: bool = False, limit: int = MAX_COUNTER) -> int:
        token = self.expect_word(what)
        text = token.lower
        factor = 1
        if scaled and text[-1:] in SCALES and text[:-1].isdigit():
            factor, text = SCALES[text[-1]], text[:-1]
        if not text.isdigit():
            raise self.error(f"expected {what}, found {token.text!r}", token)
        value = int(text) * factor
        if value > limit:
            raise self.error(f"{what} out of range 0..{limit}", token)
        return value

    def counter(self, field: str) -> Predicate:
        operator = self.comparator()
        value = self.number("a number", scaled=True)
        self.use(field)
        return _compare(field, operator, np.uint64(value))

    def duration(self) -> Predicate:
        """nfdump: duration in milliseconds, last minus first, each as the collector keeps it (whole ms)."""
        operator = self.comparator()
        value = self.number("a duration in milliseconds", limit=(1 << 62))
        self.use("start_us", "end_us")
        compare = _OPERATORS[operator]
        thousand = np.int64(1000)
        limit = np.int64(value)
        return lambda columns, n: compare(columns["end_us"] // thousand - columns["start_us"] // thousand, limit)

    def tcp_flags(self) -> Predicate:
        """`flags SA`: the flow is TCP and has all the named flags (others don't care), as nfdump."""
        token = self.expect_word("TCP flags (letters of FSRPAUX)")
        bits = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16, "U": 32}
        mask = 0
        for letter in token.text.upper():
            if letter == "X":
                mask = 63
            elif letter in bits:
                mask |= bits[letter]
            else:
                raise self.error(f"{letter!r} is not a TCP flag (FSRPAUX)", token)
        self.use("proto", "tcp_flags")
        wanted = np.uint8(mask)
        tcp = np.uint8(6)
        return lambda columns, n: (columns["proto"] == tcp) & ((columns["tcp_flags"] & wanted) == wanted)

    def vlan(self) -> Predicate:
        value = self.number("a VLAN id", limit=4095)
        self.use("vlan")
        wanted = np.int32(value)
        return lambda columns, n: columns["vlan"] == wanted

    def port(self, sides) -> Predicate:
        sides = sides or (("src", "dst"), "or")
        if self.is_word("in"):
            self.take()
            ports = self.bracket_list("a port number", lambda t: self._port_value(t))
            values = np.array(sorted(set(ports)), dtype=np.uint16)
            tests = [_in_ports(f"{side}_port", values) for side in sides[0]]
        else:
            operator = self.comparator()
            value = self._port_value(self.expect_word("a port number"))
            tests = [_compare(f"{side}_port", operator, np.uint16(value)) for side in sides[0]]
        self.use(*(f"{side}_port" for side in sides[0]))
        return _join(tests, sides[1])

    def _port_value(self, token: Token) -> int:
        if not token.text.isdigit():
            raise self.error(f"expected a port number, found {token.text!r}", token)
        value = int(token.text)
        if value > 65535:
            raise self.error("port outside of range 0..65535", token)
        return value

    def address(self, sides) -> Predicate:
        sides = sides or (("src", "dst"), "or")
        if self.is_word("in"):
            self.take()
            networks = self.bracket_list("an IP address or network", self._list_network)
            tests = [_in_networks(side, networks) for side in sides[0]]
        else:
            token = self.expect_word("an IP address")
            address = self._ip(token)
            tests = [_equals_address(side, address) for side in sides[0]]
        self.use(*(f"{side}_{half}" for side in sides[0] for half in ("hi", "lo")))
        return _join(tests, sides[1])

    def network(self, sides) -> Predicate:
        sides = sides or (("src", "dst"), "or")
        token = self.expect_word("a network (A/bits or A mask)")
        text = token.text
        if "/" in text:
            base, _, bits = text.partition("/")
            if not bits.isdigit():
                raise self.error(f"expected the number of network bits after '/', found {bits!r}", token)
            address = self._ip(Token(token.kind, base, token.position), allow_short=True)
            if int(bits) > address.max_prefixlen:
                raise self.error(f"too many network bits for IPv{address.version}: {bits}", token)
            network = ipaddress.ip_network(f"{address}/{bits}", strict=False)
        else:
            address = self._ip(token, allow_short=True)
            mask_token = self.peek()
            if mask_token.kind != "word":
                raise self.error(f"expected a netmask or /bits after {text!r}, found {_describe(mask_token)}")
            self.take()
            try:
                network = ipaddress.ip_network(f"{address}/{mask_token.text}", strict=False)
            except ValueError:
                raise self.error(f"{mask_token.text!r} is not a netmask", mask_token) from None
            if network.version != address.version:
                raise self.error("netmask and address of different families", mask_token)
        tests = [_in_networks(side, [network]) for side in sides[0]]
        self.use(*(f"{side}_{half}" for side in sides[0] for half in ("hi", "lo")))
        return _join(tests, sides[1])

    def _ip(self, token: Token, allow_short: bool = False) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        text = token.text
        if allow_short and ":" not in text and re.fullmatch(r"\d+(\.\d+){0,2}", text):
            text = ".".join((text.split(".") + ["0", "0", "0"])[:4])  # nfdump: 192.168/16 is 192.168.0.0/16
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            if re.fullmatch(r"\d+(\.\d+){0,2}", text):
                raise self.error(f"incomplete IP address {token.text!r}", token) from None
            raise self.error(f"{token.text!r} is not an IP address (host names are not resolved)", token) from None

    def _list_network(self, token: Token):
        try:
            return ipaddress.ip_network(token.text, strict=False)
        except ValueError:
            raise self.error(f"{token.text!r} is not an IP address or network", token) from None

    def bracket_list(self, what: str, convert) -> list:
        if not self.is_op("["):
            raise self.error(f"expected '[' to start a list, found {_describe(self.peek())}")
        self.take()
        items = []
        while not self.is_op("]"):
            if self.is_op(","):
                self.take()
                continue
            items.append(convert(self.expect_word(what)))
        self.take()
        if not items:
            raise self.error("empty list")
        return items


def _all_of(parts: list[Predicate]) -> Predicate:
    def predicate(columns: Columns, n: int) -> np.ndarray:
        result = parts[0](columns, n)
        for part in parts[1:]:
            result = result & part(columns, n)
        return result
    return predicate


def _any_of(parts: list[Predicate]) -> Predicate:
    def predicate(columns: Columns, n: int) -> np.ndarray:
        result = parts[0](columns, n)
        for part in parts[1:]:
            result = result | part(columns, n)
        return result
    return predicate


def _join(tests: list[Predicate], how: str) -> Predicate:
    if len(tests) == 1:
        return tests[0]
    return _any_of(tests) if how == "or" else _all_of(tests)


_OPERATORS = {"eq": np.equal, "gt": np.greater, "lt": np.less, "ge": np.greater_equal, "le": np.less_equal}


def _compare(field: str, operator: str, value) -> Predicate:
    compare = _OPERATORS[operator]
    return lambda columns, n: compare(columns[field], value)


def _in_ports(field: str, values: np.ndarray) -> Predicate:
    return lambda columns, n: np.isin(columns[field], values)


def _halves(address) -> tuple[int, int]:
    if address.version == 4:
        return 0, _V4_MAPPED_LO | int(address)
    value = int(address)
    return value >> 64, value & _LOW64


def _equals_address(side: str, address) -> Predicate:
    hi, lo = (np.uint64(v) for v in _halves(address))
    hi_field, lo_field = f"{side}_hi", f"{side}_lo"
    return lambda columns, n: (columns[lo_field] == lo) & (columns[hi_field] == hi)


def _in_networks(side: str, networks: list) -> Predicate:
    """Records whose address on `side` is in any of the networks: masked compares on the two halves."""
    hi_field, lo_field = f"{side}_hi", f"{side}_lo"
    tests = []
    for network in ipaddress.collapse_addresses(n for n in networks if n.version == 4):
        tests.append(_prefix_test(hi_field, lo_field, network))
    for network in ipaddress.collapse_addresses(n for n in networks if n.version == 6):
        tests.append(_prefix_test(hi_field, lo_field, network))
    return _any_of(tests)


def _prefix_test(hi_field: str, lo_field: str, network) -> Predicate:
    prefix = network.prefixlen + (96 if network.version == 4 else 0)
    high, low = _halves(network.network_address)
    mask = ((1 << 128) - 1) ^ ((1 << (128 - prefix)) - 1)
    mask_hi, mask_lo = np.uint64(mask >> 64), np.uint64(mask & _LOW64)
    value_hi, value_lo = np.uint64(high), np.uint64(low)

    def test(columns, n):
        return _masked_equal(columns[hi_field], columns[lo_field], prefix, mask_hi, mask_lo, value_hi, value_lo)

    if network.version == 4 or not network.overlaps(ipaddress.ip_network("::/96")):
        return test

    # nfdump keeps an IPv4 address as ::a.b.c.d in its 128-bit field, so an IPv6 network over ::/96 (::/0,
    # ::/64...) holds IPv4 flows by that form, not by ours (::ffff:a.b.c.d): test IPv4 flows in its form.
    def nfdump_form_test(columns, n):
        hi, lo = columns[hi_field], columns[lo_field]
        mapped = (hi == np.uint64(0)) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
        as_v6 = _masked_equal(hi, lo, prefix, mask_hi, mask_lo, value_hi, value_lo)
        as_v4 = _masked_equal(np.zeros_like(hi), lo & np.uint64(0xFFFFFFFF), prefix, mask_hi, mask_lo,
                              value_hi, value_lo)
        return np.where(mapped, as_v4, as_v6)
    return nfdump_form_test


def _masked_equal(hi, lo, prefix, mask_hi, mask_lo, value_hi, value_lo) -> np.ndarray:
    if prefix <= 64:
        return (hi & mask_hi) == value_hi
    return ((lo & mask_lo) == value_lo) & (hi == value_hi)
