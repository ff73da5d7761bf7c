"""Capture files (pcap, pcapng, or `-` for standard input) read through pcapy-ng in batches."""

from __future__ import annotations

import os
import stat
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pcapy

from sensor.errors import CaptureCutOff, CaptureError, MixedLinkTypes

# libpcap's words (pcap-ng.c) when a pcapng interface's link type differs from the first interface's.
MIXED_LINKTYPES = "different from the type of the first interface"
BATCH_FRAMES = 4096  # frames per next_batch(): large enough to amortise the call, small enough for the cache
META = struct.Struct("=IIII")  # next_batch's per-frame record: sec, usec, offset, caplen (native order)
# A pipe (`tcpdump -U -w - | truesource replay -`) may go quiet with a batch half full: its frames wait at most
# this long for more before they are decoded, so a hit on a quiet link shows at once, not after 4,096 frames.
IDLE_FLUSH_MS = 100


@dataclass(frozen=True, slots=True)
class Batch:
    data: bytes
    meta: bytes
    first_frame: int  # 1-based frame number, within its file, of the batch's first frame

    @property
    def frames(self) -> int:
        return len(self.meta) // META.size


def _open(path: str):
    if path != "-":
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise CaptureError(f"{path}: no such file") from None
        except OSError as err:
            raise CaptureError(f"{path}: cannot read: {err.strerror}") from None
        if stat.S_ISDIR(mode):
            raise CaptureError(f"{path}: is a directory, not a capture file")
        if stat.S_ISREG(mode) and os.stat(path).st_size == 0:
            raise CaptureError(f"{path}: empty file (0 bytes), not a capture")
        if not os.access(path, os.R_OK):
            raise CaptureError(f"{path}: cannot read: permission denied")
    try:
        return pcapy.open_offline(path)
    except pcapy.PcapError as err:
        raise CaptureError(f"{path}: not a readable pcap or pcapng capture ({err})") from None


def check_readable(path: str) -> None:
    """CaptureError unless `path` opens as a capture (standard input is not opened twice): for a command that
    must fail before it creates any output."""
    if path != "-" and not is_stream(path):  # a named pipe's header must be left for the real reader
        _open(path)


def is_stream(path: str) -> bool:
    """A pipe or terminal (frames come when the writer sends them), not a file that can be read to its end."""
    try:
        mode = os.fstat(0).st_mode if path == "-" else os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode)


@dataclass(slots=True)
class _Pending:
    """Frames a reader thread took from a stream and the batch loop has not yet: guarded by `ready`."""

    ready: threading.Condition = field(default_factory=threading.Condition)
    chunks: list[bytes] = field(default_factory=list)
    metas: list[bytes] = field(default_factory=list)
    size: int = 0  # bytes in chunks
    since: float = 0.0  # monotonic time the oldest pending frame arrived
    ended: bool = False
    error: pcapy.PcapError | None = None


class CaptureFile:
    """One capture file; `batches()` yields its frames and raises CaptureCutOff at a cut-off end.

    `idle_flush_ms`: for a pipe, how long a partial batch waits for more frames (0: until the batch is full).
    """

    def __init__(self, path: str, idle_flush_ms: float = IDLE_FLUSH_MS) -> None:
        self.path = path
        self.name = "<stdin>" if path == "-" else path
        self.streaming = idle_flush_ms > 0 and is_stream(path)
        self.idle_flush = idle_flush_ms / 1000
        self._reader = _open(path)
        self.linktype: int = self._reader.datalink()
        self.frames_read = 0

    def batches(self, size: int = BATCH_FRAMES) -> Iterator[Batch]:
        if self.streaming:
            yield from self._stream_batches(size)
            return
        reader = self._reader
        while True:
            try:
                data, meta = reader.next_batch(size)
            except pcapy.PcapError as err:
                yield from self._salvage(size)
                raise self._stopped(err) from None
            if not meta:
                return
            batch = Batch(data, meta, self.frames_read + 1)
            self.frames_read += batch.frames
            yield batch

    def _stopped(self, err: pcapy.PcapError) -> CaptureCutOff:
        if MIXED_LINKTYPES in str(err):
            return MixedLinkTypes(
                f"{self.name}: stopped after frame {self.frames_read}: its interfaces have different link "
                f"types, and libpcap reads one per file ({err}); split it by interface first, e.g. "
                f"`tshark -r FILE -Y frame.interface_id==N -w PART`"
            )
        return CaptureCutOff(f"{self.name}: capture cut off after frame {self.frames_read} ({err})")

    def _stream_batches(self, size: int) -> Iterator[Batch]:
        """A pipe's frames: a thread reads them one by one (pcapy releases the GIL while it waits); a batch goes
        out when full, or when its oldest frame has waited idle_flush for more."""
        pending = _Pending()
        threading.Thread(target=self._pump, args=(pending, size), name="capture-stream", daemon=True).start()
        ready = pending.ready
        while True:
            with ready:
                while not (pending.ended or len(pending.metas) >= size or
                           (pending.metas and time.monotonic() - pending.since >= self.idle_flush)):
                    ready.wait(pending.since + self.idle_flush - time.monotonic() if pending.metas else None)
                chunks, metas, error, ended = pending.chunks, pending.metas, pending.error, pending.ended
                pending.chunks, pending.metas, pending.size = [], [], 0
                ready.notify_all()  # the reader waits while a full batch is pending
            if metas:
                batch = Batch(b"".join(chunks), b"".join(metas), self.frames_read + 1)
                self.frames_read += batch.frames
                yield batch
            if error is not None:
                raise self._stopped(error)
            if ended:
                return

    def _pump(self, pending: _Pending, size: int) -> None:
        reader, ready = self._reader, pending.ready
        try:
            while True:
                header, packet = reader.next()
                if header is None:
                    break
                sec, usec = header.getts()
                with ready:
                    if not pending.metas:
                        pending.since = time.monotonic()
                    pending.metas.append(META.pack(sec & 0xFFFFFFFF, usec & 0xFFFFFFFF, pending.size, len(packet)))
                    pending.chunks.append(packet)
                    pending.size += len(packet)
                    if len(pending.metas) == 1 or len(pending.metas) >= size:
                        ready.notify_all()  # the first frame starts the idle clock; a full batch goes at once
                    while len(pending.metas) >= size:
                        ready.wait()
        except pcapy.PcapError as err:
            with ready:
                pending.error = err
        finally:
            with ready:
                pending.ended = True
                ready.notify_all()

    def _salvage(self, size: int) -> Iterator[Batch]:
        """next_batch drops the whole batch when it meets a cut-off frame: reread up to the cut one frame at a time.

        Standard input cannot be reread, so there the frames of that last batch are lost (the message says so).
        """
        if self.path == "-":
            self.name = f"<stdin> (up to {size} frames before the cut not decoded)"
            return
        reader = _open(self.path)
        skipped = 0
        while skipped < self.frames_read:
            _, meta = reader.next_batch(min(size, self.frames_read - skipped))
            skipped += len(meta) // META.size
        chunks: list[bytes] = []
        metas: list[bytes] = []
        offset = 0
        while True:
            try:
                header, packet = reader.next()
            except pcapy.PcapError:
                break
            if header is None:
                break
            sec, usec = header.getts()
            # libpcap reads a pcap's 32-bit seconds as signed; next_batch stores them unsigned, and so must we
            # (a time past 2038 came back negative here and stopped the salvage: found by fuzz/capture_file).
            metas.append(META.pack(sec & 0xFFFFFFFF, usec & 0xFFFFFFFF, offset, len(packet)))
            chunks.append(packet)
            offset += len(packet)
        if metas:
            batch = Batch(b"".join(chunks), b"".join(metas), self.frames_read + 1)
            self.frames_read += batch.frames
            yield batch
