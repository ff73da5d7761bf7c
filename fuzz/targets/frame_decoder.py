"""Whole frames of every link type: the fast path must give the reference decoder's records and counters.

Input: a selector byte (link type, DNS ports, emit-all) and length-prefixed frames (fuzz/common.py). The frames
run as one batch and, when the selector's bit 6 is set, again one frame per batch: TCP state crosses batches,
so the split must change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from fuzz.common import LINKTYPES, capture_frames, captures, differential, encode_frames, frames_of

INSTRUMENT = ("sensor.decode",)
SEED_FRAMES = 8  # frames per seed input: enough for a TCP exchange, small enough to mutate fast
SEEDS_PER_CAPTURE = 6


def fuzz_one(data: bytes) -> None:
    linktype, ports, emit_all, frames = frames_of(data)
    differential(linktype, ports, frames, emit_all)
    if data and data[0] & 0x40 and len(frames) > 1:
        differential(linktype, ports, frames, emit_all, batch_size=1)


def seeds() -> Iterator[bytes]:
    for path in captures():
        opened = capture_frames(path, SEED_FRAMES * SEEDS_PER_CAPTURE)
        if opened is None or opened[0] not in LINKTYPES:
            continue
        linktype, frames = opened
        for first in range(0, len(frames), SEED_FRAMES):
            yield encode_frames(linktype, frames[first:first + SEED_FRAMES], (53, 5353, 5355, 1053, 8053))
