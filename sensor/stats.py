"""Sensor statistics: per worker and in total, published on topic `sensor.stats` and printed at exit."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sensor.events import rfc3339

STATS_TOPIC = "sensor.stats"
DEFAULT_STATS_INTERVAL = 5.0  # seconds between `sensor.stats` events


@dataclass(slots=True)
class WorkerStats:
    """The latest snapshot a worker reported: its loop's counters and its handle's pcap statistics."""

    worker: int
    counters: dict[str, int] = field(default_factory=dict)
    received: int = 0
    kernel_drops: int = 0
    interface_drops: int = 0

    def as_dict(self) -> dict:
        return {"id": self.worker, "received": self.received, "kernel_drops": self.kernel_drops,
                "interface_drops": self.interface_drops, **self.counters}


class StatsBoard:
    """Holds every worker's last snapshot and sums them."""

    def __init__(self, workers: int) -> None:
        self.workers = {i: WorkerStats(i) for i in range(workers)}
        self.started = time.time()
        # Counters kept outside the workers' loops (the parent's merge, attribution, heuristics, outputs): each a
        # callable returning a dict, summed into total() at every statistics event.
        self.sources: list[Callable[[], dict[str, int]]] = []

    def update(self, worker: int, counters: dict[str, int], pcap: tuple[int, int, int] | None) -> None:
        stats = self.workers[worker]
        stats.counters = counters
        if pcap is not None:
            stats.received, stats.kernel_drops, stats.interface_drops = pcap

    def total(self) -> Counter:
        total: Counter = Counter()
        for stats in self.workers.values():
            total.update(stats.counters)
            total["received"] += stats.received
            total["kernel_drops"] += stats.kernel_drops
            total["interface_drops"] += stats.interface_drops
        for source in self.sources:
            total.update(source())
        return total

    def event(self, observer: dict, interface: str, publisher_sent: int, publisher_dropped: int,
              final: bool = False) -> dict:
        now = time.time()
        total = dict(self.total())
        total["publisher_sent"] = publisher_sent
        total["publisher_drops"] = publisher_dropped
        return {
            "@timestamp": rfc3339(int(now), int(now % 1 * 1_000_000)),
            "event": {"kind": "metric", "dataset": "truesource.stats", "module": "truesource"},
            "observer": {**observer, "ingress": {"interface": {"name": interface}}},
            "truesource": {
                "stats": {
                    "final": final,
                    "uptime": round(now - self.started, 3),
                    "total": total,
                    "workers": [s.as_dict() for s in self.workers.values()],
                }
            },
        }
