"""The query-log writer: a process of its own that batches entries into the store, off the capture path.

Every process that runs a loop (the sensor, or each capture worker) has a `QueryLogSink`: after each batch it
takes the loop's finished entries (the fast path's packed bytes as they are, so that nothing is decoded on the
capture path) and pushes them over a ZeroMQ PUSH socket to the writer process, which appends them, undecoded,
to the store's open segment in batches (sensor/querylog/store.py, decision 0180; the store's side is
sensor/querylog/keeper.py) and applies retention. The push never waits in live capture: when the writer is
behind and the pipe is full (`PIPE_BATCHES`), the batch is dropped and counted. A blocking sink waits instead.

A replay has no writer process: it is the store's only producer and may wait, so it writes the store itself
(sensor/querylog/inline.py, decision 0207).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import struct
import time
from collections import deque
from typing import Any

from sensor.errors import HelperDied, SensorError, StartupError, how_it_ended
from sensor.messages import Entries, PackedEntries, QueryLogMessage, decode_query_log_message, encode
from sensor.querylog.keeper import (  # noqa: F401  QueryLogFailed and packed_count, imported from here too
    RETENTION_EVERY,
    WRITE_EVERY,
    QueryLogFailed,
    StoreKeeper,
    packed_count,
    summary_line,
    transaction_bytes,
)
from sensor.querylog.limits import (  # noqa: F401  the limits, re-exported where they always were
    DEFAULT_LIMITS,
    MAX_ANSWER_BYTES,
    MAX_ANSWERS,
    PIPE_BATCHES,
    PIPE_MESSAGE_BYTES,
    RESPONSE_ONLY_ANSWERS,
    WRITE_BYTES,
    WRITE_ROWS,
    WriterLimits,
)
from sensor.querylog.options import QueryLogOptions, Retention
from sensor.querylog.segment import ENTRY_HEADER
from sensor.querylog.store import MAX_SEGMENT_BYTES, pack_entries, segment_bytes_for

log = logging.getLogger(__name__)

DRAIN_IDLE = 0.3  # at stop: the writer ends after the pipe has been quiet this long
START_TIMEOUT = 30.0  # seconds to wait for the writer process to open the store
# How often the producing process that started the writer looks whether it is still alive (a waitpid), and how
# long a blocking send waits for room before it looks again: a dead writer is noticed within a second and
# never waited on (docs/decisions/0140-dead-helpers-end-the-run.md).
WATCH_EVERY = 0.25
WRITER_NAME = "truesource-qlog"  # the writer process's name (/proc/PID/comm: 15 characters at most)

ENTRY_LENGTH = struct.Struct("=I")  # the first field of ENTRY_HEADER
PACKED_TAG = b"packed"  # the first frame of a message of packed entries; an Entries message is one frame


def receive(socket) -> tuple[memoryview | None, QueryLogMessage | None, int]:
    """One message from the pipe (zmq.Again when none): (packed entries, None, size) or (None, Entries, size)."""
    import zmq

    frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
    if len(frames) == 2 and frames[0].bytes == PACKED_TAG:
        return frames[1].buffer, None, len(frames[1])
    raw = frames[0].bytes
    message = decode_query_log_message(raw)
    if isinstance(message, PackedEntries):
        return memoryview(message.data), None, len(raw)
    return None, message, len(raw)


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


class ZmqSource:
    """The writer's end of the ZeroMQ pipe."""

    def __init__(self, endpoint: str, limits: WriterLimits) -> None:
        import zmq

        self.again = zmq.Again
        self.context = zmq.Context()
        self.pull = self.context.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, limits.pipe_batches)
        self.pull.bind(endpoint)

    def poll(self, milliseconds: int) -> bool:
        return bool(self.pull.poll(milliseconds))

    def receive(self) -> tuple[Any, QueryLogMessage | None, int] | None:
        try:
            return receive(self.pull)
        except self.again:
            return None

    def close(self) -> None:
        self.pull.close(0)
        self.context.term()


class QueryLogSink:
    """One producing process's end of the pipe to the writer. Not shared across fork: make one per process."""

    def __init__(self, endpoint: str, blocking: bool, on_entries=None,
                 limits: WriterLimits = DEFAULT_LIMITS, writer: QueryLogWriter | None = None) -> None:
        import zmq

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
        # In the process that started the writer: watch it. Batches sent and not yet stored (by the writer's
        # acknowledgements) are kept as (sequence, bytes, entries or -1), so that a death can say what was lost.
        self.writer = writer
        self.unacked: deque[tuple[int, int, int]] = deque()
        self.lost = 0  # entries not stored because the writer died (exact for what came after, estimated before)
        self.dead: str | None = None  # how the writer ended, once noticed
        self._watched = time.monotonic()

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

    def commit(self) -> None:
        """Nothing to do here: the writer process commits on its own clock (WRITE_EVERY)."""

    def _send(self, message: QueryLogMessage, count: int = 0) -> None:
        if self.dead is not None:  # the writer is gone: count what it would have stored
            self.lost += packed_count(message.data) if isinstance(message, PackedEntries) else count
            return
        import zmq

        # packed entries go as they are, a second frame after a tag (no copy into a MessagePack envelope)
        frames = [PACKED_TAG, message.data] if isinstance(message, PackedEntries) else [encode(message)]
        size = len(frames[-1])
        while True:
            try:
                self.socket.send_multipart(frames, flags=zmq.NOBLOCK)
                break
            except zmq.Again:
                if not self.blocking:
                    self.dropped += packed_count(message.data) if isinstance(message, PackedEntries) else count
                    return
            # A replay waits for room, but never on a dead writer (a blocking send with no peer never returns).
            self.socket.poll(int(WATCH_EVERY * 1000), zmq.POLLOUT)
            self.watch(now=True)
        self.sent += 1
        if self.writer is not None:
            self.unacked.append((self.sent, size, count if isinstance(message, Entries) else -1))
        self.watch()

    def watch(self, now: bool = False) -> None:
        """In the process that started the writer: take its acknowledgements and, if it died, raise HelperDied
        (once; later batches are counted as lost). Looks at most every WATCH_EVERY seconds unless `now`."""
        if self.writer is None or self.dead is not None:
            return
        clock = time.monotonic()
        if not now and clock - self._watched < WATCH_EVERY:
            return
        self._watched = clock
        death = self.writer.poll()
        while self.unacked and self.unacked[0][0] <= self.writer.stored_batches:
            self.unacked.popleft()
        if death is None:
            return
        self.dead = death
        self.lost += self.writer.entries_in(self.unacked)
        self.unacked.clear()
        raise HelperDied(f"{self.writer.options.path}: the query-log writer process {death}; "
                         f"stopping (about {self.lost:,} queries not stored)")

    def close(self) -> None:
        # A blocking sink lingers until the writer has every batch; not when the writer is dead (it would wait forever)
        self.socket.close(linger=0 if self.dead is not None else None)
        self.context.term()


def start_method() -> str:
    """fork when no other thread runs here (ZeroMQ's own I/O threads included: no context may exist yet in this
    process, or the child would hold a copy of one), spawn otherwise; TRUESOURCE_QUERYLOG_SPAWN=1 forces spawn."""
    import threading

    if os.environ.get("TRUESOURCE_QUERYLOG_SPAWN") or threading.active_count() > 1:
        return "spawn"
    if "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    return "fork"


class QueryLogWriter:
    """Starts the writer process and stops it. Forked when this process runs no other thread (a capture before its
    threads start): the child has every module it needs loaded already, where a spawned interpreter spent ~0.08 s
    of CPU importing them (decision 0180); spawned otherwise (a clean interpreter: forking a process with threads
    can copy a lock held by one of them)."""

    def __init__(self, options: QueryLogOptions, limits: WriterLimits = DEFAULT_LIMITS) -> None:
        import tempfile

        self.options = options
        self.limits = limits
        fork = start_method() == "fork"
        self.pipe_dir = tempfile.mkdtemp(prefix="truesource-qlog-")
        self.endpoint = f"ipc://{self.pipe_dir}/entries"
        context: Any = multiprocessing.get_context("fork" if fork else "spawn")
        self.control, child = context.Pipe()
        self.process = context.Process(target=writer_main, name="truesource-querylog",
                                       args=(self.endpoint, options.path, options.retention, options.segment_rows,
                                             child, segment_bytes_for(options.retention.max_bytes), limits),
                                       daemon=True)
        try:
            self.process.start()
        except BaseException:
            self._close_pipe()
            raise
        child.close()
        self.summary: dict = {}
        self.stored_batches = 0  # batches stored (all producers), from the writer's acknowledgements
        self.stored_bytes = 0  # their encoded size
        self.written = 0  # queries stored
        self.death: str | None = None  # how the process ended, if it died before it was told to stop
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
        return QueryLogSink(self.endpoint, blocking, on_entries, self.limits, writer=self)

    def _close_pipe(self) -> None:
        shutil.rmtree(self.pipe_dir, ignore_errors=True)

    def poll(self) -> str | None:
        """Read the writer's acknowledgements; how it ended if it died (None while it runs, or once it has
        stopped as told)."""
        self._read_control(0)
        if self.death is None and not self.summary and not self.process.is_alive():
            self._read_control(0)  # its last words, if it ended normally after all
            if not self.summary:
                self.death = how_it_ended(self.process.exitcode)
        return self.death

    def _read_control(self, timeout: float) -> None:
        try:
            while self.control.poll(timeout):
                message = self.control.recv()
                if isinstance(message, dict):
                    self.summary = message
                    return
                if message[0] == "stored":
                    _, self.stored_batches, self.stored_bytes, self.written = message
                timeout = 0
        except (EOFError, OSError):
            pass

    def entries_in(self, unacked: deque[tuple[int, int, int]]) -> int:
        """Queries in batches the writer never stored: exact for unpacked batches, else estimated from the
        bytes per query it stored so far (at least one a batch: a batch is never empty)."""
        per_byte = self.written / self.stored_bytes if self.stored_bytes else 1 / (ENTRY_HEADER.size + 64)
        return sum(count if count >= 0 else max(1, round(size * per_byte)) for _, size, count in unacked)

    def close(self) -> dict:
        """Tell the writer to store what is still in the pipe and stop; its totals (`died`: how it ended, if it
        died first)."""
        if self.death is None and self.poll() is None and not self.summary:
            try:
                self.control.send(("stop",))
                deadline = time.monotonic() + 600
                while not self.summary and time.monotonic() < deadline:
                    self._read_control(0.5)
                    if not self.summary and self.poll() is not None:
                        break
            except (OSError, EOFError):
                pass
        if self.death is not None:
            self.summary = {"written": self.written, "died": self.death}
        self.process.join(10)
        if self.process.is_alive():
            self._kill()
        self._close_pipe()
        if self.summary.get("error"):
            raise QueryLogFailed(f"{self.options.path}: query log: {self.summary['error']}")
        return self.summary

    def stop(self, sink: QueryLogSink | None, dropped: int = 0) -> tuple[str, bool]:
        """Close this process's sink, let the writer store the rest; the summary line and whether the writer died
        (the run then exits 1)."""
        lost = 0
        if sink is not None:
            dropped += sink.dropped
            try:
                sink.watch(now=True)
            except HelperDied:
                pass
            lost = sink.lost
            sink.close()
        summary = self.close()
        if summary.get("died"):
            if sink is not None and sink.dead is None:  # noticed only now: what was in flight is lost
                lost += self.entries_in(sink.unacked)
            return (f"query log {self.options.path}: the writer process {summary['died']}: "
                    f"{summary.get('written', 0):,} queries written, about {lost:,} lost, {dropped:,} dropped"), True
        return summary_line(self.options.path, summary, dropped), False

    def _kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self._close_pipe()


def writer_main(endpoint: str, path: str, retention: Retention, segment_rows: int, control,
                segment_bytes: int = MAX_SEGMENT_BYTES, limits: WriterLimits = DEFAULT_LIMITS) -> None:
    """The writer process: store every batch that arrives, apply retention now and then, stop when told."""
    # The sensor stops it after its last batch (a terminal's Ctrl-C and a service manager's SIGTERM reach the
    # whole process group); if the sensor dies without saying so, the writer stores what it has and ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:  # its name in ps and top (a forked writer's command line is the sensor's)
        with open("/proc/self/comm", "w") as comm:
            comm.write(WRITER_NAME)
    except OSError:
        pass
    parent = os.getppid()
    try:
        keeper = StoreKeeper(path, retention, segment_rows, segment_bytes, limits)
    except SensorError as err:
        control.send(("error", str(err)))
        return
    source: Any = ZmqSource(endpoint, limits)
    control.send(("ready",))
    received = received_bytes = 0  # batches and their bytes, acknowledged once stored
    write_bytes = transaction_bytes(limits, segment_bytes)
    pending: list[bytes | memoryview] = []  # packed entries, as they came
    pending_bytes = 0
    last_write = time.monotonic()
    stopping_since: float | None = None
    while True:
        now = time.monotonic()
        if stopping_since is None and (control.poll() or os.getppid() != parent):
            try:
                # only what is there: a sensor killed with SIGKILL leaves no EOF on this end (this process holds
                # a copy of the other, from the fork), and a blocking recv waited forever
                if control.poll():
                    control.recv()
            except (EOFError, OSError):  # the sensor closed its end, or died: store what is left
                pass
            stopping_since = now
        if source.poll(50):
            while True:
                got = source.receive()
                if got is None:
                    break
                packed, message, size = got
                received += 1
                received_bytes += size
                pending.append(packed if packed is not None else pack_entries(message.entries))
                pending_bytes += size
                if pending_bytes >= write_bytes:
                    break
            if stopping_since is not None:
                stopping_since = time.monotonic()
        now = time.monotonic()
        if pending and (pending_bytes >= write_bytes
                        or now - last_write >= WRITE_EVERY or stopping_since):
            # the pipe is still read after a failure, so that a producer waiting on it can finish
            if keeper.append(pending):
                control.send(("stored", received, received_bytes, keeper.written))  # the sensor's account of losses
            pending = []
            pending_bytes = 0
            last_write = now
        # stopping, all is stored, and the pipe has been quiet a while
        drained = stopping_since is not None and not pending and now - stopping_since >= DRAIN_IDLE
        keeper.retain(now, final=drained)
        if drained:
            break
    source.close()
    summary = keeper.close()
    summary["pid"] = os.getpid()
    try:
        control.send(summary)
    except OSError:  # the sensor is gone
        pass


def start(options: QueryLogOptions | None, pipeline, blocking: bool,
          limits: WriterLimits = DEFAULT_LIMITS) -> tuple[QueryLogWriter | None, QueryLogSink | None]:
    """The writer process and this process's sink, as the options ask (None, None without --query-log);
    `limits` from the memory budget (sensor/budget.py)."""
    if options is None:
        return None, None
    from sensor.querylog.events import publisher

    writer = QueryLogWriter(options, limits)
    return writer, writer.sink(blocking, publisher(pipeline) if options.publish else None)
