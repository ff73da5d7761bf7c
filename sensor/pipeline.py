"""From hit records to outputs: resolver attribution, ECS encoding, every output. Shared by replay and capture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sensor.attribution import ResolverAttribution
from sensor.events import HIT_TOPIC, HitEncoder, Origin
from sensor.records import DnsMessage
from sensor.rules.model import RuleSet


class Output(Protocol):
    def write(self, topic: str, line: str) -> None: ...
    def close(self) -> None: ...


class HitPipeline:
    """Records in packet-time order in; one JSON event per hit out, to every output."""

    def __init__(self, encoder: HitEncoder, outputs: Sequence[Output],
                 attribution: ResolverAttribution | None = None) -> None:
        self.encoder = encoder
        self.outputs = outputs
        self.attribution = attribution
        self.hits = 0

    def hit(self, record: tuple, origin: Origin, ruleset: RuleSet | None = None) -> None:
        msg = DnsMessage._make(record)
        attribution = self.attribution.link(msg) if self.attribution is not None else None
        line = self.encoder.encode(self.encoder.event(msg, origin, attribution, ruleset))
        self.hits += 1
        for output in self.outputs:
            output.write(HIT_TOPIC, line)

    def publish(self, topic: str, line: str) -> None:
        """A non-hit event (statistics, reloads) to every output that takes it."""
        for output in self.outputs:
            output.write(topic, line)
