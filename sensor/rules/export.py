"""`rules export`: the rule set as a resolver blocking policy (an RPZ zone, unbound local-zones, a hosts file).

The export writes what the sensor decides, not the rule lines: each name's slots in `RuleSet.table` (the rule
deciding for the name itself, the rule deciding for the names below it) after precedence was settled at load.
Every rule the target cannot say exactly is listed on `err` with its file, line and why, and counted in the
summary line; none is dropped silently. Semantics per format: docs/rules.md "Export", decision 0011.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from sensor.errors import StartupError
from sensor.rules.model import KIND_NAMES, NAME_KINDS, RuleSet, unpack_slots
from sensor.rules.native import MAX_NAME_TEXT, check_name

FORMATS = ("rpz", "unbound", "hosts")
DEFAULT_ZONE = "rpz.truesource."
# TTL of the policy records and of the answers made from them: a rule taken out of the set stops blocking in
# clients' caches within a minute, and a resolver can still answer a busy blocked name from its cache.
POLICY_TTL = 60
# SOA timers (refresh, retry, expire, negative TTL): what a secondary pulling the zone by AXFR would use.
SOA_TIMERS = "3600 600 86400 60"
# Rules listed one by one on `err`; past this the summary's counts stand for the rest (a feed of half a million
# suffix rules exported as hosts would otherwise print half a million identical lines).
MAX_NOTES = 1000
NULL_ADDRESSES = (("A", "0.0.0.0"), ("AAAA", "::"))  # the hosts file's sinkhole, also for unbound exact names

DENY, PASS = True, False  # what a slot means to a resolver: block, or resolve normally (allow or no rule)


@dataclass
class ExportReport:
    """What the export could and could not say, rule by rule."""

    exported: int = 0
    partial: Counter = field(default_factory=Counter)  # kind name -> rules exported for only some names
    not_expressible: Counter = field(default_factory=Counter)  # kind name -> rules with no effect in the target
    shadowed: int = 0  # rules a later rule displaced at load: they decide nothing in the sensor either
    # one (rule index, `file:line: ...`) per rule not exported exactly; written in load order
    notes: list[tuple[int, str]] = field(default_factory=list)

    def summary(self, fmt: str) -> str:
        def by_kind(counts: Counter) -> str:
            return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))

        partial = sum(self.partial.values())
        missing = sum(self.not_expressible.values())
        text = f"rules export {fmt}: {self.exported} exported"
        if partial:
            text += f" ({partial} partial: {by_kind(self.partial)})"
        text += f", {missing} not expressible" + (f" ({by_kind(self.not_expressible)})" if missing else "")
        return text + (f", {self.shadowed} shadowed (decide nothing)" if self.shadowed else "")

    @property
    def exact(self) -> bool:
        return not self.partial and not self.not_expressible


def run_export(ruleset: RuleSet, fmt: str, out: TextIO, err: TextIO, *, zone: str = DEFAULT_ZONE,
               serial: int | None = None, strict: bool = False) -> int:
    """Write `ruleset` to `out` as `fmt`; every rule not exported exactly, then a summary line, to `err`.

    Exit code 0, or 1 with `strict` when any rule was partial or not expressible (for a pipeline that must not
    push a policy weaker than the rules). `zone` and `serial` are the RPZ zone's origin and SOA serial (default:
    the time now, so a secondary sees every new export as newer).
    """
    if fmt not in FORMATS:
        raise StartupError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if not ruleset.table and len(ruleset) > len(ruleset.patterns):
        # RuleSet.drop_table() ran (the compiled loop holds the names): exporting now would write nothing
        raise ValueError("run_export needs the rule set's name table; export before drop_table()")
    report = ExportReport()
    policy = _Policy(ruleset)
    if fmt == "rpz":
        origin = _check_zone(zone)
        lines = _rpz(policy, report, origin, int(time.time()) if serial is None else serial)
    elif fmt == "unbound":
        lines = _unbound(policy, report)
    else:
        lines = _hosts(policy, report)
    for line in lines:
        out.write(line + "\n")
    _report_patterns(ruleset, fmt, report)
    notes = sorted(report.notes)
    for _index, note in notes[:MAX_NOTES]:
        err.write(note + "\n")
    if len(notes) > MAX_NOTES:
        err.write(f"... and {len(notes) - MAX_NOTES} more rules not exported exactly, counted below\n")
    err.write(report.summary(fmt) + "\n")
    return 1 if strict and not report.exact else 0


def _check_zone(zone: str) -> str:
    """The RPZ origin, absolute and lowercase; StartupError naming `--zone` if it is not a domain name."""
    name = zone.lower().rstrip(".")
    if not name:
        raise StartupError("--zone: the policy zone needs a name (such as rpz.truesource.), not the root")
    check_name(name, "--zone", zone)
    return name + "."


class _Policy:
    """The sensor's verdicts, read from the settled table: what the export must make the resolver do."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self.table = ruleset.table
        self._below: dict[str, int] = {}  # memo of below(): name -> deciding rule, -1 for none

    def slots(self) -> Iterator[tuple[int, str, bool, bool]]:
        """(rule index, name, decides the name itself, decides the names below) for every exact, suffix and
        below rule in load order; both False for a rule displaced at load (shadowed)."""
        ruleset = self.ruleset
        # The columns directly: ruleset.rule(i) makes a Rule with its metadata, seconds at a million rules.
        for index in range(len(ruleset)):
            kind = ruleset._kind[index]
            if kind not in NAME_KINDS:
                continue
            name = ruleset._pattern[index]
            own, below = unpack_slots(self.table.get(name, 0))
            yield index, name, own == index, below == index

    def below(self, name: str) -> int:
        """The rule deciding for names below `name` that no table entry is closer to: its own below slot, or
        the nearest ancestor's."""
        found = self._below.get(name)
        if found is None:
            slot = unpack_slots(self.table.get(name, 0))[1]
            found = slot if slot != -1 or name == "" else self.below(parent(name))
            self._below[name] = found
        return found

    def at(self, name: str) -> int:
        """The rule deciding for `name` itself, -1 when none does."""
        own = unpack_slots(self.table.get(name, 0))[0]
        if own != -1 or name == "":
            return own
        return self.below(parent(name))

    def blocks(self, index: int) -> bool:
        return index != -1 and not self.ruleset.allow[index]

    def where(self, index: int) -> str:
        rule = self.ruleset.rule(index)
        return f"{rule.ruleset}:{rule.line}: {rule.text!r}"


def _counts(ruleset: RuleSet) -> str:
    return f"{len(ruleset)} rules from {len(ruleset.files)} file{'s' if len(ruleset.files) != 1 else ''}"


def parent(name: str) -> str:
    return name.partition(".")[2]


def ancestors(name: str) -> Iterator[str]:
    """`name` and each shorter suffix at a label boundary, the root ('') last."""
    while True:
        yield name
        if not name:
            return
        name = parent(name)


def _audit(policy: _Policy, report: ExportReport, fmt: str, slot_ok: Callable[[str, bool, bool], str | None]
           ) -> None:
    """Score every name rule: `slot_ok(name, below, deny)` says why the target does not do what the slot
    decides (None when it does). All slots right: exported; some: partial; none: not expressible."""
    for index, name, own, below in policy.slots():
        if not (own or below):
            report.shadowed += 1
            report.notes.append((index, f"{policy.where(index)}: shadowed, decides nothing (a later rule on the same "
                                "name is more specific or allows)"))
            continue
        deny = policy.blocks(index)
        wrong = [why for why in (slot_ok(name, False, deny) if own else None,
                                 slot_ok(name, True, deny) if below else None) if why]
        kind = KIND_NAMES[policy.ruleset._kind[index]] + ("" if deny else " allow")
        if not wrong:
            report.exported += 1
            continue
        decided = int(own) + int(below)
        if len(wrong) < decided:
            report.exported += 1
            report.partial[kind] += 1
            report.notes.append((index, f"{policy.where(index)}: partial in {fmt}: {wrong[0]}"))
        else:
            report.not_expressible[kind] += 1
            report.notes.append((index, f"{policy.where(index)}: not expressible in {fmt}: {'; '.join(wrong)}"))


def _report_patterns(ruleset: RuleSet, fmt: str, report: ExportReport) -> None:
    for index in ruleset.patterns:
        rule = ruleset.rule(index)
        kind = rule.kind_name + (" allow" if rule.allow else "")
        report.not_expressible[kind] += 1
        report.notes.append((index, f"{rule.ruleset}:{rule.line}: {rule.text!r}: not expressible in {fmt}: a "
                                    f"{rule.kind_name} names no suffix; resolver policies match names and suffixes"))


# -- RPZ ----------------------------------------------------------------------------------------------------------


def _rpz(policy: _Policy, report: ExportReport, origin: str, serial: int) -> list[str]:
    """An RPZ zone: `name CNAME .` (NXDOMAIN) or `name CNAME rpz-passthru.` for a name's own slot, the same on
    `*.name` for its below slot.

    RPZ prefers an exact owner over a wildcard, but which wildcard applies differs: BIND takes the longest
    matching one, unbound only the one at the closest encloser (the deepest existing name of the zone above
    the query, as in RFC 4592), so an owner `x.evil.test` (or an empty non-terminal on the way to it) hides
    `*.evil.test` from the names below it. So every owner and empty non-terminal under a name with a below
    verdict gets its own wildcard stating that verdict: both resolvers then decide as the sensor does.
    """
    room = MAX_NAME_TEXT - len(origin)  # characters left for an owner: owner + '.' + origin (no trailing dot)
    owners: set[str] = set()  # names written with their own record
    wilds: set[str] = set()  # names E written as `*.E`
    body: list[str] = []

    def action(index: int) -> str:
        return "." if policy.blocks(index) else "rpz-passthru."

    def wildcard(name: str, index: int, note: str = "") -> None:
        if name not in wilds and len(name) + 2 <= room:
            wilds.add(name)
            body.append(f"{'*.' + name if name else '*'} CNAME {action(index)}{note}")

    for index, name, own, below in policy.slots():
        if own and name and len(name) <= room:
            owners.add(name)
            body.append(f"{name} CNAME {action(index)}")
        if below:
            wildcard(name, index)
        for upper in ancestors(name):  # the wildcards unbound needs to see the verdict from above
            if upper in wilds or unpack_slots(policy.table.get(upper, 0))[1] != -1:
                continue
            decider = policy.below(upper)
            if decider != -1:
                rule = policy.ruleset.rule(decider)
                wildcard(upper, decider, f"  ; names below {upper}: {rule.suffix or '.'} decides "
                                         f"({rule.ruleset}:{rule.line})")

    def slot_ok(name: str, below: bool, deny: bool) -> str | None:
        if below:
            return None if name in wilds else f"'*.{name}.{origin}' is longer than {MAX_NAME_TEXT} characters"
        if not name:
            return "RPZ has no trigger for the root name itself (only '*', every name below it)"
        return None if name in owners else f"'{name}.{origin}' is longer than {MAX_NAME_TEXT} characters"

    _audit(policy, report, "rpz", slot_ok)
    header = [
        f"; truesource rules export: {_counts(policy.ruleset)} as a "
        "response policy zone (generated: edit the rules, not this file)",
        "; deny: CNAME . (NXDOMAIN); allow: CNAME rpz-passthru. (resolve normally)",
        f"$ORIGIN {origin}",
        f"$TTL {POLICY_TTL}",
        f"@ SOA localhost. hostmaster.localhost. {serial} {SOA_TIMERS}",
        "@ NS localhost.",
    ]
    return header + body


# -- unbound ------------------------------------------------------------------------------------------------------

NXDOMAIN_ZONE, NULL_ZONE, PASS_ZONE = "always_nxdomain", "transparent", "always_transparent"


def _unbound(policy: _Policy, report: ExportReport) -> list[str]:
    """unbound local-zones. A local-zone decides for its name and every name below it (down to a deeper
    local-zone), so for each name with a rule:
      the name and the names below blocked       -> always_nxdomain
      the name blocked, the names below not      -> transparent + null A/AAAA local-data (NOERROR 0.0.0.0 / ::,
                                                    NODATA for other types): no zone type gives NXDOMAIN to one
                                                    name alone, and transparent lets the names below resolve
      neither blocked (an allow rule)            -> always_transparent (carves the name out of a blocked zone)
      the name not blocked, the names below are  -> not expressible: nothing written, the enclosing zone decides
    """
    zones: dict[str, str] = {}
    body: list[str] = []
    for _index, name, own, below in policy.slots():
        if not (own or below) or name in zones:
            continue
        at = policy.blocks(policy.at(name))
        under = policy.blocks(policy.below(name))
        owner = f"{name}." if name else "."
        if at and under:
            zones[name] = NXDOMAIN_ZONE
        elif at:
            zones[name] = NULL_ZONE
        elif not under:
            zones[name] = PASS_ZONE
        else:
            continue
        body.append(f'    local-zone: "{owner}" {zones[name]}')
        if zones[name] == NULL_ZONE:
            body += [f'    local-data: "{owner} {POLICY_TTL} IN {rtype} {addr}"' for rtype, addr in NULL_ADDRESSES]

    def blocked(name: str, below: bool) -> bool:
        """What unbound does with `name` (or, with `below`, a name just below it that has no zone)."""
        for upper in ancestors(name):
            zone = zones.get(upper)
            if zone is not None:
                return zone == NXDOMAIN_ZONE or (zone == NULL_ZONE and upper == name and not below)
        return False

    def slot_ok(name: str, below: bool, deny: bool) -> str | None:
        if blocked(name, below) == deny:
            return None
        if below:
            return ("a local-zone cannot block the names below a name without blocking the name itself"
                    if deny else "the names below it stay blocked by the enclosing local-zone")
        return ("a local-zone cannot leave a name resolving while blocking the names below it; the enclosing "
                "local-zone decides" if not deny else "the enclosing local-zone lets it resolve")

    _audit(policy, report, "unbound", slot_ok)
    header = [
        f"# truesource rules export: {_counts(policy.ruleset)} as unbound "
        "local-zones (generated: edit the rules, not this file); include it from unbound.conf",
        "server:",
    ]
    return header + body


# -- hosts --------------------------------------------------------------------------------------------------------


def _hosts(policy: _Policy, report: ExportReport) -> list[str]:
    """A hosts file: `0.0.0.0 name` for each name blocked itself. A hosts file holds single names: it cannot
    block the names below one (suffix rules are partial, below rules not expressible), and it needs no line
    for an allow rule (a name it does not list resolves)."""
    listed: set[str] = set()
    body: list[str] = []
    for index, name, own, _below in policy.slots():
        if own and name and policy.blocks(index) and name not in listed:
            listed.add(name)
            body.append(f"{NULL_ADDRESSES[0][1]} {name}")

    def slot_ok(name: str, below: bool, deny: bool) -> str | None:
        if not deny:
            return None
        if below:
            return "a hosts file cannot block the names below a name"
        return None if name in listed else "a hosts file has no line for every name"

    _audit(policy, report, "hosts", slot_ok)
    header = [f"# truesource rules export: {_counts(policy.ruleset)} as a "
              "hosts file (generated: edit the rules, not this file)"]
    return header + body
