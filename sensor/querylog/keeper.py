"""The store's side of the query log: what the writer process does with the entries it receives, and what a
replay does with its own entries in its own process (sensor/querylog/inline.py, decision 0207).

A `StoreKeeper` appends packed entries to the store in transactions, counts the entries whose answers the caps
cut (only those are decoded), applies retention now and then, and turns a failure (a full disk, the store
removed) into an error said once and a count of the entries it could not store: after a failure it keeps
taking entries, so that its producer can finish, and counts them as lost.
"""

from __future__ import annotations

import time

from sensor.errors import SensorError
from sensor.loop import decode_query_log, querylog_segment_functions
from sensor.querylog.limits import DEFAULT_LIMITS, WriterLimits
from sensor.querylog.options import Retention
from sensor.querylog.segment import ENTRY_HEADER
from sensor.querylog.store import MAX_SEGMENT_BYTES, QueryStore

RETENTION_EVERY = 60.0  # seconds between retention passes (and one at start and at stop)
WRITE_EVERY = 0.5  # seconds at most between a batch's arrival and its commit: what a reader waits for it


class QueryLogFailed(SensorError):
    """The store failed after start (a full disk, the store removed): what came before was stored."""

    exit_code = 1


def packed_count(data: bytes) -> int:
    """How many entries a packed buffer holds (only counted when a batch is dropped or lost)."""
    count = position = 0
    while position < len(data):
        position += ENTRY_HEADER.unpack_from(data, position)[0]
        count += 1
    return count


def transaction_bytes(limits: WriterLimits, segment_bytes: int) -> int:
    """The packed bytes stored in one transaction: within a segment's size, the rows limit taken as bytes
    (entries are not counted as they come)."""
    return min(limits.write_bytes, segment_bytes, limits.write_rows * (ENTRY_HEADER.size + 100))


class StoreKeeper:
    """The open store and the totals of what was stored. `QueryStore.open_writer` errors (StartupError) pass."""

    def __init__(self, path: str, retention: Retention, segment_rows: int, segment_bytes: int = MAX_SEGMENT_BYTES,
                 limits: WriterLimits = DEFAULT_LIMITS) -> None:
        keys_of, sort_keys = querylog_segment_functions()
        self.store = QueryStore.open_writer(path, segment_rows, segment_bytes, limits.cache_kib, keys_of, sort_keys)
        self.store.set_caps(limits.caps)
        self.retention = retention
        self.caps = limits.caps
        self.accepted = self.removed = self.lost = self.truncated = self.dropped_answers = 0
        self.error: str | None = None
        self.next_retention = time.monotonic()
        if retention.max_bytes:  # the size limit is checked on every segment closed, within a batch too
            self.store.on_segment_closed = self._retain_by_size

    def _retain_by_size(self) -> None:
        self.removed += self.store.apply_retention(self.retention).queries_deleted

    def append(self, parts, commit: bool = True) -> bool:
        """Store packed entries (a buffer or a list of them) in one transaction a segment (`commit=False`: left to
        `commit()`, or to the segment's close); False once the store has failed: then they are counted in `lost`,
        with the entries written before and not yet committed (the next writer cuts those back)."""
        if self.error is None:
            uncommitted = self.store.uncommitted
            try:
                stored, suspects = self.store.append_packed(parts, commit)
                self.accepted += stored
                if suspects:  # only the entries whose answers the caps may cut are decoded, to count them
                    for entry in decode_query_log(suspects, caps=self.caps):
                        if entry.answers_dropped:
                            self.truncated += 1
                            self.dropped_answers += entry.answers_dropped
                return True
            except MemoryError:  # this process cannot go on (the writer dies, and the sensor says so: 0140)
                raise
            except Exception as err:  # a full disk, a broken file: said at the end, what follows is counted lost
                self._failed(err, uncommitted)
        self.lost += sum(packed_count(bytes(part)) for part in ([parts] if not isinstance(parts, list) else parts))
        return False

    def commit(self) -> None:
        """Commit what `append(..., commit=False)` wrote: readers see it from now on."""
        if self.error is None:
            try:
                self.store.commit()
            except Exception as err:
                self._failed(err, self.store.uncommitted)

    def _failed(self, err: Exception, uncommitted: int) -> None:
        self.error = f"{type(err).__name__}: {err}"
        self.accepted -= uncommitted
        self.lost += uncommitted

    @property
    def written(self) -> int:
        """Entries stored and committed (readers see them)."""
        return self.accepted - (self.store.uncommitted if self.error is None else 0)

    def retain(self, now: float, final: bool = False) -> None:
        """Retention, when it is due (every RETENTION_EVERY seconds) or `final`."""
        if self.error is None and self.retention.enabled and (now >= self.next_retention or final):
            try:
                self.removed += self.store.apply_retention(self.retention).queries_deleted
            except Exception as err:
                self.error = f"{type(err).__name__}: {err}"
            self.next_retention = now + RETENTION_EVERY

    def close(self) -> dict:
        """Close the store; the totals (the writer process's last message)."""
        self.store.close()
        error = None if self.error is None else f"{self.error} ({self.lost:,} queries not stored)"
        return {"written": self.written, "retention_deleted": self.removed, "error": error,
                "truncated": self.truncated, "answers_dropped": self.dropped_answers}


def summary_line(path: str, summary: dict, dropped: int) -> str:
    """The query log's line of a run's summary."""
    line = (f"query log {path}: {summary.get('written', 0):,} queries written, {dropped:,} dropped, "
            f"{summary.get('retention_deleted', 0):,} removed by retention")
    if summary.get("truncated"):
        line += (f", {summary['truncated']:,} with answers cut to the per-entry cap "
                 f"({summary['answers_dropped']:,} answers not stored)")
    return line
