"""JSON lines output: one event a line, to a file or standard output.

In live capture (`blocking=False`) standard output that is not a regular file (a pipe, a socket, a terminal) is
written without blocking: a reader that stops reading must not stop the capture loop. Lines wait in a bounded
buffer; past PIPE_BUFFER_LIMIT a line is dropped and counted (`out_drops`), as the publisher drops at its
high-water mark. Replay and regular files write as before: they wait, and lose nothing.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import sys
import time
from typing import TextIO

from sensor.errors import StartupError

PIPE_BUFFER_LIMIT = 4 << 20  # bytes of events held for a slow reader: ~4,000 hit events, seconds of a burst
CLOSE_WAIT = 2.0  # seconds a closing capture gives a slow reader to take what is buffered, then drops the rest


class JsonLinesWriter:
    """Appends events as lines; `-` is standard output."""

    def __init__(self, path: str = "-", topics: tuple[str, ...] = ("dns.hit", "dns.anomaly"), blocking: bool = True,
                 buffer_limit: int = PIPE_BUFFER_LIMIT) -> None:
        self.path = path
        self.topics = topics
        self.lines = 0
        self.lines_dropped = 0
        self._pipe: _NonBlockingPipe | None = None
        if path == "-":
            self._handle: TextIO = sys.stdout
            if not blocking and _may_block(sys.stdout):
                sys.stdout.flush()
                self._pipe = _NonBlockingPipe(sys.stdout.fileno(), buffer_limit)
        else:
            try:
                self._handle = open(path, "w", encoding="ascii", buffering=1 << 16)
            except OSError as err:
                raise StartupError(f"{path}: cannot write events: {err.strerror}") from None

    def write(self, topic: str, line: str) -> None:
        if topic not in self.topics:
            return
        if self._pipe is not None:
            if self._pipe.write(line.encode("ascii") + b"\n"):
                self.lines += 1
            else:
                self.lines_dropped += 1
            return
        self._handle.write(line)
        self._handle.write("\n")
        self.lines += 1

    def flush(self) -> None:
        if self._pipe is None:  # a non-blocking pipe writes what it can at once
            self._handle.flush()

    def state_counters(self) -> dict[str, int]:
        if self._pipe is None:
            return {}
        return {"out_drops": self.lines_dropped, "out_buffered_bytes": len(self._pipe.buffer)}

    def close(self) -> None:
        if self._pipe is not None:
            self.lines -= self._pipe.close(CLOSE_WAIT)
            self.lines_dropped += self._pipe.dropped_at_close
            return
        self._handle.flush()
        if self._handle is not sys.stdout:
            self._handle.close()


def _may_block(handle: TextIO) -> bool:
    try:
        return not stat.S_ISREG(os.fstat(handle.fileno()).st_mode)
    except (OSError, ValueError):  # no file descriptor (a test's StringIO): Python's own buffering
        return False


class _NonBlockingPipe:
    """A file descriptor written with O_NONBLOCK from a bounded buffer of whole lines."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        self.buffer = bytearray()
        self.line_ends: list[int] = []  # offsets in buffer where each buffered line ends, to count lost lines
        self.dropped_at_close = 0
        os.set_blocking(fd, False)

    def write(self, data: bytes) -> bool:
        """Queue one line and write what the reader takes now; False (dropped) when the buffer is full."""
        if len(self.buffer) + len(data) > self.limit:
            self._flush()
            if len(self.buffer) + len(data) > self.limit:
                return False
        self.buffer += data
        self.line_ends.append(len(self.buffer))
        self._flush()
        return True

    def _flush(self) -> None:
        while self.buffer:
            try:
                written = os.write(self.fd, self.buffer)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            del self.buffer[:written]
            self.line_ends = [end - written for end in self.line_ends if end > written]

    def close(self, wait: float) -> int:
        """Give the reader `wait` seconds for the rest; returns the lines dropped then (also in dropped_at_close)."""
        deadline = time.monotonic() + wait
        try:
            while self.buffer and time.monotonic() < deadline:
                select.select([], [self.fd], [], max(deadline - time.monotonic(), 0))
                self._flush()
        except OSError as err:
            if err.errno != errno.EPIPE:
                raise
        self.dropped_at_close = len(self.line_ends)
        self.buffer.clear()
        self.line_ends.clear()
        try:
            os.set_blocking(self.fd, True)  # standard output as we found it, for the summary and the shell
        except OSError:
            pass
        return self.dropped_at_close
