"""The query-log writer: a process of its own that batches entries into the store, off the capture path.

Every process that runs a loop (the sensor, or each capture worker) has a `QueryLogSink`: after each batch it
takes the loop's finished entries (the fast path's packed bytes as they are, so that nothing is decoded on the
capture path) and pushes them over a ZeroMQ PUSH socket to the writer process, which appends them, undecoded,
to the store's open segment in batches (sensor/querylog/store.py, decision 0180) and applies retention. In live
capture the push never waits: when the writer is behind and the pipe is full (`PIPE_BATCHES`), the batch is
dropped and counted. A replay waits instead (nothing is lost).

A replay's writer is forked and has one producer: there the pipe is an OS pipe (length-prefixed frames, 1 MB of
kernel buffer), not ZeroMQ, whose copies and I/O threads cost ~0.045 s of CPU per 75 MB (decision 0181);
capture, with its workers, and a spawned writer keep the ZeroMQ pipe.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import shutil
import signal
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sensor.errors import HelperDied, SensorError, StartupError, how_it_ended
from sensor.loop import decode_query_log, querylog_segment_functions
from sensor.messages import Entries, PackedEntries, QueryLogMessage, decode_query_log_message, encode
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
from sensor.querylog.store import MAX_SEGMENT_BYTES, QueryStore, pack_entries, segment_bytes_for

log = logging.getLogger(__name__)

WRITE_EVERY = 0.5  # ... or after this many seconds, whichever first: what a reader waits at most, plus commit
RETENTION_EVERY = 60.0  # seconds between retention passes (and one at start and at stop)
DRAIN_IDLE = 0.3  # at stop: the writer ends after the pipe has been quiet this long
START_TIMEOUT = 30.0  # seconds to wait for the writer process to open the store
# How often the producing process that started the writer looks whether it is still alive (a waitpid), and how
# long a blocking send waits for room before it looks again: a dead writer is noticed within a second and
# never waited on (docs/decisions/0140-dead-helpers-end-the-run.md).
WATCH_EVERY = 0.25
WRITER_NAME = "truesource-qlog"  # the writer process's name (/proc/PID/comm: 15 characters at most)

class QueryLogFailed(SensorError):
    """The writer failed after start (a full disk, the store removed): what came before was stored."""

    exit_code = 1


ENTRY_LENGTH = struct.Struct("=I")  # the first field of ENTRY_HEADER
PACKED_TAG = b"packed"  # the first frame of a message of packed entries; an Entries message is one frame
# The OS pipe of a replay (decision 0181): each message a PIPE_HEADER (its body's length, FRAME_PACKED or
# FRAME_MESSAGE), then the body: packed entries as they are, or an encoded QueryLogMessage.
PIPE_HEADER = struct.Struct("<IB")
FRAME_PACKED, FRAME_MESSAGE = 1, 2
PIPE_SIZE = 1 << 20  # the pipe's kernel buffer, when the system allows it (F_SETPIPE_SZ; 64 KiB otherwise)
F_SETPIPE_SZ = 1031


def open_pipe() -> tuple[int, int]:
    """(read end, write end) of a replay's pipe to the writer, both non-blocking."""
    import fcntl

    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    return read_end, write_end


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


class ZmqSource:
    """The writer's end of the ZeroMQ pipe (capture; a spawned writer)."""

    ended = False  # many producers: the end is never known from the pipe

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


class PipeSource:
    """The writer's end of a replay's OS pipe: whole messages as they complete (a message can arrive in parts)."""

    def __init__(self, descriptor: int) -> None:
        self.fd = descriptor
        self.poller = select.poll()
        self.poller.register(descriptor, select.POLLIN)
        self.header = b""
        self.length: int | None = None  # of the message whose header was read
        self.body: bytearray | None = None  # a message being read in parts
        self.filled = 0
        self.kind = 0
        self.ended = False  # the producer closed its end (or died): everything sent has been read

    def poll(self, milliseconds: int) -> bool:
        if self.ended:
            time.sleep(milliseconds / 1000)
            return False
        return bool(self.poller.poll(milliseconds))

    def receive(self) -> tuple[Any, QueryLogMessage | None, int] | None:
        """The next whole message as `receive` gives it, or None while none is complete."""
        try:
            while self.length is None:
                chunk = os.read(self.fd, PIPE_HEADER.size - len(self.header))
                if not chunk:
                    self.ended = True
                    return None
                self.header += chunk
                if len(self.header) == PIPE_HEADER.size:
                    self.length, self.kind = PIPE_HEADER.unpack(self.header)
                    self.header = b""
            if self.body is None:
                first = os.read(self.fd, self.length) if self.length else b""
                if len(first) == self.length:  # the usual case: the whole body at once, no copy
                    self.length = None
                    return self._message(first)
                if not first:
                    self.ended = True
                    return None
                self.body = bytearray(self.length)
                self.body[:len(first)] = first
                self.filled = len(first)
            with memoryview(self.body) as view:
                while self.filled < len(self.body):
                    count = os.readv(self.fd, [view[self.filled:]])
                    if count == 0:
                        self.ended = True
                        return None  # cut off by the producer's end: what came whole was returned
                    self.filled += count
            body, self.body, self.length = self.body, None, None
            return self._message(body)
        except BlockingIOError:
            return None

    def _message(self, body) -> tuple[Any, QueryLogMessage | None, int]:
        if self.kind == FRAME_PACKED:
            return body, None, len(body)
        message = decode_query_log_message(bytes(body))
        if isinstance(message, PackedEntries):
            return memoryview(message.data), None, len(body)
        return None, message, len(body)

    def close(self) -> None:
        os.close(self.fd)


class QueryLogSink:
    """One producing process's end of the pipe to the writer. Not shared across fork: make one per process.
    `pipe`: the write end of a replay's OS pipe (decision 0181), instead of the ZeroMQ `endpoint`."""

    def __init__(self, endpoint: str | None, blocking: bool, on_entries=None,
                 limits: WriterLimits = DEFAULT_LIMITS, writer: QueryLogWriter | None = None,
                 pipe: int | None = None) -> None:
        self.limits = limits
        self.pipe = pipe
        self.context: Any = None
        self.socket: Any = None
        if pipe is not None:
            self.poller = select.poll()
            self.poller.register(pipe, select.POLLOUT)
        else:
            import zmq

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

    def _send(self, message: QueryLogMessage, count: int = 0) -> None:
        if self.dead is not None:  # the writer is gone: count what it would have stored
            self.lost += packed_count(message.data) if isinstance(message, PackedEntries) else count
            return
        if self.pipe is not None:
            self._send_pipe(message, count)
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

    def _send_pipe(self, message: QueryLogMessage, count: int) -> None:
        """A replay's send: the whole message, waiting for room, never on a dead writer (looked at every
        WATCH_EVERY while the pipe is full; a closed pipe is looked at until the death is noticed)."""
        packed = isinstance(message, PackedEntries)
        body = message.data if isinstance(message, PackedEntries) else encode(message)
        size = len(body)
        # Header and body in one writev: one hold of the pipe's lock and one wake-up of the reader, which would
        # otherwise wake on the header and spin on the lock while the body is copied in (decision 0181).
        header = memoryview(PIPE_HEADER.pack(size, FRAME_PACKED if packed else FRAME_MESSAGE))
        view = memoryview(body)
        while header or view:
            try:
                written = os.writev(self.pipe, [header, view] if header else [view])  # type: ignore[arg-type]
            except BlockingIOError:
                self.poller.poll(int(WATCH_EVERY * 1000))
                self.watch(now=True)
                continue
            except BrokenPipeError:  # the writer is gone: its death is noticed by the next look
                self.watch(now=True)
                time.sleep(WATCH_EVERY / 10)
                continue
            if header:
                taken = min(written, len(header))
                header, written = header[taken:], written - taken
            view = view[written:]
        self.sent += 1
        if self.writer is not None:
            self.unacked.append((self.sent, size, -1 if packed else count))
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
        if self.pipe is not None:  # what is in the pipe stays there for the writer to read
            os.close(self.pipe)
            self.pipe = None
            return
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
    """Starts the writer process and stops it. Forked when this process runs no other thread (a replay, a capture
    before its threads start): the child has every module it needs loaded already, where a spawned interpreter
    spent ~0.08 s of CPU importing them (decision 0180); spawned otherwise (a clean interpreter: forking a
    process with threads can copy a lock held by one of them)."""

    def __init__(self, options: QueryLogOptions, limits: WriterLimits = DEFAULT_LIMITS,
                 single_producer: bool = False) -> None:
        """`single_producer`: only this process's one sink will send (a replay): a forked writer then reads an
        OS pipe (decision 0181), and `endpoint` is None."""
        self.options = options
        self.limits = limits
        fork = start_method() == "fork"
        self.pipe_dir: str | None = None
        self.endpoint: str | None = None
        self._pipe: int | None = None  # the write end, until the sink takes it
        pipe_ends = None
        if fork and single_producer:
            pipe_ends = open_pipe()
            self._pipe = pipe_ends[1]
        else:
            import tempfile

            self.pipe_dir = tempfile.mkdtemp(prefix="truesource-qlog-")
            self.endpoint = f"ipc://{self.pipe_dir}/entries"
        context: Any = multiprocessing.get_context("fork" if fork else "spawn")
        self.control, child = context.Pipe()
        self.process = context.Process(target=writer_main, name="truesource-querylog",
                                       args=(self.endpoint, options.path, options.retention, options.segment_rows,
                                             child, segment_bytes_for(options.retention.max_bytes), limits,
                                             pipe_ends),
                                       daemon=True)
        try:
            self.process.start()
        except BaseException:
            self._close_pipe()
            if pipe_ends is not None:
                os.close(pipe_ends[0])
            raise
        if pipe_ends is not None:
            os.close(pipe_ends[0])
        child.close()
        self.summary: dict = {}
        self.stored_batches = 0  # batches stored (all producers), from the writer's acknowledgements
        self.stored_bytes = 0  # their encoded size
        self.written = 0  # queries stored
        self.death: str | None = None  # how the process ended, if it died before it was told to stop
        self.on_wait: Callable[[int], None] | None = None  # at close, while the writer catches up: queries stored
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
        pipe, self._pipe = self._pipe, None
        return QueryLogSink(self.endpoint, blocking, on_entries, self.limits, writer=self, pipe=pipe)

    def _close_pipe(self) -> None:
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        if self.pipe_dir is not None:
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
        died first). `on_wait` hears how many queries are stored while it waits."""
        if self.death is None and self.poll() is None and not self.summary:
            try:
                self.control.send(("stop",))
                deadline = time.monotonic() + 600
                while not self.summary and time.monotonic() < deadline:
                    self._read_control(0.5)
                    if not self.summary:
                        if self.poll() is not None:
                            break
                        if self.on_wait is not None:
                            self.on_wait(self.written)
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

    def _kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self._close_pipe()


def writer_main(endpoint: str | None, path: str, retention: Retention, segment_rows: int, control,
                segment_bytes: int = MAX_SEGMENT_BYTES, limits: WriterLimits = DEFAULT_LIMITS,
                pipe_ends: tuple[int, int] | None = None) -> None:
    """The writer process: store every batch that arrives, apply retention now and then, stop when told.
    `pipe_ends`: a replay's OS pipe (forked), read instead of the ZeroMQ `endpoint`."""
    if pipe_ends is not None:
        os.close(pipe_ends[1])  # the sensor's end: the pipe ends (reads as empty) when the sensor closes its own
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
    keys_of, sort_keys = querylog_segment_functions()
    try:
        store = QueryStore.open_writer(path, segment_rows, segment_bytes, limits.cache_kib, keys_of, sort_keys)
        store.set_caps(limits.caps)
    except SensorError as err:
        control.send(("error", str(err)))
        return
    source: Any = PipeSource(pipe_ends[0]) if pipe_ends is not None else ZmqSource(str(endpoint), limits)
    control.send(("ready",))
    written = removed = lost = truncated = dropped_answers = 0
    received = received_bytes = 0  # batches and their bytes, acknowledged once stored
    # a transaction within a segment's size; the rows limit as bytes (entries are not counted as they come)
    write_bytes = min(limits.write_bytes, segment_bytes, limits.write_rows * (ENTRY_HEADER.size + 100))
    caps = limits.caps
    pending: list[bytes | memoryview] = []  # packed entries, as they came
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
            if error is None:
                try:
                    stored, suspects = store.append_packed(pending)
                    written += stored
                    if suspects:  # only the entries whose answers the caps may cut are decoded, to count them
                        for entry in decode_query_log(suspects, caps=caps):
                            if entry.answers_dropped:
                                truncated += 1
                                dropped_answers += entry.answers_dropped
                    control.send(("stored", received, received_bytes, written))  # the sensor's account of losses
                except MemoryError:  # this process cannot go on: it dies, and the sensor says so (decision 0140)
                    raise
                except Exception as err:  # a full disk, a broken file: tell the sensor (exit 1), keep draining
                    error = f"{type(err).__name__}: {err}"
            if error is not None:  # the pipe is still read, so that a replay waiting on it can finish
                lost += sum(packed_count(bytes(part)) for part in pending)
            pending = []
            pending_bytes = 0
            last_write = now
        # stopping, all is stored, and the pipe has been quiet a while, or (a replay's pipe) is closed
        drained = stopping_since is not None and not pending and (source.ended or now - stopping_since >= DRAIN_IDLE)
        if error is None and retention.enabled and (now >= next_retention or drained):
            try:
                removed += store.apply_retention(retention).queries_deleted
            except Exception as err:
                error = f"{type(err).__name__}: {err}"
            next_retention = now + RETENTION_EVERY
        if drained:
            break
    source.close()
    store.close()
    if error is not None:
        error += f" ({lost:,} queries not stored)"
    try:
        control.send({"written": written, "retention_deleted": removed + retained[0], "error": error,
                      "pid": os.getpid(), "truncated": truncated, "answers_dropped": dropped_answers})
    except OSError:  # the sensor is gone
        pass


def start(options: QueryLogOptions | None, pipeline, blocking: bool,
          limits: WriterLimits = DEFAULT_LIMITS) -> tuple[QueryLogWriter | None, QueryLogSink | None]:
    """The writer process and this process's sink, as the options ask (None, None without --query-log);
    `limits` from the memory budget (sensor/budget.py)."""
    if options is None:
        return None, None
    writer = QueryLogWriter(options, limits, single_producer=blocking)  # blocking: a replay, its only producer
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


def stop(writer: QueryLogWriter | None, sink: QueryLogSink | None, dropped: int = 0) -> tuple[str | None, bool]:
    """Close the sink, let the writer store the rest; the summary line (None without a query log) and whether
    the writer died (the run then exits 1)."""
    if writer is None:
        return None, False
    lost = 0
    if sink is not None:
        dropped += sink.dropped
        try:
            sink.watch(now=True)
        except HelperDied:
            pass
        lost = sink.lost
        sink.close()
    summary = writer.close()
    if summary.get("died"):
        if sink is not None and sink.dead is None:  # noticed only now: what was in flight is lost
            lost += writer.entries_in(sink.unacked)
        return (f"query log {writer.options.path}: the writer process {summary['died']}: "
                f"{summary.get('written', 0):,} queries written, about {lost:,} lost, {dropped:,} dropped"), True
    line = (f"query log {writer.options.path}: {summary.get('written', 0):,} queries written, {dropped:,} dropped, "
            f"{summary.get('retention_deleted', 0):,} removed by retention")
    if summary.get("truncated"):
        line += (f", {summary['truncated']:,} with answers cut to the per-entry cap "
                 f"({summary['answers_dropped']:,} answers not stored)")
    return line, False
