"""Domain names as feeds write them, to the lowercase, dot-less, ASCII form the rule table holds."""

from __future__ import annotations

from sensor.errors import RuleError
from sensor.idn import NameError_, to_ascii
from sensor.rules.native import MAX_LABEL, MAX_NAME_TEXT, check_name

# Deletes every character a plain name may hold: what is left after translate() is what is wrong with it.
_NOT_NAME_CHARS = str.maketrans("", "", "abcdefghijklmnopqrstuvwxyz0123456789-_.")


def plain_name(name: str) -> bool:
    """Is `name` (lowercase, no trailing dot) a domain name of letters, digits, '-' and '_'? Checked with string
    methods that run in C: feeds hold hundreds of thousands of names, and this is the common case."""
    return bool(
        name and not name.translate(_NOT_NAME_CHARS) and len(name) <= MAX_NAME_TEXT
        and name[0] not in ".-" and name[-1] not in ".-" and ".." not in name and "-." not in name
        and ".-" not in name and (len(name) <= MAX_LABEL or max(map(len, name.split("."))) <= MAX_LABEL)
    )


def to_name(raw: str, filename: str, line: int, body: str) -> str:
    """`raw` lowercased, without its trailing dot, Unicode labels as their `xn--` A-labels (what a query carries
    on the wire); RuleError `file:line: why` when it is not a domain name."""
    name = raw.lower()
    if name[-1:] == ".":
        name = name[:-1]
    if plain_name(name):
        return name
    where = f"{filename}:{line}"
    if not name.isascii():
        name = to_alabels(name, where, body)
    check_name(name, where, body)
    return name


def to_alabels(name: str, where: str, body: str) -> str:
    """Unicode labels to `xn--` A-labels: UTS 46 non-transitional, the one conversion (sensor/idn.py)."""
    try:
        return to_ascii(name)
    except NameError_ as err:
        raise RuleError(f"{where}: {body!r} is not a domain name ({err})") from None
