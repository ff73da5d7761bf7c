"""RPZ zone files (Response Policy Zones, as BIND, Unbound, Knot and PowerDNS read them): the QNAME triggers.

    $ORIGIN rpz.example.                     the zone's name: stripped from every owner (also taken from the SOA)
    $TTL 1h
    @ IN SOA ns.rpz.example. hostmaster.rpz.example. ( 1 3600 600 86400 60 )
    @ IN NS ns.rpz.example.                  SOA and NS at the apex: the zone's own records
    evil.example        CNAME .              exact, deny (NXDOMAIN)
    *.evil.example      CNAME *.             below: only the names below evil.example, deny (NODATA)
    drop.example        CNAME rpz-drop.      deny (drop)
    sinkholed.example   A 192.0.2.1          deny: local data (A, AAAA, TXT, a CNAME elsewhere...)
    ok.evil.example.rpz.example. CNAME rpz-passthru.    allow; absolute owners lose the zone's name

An owner is that exact name (RPZ has no implied subdomains); `*.name` is the names below it. A CNAME to the
owner itself is the old spelling of passthru. Skipped and counted: the other triggers (`rpz-ip`, `rpz-nsdname`,
`rpz-nsip`, `rpz-client-ip` owners), `CNAME rpz-tcp-only.` (not a block), NS below the apex, DNAME, records at
the apex other than SOA/NS, owners outside the zone (BIND ignores them too), `$INCLUDE` and `$GENERATE` (give the
included file with its own --rules). The zone's name becomes the rules' source.

Master-file syntax: `;` comments, `( ... )` across lines, quoted strings, TTL and class in either order or
absent, a blank owner repeating the previous one, `@` for the origin, relative and absolute names.

Errors (`file:line: why`): a bad owner or `$ORIGIN` name, a record with no type, an unclosed `(` or quote, an
absolute owner with no zone name known, a CNAME to `rpz-passthru` without its final dot (that points into the
zone, not at the action: almost always a typo that turns an allow into a deny).
"""

from __future__ import annotations

import io
import re

from sensor.errors import RuleError
from sensor.rules.formats.names import plain_name, to_name
from sensor.rules.formats.tally import FileTally, OnError, format_index
from sensor.rules.model import BELOW, EXACT, RuleMeta, RuleSet

FORMAT = "rpz"
OTHER_TRIGGERS = ("rpz-ip", "rpz-nsdname", "rpz-nsip", "rpz-client-ip")  # the label that ends such an owner
DENY_TARGETS = frozenset((".", "*.", "rpz-drop."))  # NXDOMAIN, NODATA, drop
ALLOW_TARGETS = frozenset(("rpz-passthru.",))
ACTION_NAMES = frozenset(("rpz-passthru", "rpz-drop", "rpz-tcp-only"))
CLASSES = frozenset(("IN", "CH", "HS", "CS", "ANY"))
_TTL = re.compile(r"^(?:\d+|(?:\d+[smhdwSMHDW])+)$")
_TYPE = re.compile(r"^[A-Z][A-Z0-9-]*$")
_SPECIAL = frozenset('();"\\')


class _Zone:
    """What the file said so far: the current $ORIGIN, the zone's name (SOA owner or first $ORIGIN), the last
    owner (a record with a blank owner repeats it) and the last rule added (an owner's A and AAAA are one rule)."""

    def __init__(self) -> None:
        self.origin: str | None = None  # lowercase, no trailing dot; '' is the root
        self.zone: str | None = None
        self.owner: str | None = None
        self.last: tuple[int, str, bool] | None = None
        self.meta_index = 0

    def full(self, owner: str) -> str | None:
        """The owner as an absolute name (no trailing dot), None when relative and no origin is known."""
        if owner == "@":
            if self.origin is None:
                return None
            return self.origin
        if owner.endswith(".") and not owner.endswith("\\."):
            return owner[:-1].lower()
        if self.origin is None:
            return None
        return f"{owner.lower()}.{self.origin}" if self.origin else owner.lower()

    def trigger(self, owner: str, where: str) -> str | None:
        """The owner relative to the zone ('' at the apex), None when outside it. With no zone name in the file
        (a zone whose name is in the server's configuration), relative owners are relative to the zone."""
        full = self.full(owner)
        if full is None:
            if owner.endswith(".") and not owner.endswith("\\."):
                raise RuleError(f"{where}: absolute owner {owner!r} but the zone's name is unknown (no $ORIGIN "
                                "or SOA before it), so it cannot be stripped")
            return "" if owner == "@" else owner.lower()
        if self.zone is None:
            raise RuleError(f"{where}: absolute owner {owner!r} but the zone's name is unknown (no $ORIGIN "
                            "or SOA before it), so it cannot be stripped")
        if full == self.zone:
            return ""
        if not self.zone:
            return full
        if full.endswith("." + self.zone):
            return full[: -len(self.zone) - 1]
        return None


def load_rpz(ruleset: RuleSet, text: str, filename: str, on_error: OnError | None = None) -> None:
    tally = FileTally(ruleset, FORMAT, on_error)
    zone = _Zone()
    file_index = ruleset.file_index(filename)
    fmt = format_index(ruleset, FORMAT)
    add = ruleset.add_fields
    depth, start, omitted, tokens = 0, 0, False, []
    for number, line in enumerate(io.StringIO(text), 1):
        try:
            if depth == 0:
                start, omitted = number, line[:1] in (" ", "\t")
                if _SPECIAL.isdisjoint(line):  # the common line: no comment, parenthesis, quote or escape
                    tokens = line.split()
                    if (
                        len(tokens) == 3 and not omitted and tokens[2] in DENY_TARGETS
                        and tokens[1] in ("CNAME", "cname") and zone.origin == zone.zone
                    ):  # the common record, `name CNAME .` with a relative owner: the short way
                        name = tokens[0].lower()
                        if plain_name(name) and "rpz-" not in name and zone.last != (EXACT, name, False):
                            zone.owner, zone.last = tokens[0], (EXACT, name, False)
                            add(EXACT, name, False, tokens[0], file_index, number, zone.meta_index, fmt)
                            continue
                    if tokens:
                        _record(ruleset, zone, tally, tokens, omitted, filename, start, file_index, fmt)
                    continue
                tokens = []
            depth = _tokenize(line, tokens, depth, f"{filename}:{number}")
            if depth == 0 and tokens:
                _record(ruleset, zone, tally, tokens, omitted, filename, start, file_index, fmt)
        except RuleError as err:
            depth = 0
            tally.error(err)
    if depth:
        tally.error(RuleError(f"{filename}:{start}: '(' is not closed before the end of the file"))
    tally.close()


def _tokenize(line: str, tokens: list[str], depth: int, where: str) -> int:
    """Append the line's tokens (comments removed, quoted strings whole, escapes kept); the new '(' depth."""
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in " \t\r\n":
            i += 1
        elif c == ";":
            break
        elif c == "(":
            depth, i = depth + 1, i + 1
        elif c == ")":
            if depth == 0:
                raise RuleError(f"{where}: ')' with no '(' before it")
            depth, i = depth - 1, i + 1
        else:
            j = i + 1
            if c == '"':
                while j < n and line[j] != '"':
                    j += 2 if line[j] == "\\" else 1
                if j >= n:
                    raise RuleError(f"{where}: quoted string not closed on its line")
                j += 1
            else:
                if c == "\\":
                    j += 1
                while j < n and line[j] not in ' \t\r\n;()"':
                    j += 2 if line[j] == "\\" else 1
            tokens.append(line[i:j])
            i = j
    return depth


def _record(ruleset: RuleSet, zone: _Zone, tally: FileTally, tokens: list[str], omitted: bool, filename: str,
            number: int, file_index: int, fmt: int) -> None:
    """One logical record or directive, starting on line `number`."""
    where = f"{filename}:{number}"
    if tokens[0][0] == "$" and not omitted:
        _directive(zone, tally, tokens, filename, number, ruleset)
        return
    if omitted:
        if zone.owner is None:
            raise RuleError(f"{where}: a record with no owner name and none before it")
        owner, rest = zone.owner, tokens
    else:
        owner, rest = tokens[0], tokens[1:]
        zone.owner = owner
    i = 0
    while i < len(rest) and i < 2 and (rest[i].upper() in CLASSES or _TTL.match(rest[i])):
        i += 1
    if i == len(rest):
        raise RuleError(f"{where}: no record type after {owner!r}")
    rtype, rdata = rest[i].upper(), rest[i + 1:]
    if not _TYPE.match(rtype):
        raise RuleError(f"{where}: {rest[i]!r} is not a record type")
    if rtype == "SOA" and zone.zone is None:
        full = zone.full(owner)
        zone.zone = full
        if full is not None:
            zone.meta_index = ruleset.meta_index(RuleMeta(source=full or "."))
    trigger = zone.trigger(owner, where)
    if trigger is None:
        tally.skip("owner outside the zone")
        return
    if trigger == "":
        if rtype not in ("SOA", "NS"):
            tally.skip("record at the zone apex")
        return
    if rtype in ("SOA", "NS"):
        tally.skip(f"{rtype} below the apex")
        return
    last_label = trigger.rsplit(".", 1)[-1]
    if last_label in OTHER_TRIGGERS:
        tally.skip(f"{last_label} trigger")
        return
    allow = _allow(rtype, rdata, trigger, tally, where)
    if allow is None:
        return
    if trigger == "*":
        kind, name = BELOW, ""
    elif trigger.startswith("*."):
        kind, name = BELOW, to_name(trigger[2:], filename, number, owner)
    else:
        kind, name = EXACT, to_name(trigger, filename, number, owner)
    if zone.last == (kind, name, allow):
        return  # the owner's next record (A then AAAA): the same rule
    zone.last = (kind, name, allow)
    ruleset.add_fields(kind, name, allow, owner, file_index, number, zone.meta_index, fmt)


def _allow(rtype: str, rdata: list[str], trigger: str, tally: FileTally, where: str) -> bool | None:
    """The policy of one record: False deny, True allow (passthru), None for records that are no policy."""
    if rtype == "DNAME":
        tally.skip("DNAME (not an RPZ action)")
        return None
    if rtype != "CNAME":
        return False  # local data: the resolver answers with it instead of the truth
    if not rdata:
        raise RuleError(f"{where}: CNAME with no target")
    target = rdata[0].lower()
    if target in DENY_TARGETS:
        return False
    if target in ALLOW_TARGETS or target.rstrip(".") == trigger.removeprefix("*."):
        return True
    if target == "rpz-tcp-only.":
        tally.skip("CNAME rpz-tcp-only. (not a block)")
        return None
    if target in ACTION_NAMES:
        raise RuleError(f"{where}: CNAME {rdata[0]} without its final dot points into the zone, not at the "
                        f"action: write '{rdata[0]}.'")
    return False  # a CNAME elsewhere: local data (a walled garden)


def _directive(zone: _Zone, tally: FileTally, tokens: list[str], filename: str, number: int,
               ruleset: RuleSet) -> None:
    where = f"{filename}:{number}"
    directive = tokens[0].upper()
    if directive == "$ORIGIN":
        if len(tokens) != 2:
            raise RuleError(f"{where}: $ORIGIN takes one name")
        value = tokens[1]
        if value == ".":
            origin = ""
        else:
            full = zone.full(value) if not value.endswith(".") else value[:-1].lower()
            if full is None:
                raise RuleError(f"{where}: relative $ORIGIN {value!r} with no origin before it")
            origin = to_name(full, filename, number, value)
        zone.origin = origin
        if zone.zone is None:
            zone.zone = origin
            zone.meta_index = ruleset.meta_index(RuleMeta(source=origin or "."))
    elif directive == "$TTL":
        if len(tokens) != 2 or not _TTL.match(tokens[1]):
            raise RuleError(f"{where}: $TTL takes one time-to-live")
    elif directive in ("$INCLUDE", "$GENERATE"):
        tally.skip(f"{directive} (load the records it names with their own --rules)")
    else:
        raise RuleError(f"{where}: {tokens[0]!r} is not a master-file directive ($ORIGIN, $TTL, $INCLUDE)")

