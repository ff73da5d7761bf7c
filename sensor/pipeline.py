"""From hit records to outputs: resolver attribution, ECS encoding, every output. Shared by replay and capture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sensor.anomalies import ANOMALY_TOPIC, AnomalySink
from sensor.attribution import ResolverAttribution
from sensor.events import HIT_TOPIC, HitEncoder, Origin
from sensor.messages import DnsRecord
from sensor.rules.model import Rule


class Output(Protocol):
    def write(self, topic: str, line: str) -> None: ...
    def close(self) -> None: ...


class Heuristics(Protocol):
    def observe(self, msg: DnsRecord) -> list: ...
    def counters(self) -> dict[str, int]: ...


class HitPipeline:
    """Records in packet-time order in; one JSON event per hit out, to every output."""

    def __init__(self, encoder: HitEncoder, outputs: Sequence[Output],
                 attribution: ResolverAttribution | None = None, heuristics: Heuristics | None = None) -> None:
        self.encoder = encoder
        self.outputs = outputs
        self.attribution = attribution
        self.heuristics = heuristics  # a HeuristicEngine: then the loop hands over every message, not only hits
        self.hits = 0
        self.anomaly_sink = AnomalySink(encoder.observer_for)  # issue 13: anomaly events (sensor/anomalies.py)

    @property
    def wants_every_message(self) -> bool:
        return self.heuristics is not None

    def record(self, record: DnsRecord, origin: Origin, rule: Rule | None = None) -> None:
        """One record from the loop: a rule hit, and (with heuristics on) a query the detectors judge."""
        if record.rule >= 0:
            self.hit(record, origin, rule)
        if self.heuristics is not None and not record.is_response:
            self.judge(record, origin)

    def records(self, records: Sequence[DnsRecord], origin: Origin) -> None:
        """A batch of records from this process's loop: record() for each, with the per-hit path's lookups made
        once per batch (hits are a few per batch; each costs microseconds that add up at a 3% hit rate)."""
        if self.heuristics is not None:
            for record in records:
                self.record(record, origin)
            return
        link = self.attribution.linker if self.attribution is not None else None
        lines = self.encoder.hit_lines(records, origin, link)
        if not lines:
            return
        self.hits += len(lines)
        for output in self.outputs:  # the batch's lines at once where the output takes them so (JSON lines)
            write_lines = getattr(output, "write_lines", None)
            if write_lines is not None:
                write_lines(HIT_TOPIC, lines)
            else:
                for line in lines:
                    output.write(HIT_TOPIC, line)

    def judge(self, msg: DnsRecord, origin: Origin) -> None:
        if self.heuristics is None:
            return
        for found in self.heuristics.observe(msg):
            line = self.encoder.encode(self.encoder.heuristic_event(msg, origin, found))
            for output in self.outputs:
                output.write(HIT_TOPIC, line)

    def hit(self, msg: DnsRecord, origin: Origin, rule: Rule | None = None) -> None:
        """`rule`: the record's rule when it came from a worker (else it is read from the encoder's rule set)."""
        attribution = self.attribution.linker(msg) if self.attribution is not None else None
        line = self.encoder.hit_line(msg, origin, attribution, rule)
        self.hits += 1
        for output in self.outputs:
            output.write(HIT_TOPIC, line)

    def anomalies(self, records: Sequence[Sequence], origin: Origin) -> None:
        """Anomalies a loop saw (this process's, or a worker's), as events (rate-limited) on every output."""
        self.anomaly_records(records, origin)

    def encrypted_dns_hook(self, resolvers: list[str]):
        """A flow-record callback: clients that bypass `resolvers` with DoT or DoH (sensor/encrypted_dns.py)."""
        from sensor.encrypted_dns import EncryptedDnsCheck

        check = EncryptedDnsCheck(resolvers)

        def on_records(arr) -> None:
            self.anomaly_records(check.check(arr))

        return on_records

    def anomaly_records(self, records: Sequence[Sequence], origin: Origin | None = None) -> None:
        """Anomaly records from outside the loop (flows), rate-limited, to every output."""
        for line in self.anomaly_sink.encode(records, origin):
            for output in self.outputs:
                output.write(ANOMALY_TOPIC, line)

    def state_counters(self) -> dict[str, int]:
        """Sizes and evictions of the bounded tables behind the loop: attribution, heuristics (docs/limits.md)."""
        out = self.attribution.counters() if self.attribution is not None else {}
        out.update(self.anomaly_sink.counters())
        if self.heuristics is not None:
            out.update({f"heuristics_{k}": v for k, v in self.heuristics.counters().items()})
        for output in self.outputs:
            if hasattr(output, "state_counters"):
                for key, value in output.state_counters().items():  # two --out files: their drops add up
                    out[key] = out.get(key, 0) + value
        return out

    def flush(self) -> None:
        """Hand what the outputs buffered to their readers now (a pipe's input arrives slowly: its hits go out
        batch by batch, not when a buffer fills)."""
        for output in self.outputs:
            if hasattr(output, "flush"):
                output.flush()

    def publish(self, topic: str, line: str) -> None:
        """A non-hit event (statistics, reloads) to every output that takes it."""
        for output in self.outputs:
            output.write(topic, line)
