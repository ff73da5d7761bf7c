"""Which format a rule file is in, from its first meaningful lines; the file name is only a hint.

Markers that settle it at once: `#fields` naming `indicator` (Zeek Intel), `$TTL`/`$ORIGIN` or an SOA record
(RPZ), an `[Adblock Plus 2.0]`-style header (Adblock). Otherwise each line votes: an address then names
(hosts), `owner [ttl] [class] TYPE data` (RPZ), a tab-separated `Intel::` row (Zeek Intel), a `||`/`@@`
filter (Adblock), a line the native format reads (native); `!` comments lean Adblock, `;` comments RPZ. The
format with most votes wins if it has at least as many as the lines no format reads; else the name's hint, else
None: not a rule file (a README, a CSV of something else, a binary), which a directory load skips.
"""

from __future__ import annotations

import os
import re

from sensor.errors import RuleError
from sensor.rules.formats.hosts import is_address
from sensor.rules.formats.rpz import CLASSES
from sensor.rules.native import parse_rule

DETECT_CHARS = 65536  # the head of the file: enough to tell, without reading a million-line feed twice
DETECT_LINES = 100  # lines that are not comments, looked at at most
COMMENT_WEIGHT = 0.5  # a comment style leans towards a format; a rule line says it
CONTROL_SHARE = 0.01  # more control characters than this (besides tab, CR, LF, FF): not text
HINTS = {".hosts": "hosts", ".zone": "rpz", ".rpz": "rpz", ".intel": "zeek_intel", ".rules": "native",
         ".list": "native", ".domains": "native"}
PREFERENCE = ("zeek_intel", "rpz", "adblock", "hosts", "native")  # on a tie with no hint: the rarer shape first
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_TTL = re.compile(r"^(?:\d+|(?:\d+[smhdwSMHDW])+)$")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_*.~=]")
_OWNER = re.compile(r"^[A-Za-z0-9_*@.\\-]+$")


def hint(filename: str) -> str | None:
    """The format a file's name suggests: `*.hosts` and `hosts*`, `*.zone`/`*.rpz`, `*.intel`, `*.rules`..."""
    base = os.path.basename(filename).lower()
    if base.startswith("hosts"):
        return "hosts"
    return HINTS.get(os.path.splitext(base)[1])


def detect(text: str, filename: str) -> str | None:
    """"native", "hosts", "adblock", "zeek_intel", "rpz", or None when the file is not a rule file."""
    head = text[:DETECT_CHARS]
    if "\x00" in head or len(_CONTROL.findall(head)) > CONTROL_SHARE * max(len(head), 1):
        return None
    lines = head.splitlines()
    if len(text) > DETECT_CHARS:
        lines = lines[:-1]  # cut in the middle
    votes: dict[str, float] = {}
    unknown = counted = 0
    comments = False
    for line in lines:
        body = line.strip()
        if not body:
            continue
        found = _line_format(body, line)
        if found is None:
            unknown += 1
        elif found[1] == 0:
            return found[0]  # a marker
        elif found[0] == "#":
            comments = True
            continue
        else:
            votes[found[0]] = votes.get(found[0], 0) + found[1]
            if found[1] < 1:
                continue
        counted += 1
        if counted >= DETECT_LINES:
            break
    suggested = hint(filename)
    if votes:
        top = max(votes.values())
        if top >= unknown:
            tied = [f for f in PREFERENCE if votes.get(f) == top]
            return suggested if suggested in tied else tied[0]
    if suggested is not None:
        return suggested
    if comments and not unknown:
        return "native"  # only `#` comments: a native file with nothing in it yet
    return None


def _line_format(body: str, line: str) -> tuple[str, float] | None:
    """(format, 0) for a marker, (format, weight) for a vote, ("#", 1) for a neutral comment, None: no format."""
    first = body[0]
    if first == "#":
        if body.startswith("#fields") and "indicator" in body:
            return "zeek_intel", 0
        return ("native", 1) if body.startswith("#@") else ("#", 1)
    if first == "!":
        if len(body) == 1 or not _NAME_CHAR.match(body[1]):
            return "adblock", COMMENT_WEIGHT
    elif first == ";":
        return "rpz", COMMENT_WEIGHT
    elif first == "[" and body[-1] == "]" and body[1:].lower().startswith(("adblock", "ublock", "adguard")):
        return "adblock", 0
    elif first == "$" and body.split(None, 1)[0].upper() in ("$TTL", "$ORIGIN"):
        return "rpz", 0
    elif body.startswith(("||", "@@")):
        # A vote, not a marker: one Adblock-looking line in a native file must not make the file Adblock (its
        # native lines would all be skipped); the native loader then stops at that line and names it.
        return "adblock", 1
    if "\t" in body and "Intel::" in body:
        return "zeek_intel", 1
    words = body.split()
    if len(words) > 1 and is_address(words[0]):
        return "hosts", 1  # before records: `127.0.0.1 a b` is not an A record
    rtype = _record_type(words, line[:1] in " \t")
    if rtype is not None:
        return ("rpz", 0) if rtype == "SOA" else ("rpz", 1)
    if "##" in body or "#@#" in body:
        return "adblock", 1  # a cosmetic filter: `example.com##.banner`
    rule = body if first == "~" else body.split("#", 1)[0].strip()
    try:
        parse_rule(rule, "", 0)
    except (RuleError, IndexError):
        return None
    return "native", 1


def _record_type(words: list[str], owner_omitted: bool) -> str | None:
    """The type of a master-file record line (`owner [ttl] [class] TYPE data`), None if the line is not one:
    the data must fit the type, so that prose ("not a rule file at all") is no A record."""
    if not owner_omitted and not _OWNER.match(words[0]):
        return None
    i = 0 if owner_omitted else 1
    for _ in range(2):
        if i < len(words) and (words[i].upper() in CLASSES or _TTL.match(words[i])):
            i += 1
    if i + 1 >= len(words):
        return None
    rtype, data = words[i].upper(), words[i + 1:]
    if rtype == "SOA":
        return rtype if len(data) >= 2 else None
    if rtype in ("A", "AAAA"):
        return rtype if len(data) == 1 and is_address(data[0]) and (":" in data[0]) == (rtype == "AAAA") else None
    if rtype in ("CNAME", "NS", "DNAME", "PTR"):
        return rtype if len(data) == 1 and _OWNER.match(data[0]) else None
    if rtype == "TXT":
        return rtype if data[0].startswith('"') else None
    return rtype if rtype == "MX" and len(data) == 2 and data[0].isdigit() else None
