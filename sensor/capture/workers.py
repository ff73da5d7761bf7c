"""Live capture with one or several workers.

One worker runs in the sensor's own process. With N > 1, the parent opens N capture handles joined in one
AF_PACKET fanout group (PACKET_FANOUT_HASH: the kernel's flow hash is symmetric, so a query and its response
reach the same worker), forks one worker per handle, and keeps the one ZeroMQ endpoint itself. Workers send
their hit records and statistics to the parent over a ZeroMQ PUSH/PULL pipe; the parent merges the hits in
packet-time order (each worker reports how far it has read: its watermark) so that resolver attribution sees a
client's query before the resolver's upstream query whichever workers decoded them.
"""

from __future__ import annotations

import heapq
import logging
import os
import pickle
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import zmq

from sensor.capture.files import META as META_RECORD
from sensor.capture.live import CaptureOptions, LiveCapture, last_packet_time
from sensor.errors import RuleError
from sensor.events import Origin
from sensor.flows.build import make_flow_table
from sensor.flows.record import FLOW_DTYPE
from sensor.loop import make_loop
from sensor.pipeline import HitPipeline
from sensor.rules.loader import read_sources
from sensor.rules.reload import ReloadResult, RulesReloader, build
from sensor.stats import StatsBoard

log = logging.getLogger(__name__)

REPORT_EVERY = 0.05  # seconds: longest a worker holds hits (and its watermark) before telling the parent
STATS_EVERY = 1.0  # seconds between a worker's statistics snapshots to the parent
STOP_GRACE = 10.0  # seconds the parent waits for workers to finish their batch and report after a stop
SWAP_AHEAD_US = 500_000  # a reload swaps at a packet time this far ahead, so every worker hears of it first
# Hits held by the parent until every worker has read past them. A worker whose interface goes quiet still
# reports its clock every REPORT_EVERY, so the heap holds a fraction of a second of hits; this bound is for a
# worker that stalls: past it the oldest hit goes out early (out of packet order), counted.
MAX_MERGE_PENDING = 100_000
# Messages a worker queues for the parent (each up to REPORT_EVERY of hits, or a batch's). Past it the worker
# waits rather than lose hits from the time-order merge; the kernel ring absorbs, then drops (kernel_drops).
# Each wait is counted (worker_pipe_waits), so a parent that falls behind shows before frames are lost.
WORKER_PIPE_HWM = 1_000


@dataclass(frozen=True, slots=True)
class CaptureJob:
    """What every worker needs, fixed before the fork."""

    options: CaptureOptions
    ports: tuple[int, ...]
    rules: object  # CompiledRules (its SuffixSet shared copy-on-write after fork)
    ruleset: object  # the RuleSet the rule indices refer to (its columns), until a reload
    trace: Callable[[int, list], None] | None = None  # debug: every decoded DNS message, per worker
    limits: dict | None = None  # the loop's table limits (max_tcp_streams, tcp_idle_timeout)
    heuristics: bool = False  # the detectors judge every query: the loop hands over every message
    flows: object = None  # FlowSettings when flows are on: each worker builds the flows of its share of traffic
    query_log: str | None = None  # the query-log writer's endpoint: each worker pushes its entries there

    @property
    def every_message(self) -> bool:
        return self.trace is not None or self.heuristics


class Stopper:
    """SIGINT/SIGTERM set a flag; the loops finish their batch and wind down. SIGHUP sets `hangup`: the sensor
    reads its configuration again and then asks for a rules reload (`reload_requested`)."""

    def __init__(self) -> None:
        self.stopped = False
        self.reload_requested = False
        self.hangup = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGHUP, self._reload)

    def _stop(self, signum, frame) -> None:
        self.stopped = True

    def _reload(self, signum, frame) -> None:
        self.hangup = True

    def __call__(self) -> bool:
        return self.stopped


def run_single(job: CaptureJob, pipeline: HitPipeline, board: StatsBoard, stop: Stopper,
               on_tick: Callable[[], None], reloader: RulesReloader,
               on_reload: Callable[[ReloadResult], None], on_open: Callable[[], None] | None = None,
               flows=None, query_log=None) -> None:
    """One worker, in this process: records come in packet order, no merge needed. A reload built in the
    background is swapped in between two batches, for the loop and the encoder at once. `on_open`: called once
    the capture is open, before the first frame (privilege drop, readiness). `flows`: a FlowSink whose table the
    loop fills; drained after each batch. `query_log`: a QueryLogSink that takes each batch's finished entries
    (never waiting)."""
    capture = LiveCapture(job.options)
    if on_open is not None:
        try:
            on_open()
        except BaseException:
            capture.close()
            raise
    log.info("capturing on %s (link type %d), 1 worker", job.options.interface, capture.linktype)
    flow_table = {"flows": flows.table} if flows is not None else {}
    loop = make_loop(capture.linktype, job.ports, job.rules, emit_all=job.every_message, **(job.limits or {}),
                     query_log=query_log is not None, **flow_table)
    origin = Origin(interface=job.options.interface)
    try:
        for batch in capture.batches(stop):
            if batch.frames:
                records = loop.run_batch(batch.data, batch.meta, batch.first_frame)
                if job.trace is not None:
                    job.trace(0, records)
                for record in records:
                    pipeline.record(record, origin)
                pipeline.anomalies(loop, origin)
                if flows is not None:
                    flows.drain()
                if query_log is not None:
                    query_log.take(loop, origin)
            elif flows is not None:
                flows.expire_idle(time.time_ns() // 1000)
            board.update(0, _counters(loop, query_log), _pcap_tuple(capture))
            if stop.reload_requested:
                stop.reload_requested = False
                reloader.request()
            result = reloader.poll()
            if result is not None:
                if result.ok:
                    loop.set_rules(result.compiled.table, **result.compiled.loop_args())
                    pipeline.encoder.ruleset = result.ruleset
                on_reload(result)
            on_tick()
    finally:
        if query_log is not None:
            query_log.flush(loop, origin)
        board.update(0, _counters(loop, query_log), _pcap_tuple(capture))
        capture.close()


def _counters(loop, query_log) -> dict:
    """The loop's counters, with the query-log entries dropped because the writer was behind."""
    counters = loop.counters()
    if query_log is not None:
        counters["query_log_drops"] = query_log.dropped
    return counters


def _pcap_tuple(capture: LiveCapture) -> tuple[int, int, int]:
    stats = capture.stats()
    return stats.received, stats.kernel_drops, stats.interface_drops


def run_workers(job: CaptureJob, workers: int, pipeline: HitPipeline, board: StatsBoard, stop: Stopper,
                on_tick: Callable[[], None], reloader: RulesReloader,
                on_reload: Callable[[ReloadResult], None], on_open: Callable[[], None] | None = None,
                flows=None) -> int:
    """N forked workers on one fanout group; returns 0, or 1 if a worker failed. With `flows` (a FlowSink
    without a table), each worker builds the flows of its share (the fanout hash keeps a flow on one worker)
    and sends them up as FLOW_DTYPE bytes; the parent hands them to the sink.

    A reload: the parent snapshots the rule files and sends the snapshot to every worker, which builds its
    rules in the background. When all have built, the parent names a packet time a little ahead; every worker
    decodes frames before it with the old rules and from it with the new (splitting the batch it falls in), so
    the verdicts switch at one point whichever worker decodes a flow. Workers send each hit with its Rule, so the
    parent needs no rule set of its own; it reports the reload when every worker has swapped.
    """
    group = (os.getpid() ^ int(time.time())) & 0xFFFF
    captures = [LiveCapture(job.options, fanout_group=group) for _ in range(workers)]
    if on_open is not None:  # before the fork: the workers inherit the dropped privileges
        try:
            on_open()
        except BaseException:
            for capture in captures:
                capture.close()
            raise
    log.info("capturing on %s (link type %d), %d workers in fanout group %d", job.options.interface,
             captures[0].linktype, workers, group)
    pipe_dir = tempfile.mkdtemp(prefix="truesource-")
    endpoint = f"ipc://{pipe_dir}/workers"
    control_endpoint = f"ipc://{pipe_dir}/control"
    pids = []
    for worker in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = 1
            try:
                code = _worker_main(worker, captures[worker], job, endpoint, control_endpoint)
            finally:
                os._exit(code)
        pids.append(pid)
    for capture in captures:  # the parent keeps the endpoint, not the handles
        capture.close()
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.bind(endpoint)
    control = context.socket(zmq.PUB)
    control.setsockopt(zmq.LINGER, 0)
    control.bind(control_endpoint)
    generation = 0
    reload_started: dict[int, float] = {}
    reports: dict[int, dict[int, str | None]] = {}  # generation -> worker -> None (built) or the error
    swapped: dict[int, set[int]] = {}  # generation -> workers that have swapped
    merger = WatermarkMerge(workers)
    board.sources.append(merger.counters)
    origin = Origin(interface=job.options.interface)
    running = set(range(workers))
    exited_at: dict[int, float] = {}
    failed = False
    stop_sent_at: float | None = None
    try:
        while running:
            if stop() and stop_sent_at is None:
                for pid in pids:
                    _signal(pid, signal.SIGTERM)
                stop_sent_at = time.monotonic()
            if stop_sent_at is not None and time.monotonic() - stop_sent_at > STOP_GRACE:
                log.error("workers did not stop within %s s; killing them", STOP_GRACE)
                failed = True
                break
            if stop.reload_requested:
                stop.reload_requested = False
                generation += 1
                try:
                    sources = read_sources(reloader.paths)
                except RuleError as err:
                    on_reload(ReloadResult(generation, False, 0.0, error=str(err)))
                else:
                    reload_started[generation] = time.monotonic()
                    reports[generation] = {}
                    control.send(pickle.dumps(("reload", generation, sources, reloader.rules_format)))
            if pull.poll(100):
                message = pickle.loads(pull.recv())
                if message[0] == "flows":
                    if flows is not None:
                        flows.deliver(np.frombuffer(message[2], dtype=FLOW_DTYPE).copy())
                    continue
                if message[0] == "built":  # every worker built it: all swap at one packet time, a bit ahead
                    _, worker, done_generation, error, summary = message
                    reports[done_generation][worker] = error
                    if len(reports[done_generation]) == workers:
                        errors = [e for e in reports[done_generation].values() if e is not None]
                        if errors:
                            reports.pop(done_generation)
                            control.send(pickle.dumps(("drop", done_generation)))
                            on_reload(ReloadResult(done_generation, False,
                                                   time.monotonic() - reload_started.pop(done_generation),
                                                   error=errors[0]))
                        else:
                            swapped[done_generation] = set()
                            control.send(pickle.dumps(("swap", done_generation,
                                                       time.time_ns() // 1000 + SWAP_AHEAD_US)))
                    continue
                if message[0] == "reloaded":
                    _, worker, done_generation, _, summary = message
                    swapped.setdefault(done_generation, set()).add(worker)
                    if len(swapped[done_generation]) == workers:
                        del swapped[done_generation]
                        reports.pop(done_generation, None)
                        on_reload(ReloadResult(done_generation, True,
                                               time.monotonic() - reload_started.pop(done_generation),
                                               counts=summary))
                    continue
                kind, worker, watermark, records, counters, pcap, rules = message
                if counters is not None:
                    board.update(worker, counters, pcap)
                if job.trace is not None and records:
                    job.trace(worker, records)
                merger.add(worker, watermark, [(rules[r[15]], r) for r in records if r[15] >= 0])
                if pipeline.heuristics is not None:  # judged as they come: per-key windows, not cross-worker order
                    for record in records:
                        if not record[10] & 0x8000:
                            pipeline.judge(record, origin)
                if kind == "done":
                    merger.finish(worker)
                    running.discard(worker)
                for rule, record in merger.ready():
                    pipeline.hit(record, origin, rule=rule)
            for index, pid in enumerate(pids):
                if index in running and index not in exited_at and _exited(pid):
                    exited_at[index] = time.monotonic()
                # a worker's last message may still be in the pipe when it has exited: give it a moment
                if index in running and index in exited_at and time.monotonic() - exited_at[index] > 2.0:
                    log.error("capture worker %d exited without reporting", index)
                    running.discard(index)
                    merger.finish(index)
                    failed = True
            on_tick()
        for rule, record in merger.ready():
            pipeline.hit(record, origin, rule=rule)
    finally:
        for index, pid in enumerate(pids):
            if index not in exited_at:
                if failed:
                    _signal(pid, signal.SIGKILL)
                _reap(pid)
        pull.close()
        control.close()
        context.term()
        try:
            for name in os.listdir(pipe_dir):
                os.unlink(f"{pipe_dir}/{name}")
            os.rmdir(pipe_dir)
        except OSError:
            pass
    return 1 if failed else 0


def _worker_main(worker: int, capture: LiveCapture, job: CaptureJob, endpoint: str, control_endpoint: str) -> int:
    stopper = Stopper()
    signal.signal(signal.SIGTERM, stopper._stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent hears Ctrl-C and tells the workers
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads come from the parent, with the files it read
    context = zmq.Context()  # never the parent's: a ZeroMQ context does not survive fork
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.setsockopt(zmq.SNDHWM, WORKER_PIPE_HWM)
    push.connect(endpoint)
    control = context.socket(zmq.SUB)
    control.setsockopt(zmq.LINGER, 0)
    control.setsockopt(zmq.SUBSCRIBE, b"")
    control.connect(control_endpoint)
    flow_table = make_flow_table(job.flows) if job.flows is not None else None
    loop = make_loop(capture.linktype, job.ports, job.rules, emit_all=job.every_message, **(job.limits or {}),
                     query_log=job.query_log is not None,
                     **({"flows": flow_table} if flow_table is not None else {}))
    query_log = None
    if job.query_log is not None:
        from sensor.querylog.writer import QueryLogSink

        query_log = QueryLogSink(job.query_log, blocking=False)
    ruleset = job.ruleset
    building: list = []  # [thread, holder] while a reload builds
    built = None  # a built reload waiting for the parent's swap time
    swap_at: int | None = None  # packet time (us) from which the built rules decide
    pending: list = []
    watermark = 0
    last_report = last_stats = time.monotonic()

    pipe_waits = 0

    def send(message: tuple) -> None:
        """To the parent; when its queue is full, wait (counted) rather than drop hits."""
        nonlocal pipe_waits
        data = pickle.dumps(message)
        try:
            push.send(data, zmq.NOBLOCK)
        except zmq.Again:
            pipe_waits += 1
            push.send(data)

    def counted(counters: dict | None) -> dict | None:
        return None if counters is None else {**counters, "worker_pipe_waits": pipe_waits}

    def flush(counters=None, pcap=None) -> None:
        nonlocal pending
        send(("batch", worker, watermark, pending, counted(counters), pcap, _rules_of(ruleset, pending)))
        pending = []

    def send_flows() -> None:
        if flow_table is not None:
            arr = flow_table.take()
            if len(arr):
                send(("flows", worker, arr.tobytes()))

    def swap() -> None:
        """Hits decoded so far go out with their rules; then the new rules decide."""
        nonlocal built, swap_at, ruleset
        flush()
        loop.set_rules(built.compiled.table, **built.compiled.loop_args())
        ruleset = built.ruleset
        send(("reloaded", worker, built.generation, None, built.counts))
        built = swap_at = None

    try:
        for batch in capture.batches(stopper):
            if batch.frames:
                split = _first_at(batch.meta, swap_at) if swap_at is not None else batch.frames
                if split:
                    pending.extend(loop.run_batch(batch.data, batch.meta[:split * 16], batch.first_frame))
                watermark = last_packet_time(batch)
                if split < batch.frames:  # the swap time falls in this batch: the rest with the new rules
                    swap()
                    pending.extend(loop.run_batch(batch.data, batch.meta[split * 16:], batch.first_frame + split))
                if query_log is not None:
                    query_log.take(loop)
            else:
                watermark = max(watermark, time.time_ns() // 1000)  # nothing queued: read up to now
                if flow_table is not None:
                    flow_table.expire_idle(watermark)
                if swap_at is not None and watermark >= swap_at:
                    swap()
            send_flows()
            now = time.monotonic()
            if pending or now - last_report >= REPORT_EVERY:
                counters = pcap = None
                if now - last_stats >= STATS_EVERY:
                    counters, pcap, last_stats = _counters(loop, query_log), _pcap_tuple(capture), now
                flush(counters, pcap)
                last_report = now
            try:
                message = pickle.loads(control.recv(zmq.NOBLOCK))
            except zmq.Again:
                message = None
            if message is not None and message[0] == "reload" and not building:
                _, new_generation, sources, rules_format = message
                built = swap_at = None
                building = _start_build(sources, rules_format, new_generation)
            elif message is not None and message[0] == "swap" and built is not None and message[1] == built.generation:
                swap_at = message[2]
            elif message is not None and message[0] == "drop":
                built = swap_at = None
            if building and not building[0].is_alive():
                result = building[1][0]
                building = []
                if result.ok:
                    built = result
                    send(("built", worker, result.generation, None, result.counts))
                else:
                    send(("built", worker, result.generation, result.error, None))
        if flow_table is not None:
            flow_table.flush()
            send_flows()
        if query_log is not None:
            query_log.flush(loop)
        send(("done", worker, watermark, pending, counted(_counters(loop, query_log)), _pcap_tuple(capture),
              _rules_of(ruleset, pending)))
        return 0
    finally:
        if query_log is not None:
            query_log.close()
        push.close()
        control.close()
        context.term()


def _first_at(meta: bytes, when_us: int) -> int:
    """Index of the first frame of a batch whose packet time is at or after `when_us` (frames if none)."""
    for index, (sec, usec, _, _) in enumerate(META_RECORD.iter_unpack(meta)):
        if sec * 1_000_000 + usec >= when_us:
            return index
    return len(meta) // META_RECORD.size


def _rules_of(ruleset, records: list) -> dict:
    """The Rule of every hit in `records`: hits are few, and sending the rule with them spares the parent a
    copy of the rule set (and a rebuild of its own on every reload)."""
    return {r[15]: ruleset.rule(r[15]) for r in records if r[15] >= 0}


def _start_build(sources, rules_format, generation) -> list:
    holder: list = []
    thread = threading.Thread(target=lambda: holder.append(build(sources, rules_format, generation)),
                              name=f"rules-reload-{generation}", daemon=True)
    thread.start()
    return [thread, holder]


class WatermarkMerge:
    """Holds hits until every worker has read past their packet time, then releases them in time order."""

    def __init__(self, workers: int, max_pending: int = MAX_MERGE_PENDING) -> None:
        self.watermarks = dict.fromkeys(range(workers), 0)
        self.heap: list = []
        self.sequence = 0
        self.max_pending = max_pending
        self.released_early = 0  # hits let out past max_pending before every worker had read past them

    def add(self, worker: int, watermark: int, entries: Sequence[tuple[object, tuple]]) -> None:
        """`entries`: (rule, record) pairs of one worker, in its packet order."""
        self.watermarks[worker] = max(self.watermarks[worker], watermark)
        for entry in entries:
            record = entry[1]
            self.sequence += 1
            heapq.heappush(self.heap, (record[1] * 1_000_000 + record[2], self.sequence, entry))

    def finish(self, worker: int) -> None:
        self.watermarks[worker] = float("inf")

    def ready(self) -> list[tuple[object, tuple]]:
        limit = min(self.watermarks.values())
        out = []
        while self.heap and (self.heap[0][0] <= limit or len(self.heap) > self.max_pending):
            if self.heap[0][0] > limit:
                self.released_early += 1
            out.append(heapq.heappop(self.heap)[2])
        return out

    def counters(self) -> dict[str, int]:
        return {"merge_pending": len(self.heap), "merge_released_early": self.released_early}


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _exited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
