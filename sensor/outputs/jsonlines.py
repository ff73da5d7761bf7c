"""JSON lines output: one event a line, to a file or standard output.

In live capture (`blocking=False`) standard output that is not a regular file (a pipe, a socket, a terminal) is
written without blocking: a reader that stops reading must not stop the capture loop. Lines wait in a bounded
buffer; past PIPE_BUFFER_LIMIT a line is dropped and counted (`out_drops`), as the publisher drops at its
high-water mark. Replay and regular files write as before: they wait, and lose nothing.

A file (`--out PATH`) is checked when the writer is made but opened only by `open()`, once every other check of
the run has passed, so that a run that fails to start leaves an existing file as it was. Capture appends (a
restart must not cut what a log shipper has not read yet) and reopens the file on SIGHUP (logrotate); replay
truncates. A full disk costs lines, never the run: the lines that do not fit are counted (`out_drops`) and cut back
to the last whole line, the file is named once in the log, and writing resumes when there is room
(docs/decisions/0101-out-files-append-reopen-enospc.md).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import sys
import time
from typing import TextIO

from sensor.errors import OutputError, StartupError

log = logging.getLogger("truesource")

FILE_BUFFER = 1 << 16  # bytes of lines gathered before one write() to a file
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # the file cannot grow: drop and count, keep running
PIPE_BUFFER_LIMIT = 4 << 20  # bytes of events held for a slow reader: ~4,000 hit events, seconds of a burst
CLOSE_WAIT = 2.0  # seconds a closing capture gives a slow reader to take what is buffered, then drops the rest


def check_writable(path: str, option: str) -> None:
    """StartupError unless `path` could be written, without creating or changing it (a failed start changes no
    file)."""
    if os.path.isdir(path):
        raise StartupError(f"{option} {path}: is a directory")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise StartupError(f"{option} {path}: cannot write: permission denied")
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise StartupError(f"{option} {path}: no such directory: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StartupError(f"{option} {path}: cannot create a file in {parent}: permission denied")


class LateFile:
    """A text file checked now and created (truncated) only by `open()`, once every check of the run has passed;
    a write before that opens it. For the debug outputs (`--trace-messages`)."""

    def __init__(self, path: str, option: str) -> None:
        check_writable(path, option)
        self.path, self.option = path, option
        self._handle: TextIO | None = None

    def open(self) -> None:
        if self._handle is None:
            try:
                self._handle = open(self.path, "w", encoding="ascii")
            except OSError as err:
                raise StartupError(f"{self.option} {self.path}: cannot write: {err.strerror}") from None

    def write(self, text: str) -> None:
        if self._handle is None:
            self.open()
        assert self._handle is not None
        self._handle.write(text)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class JsonLinesWriter:
    """Writes events as lines; `-` is standard output. `append`: keep what the file holds (capture)."""

    def __init__(self, path: str = "-", topics: tuple[str, ...] = ("dns.hit", "dns.anomaly"), blocking: bool = True,
                 buffer_limit: int = PIPE_BUFFER_LIMIT, append: bool = False) -> None:
        self.path = path
        self.topics = topics
        self.append = append
        self.lines = 0
        self.lines_dropped = 0
        self.drop_reason = "the reader did not keep up"
        self._pipe: _NonBlockingPipe | None = None
        self._fd: int | None = None
        # whole lines not yet written to the file, as the chunks they came in (joined once at the write: a growing
        # buffer copied itself again at each append, a fifth of a hit's instructions)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._pending_lines = 0
        self._disk_full = False
        self._stdout_file = False  # standard output redirected to a regular file: written like --out FILE
        if path == "-":
            self._handle: TextIO = sys.stdout
            if not blocking and _may_block(sys.stdout):
                sys.stdout.flush()
                self._pipe = _NonBlockingPipe(sys.stdout.fileno(), buffer_limit)
            else:
                self._stdout_file = _is_regular(sys.stdout)
        else:
            check_writable(path, "--out")

    def open(self) -> None:
        """Open (or create) the file: called once every check of the run has passed."""
        if self._fd is not None:
            return
        if self.path == "-":
            if self._stdout_file:
                self._handle.flush()
                self._fd = self._handle.fileno()  # the shell's redirection: written to, never closed here
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | (0 if self.append else os.O_TRUNC)
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as err:
            raise StartupError(f"--out {self.path}: cannot write events: {err.strerror}") from None
        self.append = True  # a reopen (SIGHUP) never truncates

    def reopen(self) -> None:
        """SIGHUP: write what is pending, then open the path afresh (logrotate moved or truncated the file)."""
        if self.path == "-":
            self.flush()
            return
        if self._fd is not None:
            self.flush()
            os.close(self._fd)
            self._fd = None
        try:
            self.open()
        except StartupError as err:  # the run goes on; lines are counted as dropped until a later reopen works
            log.error("%s", err)
            self._disk_full = True
        else:
            self._disk_full = False
            log.info("--out %s: reopened", self.path, extra={"fields": {"event": "out_reopened", "path": self.path}})

    def write(self, topic: str, line: str) -> None:
        if topic not in self.topics:
            return
        if self._pipe is not None:
            if self._pipe.write(line.encode("ascii") + b"\n"):
                self.lines += 1
            else:
                self.lines_dropped += 1
            return
        if self.path == "-" and not self._stdout_file:
            self._handle.write(line)
            self._handle.write("\n")
            self.lines += 1
            return
        self._queue(line.encode("ascii") + b"\n", 1)

    def write_lines(self, topic: str, lines: list[str]) -> None:
        """A batch's lines at once, as write() would write them one by one: one encoding and one chunk for the
        whole batch (decision 0204)."""
        if topic not in self.topics or not lines:
            return
        if self._pipe is not None or (self.path == "-" and not self._stdout_file):
            for line in lines:  # a pipe keeps whole lines within its bound; a terminal takes text
                self.write(topic, line)
            return
        self._queue(("\n".join(lines) + "\n").encode("ascii"), len(lines))

    def _queue(self, data: bytes, lines: int) -> None:
        """Whole lines for the file, written once FILE_BUFFER bytes wait."""
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._pending_lines += lines
        if self._pending_bytes >= FILE_BUFFER:
            self.flush()

    def flush(self) -> None:
        """Write the pending lines; on a full disk keep the whole lines that fit and count the rest as dropped."""
        if self._pipe is not None:  # a non-blocking pipe writes what it can at once
            return
        if self.path == "-" and not self._stdout_file:  # a pipe or terminal (replay): its text buffer out now
            self._handle.flush()
            return
        if not self._pending:
            return
        if self._fd is None:
            if self._disk_full:  # a failed reopen: nowhere to write
                self._drop(self._pending_lines)
                return
            self.open()
        fd = self._fd
        assert fd is not None
        chunks, lines = self._pending, self._pending_lines
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._pending, self._pending_bytes, self._pending_lines = [], 0, 0
        start = os.lseek(fd, 0, os.SEEK_END)
        done = 0
        try:
            while done < len(data):
                done += os.write(fd, memoryview(data)[done:])
        except OSError as err:
            if err.errno not in DISK_FULL:
                raise OutputError(f"--out {self.path}: cannot write events: {err.strerror}") from None
            kept = data.rfind(b"\n", 0, done) + 1  # a line cut in half is taken back: the file stays JSON lines
            if kept < done:
                os.ftruncate(fd, start + kept)
            written = data.count(b"\n", 0, kept)
            self.lines += written
            self._drop(lines - written, err.strerror or "")
            return
        self.lines += lines
        if self._disk_full:
            self._disk_full = False
            log.warning("--out %s: writing again after %d dropped lines", self.path, self.lines_dropped,
                        extra={"fields": {"event": "out_resumed", "path": self.path, "dropped": self.lines_dropped}})

    def _drop(self, lines: int, why: str = "") -> None:
        self.lines_dropped += lines
        self.drop_reason = "the disk was full"
        if not self._disk_full:
            self._disk_full = True
            log.error("--out %s: %s: dropping event lines until there is room (counted as out_drops)", self.path,
                      why or "not open", extra={"fields": {"event": "out_disk_full", "path": self.path}})

    def state_counters(self) -> dict[str, int]:
        if self._pipe is None:
            return {"out_drops": self.lines_dropped} if self.path != "-" or self._stdout_file else {}
        return {"out_drops": self.lines_dropped, "out_buffered_bytes": len(self._pipe.buffer)}

    def close(self) -> None:
        if self._pipe is not None:
            self.lines -= self._pipe.close(CLOSE_WAIT)
            self.lines_dropped += self._pipe.dropped_at_close
            return
        if self.path == "-" and not self._stdout_file:
            self._handle.flush()
            return
        try:
            self.flush()
        finally:
            if self._fd is not None and self.path != "-":
                os.close(self._fd)
            self._fd = None


def _is_regular(handle: TextIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(handle.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's StringIO)
        return False


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
