"""Live capture with one or several workers.

One worker runs in the sensor's own process. With N > 1, the parent opens N capture handles joined in one
AF_PACKET fanout group (PACKET_FANOUT_HASH: the kernel's flow hash is symmetric, so a query and its response
reach the same worker), forks one worker per handle, and keeps the one ZeroMQ endpoint itself. Workers send
their hit records and statistics to the parent over a ZeroMQ PUSH/PULL pipe; the parent merges the hits in
packet-time order (each worker reports how far it has read: its watermark) so that resolver attribution sees a
client's query before the resolver's upstream query whichever workers decoded them.
"""

from __future__ import annotations

import functools
import heapq
import logging
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import numpy as np
import zmq

from sensor.capture.files import META as META_RECORD
from sensor.capture.live import POLL_MS, CaptureOptions, LiveCapture, last_packet_time
from sensor.errors import HelperDied, RuleError, how_it_ended
from sensor.events import Origin
from sensor.flows.record import FLOW_DTYPE
from sensor.flows.settings import FlowSettings
from sensor.loop import compile_rules, make_flow_table
from sensor.messages import (
    Built,
    DnsRecord,
    Drop,
    Flows,
    Reload,
    Report,
    Swap,
    Swapped,
    decode_parent_message,
    decode_worker_message,
    encode,
)
from sensor.rules.compiled import CompiledRules
from sensor.rules.loader import read_sources
from sensor.rules.model import Rule, RuleSet
from sensor.rules.reload import ReloadResult, RulesReloader, build
from sensor.runner import BatchRunner
from sensor.stats import StatsBoard

log = logging.getLogger(__name__)

REPORT_EVERY = 0.1  # seconds: longest a worker holds hits (and its watermark) before telling the parent
# The parent's housekeeping (workers' liveness, the query-log writer, stats, control, reloads) runs at most this
# often, not once per message: with N workers the messages are N times as many, and the housekeeping per message
# was most of what a second worker cost (bench/live.py).
HOUSEKEEPING_EVERY = 0.1
MESSAGES_PER_WAKE = 256  # messages read per wake-up before the housekeeping gets a turn
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
# A quiet worker's watermark is the wall clock less this: a frame the kernel has stamped can wait in a TPACKET_V3
# block until the block is retired (the read timeout, POLL_MS), so "nothing to read now" only means "nothing
# stamped before now - POLL_MS"; twice that for scheduling. Without the lag the other workers' hits and anomalies
# stamped in that window went out before this worker's (2-worker live test: the first packets out of order).
IDLE_WATERMARK_LAG_US = 2 * POLL_MS * 1000


@dataclass(frozen=True, slots=True)
class CaptureJob:
    """What every worker needs, fixed before the fork."""

    options: CaptureOptions
    ports: tuple[int, ...]
    rules: CompiledRules  # its SuffixSet shared copy-on-write after fork
    ruleset: RuleSet  # the RuleSet the rule indices refer to (its columns), until a reload
    trace: Callable[[int, list[DnsRecord]], None] | None = None  # debug: every decoded DNS message, per worker
    limits: dict[str, Any] | None = None  # the loop's table limits (max_tcp_streams, tcp_idle_timeout)
    heuristics: bool = False  # the detectors judge every query: the loop hands over every message
    flows: FlowSettings | None = None  # flows on: each worker builds the flows of its share of traffic
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

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopped = True

    def _reload(self, signum: int, frame: FrameType | None) -> None:
        self.hangup = True

    def __call__(self) -> bool:
        return self.stopped


def run_single(job: CaptureJob, runner: BatchRunner, board: StatsBoard, stop: Stopper,
               on_tick: Callable[[], None], reloader: RulesReloader,
               on_reload: Callable[[ReloadResult], None], on_open: Callable[[], None] | None = None) -> None:
    """One worker, in this process: records come in packet order, no merge needed. A reload built in the
    background is swapped in between two batches, for the loop and the encoder at once. `on_open`: called once
    the capture is open, before the first frame (privilege drop, readiness). The runner's sinks (flows, query
    log) take each batch's output; the caller finishes the runner."""
    capture = LiveCapture(job.options)
    if on_open is not None:
        try:
            on_open()
        except BaseException:
            capture.close()
            raise
    log.info("capturing on %s (link type %d), 1 worker", job.options.interface, capture.linktype)
    runner.open(capture.linktype, Origin(interface=job.options.interface))
    try:
        for batch in capture.batches(stop, runner.batch_frames):
            try:
                if batch.frames:
                    runner.feed(batch)
                else:
                    runner.idle(time.time_ns() // 1000)
            except HelperDied as died:  # the query-log writer: the capture ends, exit 1, the summary says the loss
                log.error("%s", died)
                runner.failed = True
                stop.stopped = True
            board.update(0, runner.counters(), _pcap_tuple(capture))
            if stop.reload_requested:
                stop.reload_requested = False
                reloader.request()
            result = reloader.poll()
            if result is not None:
                if result.ok and result.compiled is not None and result.ruleset is not None and runner.pipeline:
                    runner.set_rules(result.compiled)
                    runner.pipeline.encoder.ruleset = result.ruleset
                on_reload(result)
            on_tick()
    finally:
        runner.end_source()
        board.update(0, runner.counters(), _pcap_tuple(capture))
        capture.close()


def _pcap_tuple(capture: LiveCapture) -> tuple[int, int, int]:
    stats = capture.stats()
    return stats.received, stats.kernel_drops, stats.interface_drops


def run_workers(job: CaptureJob, workers: int, runner: BatchRunner, board: StatsBoard, stop: Stopper,
                on_tick: Callable[[], None], reloader: RulesReloader,
                on_reload: Callable[[ReloadResult], None], on_open: Callable[[], None] | None = None) -> None:
    """N forked workers on one fanout group; a worker that fails marks the runner failed (exit 1). The parent's
    `runner` has no loop: it takes the workers' hits (merged in packet-time order) to its pipeline and, with
    flows on, the flows each worker builds of its share (the fanout hash keeps a flow on one worker) to its
    FlowSink.

    A reload: the parent snapshots the rule files and sends the snapshot to every worker, which builds its
    rules in the background. When all have built, the parent names a packet time a little ahead; every worker
    decodes frames before it with the old rules and from it with the new (splitting the batch it falls in), so
    the verdicts switch at one point whichever worker decodes a flow. Workers send each hit with its Rule, so the
    parent needs no rule set of its own; it reports the reload when every worker has swapped.
    """
    pipeline = runner.pipeline
    assert pipeline is not None
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
    statuses: dict[int, int] = {}  # worker -> exit code as multiprocessing says it (-signal when killed)
    failed = False
    stop_sent_at: float | None = None
    last_housekeeping = 0.0
    try:
        while running:
            now = time.monotonic()
            housekeeping = now - last_housekeeping >= HOUSEKEEPING_EVERY
            if housekeeping:
                last_housekeeping = now
            if housekeeping and not failed:
                try:
                    runner.watch()  # the query-log writer the workers push to
                except HelperDied as died:
                    log.error("%s", died)
                    failed = True
                    stop.stopped = True
            if stop() and stop_sent_at is None:
                for pid in pids:
                    _signal(pid, signal.SIGTERM)
                stop_sent_at = now
            if stop_sent_at is not None and now - stop_sent_at > STOP_GRACE:
                log.error("workers did not stop within %s s; killing them", STOP_GRACE)
                failed = True
                break
            if stop.reload_requested and reloader.settled():  # the rule files unchanged for 1 s: no writer at work
                stop.reload_requested = False
                generation += 1
                try:
                    sources = read_sources(reloader.paths)
                    refused = reloader.cut_off(sources)
                except RuleError as err:
                    refused = str(err)
                if refused is not None:
                    on_reload(ReloadResult(generation, False, 0.0, error=refused))
                else:
                    reload_started[generation] = time.monotonic()
                    reports[generation] = {}
                    control.send(encode(Reload(generation, sources, reloader.rules_format, reloader.build_options())))
            # rounded up: rounded down, the last millisecond before each tick was spent polling with no wait
            wait_ms = max(0, math.ceil((last_housekeeping + HOUSEKEEPING_EVERY - time.monotonic()) * 1000))
            for message in _messages(pull, wait_ms):
                if isinstance(message, Flows):
                    if runner.flows is not None:
                        runner.flows.deliver(np.frombuffer(message.data, dtype=FLOW_DTYPE).copy())
                elif isinstance(message, Built):  # every worker built it: all swap at one packet time, a bit ahead
                    reports[message.generation][message.worker] = message.error
                    done = message.generation
                    if len(reports[done]) == workers:
                        errors = [e for e in reports[done].values() if e is not None]
                        refused = reloader.refusal((message.counts or {}).get("rules", 0)) if not errors else None
                        errors += [refused] if refused is not None else []
                        if errors:
                            reports.pop(done)
                            control.send(encode(Drop(done)))
                            on_reload(ReloadResult(done, False, time.monotonic() - reload_started.pop(done),
                                                   error=errors[0]))
                        else:
                            swapped[done] = set()
                            control.send(encode(Swap(done, time.time_ns() // 1000 + SWAP_AHEAD_US)))
                elif isinstance(message, Swapped):
                    done = message.generation
                    swapped.setdefault(done, set()).add(message.worker)
                    if len(swapped[done]) == workers:
                        reloader.accepted((message.counts or {}).get("rules", 0))
                        del swapped[done]
                        reports.pop(done, None)
                        on_reload(ReloadResult(done, True, time.monotonic() - reload_started.pop(done),
                                               counts=message.counts))
                else:
                    worker = message.worker
                    if message.counters is not None:
                        board.update(worker, message.counters, message.pcap)
                    if job.trace is not None and message.records:
                        job.trace(worker, message.records)
                    merger.add(worker, message.watermark,
                               [(message.rules[r.rule], r) for r in message.records if r.rule >= 0],
                               message.anomalies)
                    if pipeline.heuristics is not None:  # judged as they come: per-key windows, not cross-worker order
                        for record in message.records:
                            if not record.is_response:
                                pipeline.judge(record, origin)
                    if message.last:
                        merger.finish(worker)
                        running.discard(worker)
            release(merger.ready(), pipeline, origin)
            if not housekeeping:
                continue
            for index, pid in enumerate(pids):
                if index in running and index not in exited_at:
                    status = _exited(pid)
                    if status is not None:
                        exited_at[index] = time.monotonic()
                        statuses[index] = status
                # A worker's last message may still be in the pipe when it has exited: give it a moment, unless it
                # died (a signal, an error code): then its loss is said at once and the capture ends (exit 1).
                if index in running and index in exited_at and (
                        statuses[index] != 0 or time.monotonic() - exited_at[index] > 2.0):
                    running.discard(index)
                    merger.finish(index)
                    failed = True
                    note = worker_loss(index, statuses[index], board)
                    log.error("%s; stopping the capture", note)
                    runner.notes.append(note)
                    stop.stopped = True
            on_tick()
        release(merger.ready(), pipeline, origin)
    finally:
        runner.failed = runner.failed or failed
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


def _messages(pull: zmq.Socket, wait_ms: int) -> Iterator[Any]:
    """The workers' messages waiting now (after up to `wait_ms` for the first), at most MESSAGES_PER_WAKE."""
    if not pull.poll(wait_ms):
        return
    for _ in range(MESSAGES_PER_WAKE):
        try:
            yield decode_worker_message(pull.recv(zmq.NOBLOCK))
        except zmq.Again:
            return


class ParentLink:
    """A worker's end of the pipe to the parent (the BatchRunner's WorkerLink): records held until the next
    report, each hit sent with its Rule; when the parent's queue is full, the worker waits (counted) rather than
    drop hits."""

    def __init__(self, context: zmq.Context, endpoint: str, worker: int, capture: LiveCapture,
                 ruleset: RuleSet) -> None:
        self.push = context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 5000)
        self.push.setsockopt(zmq.SNDHWM, WORKER_PIPE_HWM)
        self.push.connect(endpoint)
        self.worker = worker
        self.capture = capture
        self.ruleset = ruleset  # the rule set the hits' indices refer to (swapped at a reload)
        self.pending: list[DnsRecord] = []
        self.pending_anomalies: list[tuple[Any, ...]] = []
        self.watermark = 0
        self.pipe_waits = 0

    def send(self, message: Report | Flows | Built | Swapped) -> None:
        data = encode(message)
        try:
            self.push.send(data, zmq.NOBLOCK)
        except zmq.Again:
            self.pipe_waits += 1
            self.push.send(data)

    def records(self, records: list[DnsRecord]) -> None:
        self.pending.extend(records)

    def anomalies(self, records: Sequence[tuple[Any, ...]]) -> None:
        self.pending_anomalies.extend(tuple(r) for r in records)

    def flows(self, data: np.ndarray) -> None:
        if len(data):
            self.send(Flows(self.worker, data.tobytes()))

    def report(self, counters: dict[str, int] | None = None, last: bool = False) -> None:
        """The records held so far (with their rules) and the watermark; with `counters`, the statistics too."""
        rules: dict[int, Rule] = {r.rule: self.ruleset.rule(r.rule) for r in self.pending if r.rule >= 0}
        stats = None if counters is None else {**counters, "worker_pipe_waits": self.pipe_waits}
        self.send(Report(self.worker, self.watermark, self.pending, rules, stats,
                         _pcap_tuple(self.capture) if counters is not None else None, last,
                         self.pending_anomalies))
        self.pending = []
        self.pending_anomalies = []

    def finish(self, counters: dict[str, int]) -> None:
        self.report(counters, last=True)

    def close(self) -> None:
        self.push.close()


def _worker_main(worker: int, capture: LiveCapture, job: CaptureJob, endpoint: str, control_endpoint: str) -> int:
    stopper = Stopper()
    signal.signal(signal.SIGTERM, stopper._stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent hears Ctrl-C and tells the workers
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads come from the parent, with the files it read
    context = zmq.Context()  # never the parent's: a ZeroMQ context does not survive fork
    link = ParentLink(context, endpoint, worker, capture, job.ruleset)
    control = context.socket(zmq.SUB)
    control.setsockopt(zmq.LINGER, 0)
    control.setsockopt(zmq.SUBSCRIBE, b"")
    control.connect(control_endpoint)
    query_log = None
    if job.query_log is not None:
        from sensor.querylog.writer import QueryLogSink

        query_log = QueryLogSink(job.query_log, blocking=False)
    flow_table = make_flow_table(job.flows) if job.flows is not None else None
    runner = BatchRunner(job.ports, job.rules, flow_table=flow_table, on_flows=link.flows, query_log=query_log,
                         limits=job.limits, emit_all=job.every_message, link=link, worker=worker)
    building: list[Any] = []  # [thread, holder] while a reload builds
    built: ReloadResult | None = None  # a built reload waiting for the parent's swap time
    swap_at: int | None = None  # packet time (us) from which the built rules decide
    last_report = last_stats = time.monotonic()

    def swap() -> None:
        """Hits decoded so far go out with their rules; then the new rules decide."""
        nonlocal built, swap_at
        assert built is not None and built.compiled is not None and built.ruleset is not None
        link.report()
        runner.set_rules(built.compiled)
        link.ruleset = built.ruleset
        link.send(Swapped(worker, built.generation, built.counts))
        built = swap_at = None

    try:
        runner.open(capture.linktype, Origin(interface=job.options.interface))
        for batch in capture.batches(stopper):
            if batch.frames:
                split = _first_at(batch.meta, swap_at) if swap_at is not None else batch.frames
                if split:
                    runner.feed(batch, 0, split)
                link.watermark = last_packet_time(batch) or link.watermark
                if split < batch.frames:  # the swap time falls in this batch: the rest with the new rules
                    swap()
                    runner.feed(batch, split, batch.frames)
                runner.drain()
            else:
                # nothing queued: read up to what can still be waiting in an open block
                link.watermark = max(link.watermark, time.time_ns() // 1000 - IDLE_WATERMARK_LAG_US)
                runner.idle(link.watermark)
                if swap_at is not None and link.watermark >= swap_at:
                    swap()
            # Hits, the watermark and the parent's messages every REPORT_EVERY, not every batch: with N workers
            # each batch is 1/N the size, and a report per batch made the parent's work grow with N.
            now = time.monotonic()
            if now - last_report < REPORT_EVERY:
                continue
            if now - last_stats >= STATS_EVERY:
                link.report(runner.counters())
                last_stats = now
            else:
                link.report()
            last_report = now
            try:
                message = decode_parent_message(control.recv(zmq.NOBLOCK))
            except zmq.Again:
                message = None
            if isinstance(message, Reload) and not building:
                built = swap_at = None
                building = _start_build(message.sources, message.rules_format, message.generation, message.options)
            elif isinstance(message, Swap) and built is not None and message.generation == built.generation:
                swap_at = message.at_us
            elif isinstance(message, Drop):
                built = swap_at = None
            if building and not building[0].is_alive():
                result = building[1][0]
                building = []
                if result.ok:
                    built = result
                    link.send(Built(worker, result.generation, None, result.counts))
                else:
                    link.send(Built(worker, result.generation, result.error, None))
        return runner.finish()  # the flows and pending queries out, then the last report
    finally:
        runner.abort()
        link.close()
        control.close()
        context.term()


def _first_at(meta: bytes, when_us: int) -> int:
    """Index of the first frame of a batch whose packet time is at or after `when_us` (frames if none)."""
    for index, (sec, usec, _, _) in enumerate(META_RECORD.iter_unpack(meta)):
        if sec * 1_000_000 + usec >= when_us:
            return index
    return len(meta) // META_RECORD.size


def _start_build(sources: list[tuple[str, str, bool]], rules_format: str | None, generation: int,
                 options: dict[str, Any] | None = None) -> list[Any]:
    holder: list[ReloadResult] = []
    compile_for_loop = functools.partial(compile_rules, keep_table=False)
    thread = threading.Thread(target=lambda: holder.append(build(sources, rules_format, generation, compile_for_loop,
                                                                               options)),
                              name=f"rules-reload-{generation}", daemon=True)
    thread.start()
    return [thread, holder]


def release(entries: Sequence[tuple[Any, Any]], pipeline: Any, origin: Origin) -> None:
    """The merge's output to the pipeline, in order: hits as hits, anomalies (rate-limited there) as anomalies."""
    for rule, record in entries:
        if rule is ANOMALY:
            pipeline.anomalies((record,), origin)
        else:
            pipeline.hit(record, origin, rule=rule)


ANOMALY = object()  # WatermarkMerge's mark, in place of a rule, on an anomaly record


class WatermarkMerge:
    """Holds hits and anomalies until every worker has read past their packet time, then releases them in time
    order (equal times: by worker, then by the worker's frame number, so one worker's packet order holds)."""

    def __init__(self, workers: int, max_pending: int = MAX_MERGE_PENDING) -> None:
        self.watermarks: dict[int, float] = dict.fromkeys(range(workers), 0.0)
        self.heap: list = []
        self.sequence = 0
        self.max_pending = max_pending
        self.released_early = 0  # entries let out past max_pending before every worker had read past them

    def add(self, worker: int, watermark: int, entries: Sequence[tuple[Rule, DnsRecord]],
            anomalies: Sequence[Sequence[Any]] = ()) -> None:
        """`entries`: (rule, record) pairs of one worker, in its packet order; `anomalies`: its anomaly records
        (sensor.anomalies.AnomalyRecord order: kind, frame, seconds, microseconds, ...), released as
        (ANOMALY, record)."""
        self.watermarks[worker] = max(self.watermarks[worker], watermark)
        for entry in entries:
            self.sequence += 1
            record = entry[1]
            heapq.heappush(self.heap, (record.ts_sec * 1_000_000 + record.ts_usec, worker, record.frame,
                                       self.sequence, entry))
        for anomaly in anomalies:
            self.sequence += 1
            heapq.heappush(self.heap, (anomaly[2] * 1_000_000 + anomaly[3], worker, anomaly[1], self.sequence,
                                       (ANOMALY, anomaly)))

    def finish(self, worker: int) -> None:
        self.watermarks[worker] = float("inf")

    def ready(self) -> list[tuple[Rule, DnsRecord]]:
        limit = min(self.watermarks.values())
        out = []
        while self.heap and (self.heap[0][0] <= limit or len(self.heap) > self.max_pending):
            if self.heap[0][0] > limit:
                self.released_early += 1
            out.append(heapq.heappop(self.heap)[-1])
        return out

    def counters(self) -> dict[str, int]:
        return {"merge_pending": len(self.heap), "merge_released_early": self.released_early}


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _exited(pid: int) -> int | None:
    """None while the worker runs; then its exit code (-N when killed by signal N)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return -1
    if done != pid:
        return None
    return os.waitstatus_to_exitcode(status)


def worker_loss(index: int, status: int, board: StatsBoard) -> str:
    """What a worker that died took with it, as far as the parent knows: the summary's line."""
    how = how_it_ended(status) if status != 0 else "exited without its last report"
    worker = board.workers.get(index)
    packets = worker.counters.get("packets", 0) if worker is not None else 0
    return (f"capture worker {index} {how}: lost what it had not reported (up to {STATS_EVERY:.0f} s of counters, "
            f"{REPORT_EVERY:.2f} s of hits, its pending queries, flows and kernel ring); its last report counted "
            f"{packets:,} packets")

def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
