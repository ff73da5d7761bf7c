"""The BatchRunner: one run of the decode loop over batches of frames, with the hit pipeline and every sink.

Replay, the single live capture, each capture worker and flow building all run their batches through one
BatchRunner (docs/architecture.md, docs/decisions/0070-batch-runner.md). It owns

- the loop (a new one per capture source, `open()`; the flow table is shared by the loops of every file),
- where records go: the hit pipeline in the process that publishes, or, in a capture worker, its WorkerLink
  to the parent (records as DnsRecord structs, flows as FLOW_DTYPE bytes),
- the sinks: flows (the FlowSink and its table), the query log (this process's sink, and the writer process
  in the process that started it), the hit outputs.

`feed(batch)` decodes one batch and hands everything it made to where it goes. `finish()` is the one ending:
it drains the tables, flushes and closes the sinks (even after a fault), writes the summary (only a process
that publishes has one: a worker's ending sends its counters and records to the parent instead) and decides
the exit code.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sensor.anomalies import take_anomalies
from sensor.capture.files import BATCH_FRAMES, Batch
from sensor.errors import CaptureCutOff, HelperDied
from sensor.events import Origin
from sensor.loop import keep_batch_memory, make_loop
from sensor.messages import DnsRecord, records_of
from sensor.pipeline import HitPipeline, Output
from sensor.records import TABLE_GAUGES
from sensor.rules.compiled import CompiledRules
from sensor.summary import Summary, lost_lines, write_json

if TYPE_CHECKING:  # numpy loads only when flows are on
    import numpy as np

log = logging.getLogger("truesource")

FRAME_META = 16  # bytes of per-frame metadata in a batch (sensor/capture/files.py: META)


class WorkerLink(Protocol):
    """A capture worker's pipe to its parent (sensor/capture/workers.py)."""

    def records(self, records: list[DnsRecord]) -> None: ...
    def anomalies(self, records: Sequence[tuple[Any, ...]]) -> None: ...
    def flows(self, data: np.ndarray) -> None: ...
    def finish(self, counters: dict[str, int]) -> None: ...


class BatchRunner:
    """One run's loop, pipeline and sinks; see the module docstring."""

    def __init__(
        self,
        ports: Sequence[int],
        rules: CompiledRules | dict[str, Any],
        *,
        pipeline: HitPipeline | None = None,
        outputs: Sequence[Output] = (),
        flows: Any = None,
        flow_table: Any = None,
        on_flows: Callable[[np.ndarray], None] | None = None,
        query_log: Any = None,
        query_log_writer: Any = None,
        limits: dict[str, Any] | None = None,
        emit_all: bool = False,
        trace: Callable[[int, list[DnsRecord]], None] | None = None,
        link: WorkerLink | None = None,
        worker: int = 0,
        pure: bool | None = None,
        batch_frames: int = BATCH_FRAMES,
    ) -> None:
        """`flows`: a FlowSink (its table, if any, is the loops'); `flow_table` and `on_flows`: a table and where
        its records go when there is no sink (a worker, flow building). `query_log`: this process's
        QueryLogSink; `query_log_writer`: the writer process, stopped by finish() (a replay's InlineQueryLog is
        both). `link`: a worker's pipe to
        its parent: then records go there, not to a pipeline."""
        keep_batch_memory()  # each batch's buffers reuse the last one's pages (decision 0209)
        self.ports = tuple(ports)
        self.rules = rules
        self.outputs: list[Output] = outputs if isinstance(outputs, list) else list(outputs)  # closed by finish()
        self.pipeline: HitPipeline | None = None
        self.flows: Any = None
        self.flow_table: Any = None
        self.on_flows: Callable[[np.ndarray], None] | None = None
        self.query_log: Any = None
        self.query_log_writer: Any = None
        self.query_log_drops = 0  # entries dropped in other processes (workers), added to the summary line
        self.emit_all = emit_all
        self.attach(pipeline=pipeline, flows=flows, flow_table=flow_table, on_flows=on_flows, query_log=query_log,
                    query_log_writer=query_log_writer)
        self.limits = dict(limits or {})
        self.trace = trace
        self.link = link
        self.worker = worker
        self.pure = pure
        self.batch_frames = batch_frames  # frames read at once (the memory budget may lower it)
        self.loop: Any = None
        self.origin = Origin()
        self.totals: Counter[str] = Counter()  # counters of the sources already ended
        self.sources = 0
        self.cut_off: CaptureCutOff | None = None
        self.failed = False  # a part of the run failed (a worker, the query-log writer): exit 1
        self.notes: list[str] = []  # lines for the end of the summary (a helper that died, what it lost)
        self.fail_on_lost_lines = False  # replay: an --out file that lost lines (a full disk) fails the run
        self._open = False
        self._finished = False

    def attach(self, *, pipeline: HitPipeline | None = None, flows: Any = None, flow_table: Any = None,
               on_flows: Callable[[np.ndarray], None] | None = None, query_log: Any = None,
               query_log_writer: Any = None) -> None:
        """Sinks made after the runner (so that a failed start still closes what was opened): set before open()."""
        if pipeline is not None:
            self.pipeline = pipeline
            self.emit_all = self.emit_all or pipeline.wants_every_message
        if flows is not None:
            self.flows = flows
            self.flow_table = flows.table
            self.on_flows = flows.deliver
        if flow_table is not None:
            self.flow_table = flow_table
        if on_flows is not None:
            self.on_flows = on_flows
        if query_log is not None:
            self.query_log = query_log
        if query_log_writer is not None:
            self.query_log_writer = query_log_writer

    # --- running -------------------------------------------------------------------------------------------

    def open(self, linktype: int, origin: Origin) -> Any:
        """A new loop for the next capture source (ending the previous one); the flow table carries over."""
        if self._open:
            self.end_source()
        extra: dict[str, Any] = {"flows": self.flow_table} if self.flow_table is not None else {}
        self.loop = make_loop(linktype, self.ports, self.rules, emit_all=self.emit_all, pure=self.pure,
                              **self.limits, query_log=self.query_log is not None, **extra)
        self.origin = origin
        self._open = True
        return self.loop

    def feed(self, batch: Batch, start: int = 0, stop: int | None = None) -> None:
        """Decode frames `start` to `stop` (default: all) of a batch; records, flows and query-log entries out."""
        if stop is None and start == 0:
            raw = self.loop.run_batch(batch.data, batch.meta, batch.first_frame)
        else:
            end = batch.frames if stop is None else stop
            raw = self.loop.run_batch(batch.data, batch.meta[start * FRAME_META:end * FRAME_META],
                                      batch.first_frame + start)
        if raw:
            self._records(records_of(raw))
        if stop is None:
            self.drain()

    def _records(self, records: list[DnsRecord]) -> None:
        if self.trace is not None:
            self.trace(self.worker, records)
        if self.link is not None:
            self.link.records(records)
        elif self.pipeline is not None:
            self.pipeline.records(records, self.origin)

    def drain(self) -> None:
        """What the tables finished since the last batch: anomalies, flow records and query-log entries out."""
        if self.loop is not None:  # issue 13: anomaly events (sensor/anomalies.py); a worker's go to the parent
            anomalies = take_anomalies(self.loop)
            if anomalies and self.link is not None:
                self.link.anomalies(anomalies)
            elif anomalies and self.pipeline is not None:
                self.pipeline.anomalies(anomalies, self.origin)
        if self.flow_table is not None and self.on_flows is not None:
            arr = self.flow_table.take()
            if len(arr) or self.flows is not None:  # a flow store rotates its file on empty batches too
                self.on_flows(arr)
        if self.query_log is not None:
            if self.loop is not None:
                self.query_log.take(self.loop, self.origin)
            self.query_log.watch()

    def watch(self) -> None:
        """Raise HelperDied if the query-log writer this process started has died (looked at a few times a
        second at most; a no-op elsewhere)."""
        if self.query_log is not None:
            self.query_log.watch()

    def idle(self, now_us: int) -> None:
        """No traffic (live capture): idle flows still leave on wall-clock time."""
        if self.flow_table is not None:
            self.flow_table.expire_idle(now_us)
            if self.on_flows is not None:
                arr = self.flow_table.take()
                if len(arr) or self.flows is not None:
                    self.on_flows(arr)
        self.watch()

    def set_rules(self, rules: CompiledRules) -> None:
        """A reload: the new rules decide from the next frame on."""
        self.rules = rules
        if self.loop is not None:
            self.loop.set_rules(rules.table, **rules.loop_args())

    def counters(self) -> dict[str, int]:
        """The current source's loop counters (gauges included), with the query-log entries this process dropped."""
        counters: dict[str, int] = dict(self.loop.counters()) if self.loop is not None else {}
        if self.query_log is not None:
            counters["query_log_drops"] = self.query_log.dropped
        return counters

    def flush_outputs(self) -> None:
        """Push what the hit outputs hold to their readers now (a pipe's partial batch: the hit is seen at once), and
        commit what a replay's own query log holds (a pipe may then stay quiet for long)."""
        if self.pipeline is not None:
            self.pipeline.flush()
        if self.query_log is not None:
            self.query_log.commit()

    def end_source(self) -> None:
        """The current source is done: its pending queries finish (unanswered) and its counters are added."""
        if not self._open:
            return
        self._open = False
        if self.query_log is not None:
            try:
                self.query_log.flush(self.loop, self.origin)
            except HelperDied as died:  # noticed only now: the summary says what was lost
                log.error("%s", died)
                self.failed = True
        counters = self.loop.counters()
        for gauge in TABLE_GAUGES:  # how full a table is now: not a count to add up over files
            counters.pop(gauge, None)
        self.totals.update(counters)
        self.sources += 1

    # --- the one ending -------------------------------------------------------------------------------------

    def finish(self, final: Callable[[], None] | None = None,
               summary: Callable[[BatchRunner], Summary] | None = None) -> int:
        """Drain the tables, flush and close every sink, write the summary, and return the exit code.

        `final`: called after the last records are out, before the outputs close (capture's last
        sensor.stats event). `summary`: the command's lines and JSON, asked for once the outputs are closed
        (their counts are final); a worker has none. Closing runs even when draining raises.
        """
        if self._finished:
            return self.exit_code()
        self._finished = True
        log_line = None
        try:
            self.end_source()
            if self.flow_table is not None:
                self.flow_table.flush()
                self.drain()
            if self.link is not None:
                self.link.finish(self.counters())
            if final is not None:
                final()
        finally:
            try:
                if self.flows is not None:
                    self.flows.close()
                log_line = self._stop_query_log()
            finally:
                for output in self.outputs:
                    output.close()
        if summary is not None:
            made = summary(self)
            lines = list(made.lines)
            if self.flows is not None:
                lines.append(self.flows.summary())
            if log_line:
                lines.append(log_line)
            lines.extend(self.notes)
            for line in lines:
                print(line, file=sys.stderr)
            if made.json_path:
                write_json(made.json_path, made.json_body)
        if self.fail_on_lost_lines and lost_lines(self.outputs):
            self.failed = True
        return self.exit_code()

    def abort(self) -> None:
        """A start or run that failed before finish(): close what was opened, write nothing."""
        if self._finished:
            return
        self._finished = True
        try:
            if self.flows is not None:
                self.flows.close()
            self._stop_query_log()
        finally:
            for output in self.outputs:
                output.close()

    def _stop_query_log(self) -> str | None:
        if self.query_log_writer is None:
            if self.query_log is not None:
                self.query_log.close()
            return None
        line, died = self.query_log_writer.stop(self.query_log, self.query_log_drops)
        self.failed = self.failed or died
        return line

    def exit_code(self) -> int:
        if self.cut_off is not None:
            return self.cut_off.exit_code
        return 1 if self.failed else 0
