"""Replay: capture files, in order, through one BatchRunner; hits to every output."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sensor.capture.files import IDLE_FLUSH_MS, CaptureFile
from sensor.errors import CaptureCutOff
from sensor.events import Origin
from sensor.runner import BatchRunner

PROGRESS_EVERY = 1.0  # seconds between progress lines on a terminal


@dataclass(slots=True)
class ReplayResult:
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0  # from the first file opened to the last frame decoded
    compile_seconds: float = 0.0  # turning the loaded rules into the loop's form


def replay(paths: Sequence[str], runner: BatchRunner,
           progress: Callable[[str, int, float], None] | None = None,
           idle_flush_ms: float = IDLE_FLUSH_MS, ready: Callable[[], None] | None = None) -> ReplayResult:
    """Decode every file in order through `runner`; a cut-off file ends the replay after its last good frame
    (`runner.cut_off`, which decides the exit code when the runner finishes).

    Missing or unreadable files are found before the first frame is read, so that a typo does not cost a
    long replay's output. The runner's flow table spans files (flows span files); each file's pending
    query-log entries finish at its end. `idle_flush_ms`: how long a pipe's partial batch waits for more frames
    (sensor/capture/files.py); after such a batch the outputs are flushed, so a quiet link's hit is seen at once.
    `ready`: called once every file is open, before the first frame (the outputs open their files then, so a
    failed start changes no file).
    """
    result = ReplayResult()
    started = time.perf_counter()
    captures = [CaptureFile(path, idle_flush_ms) for path in paths]
    if ready is not None:
        ready()
    for capture in captures:
        runner.open(capture.linktype, Origin(capture_file=capture.name))
        size = os.path.getsize(capture.path) if capture.path != "-" else 0
        read = 0
        last_report = time.monotonic()
        try:
            for batch in capture.batches():
                runner.feed(batch)
                if capture.streaming:
                    runner.flush_outputs()
                if progress is not None and size:
                    read += len(batch.data) + len(batch.meta)  # frame bytes plus a 16-byte header each
                    now = time.monotonic()
                    if now - last_report >= PROGRESS_EVERY:
                        last_report = now
                        progress(capture.name, capture.frames_read, min(1.0, read / size))
        except CaptureCutOff as cut:
            runner.cut_off = cut
        runner.end_source()
        result.files.append(capture.name)
        if runner.cut_off is not None:
            break
    result.seconds = time.perf_counter() - started
    return result


def terminal_progress(name: str, frames: int, fraction: float) -> None:
    sys.stderr.write(f"\r{name}: {frames:,} frames, {fraction:5.1%}")
    sys.stderr.flush()
