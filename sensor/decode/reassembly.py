"""IP fragment reassembly (IPv4, RFC 791; IPv6, RFC 8200 4.5): the reference twin of ext/reassembly.pxi.

Datagrams in progress are keyed by VLAN, IP version, source, destination, identification and (IPv4) protocol.
The table is bounded in datagrams and in bytes held; the oldest datagram goes first, and a datagram not
complete within the timeout (packet time since its first fragment) is dropped. A fragment that overlaps
another and is not its exact duplicate abandons the whole datagram (RFC 5722, applied to IPv4 too: an
overlap is how an evader shows the sensor one payload and the host another); so do two different ends, and
a datagram past 65,535 bytes or MAX_FRAGMENTS fragments. An abandoned datagram keeps its place, empty,
until its timeout, so that its remaining fragments do not start a new one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

# Linux's ipfrag_time and net.ipv6.ip6frag_time are 30 s; RFC 8200 allows 60 (docs/decisions/0052).
FRAGMENT_TIMEOUT = 30.0
# In-progress datagrams and bytes: a mirror port sees few fragmented datagrams at once (large EDNS answers);
# a flood of unique first fragments must not grow memory (docs/decisions/0052).
MAX_FRAGMENTED_DATAGRAMS = 1024
MAX_FRAGMENT_BYTES = 4 * 1024 * 1024
MAX_DATAGRAM = 65_535  # the most an IPv4 total length or an IPv6 payload length can announce
MAX_FRAGMENTS = 64  # a 64 KiB datagram in 1280-byte IPv6 fragments needs 52; more is a flood
MICROSECONDS = 1_000_000


@dataclass(slots=True)
class Datagram:
    first_us: int
    data: bytearray = field(default_factory=bytearray)
    ranges: list[tuple[int, int]] = field(default_factory=list)
    held: int = 0
    total: int = -1
    protocol: int = -1
    abandoned: bool = False


class Reassembler:
    """Collects fragments; `add` returns the whole datagram's payload and protocol when one completes."""

    def __init__(self, counters: dict[str, int], capacity: int = MAX_FRAGMENTED_DATAGRAMS,
                 max_bytes: int = MAX_FRAGMENT_BYTES, timeout: float = FRAGMENT_TIMEOUT) -> None:
        if capacity < 1:
            raise ValueError("max_fragmented_datagrams must be at least 1")
        if max_bytes < MAX_DATAGRAM:
            raise ValueError(f"max_fragment_bytes must be at least {MAX_DATAGRAM}")
        if not timeout > 0:
            raise ValueError("fragment_timeout must be positive")
        self._counters = counters
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._timeout_us = int(timeout * MICROSECONDS)
        self._datagrams: OrderedDict[tuple, Datagram] = OrderedDict()  # oldest first
        self._held = 0

    def __len__(self) -> int:
        return len(self._datagrams)

    def add(self, key: tuple, now_us: int, offset: int, more: bool, protocol: int,
            data: bytes) -> tuple[bytes, int] | None:
        end = offset + len(data)
        while self._datagrams:
            oldest_key, oldest = next(iter(self._datagrams.items()))
            if now_us - oldest.first_us <= self._timeout_us:
                break
            if not oldest.abandoned:
                self._counters["ip_fragment_expired"] += 1
            self._remove(oldest_key)
        datagram = self._datagrams.get(key)
        if datagram is None:
            if len(self._datagrams) >= self._capacity:
                oldest_key, oldest = next(iter(self._datagrams.items()))
                if not oldest.abandoned:
                    self._counters["ip_fragment_evicted"] += 1
                self._remove(oldest_key)
            datagram = self._datagrams[key] = Datagram(now_us)
        if datagram.abandoned:
            return None
        if end > MAX_DATAGRAM or len(datagram.ranges) == MAX_FRAGMENTS:
            self._counters["ip_reassembly_too_big"] += 1
            self._abandon(datagram)
            return None
        for start, stop in datagram.ranges:
            if offset < stop and start < end:
                if (start, stop) == (offset, end) and datagram.data[start:stop] == data:
                    return None  # an exact duplicate (a retransmitted fragment): harmless, dropped
                self._counters["ip_fragment_overlap"] += 1
                self._abandon(datagram)
                return None
        known_end = max((stop for _, stop in datagram.ranges), default=0)
        two_ends = datagram.total >= 0 and datagram.total != end
        if (not more and (two_ends or known_end > end)) or (more and datagram.total >= 0 and end > datagram.total):
            self._counters["ip_fragment_overlap"] += 1  # two different ends: the same trick as an overlap
            self._abandon(datagram)
            return None
        while self._held + len(data) > self._max_bytes:  # the oldest other datagrams make room
            victim_key = next(k for k in self._datagrams if k != key)
            if not self._datagrams[victim_key].abandoned:
                self._counters["ip_fragment_evicted"] += 1
            self._remove(victim_key)
        if len(datagram.data) < end:
            datagram.data.extend(bytes(end - len(datagram.data)))
        datagram.data[offset:end] = data
        datagram.ranges.append((offset, end))
        datagram.held += len(data)
        self._held += len(data)
        if offset == 0:
            datagram.protocol = protocol
        if not more:
            datagram.total = end
        if datagram.total < 0 or sum(stop - start for start, stop in datagram.ranges) != datagram.total:
            return None
        self._counters["ip_reassembled"] += 1
        self._remove(key)
        return bytes(datagram.data[: datagram.total]), datagram.protocol

    def _abandon(self, datagram: Datagram) -> None:
        self._held -= datagram.held
        datagram.held = 0
        datagram.data = bytearray()
        datagram.abandoned = True

    def _remove(self, key: tuple) -> None:
        datagram = self._datagrams.pop(key)
        self._held -= datagram.held
