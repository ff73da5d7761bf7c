#!/usr/bin/env python3
"""The read floor: pcapy-ng hands over every frame of a capture in batches, and nothing decodes them.

No replay through pcapy-ng can be faster than this whole process; bench/run.py times it beside the sensor.
"""

from __future__ import annotations

import sys

import pcapy

BATCH_FRAMES = 4096  # the batch size the sensor reads with (sensor/capture/files.py)
META_SIZE = 16  # next_batch's per-frame record: four uint32


def main(path: str) -> int:
    reader = pcapy.open_offline(path)
    frames = 0
    while True:
        _, meta = reader.next_batch(BATCH_FRAMES)
        if not meta:
            break
        frames += len(meta) // META_SIZE
    print(frames)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
