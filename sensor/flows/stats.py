"""rwstats-style statistics over flow records: bins by fields, flows/packets/bytes, top N or over a percentage.

Vectorized: the key columns are packed into one 64-bit integer when their value ranges fit (IPv4 addresses,
ports and protocol always do), else sorted lexicographically; sums are `np.add.reduceat` over the sorted runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sensor.errors import StartupError

# Aggregation field (filter-language name) -> the record columns that make it.
AGGREGATE_FIELDS: dict[str, tuple[str, ...]] = {
    "srcip": ("src_hi", "src_lo"),
    "dstip": ("dst_hi", "dst_lo"),
    "srcport": ("src_port",),
    "dstport": ("dst_port",),
    "proto": ("proto",),
    "srcnet": ("src_hi", "src_lo"),  # the source's /24 (IPv4) or /64 (IPv6)
    "dstnet": ("dst_hi", "dst_lo"),
}
METRICS = ("flows", "packets", "bytes")
ADDRESS_FIELDS = ("srcip", "dstip")
NETWORK_FIELDS = ("srcnet", "dstnet")
NETWORK_BITS_V4 = 24  # the customary subnet sizes (SiLK's rwnetmask examples, nfdump -A srcip4/24,srcip6/64)
NETWORK_BITS_V6 = 64
_V4_NETWORK_MASK = np.uint64(((1 << 64) - 1) ^ ((1 << (32 - NETWORK_BITS_V4)) - 1))


@dataclass(frozen=True)
class Bins:
    """The bins kept, in output order: key columns by aggregation field, counts, percent of the sort metric."""

    fields: tuple[str, ...]
    keys: dict[str, tuple[np.ndarray, ...]]  # field -> its key columns: (hi, lo) for addresses and networks
    flows: np.ndarray
    packets: np.ndarray
    bytes: np.ndarray
    sort: str
    percent: np.ndarray  # of the sort metric's total over every record given, as rwstats
    cumulative_percent: np.ndarray
    total: int  # the sort metric summed over every record given
    total_bins: int  # bins before --top/--percentage
    total_records: int

    def __len__(self) -> int:
        return len(self.flows)


def parse_fields(text: str) -> tuple[str, ...]:
    """`srcip,dstport` to a tuple of field names; StartupError names a field that is not one."""
    fields = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    if not fields:
        raise StartupError("--aggregate: no fields given")
    for field in fields:
        if field not in AGGREGATE_FIELDS:
            raise StartupError(f"--aggregate: {field!r} is not a field ({', '.join(AGGREGATE_FIELDS)})")
    if len(set(fields)) != len(fields):
        raise StartupError("--aggregate: a field is given twice")
    return fields


def columns_for(fields: Sequence[str]) -> set[str]:
    """The record columns aggregation by `fields` reads."""
    needed = {"packets", "bytes"}
    for field in fields:
        needed.update(AGGREGATE_FIELDS[field])
    return needed


def aggregate(columns: Mapping[str, np.ndarray], fields: Sequence[str], sort: str = "flows",
              top: int | None = None, percentage: float | None = None) -> Bins:
    """Bins of the records by `fields`, sorted by `sort` (largest first, ties by key), cut to `top` and/or to
    the bins at or above `percentage` percent of the total."""
    if sort not in METRICS:
        raise StartupError(f"--sort: {sort!r} is not one of {', '.join(METRICS)}")
    per_field = {field: key_columns_of(columns, field) for field in fields}
    key_columns = [column for field in fields for column in per_field[field]]
    n = len(columns["packets"])
    packets_in = np.asarray(columns["packets"], dtype=np.uint64)
    bytes_in = np.asarray(columns["bytes"], dtype=np.uint64)
    if n == 0:
        empty_u8 = np.zeros(0, dtype=np.uint64)
        keys = {field: tuple(column[:0] for column in per_field[field]) for field in fields}
        return Bins(tuple(fields), keys, empty_u8, empty_u8, empty_u8, sort, np.zeros(0), np.zeros(0), 0, 0, 0)
    order, starts = group(key_columns)
    flows = np.diff(np.append(starts, n)).astype(np.uint64)
    packets = np.add.reduceat(packets_in[order], starts)
    nbytes = np.add.reduceat(bytes_in[order], starts)
    first = order[starts]
    keys = {field: tuple(column[first] for column in per_field[field]) for field in fields}
    metric = {"flows": flows, "packets": packets, "bytes": nbytes}[sort]
    total = int(metric.sum(dtype=np.uint64))
    # Largest first; a stable sort of (max - value) keeps bins of equal value in key order.
    ranked = np.argsort(metric.max() - metric, kind="stable")
    percent = metric[ranked] * (100.0 / total) if total else np.zeros(len(ranked))
    keep = len(ranked)
    if percentage is not None:
        keep = int(np.count_nonzero(percent >= percentage))  # percent is non-increasing along `ranked`
    if top is not None:
        keep = min(keep, top)
    ranked = ranked[:keep]
    percent = percent[:keep]
    return Bins(tuple(fields), {field: tuple(c[ranked] for c in cols) for field, cols in keys.items()}, flows[ranked],
                packets[ranked], nbytes[ranked], sort, percent, np.cumsum(percent), total, len(flows), n)


def key_columns_of(columns: Mapping[str, np.ndarray], field: str) -> list[np.ndarray]:
    """The key columns of one aggregation field; for srcnet/dstnet the addresses with the host bits cleared."""
    parts = [np.asarray(columns[name]) for name in AGGREGATE_FIELDS[field]]
    if field not in NETWORK_FIELDS:
        return parts
    hi, lo = (part.astype(np.uint64, copy=False) for part in parts)
    mapped = (hi == np.uint64(0)) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    return [hi, np.where(mapped, lo & _V4_NETWORK_MASK, np.uint64(0))]  # IPv6: the high half is the /64


def group(key_columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The permutation that sorts records by key (lexicographic) and where each run of equal keys starts."""
    n = len(key_columns[0])
    packed = pack_keys(key_columns)
    if packed is not None:
        order = np.argsort(packed, kind="stable")
        ordered = packed[order]
        changed = ordered[1:] != ordered[:-1]
    else:
        order = np.lexsort(key_columns[::-1])
        changed = np.zeros(max(n - 1, 0), dtype=bool)
        for column in key_columns:
            ordered = column[order]
            changed |= ordered[1:] != ordered[:-1]
    starts = np.concatenate(([0], np.flatnonzero(changed) + 1))
    return order, starts


def pack_keys(key_columns: list[np.ndarray]) -> np.ndarray | None:
    """One uint64 per record whose order is the keys' lexicographic order, if the keys' ranges fit 64 bits."""
    shifted = []
    bits_total = 0
    for column in key_columns:
        values = column.astype(np.uint64, copy=False)
        low, high = int(values.min()), int(values.max())
        bits = (high - low).bit_length()
        bits_total += bits
        if bits_total > 64:
            return None
        shifted.append((values - np.uint64(low) if low else values, bits))
    packed = np.zeros(len(key_columns[0]), dtype=np.uint64)
    for values, bits in shifted:
        if bits:
            packed <<= np.uint64(bits)
            packed |= values
    return packed
