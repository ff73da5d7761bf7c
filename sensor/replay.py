"""Replay: capture files, in order, through the decode loop; hits to every output."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sensor.capture.files import CaptureFile
from sensor.errors import CaptureCutOff
from sensor.events import Origin
from sensor.loop import compile_rules, make_loop
from sensor.pipeline import HitPipeline
from sensor.rules.loader import RuleSet

PROGRESS_EVERY = 1.0  # seconds between progress lines on a terminal


@dataclass(slots=True)
class ReplayResult:
    counters: Counter = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0  # from the first file opened to the last frame written out
    compile_seconds: float = 0.0  # turning the loaded rules into the loop's form
    cut_off: CaptureCutOff | None = None


def replay(
    paths: Sequence[str],
    ruleset: RuleSet,
    pipeline: HitPipeline,
    ports: Sequence[int],
    progress: Callable[[str, int, float], None] | None = None,
    limits: dict | None = None,
    flows=None,
    query_log=None,
) -> ReplayResult:
    """Decode every file in order; a cut-off file ends the replay after its last good frame.

    Missing or unreadable files are found before the first frame is read, so that a typo does not cost a
    long replay's output. `flows`: a FlowSink whose table every file's loop shares (flows span files); it is
    drained after each batch and flushed after the last file. `query_log`: a QueryLogSink
    (sensor/querylog/writer.py) that takes every batch's finished query-log entries, and each file's pending ones
    at its end.
    """
    result = ReplayResult()
    started = time.perf_counter()
    captures = [CaptureFile(path) for path in paths]
    compiling = time.perf_counter()
    rules = compile_rules(ruleset, keep_table=False)
    result.compile_seconds = time.perf_counter() - compiling
    for capture in captures:
        origin = Origin(capture_file=capture.name)
        flow_table = {"flows": flows.table} if flows is not None else {}
        loop = make_loop(capture.linktype, ports, rules, emit_all=pipeline.wants_every_message, **(limits or {}),
                         query_log=query_log is not None, **flow_table)
        size = os.path.getsize(capture.path) if capture.path != "-" else 0
        read = 0
        last_report = time.monotonic()
        try:
            for batch in capture.batches():
                for record in loop.run_batch(batch.data, batch.meta, batch.first_frame):
                    pipeline.record(record, origin)
                pipeline.anomalies(loop, origin)
                if flows is not None:
                    flows.drain()
                if query_log is not None:
                    query_log.take(loop, origin)
                if progress is not None and size:
                    read += len(batch.data) + len(batch.meta)  # frame bytes plus a 16-byte header each
                    now = time.monotonic()
                    if now - last_report >= PROGRESS_EVERY:
                        last_report = now
                        progress(capture.name, capture.frames_read, min(1.0, read / size))
        except CaptureCutOff as cut:
            result.cut_off = cut
        if query_log is not None:
            query_log.flush(loop, origin)
        result.counters.update(loop.counters())
        for gauge in loop.table_sizes():  # how full a table is now: not a count to add up over files
            result.counters.pop(gauge, None)
        result.files.append(capture.name)
        if result.cut_off is not None:
            break
    if flows is not None:
        flows.finish()
    result.seconds = time.perf_counter() - started
    return result


def terminal_progress(name: str, frames: int, fraction: float) -> None:
    sys.stderr.write(f"\r{name}: {frames:,} frames, {fraction:5.1%}")
    sys.stderr.flush()

