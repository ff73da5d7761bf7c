"""Labels of a query name and its registered domain, by the Public Suffix List bundled with `publicsuffixlist`.

The list is the copy inside the installed package: nothing is fetched at run time (update the list by
upgrading the package). Its private section counts too, so `x.duckdns.org` is registered under
`duckdns.org` as its owner sees it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from publicsuffixlist import PublicSuffixList

SPLIT_CACHE = 65_536  # recent distinct names; DNS repeats itself, so most lookups skip the list walk


class SplitName(NamedTuple):
    registered: str  # lowercase registered domain ("dropbox.com")
    label: str  # its own label, lowercase ("dropbox")
    sub_labels: tuple[str, ...]  # the labels left of it, presentation form and case as sent
    sub_bytes: tuple[int, ...]  # wire length of each of those labels


def labels(name: str) -> list[str]:
    """Labels of a name in escaped presentation form (`\\.` and `\\DDD` stay inside their label)."""
    out: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "\\" and i + 1 < len(name):
            step = 4 if name[i + 1 : i + 4].isdigit() else 2
            current.append(name[i : i + step])
            i += step
            continue
        if ch == ".":
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    if current:
        out.append("".join(current))
    return [label for label in out if label]


def wire_length(label: str) -> int:
    """Bytes a presentation-form label takes on the wire (each escape is one byte)."""
    if "\\" not in label:
        return len(label)
    n = i = 0
    while i < len(label):
        if label[i] == "\\" and i + 1 < len(label):
            i += 4 if label[i + 1 : i + 4].isdigit() else 2
        else:
            i += 1
        n += 1
    return n


class DomainSplitter:
    """Splits names at their registered domain; None for names without one (single labels, escaped tails)."""

    def __init__(self, cache_size: int = SPLIT_CACHE) -> None:
        self._psl = PublicSuffixList()  # the bundled list, read once
        self.split = lru_cache(maxsize=cache_size)(self._split)

    def _split(self, name: str) -> SplitName | None:
        parts = labels(name)
        # The registered domain is looked up on the plain tail: suffixes never hold escapes, and a label with
        # one (binary tunnel data) can only be a subdomain.
        plain = len(parts)
        while plain > 0 and "\\" not in parts[plain - 1]:
            plain -= 1
        tail = ".".join(parts[plain:]).lower()
        registered = self._psl.privatesuffix(tail) if tail else None
        if registered is None:
            return None
        count = registered.count(".") + 1
        sub = tuple(parts[: len(parts) - count])
        return SplitName(registered, registered.split(".", 1)[0], sub, tuple(wire_length(s) for s in sub))
