"""A replay's query log, written by the sensor process itself (decision 0207).

A replay is the store's only producer and may wait for it: nothing is dropped, so the writer process and the
pipe to it (what capture needs: many producers that must never wait on a disk) only cost copies of every entry,
a fork and a second start-up. Here the loop's packed entries go from `take` to the store (sensor/querylog/
keeper.py, the same code the writer process runs) after each batch, and are committed (readers see them) every
transaction's worth of the writer's, or every WRITE_EVERY seconds, so a reader running beside the replay sees new
entries as soon as with a writer process.

One object plays both parts the runner knows: the sink that takes each batch's entries and the writer that
`stop` ends with the summary line.
"""

from __future__ import annotations

import time

from sensor.querylog.keeper import WRITE_EVERY, QueryLogFailed, StoreKeeper, summary_line, transaction_bytes
from sensor.querylog.limits import DEFAULT_LIMITS, WriterLimits
from sensor.querylog.options import QueryLogOptions
from sensor.querylog.store import pack_entries, segment_bytes_for


class InlineQueryLog:
    """The store, opened now (a StartupError if it cannot be), fed by `take` after each batch."""

    def __init__(self, options: QueryLogOptions, limits: WriterLimits = DEFAULT_LIMITS, on_entries=None) -> None:
        segment_bytes = segment_bytes_for(options.retention.max_bytes)
        self.options = options
        self.keeper = StoreKeeper(options.path, options.retention, options.segment_rows, segment_bytes, limits)
        self.keeper.retain(time.monotonic())
        self.on_entries = on_entries  # --publish-queries: each batch's decoded entries and their origin
        self.commit_bytes = transaction_bytes(limits, segment_bytes)
        self.dropped = 0  # a replay waits: nothing is dropped (the runner's counters read it)
        self._uncommitted_bytes = 0
        self._committed_at = time.monotonic()

    # --- the sink's part: after each batch --------------------------------------------------------------------

    def take(self, loop, origin=None) -> None:
        """The entries the loop finished since the last take, written to the open segment now (while they are in
        cache, and so that the batch's buffer is freed for the next); committed every transaction's worth of
        bytes or WRITE_EVERY seconds."""
        if self.on_entries is None and hasattr(loop, "take_query_log_packed"):
            data = loop.take_query_log_packed()
        else:
            entries = loop.take_query_log()
            if entries and self.on_entries is not None:
                self.on_entries(entries, origin)
            data = pack_entries(entries) if entries else b""
        if data:
            self.keeper.append(data, commit=False)
            self._uncommitted_bytes += len(data)
        if self._uncommitted_bytes >= self.commit_bytes or (
                self._uncommitted_bytes and time.monotonic() - self._committed_at >= WRITE_EVERY):
            self.commit()

    def flush(self, loop, origin=None) -> None:
        """The end of a source: every pending query finishes (unanswered) and is taken."""
        loop.flush_query_log()
        self.take(loop, origin)

    def commit(self) -> None:
        """Readers see what was written (also after each batch of a replay from a pipe, which may stay quiet)."""
        if self._uncommitted_bytes:
            self.keeper.commit()
            self._uncommitted_bytes = 0
        now = self._committed_at = time.monotonic()
        self.keeper.retain(now)

    def watch(self, now: bool = False) -> None:
        """Nothing to watch: no other process."""

    def close(self) -> None:
        """The sink's close: the store is closed by `stop`, which follows."""

    # --- the writer's part: at the end ---------------------------------------------------------------------------

    def stop(self, sink=None, dropped: int = 0) -> tuple[str, bool]:
        """Commit the rest, close the store; the summary line and False (no process can have died). A store that
        failed part-way raises QueryLogFailed (exit 1) after the store is closed, naming what was lost. Called
        once (the runner's finish or abort)."""
        try:
            self.commit()
            self.keeper.retain(time.monotonic(), final=True)
        finally:
            summary = self.keeper.close()
        if summary.get("error"):
            raise QueryLogFailed(f"{self.options.path}: query log: {summary['error']}")
        return summary_line(self.options.path, summary, dropped + self.dropped), False
