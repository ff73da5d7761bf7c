"""IP fragment reassembly (IPv4, RFC 791; IPv6, RFC 8200 4.5) as Linux does it: the reference twin of
ext/reassembly.pxi (policy: docs/decoding.md, "IP fragments").

Datagrams in progress are keyed by VLAN, IP version, source, destination, identification and (IPv4) protocol.
The table is bounded in datagrams and in bytes of buffers (as the fast path allocates them); the oldest datagram
goes first, and a datagram not complete within the timeout (packet time since its first fragment) is dropped. As
in Linux's inet_frag_queue_insert (RFC 5722 with erratum 3089, applied to IPv4 too): a fragment lying wholly
inside data already held is dropped and the queue kept (the first copy wins); any other overlap, two different
ends, or a datagram past 65,535 bytes or MAX_FRAGMENTS fragments drops the whole queue, and a later fragment with
the same identification starts a new one (so a resend of the whole datagram is accepted, as Linux accepts it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
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
FRAGMENT_OVERLAP = "fragment_overlap"  # the anomaly (sensor/anomalies.py)


@dataclass(slots=True)
class Datagram:
    first_us: int
    data: bytearray = field(default_factory=bytearray)
    ranges: list[tuple[int, int]] = field(default_factory=list)
    held: int = 0  # its buffer as the fast path allocates it (buf_cap): what the byte limit counts
    total: int = -1
    protocol: int = -1


class Reassembler:
    """Collects fragments; `add` returns the whole datagram's payload and protocol when one completes."""

    def __init__(self, counters: dict[str, int], capacity: int = MAX_FRAGMENTED_DATAGRAMS,
                 max_bytes: int = MAX_FRAGMENT_BYTES, timeout: float = FRAGMENT_TIMEOUT,
                 report: Callable[[str, tuple], None] | None = None) -> None:
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
        self._report = report or (lambda kind, key: None)

    def __len__(self) -> int:
        return len(self._datagrams)

    @property
    def held(self) -> int:
        """The datagrams' buffers, as the fast path allocates them (FragmentTable.bytes_held)."""
        return self._held

    def add(self, key: tuple, now_us: int, offset: int, more: bool, protocol: int,
            data: bytes) -> tuple[bytes, int] | None:
        """Take one fragment; the datagram's payload and protocol when it completes, else None."""
        end = offset + len(data)
        while self._datagrams:
            oldest_key, oldest = next(iter(self._datagrams.items()))
            if now_us - oldest.first_us <= self._timeout_us:
                break
            self._counters["ip_fragment_expired"] += 1
            self._remove(oldest_key)
        datagram = self._datagrams.get(key)
        if datagram is None:
            if len(self._datagrams) >= self._capacity:
                self._counters["ip_fragment_evicted"] += 1
                self._remove(next(iter(self._datagrams)))
            datagram = self._datagrams[key] = Datagram(now_us)
        if end > MAX_DATAGRAM or len(datagram.ranges) == MAX_FRAGMENTS:
            self._counters["ip_reassembly_too_big"] += 1
            self._remove(key)
            return None
        known_end = max((stop for _, stop in datagram.ranges), default=0)
        two_ends = datagram.total >= 0 and datagram.total != end
        if (not more and (two_ends or known_end > end)) or (more and datagram.total >= 0 and end > datagram.total):
            self._overlap(key)  # two different ends: the same trick as an overlap (Linux's discard_qp)
            return None
        inside = sum(max(0, min(stop, end) - max(start, offset)) for start, stop in datagram.ranges)
        if data and inside == len(data):
            # Wholly inside data held: dropped, the queue kept, the first copy wins (Linux's IPFRAG_DUP).
            self._counters["ip_fragment_duplicate"] += 1
            if datagram.data[offset:end] != data:
                self._report(FRAGMENT_OVERLAP, key)
            return None
        if inside:
            self._overlap(key)
            return None
        if end > datagram.held:
            # The buffer grows as the fast path's does (2 KiB, doubled, at most MAX_DATAGRAM): a fragment at a
            # high offset costs the whole buffer below it, and that is what the byte limit counts (decision 0172).
            cap = datagram.held or 2048
            while cap < end:
                cap *= 2
            cap = min(cap, MAX_DATAGRAM)
            while self._held - datagram.held + cap > self._max_bytes:  # the oldest other datagrams make room
                self._counters["ip_fragment_evicted"] += 1
                self._remove(next(k for k in self._datagrams if k != key))
            self._held += cap - datagram.held
            datagram.held = cap
        if len(datagram.data) < end:
            datagram.data.extend(bytes(end - len(datagram.data)))
        datagram.data[offset:end] = data
        datagram.ranges.append((offset, end))
        if offset == 0:
            datagram.protocol = protocol
        if not more:
            datagram.total = end
        if datagram.total < 0 or sum(stop - start for start, stop in datagram.ranges) != datagram.total:
            return None
        self._counters["ip_reassembled"] += 1
        self._remove(key)
        return bytes(datagram.data[: datagram.total]), datagram.protocol

    def _overlap(self, key: tuple) -> None:
        """Any overlap but a fragment inside held data drops the queue (RFC 5722): reported, it can hide a query."""
        self._counters["ip_fragment_overlap"] += 1
        self._report(FRAGMENT_OVERLAP, key)
        self._remove(key)

    def _remove(self, key: tuple) -> None:
        datagram = self._datagrams.pop(key)
        self._held -= datagram.held
