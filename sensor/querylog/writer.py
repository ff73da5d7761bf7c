"""The query-log writer: a process of its own that batches entries into the store, off the capture path.

Every process that runs a loop (the sensor, or each capture worker) has a `QueryLogSink`: after each batch it
takes the loop's finished entries (the fast path's packed bytes as they are, so that nothing is decoded on the
capture path) and pushes them over a ZeroMQ PUSH socket to the writer process, which decodes them, inserts
them in batches and applies retention. In live capture the push never waits: when the writer is behind and
the pipe is full (`PIPE_BATCHES`), the batch is dropped and counted. A replay waits instead (nothing is lost).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import struct
import tempfile
import time
from dataclasses import dataclass

import zmq

from sensor.errors import SensorError, StartupError
from sensor.loop import decode_query_log
from sensor.messages import Entries, PackedEntries, QueryLogMessage, decode_query_log_message, encode
from sensor.querylog.options import QueryLogOptions, Retention
from sensor.querylog.packed import ENTRY_HEADER
from sensor.querylog.record import QueryLogEntry
from sensor.querylog.store import CACHE_KIB, MAX_SEGMENT_BYTES, QueryStore, segment_bytes_for

log = logging.getLogger(__name__)

PIPE_BATCHES = 64  # messages queued for the writer (on each side of the pipe) before capture drops ...
PIPE_MESSAGE_BYTES = 1 << 20  # ... each at most this many bytes (a larger batch is sent in parts): the queue
# holds at most 2 x 64 x 1 MiB = 128 MiB even under a flood of 64 KiB responses (a batch is ~0.3 MiB normally)
WRITE_ROWS = 20_000  # entries gathered before one insert transaction ...
WRITE_BYTES = 8 << 20  # ... or this many bytes of packed entries (the writer's buffer; and a segment's at most)
# What one entry keeps of its response's answers (decision 0121): a response packed with ~110 answers under a
# 255-byte name decoded to ~100 KB of text and made the store grow 70 times faster than the traffic.
MAX_ANSWERS = 32  # records
MAX_ANSWER_BYTES = 2_048  # bytes of owner and data text
RESPONSE_ONLY_ANSWERS = 4  # records of a response with no query: anyone can send those, no query needed
WRITE_EVERY = 0.5  # ... or after this many seconds, whichever first: what a reader waits at most, plus commit
RETENTION_EVERY = 60.0  # seconds between retention passes (and one at start and at stop)
DRAIN_IDLE = 0.3  # at stop: the writer ends after the pipe has been quiet this long
START_TIMEOUT = 30.0  # seconds to wait for the writer process to open the store

@dataclass(frozen=True, slots=True)
class WriterLimits:
    """What the query log may hold in memory and keep of an entry (docs/limits.md): one parameter each, so that a
    memory budget can size them. The defaults are the constants above."""

    pipe_batches: int = PIPE_BATCHES  # messages queued on each side of the pipe
    pipe_message_bytes: int = PIPE_MESSAGE_BYTES  # bytes a message holds at most (whole entries)
    write_rows: int = WRITE_ROWS  # entries the writer holds before a transaction ...
    write_bytes: int = WRITE_BYTES  # ... or bytes of packed entries
    max_answers: int = MAX_ANSWERS
    max_answer_bytes: int = MAX_ANSWER_BYTES
    response_only_answers: int = RESPONSE_ONLY_ANSWERS
    cache_kib: int = CACHE_KIB  # the writer's SQLite page cache

    @property
    def caps(self) -> tuple[int, int, int]:
        return (self.max_answers, self.max_answer_bytes, self.response_only_answers)

    def memory_bytes(self) -> int:
        """The most the pipe, the writer's pending entries and its page cache hold (decoded entries aside)."""
        return 2 * self.pipe_batches * self.pipe_message_bytes + self.write_bytes + self.cache_kib * 1024


class QueryLogFailed(SensorError):
    """The writer failed after start (a full disk, the store removed): what came before was stored."""

    exit_code = 1


ENTRY_LENGTH = struct.Struct("=I")  # the first field of ENTRY_HEADER


def packed_count(data: bytes) -> int:
    """How many entries a packed buffer holds (only counted when a batch is dropped)."""
    count = position = 0
    while position < len(data):
        position += ENTRY_HEADER.unpack_from(data, position)[0]
        count += 1
    return count


def split_packed(data: bytes, limit: int) -> list[bytes]:
    """A packed buffer in parts of at most `limit` bytes (whole entries; an entry larger than `limit` is a part
    of its own): the pipe's high-water mark counts messages, so their size is what bounds its bytes."""
    if len(data) <= limit:
        return [data] if data else []
    parts = []
    view = memoryview(data)
    start = position = 0
    unpack = ENTRY_LENGTH.unpack_from
    while position < len(data):
        length = unpack(data, position)[0]
        if position > start and position + length - start > limit:
            parts.append(bytes(view[start:position]))
            start = position
        position += length
    parts.append(bytes(view[start:position]))
    return parts


class QueryLogSink:
    """One producing process's end of the pipe to the writer. Not shared across fork: make one per process."""

    def __init__(self, endpoint: str, blocking: bool, on_entries=None, limits: WriterLimits = WriterLimits()) -> None:
        self.limits = limits
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.SNDHWM, limits.pipe_batches)
        self.socket.setsockopt(zmq.LINGER, -1 if blocking else 5000)
        self.socket.connect(endpoint)
        self.blocking = blocking
        self.on_entries = on_entries  # called with each batch's decoded entries and origin (--publish-queries)
        self.sent = 0  # batches
        self.dropped = 0  # entries

    def take(self, loop, origin=None) -> None:
        """Send the entries the loop finished since the last take (`origin`: where they came from, for
        --publish-queries)."""
        if self.on_entries is None and hasattr(loop, "take_query_log_packed"):
            data = loop.take_query_log_packed()
            for part in split_packed(data, self.limits.pipe_message_bytes):
                self._send(PackedEntries(part))
            return
        entries = loop.take_query_log()
        if entries:
            if self.on_entries is not None:
                self.on_entries(entries, origin)
            self._send(Entries(entries), count=len(entries))

    def flush(self, loop, origin=None) -> None:
        """The end of a capture: every pending query finishes (unanswered) and is sent."""
        loop.flush_query_log()
        self.take(loop, origin)

    def _send(self, message: QueryLogMessage, count: int = 0) -> None:
        try:
            self.socket.send(encode(message), flags=0 if self.blocking else zmq.NOBLOCK, copy=False)
            self.sent += 1
        except zmq.Again:
            self.dropped += packed_count(message.data) if isinstance(message, PackedEntries) else count

    def close(self) -> None:
        self.socket.close()
        self.context.term()


class QueryLogWriter:
    """Starts the writer process (spawned: a clean interpreter, no inherited sockets) and stops it."""

    def __init__(self, options: QueryLogOptions, limits: WriterLimits = WriterLimits()) -> None:
        self.options = options
        self.limits = limits
        self.pipe_dir = tempfile.mkdtemp(prefix="truesource-qlog-")
        self.endpoint = f"ipc://{self.pipe_dir}/entries"
        context = multiprocessing.get_context("spawn")
        self.control, child = context.Pipe()
        self.process = context.Process(target=writer_main, name="truesource-querylog",
                                       args=(self.endpoint, options.path, options.retention, options.segment_rows,
                                             child, segment_bytes_for(options.retention.max_bytes), limits),
                                       daemon=True)
        self.process.start()
        child.close()
        self.summary: dict = {}
        if not self.control.poll(START_TIMEOUT):
            self._kill()
            raise StartupError(f"{options.path}: the query-log writer did not start within {START_TIMEOUT:.0f} s")
        try:
            message = self.control.recv()
        except EOFError:
            message = ("error", "the query-log writer exited at start")
        if message[0] == "error":
            self._kill()
            raise StartupError(message[1])

    def sink(self, blocking: bool, on_entries=None) -> QueryLogSink:
        return QueryLogSink(self.endpoint, blocking, on_entries, self.limits)

    def close(self) -> dict:
        """Tell the writer to store what is still in the pipe and stop; its totals."""
        if self.process.is_alive():
            try:
                self.control.send(("stop",))
                if self.control.poll(600):
                    self.summary = self.control.recv()
            except (OSError, EOFError):
                pass
        self.process.join(10)
        if self.process.is_alive():
            self._kill()
        shutil.rmtree(self.pipe_dir, ignore_errors=True)
        if self.summary.get("error"):
            raise QueryLogFailed(f"{self.options.path}: query log: {self.summary['error']}")
        return self.summary

    def _kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        shutil.rmtree(self.pipe_dir, ignore_errors=True)


def writer_main(endpoint: str, path: str, retention: Retention, segment_rows: int, control,
                segment_bytes: int = MAX_SEGMENT_BYTES, limits: WriterLimits = WriterLimits()) -> None:
    """The writer process: store every batch that arrives, apply retention now and then, stop when told."""
    # The sensor stops it after its last batch (a terminal's Ctrl-C and a service manager's SIGTERM reach the
    # whole process group); if the sensor dies without saying so, the writer stores what it has and ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    try:
        store = QueryStore.open_writer(path, segment_rows, segment_bytes, limits.cache_kib)
    except SensorError as err:
        control.send(("error", str(err)))
        return
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, limits.pipe_batches)
    pull.bind(endpoint)
    control.send(("ready",))
    written = removed = lost = truncated = dropped_answers = 0
    write_bytes = min(limits.write_bytes, segment_bytes)  # a transaction (and its WAL) within a segment's size
    write_rows = limits.write_rows
    caps = limits.caps
    pending: list[QueryLogEntry] = []
    pending_bytes = 0
    retained = [0]

    def on_segment_closed() -> None:  # the size limit is checked on every segment closed, within a batch too
        retained[0] += store.apply_retention(retention).queries_deleted

    if retention.max_bytes:
        store.on_segment_closed = on_segment_closed
    last_write = next_retention = time.monotonic()
    stopping_since: float | None = None
    error = None
    while True:
        now = time.monotonic()
        if stopping_since is None and (control.poll() or os.getppid() != parent):
            try:
                control.recv()
            except (EOFError, OSError):  # the sensor closed its end, or died: store what is left
                pass
            stopping_since = now
        if pull.poll(50):
            while True:
                try:
                    raw = pull.recv(zmq.NOBLOCK)
                    message = decode_query_log_message(raw)
                except zmq.Again:
                    break
                entries = (decode_query_log(message.data, caps=caps) if isinstance(message, PackedEntries)
                           else message.entries)
                pending.extend(entries)
                pending_bytes += len(raw)
                if len(pending) >= write_rows or pending_bytes >= write_bytes:
                    break
            if stopping_since is not None:
                stopping_since = time.monotonic()
        now = time.monotonic()
        if pending and (len(pending) >= write_rows or pending_bytes >= write_bytes or now - last_write >= WRITE_EVERY
                        or stopping_since):
            for entry in pending:
                if entry.answers_dropped:
                    truncated += 1
                    dropped_answers += entry.answers_dropped
            if error is None:
                try:
                    written += store.insert(pending)
                except Exception as err:  # a full disk, a broken file: tell the sensor (exit 1), keep draining
                    error = f"{type(err).__name__}: {err}"
            if error is not None:  # the pipe is still read, so that a replay waiting on it can finish
                lost += len(pending)
            pending = []
            pending_bytes = 0
            last_write = now
        if error is None and retention.enabled and (now >= next_retention or stopping_since is not None
                                                    and not pending and now - stopping_since >= DRAIN_IDLE):
            try:
                removed += store.apply_retention(retention).queries_deleted
            except Exception as err:
                error = f"{type(err).__name__}: {err}"
            next_retention = now + RETENTION_EVERY
        if stopping_since is not None and not pending and now - stopping_since >= DRAIN_IDLE:
            break
    pull.close(0)
    context.term()
    store.close()
    if error is not None:
        error += f" ({lost:,} queries not stored)"
    try:
        control.send({"written": written, "retention_deleted": removed + retained[0], "error": error,
                      "pid": os.getpid(), "truncated": truncated, "answers_dropped": dropped_answers})
    except OSError:  # the sensor is gone
        pass


def start(options: QueryLogOptions | None, pipeline,
          blocking: bool) -> tuple[QueryLogWriter | None, QueryLogSink | None]:
    """The writer process and this process's sink, as the options ask (None, None without --query-log)."""
    if options is None:
        return None, None
    writer = QueryLogWriter(options)
    return writer, writer.sink(blocking, publisher(pipeline) if options.publish else None)


def publisher(pipeline):
    """--publish-queries: each logged query as a `dns.query` event to the pipeline's outputs (the ZeroMQ
    publisher; JSON-lines outputs keep to hits)."""
    from sensor.events import Origin
    from sensor.querylog.events import QUERY_TOPIC, QueryEventEncoder

    encoder = QueryEventEncoder(pipeline.encoder)
    default = Origin()

    def publish(entries, origin) -> None:
        for entry in entries:
            pipeline.publish(QUERY_TOPIC, encoder.encode(entry, origin or default))
    return publish


def stop(writer: QueryLogWriter | None, sink: QueryLogSink | None, dropped: int = 0) -> str | None:
    """Close the sink, let the writer store the rest; the summary line (None without a query log)."""
    if writer is None:
        return None
    if sink is not None:
        dropped += sink.dropped
        sink.close()
    summary = writer.close()
    line = (f"query log {writer.options.path}: {summary.get('written', 0):,} queries written, {dropped:,} dropped, "
            f"{summary.get('retention_deleted', 0):,} removed by retention")
    if summary.get("truncated"):
        line += (f", {summary['truncated']:,} with answers cut to the per-entry cap "
                 f"({summary['answers_dropped']:,} answers not stored)")
    return line
