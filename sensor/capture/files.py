"""Capture files (pcap, pcapng, or `-` for standard input) read through pcapy-ng in batches."""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pcapy

from sensor.errors import CaptureCutOff, CaptureError, MixedLinkTypes

# libpcap's words (pcap-ng.c) when a pcapng interface's link type differs from the first interface's.
MIXED_LINKTYPES = "different from the type of the first interface"
BATCH_FRAMES = 4096  # frames per next_batch(): large enough to amortise the call, small enough for the cache
META = struct.Struct("=IIII")  # next_batch's per-frame record: sec, usec, offset, caplen (native order)


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
    if path != "-":
        _open(path)


class CaptureFile:
    """One capture file; `batches()` yields its frames and raises CaptureCutOff at a cut-off end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = "<stdin>" if path == "-" else path
        self._reader = _open(path)
        self.linktype: int = self._reader.datalink()
        self.frames_read = 0

    def batches(self, size: int = BATCH_FRAMES) -> Iterator[Batch]:
        reader = self._reader
        while True:
            try:
                data, meta = reader.next_batch(size)
            except pcapy.PcapError as err:
                yield from self._salvage(size)
                if MIXED_LINKTYPES in str(err):
                    raise MixedLinkTypes(
                        f"{self.name}: stopped after frame {self.frames_read}: its interfaces have different link "
                        f"types, and libpcap reads one per file ({err}); split it by interface first, e.g. "
                        f"`tshark -r FILE -Y frame.interface_id==N -w PART`"
                    ) from None
                raise CaptureCutOff(
                    f"{self.name}: capture cut off after frame {self.frames_read} ({err})"
                ) from None
            if not meta:
                return
            batch = Batch(data, meta, self.frames_read + 1)
            self.frames_read += batch.frames
            yield batch

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
