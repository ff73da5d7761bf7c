"""Capture-file bytes (pcap, pcapng, anything) written to a file and read by sensor/capture/files.py.

A hostile file may only end in the documented errors (CaptureError: not a capture; CaptureCutOff: cut off);
whatever frames it yields go through both decoders, which must agree.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from collections.abc import Iterator

from fuzz.common import captures, compiled_loop
from sensor.capture.files import CaptureFile
from sensor.decode import ReferenceLoop
from sensor.errors import CaptureCutOff, CaptureError

INSTRUMENT = ("sensor.capture.files", "sensor.decode")
SEED_BYTES = 16_384  # the head of each capture (a cut-off one is a seed too)
BATCH = 3  # frames per batch: small, so that a cut lands inside a batch and the salvage path runs
_handle, _path = tempfile.mkstemp(prefix="truesource-fuzz-", suffix=".pcap")
atexit.register(os.unlink, _path)


def fuzz_one(data: bytes) -> None:
    os.ftruncate(_handle, 0)
    os.pwrite(_handle, data, 0)
    try:
        capture = CaptureFile(_path)
    except CaptureError:
        return
    fast_loop = reference_loop = None
    try:
        for batch in capture.batches(BATCH):
            if fast_loop is None:
                fast_loop = compiled_loop().FastLoop(capture.linktype, (53,), {"": [0, 0]}, True)
                reference_loop = ReferenceLoop(capture.linktype, (53,), {"": [0, 0]}, True)
            fast = fast_loop.run_batch(batch.data, batch.meta, batch.first_frame)
            reference = reference_loop.run_batch(batch.data, batch.meta, batch.first_frame)
            if [tuple(r) for r in fast] != [tuple(r) for r in reference]:
                raise AssertionError(f"fast path and reference disagree on frames from {batch.first_frame}")
    except CaptureCutOff:
        pass
    if fast_loop is not None and fast_loop.counters() != reference_loop.counters():
        raise AssertionError(f"counters differ: {fast_loop.counters()} {reference_loop.counters()}")


def seeds() -> Iterator[bytes]:
    for path in captures():
        with open(path, "rb") as handle:
            yield handle.read(SEED_BYTES)
