"""IP sets as rwsettool keeps them, in a text file any tool reads: one address or CIDR block a line.

A set is held as sorted, disjoint, inclusive integer ranges per family, so union, intersection and difference
are merges of ranges; it is written compacted to the fewest CIDR blocks (a lone address without `/32`).
Reading accepts addresses, CIDR blocks, blank lines and `#` comments; a bad line names file and line.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from sensor.errors import StartupError

Range = tuple[int, int]  # first and last address, inclusive


@dataclass
class IPSet:
    v4: list[Range] = field(default_factory=list)
    v6: list[Range] = field(default_factory=list)

    @classmethod
    def from_networks(cls, networks: Iterable) -> IPSet:
        v4: list[Range] = []
        v6: list[Range] = []
        for net in networks:
            net = net if isinstance(net, ipaddress._BaseNetwork) else ipaddress.ip_network(net, strict=False)
            (v4 if net.version == 4 else v6).append((int(net.network_address), int(net.broadcast_address)))
        return cls(_merge(v4), _merge(v6))

    @classmethod
    def from_halves(cls, hi: np.ndarray, lo: np.ndarray) -> IPSet:
        """The set of addresses in flow-record form (128-bit halves, IPv4 as ::ffff:a.b.c.d), vectorized."""
        hi = np.asarray(hi, dtype=np.uint64)
        lo = np.asarray(lo, dtype=np.uint64)
        mapped = (hi == np.uint64(0)) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
        v4 = np.unique((lo[mapped] & np.uint64(0xFFFFFFFF)).astype(np.int64))
        v4_ranges = _runs(v4)
        pairs = np.empty(int((~mapped).sum()), dtype=[("hi", "<u8"), ("lo", "<u8")])
        pairs["hi"], pairs["lo"] = hi[~mapped], lo[~mapped]
        v6 = [(int(h) << 64) | int(low) for h, low in np.unique(pairs).tolist()]
        return cls(v4_ranges, _merge([(value, value) for value in v6]))

    def __len__(self) -> int:
        """How many addresses (IPv4 and IPv6 together)."""
        return sum(last - first + 1 for first, last in self.v4 + self.v6)

    def __contains__(self, address) -> bool:
        address = ipaddress.ip_address(address)
        value = int(address)
        return any(first <= value <= last for first, last in (self.v4 if address.version == 4 else self.v6))

    def __or__(self, other: IPSet) -> IPSet:
        return IPSet(_merge(self.v4 + other.v4), _merge(self.v6 + other.v6))

    def __and__(self, other: IPSet) -> IPSet:
        return IPSet(_intersect(self.v4, other.v4), _intersect(self.v6, other.v6))

    def __sub__(self, other: IPSet) -> IPSet:
        return IPSet(_subtract(self.v4, other.v4), _subtract(self.v6, other.v6))

    def networks(self) -> list:
        """The fewest CIDR blocks that make the set, IPv4 first, in address order."""
        blocks: list = []
        for ranges, cls in ((self.v4, ipaddress.IPv4Address), (self.v6, ipaddress.IPv6Address)):
            for first, last in ranges:
                blocks.extend(ipaddress.summarize_address_range(cls(first), cls(last)))
        return blocks

    def lines(self) -> list[str]:
        return [str(net.network_address) if net.num_addresses == 1 else str(net) for net in self.networks()]


def _merge(ranges: list[Range]) -> list[Range]:
    """Sorted, disjoint ranges; touching ranges are joined."""
    merged: list[Range] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def _runs(values: np.ndarray) -> list[Range]:
    """Sorted unique integers to ranges of consecutive values, vectorized."""
    if len(values) == 0:
        return []
    breaks = np.flatnonzero(np.diff(values) != 1)
    firsts = np.concatenate(([values[0]], values[breaks + 1]))
    lasts = np.concatenate((values[breaks], [values[-1]]))
    return list(zip(firsts.tolist(), lasts.tolist(), strict=True))


def _intersect(a: list[Range], b: list[Range]) -> list[Range]:
    out: list[Range] = []
    i = j = 0
    while i < len(a) and j < len(b):
        first, last = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if first <= last:
            out.append((first, last))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _subtract(a: list[Range], b: list[Range]) -> list[Range]:
    out: list[Range] = []
    j = 0
    for first, last in a:
        while j < len(b) and b[j][1] < first:
            j += 1
        k = j
        while k < len(b) and b[k][0] <= last:
            if b[k][0] > first:
                out.append((first, b[k][0] - 1))
            first = max(first, b[k][1] + 1)
            k += 1
        if first <= last:
            out.append((first, last))
    return out


def read_ipset(path: str) -> IPSet:
    """An IP set file: addresses or CIDR blocks, one a line; `#` starts a comment. Errors name file and line."""
    networks = []
    try:
        handle = sys.stdin if path == "-" else open(path, encoding="utf-8")
    except OSError as err:
        raise StartupError(f"{path}: cannot read: {err.strerror}") from None
    with handle:
        try:
            for number, line in enumerate(handle, 1):
                text = line.split("#", 1)[0].strip()
                if not text:
                    continue
                try:
                    networks.append(ipaddress.ip_network(text, strict=False))
                except ValueError:
                    raise StartupError(f"{path}:{number}: {text!r} is not an IP address or CIDR block") from None
        except UnicodeDecodeError:
            raise StartupError(f"{path}: not a text IP set") from None
    return IPSet.from_networks(networks)


def write_ipset(ipset: IPSet, path: str) -> None:
    text = "".join(line + "\n" for line in ipset.lines())
    if path == "-":
        sys.stdout.write(text)
        return
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as err:
        raise StartupError(f"{path}: cannot write: {err.strerror}") from None


def combine(operation: str, sets: list[IPSet]) -> IPSet:
    """union, intersect or difference (the first set minus all the others), as rwsettool."""
    result = sets[0]
    for other in sets[1:]:
        if operation == "union":
            result = result | other
        elif operation == "intersect":
            result = result & other
        elif operation == "difference":
            result = result - other
        else:
            raise StartupError(f"unknown IP set operation {operation!r}")
    return result
