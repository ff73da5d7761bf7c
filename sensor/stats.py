"""Sensor statistics: per worker and in total, published on topic `sensor.stats` and printed at exit."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

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
        self.rules_loaded = 0
        self.reloads = 0
        self.reload_failures = 0
        self.last_packet: float | None = None  # wall-clock time a worker's packet count last grew
        # Counters kept outside the workers' loops (the parent's merge, attribution, heuristics, outputs): each a
        # callable returning a dict, summed into total() at every statistics event.
        self.sources: list[Callable[[], dict[str, int]]] = []

    def update(self, worker: int, counters: dict[str, int], pcap: tuple[int, int, int] | None) -> None:
        stats = self.workers[worker]
        if counters.get("packets", 0) > stats.counters.get("packets", 0):
            self.last_packet = time.time()
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

    def snapshot(self, publisher_sent: int = 0, publisher_dropped: int = 0) -> dict:
        """Totals, drops by cause, rules and the last packet time: what `sensor.stats` and /metrics show."""
        now = time.time()
        total = dict(self.total())
        total["publisher_sent"] = publisher_sent
        total["publisher_drops"] = publisher_dropped
        return {
            "now": now,
            "uptime": round(now - self.started, 3),
            "total": total,
            "drops": {"kernel": total.get("kernel_drops", 0), "interface": total.get("interface_drops", 0),
                      "publisher": publisher_dropped},
            "rules": {"loaded": self.rules_loaded, "reloads": self.reloads, "reload_failures": self.reload_failures},
            "last_packet": self.last_packet,
        }

    def event(self, observer, interface: str, publisher_sent: int, publisher_dropped: int, final: bool = False):
        """The `sensor.stats` record (sensor/schema.py, imported here: the command line starts without it)."""
        import msgspec

        from sensor.schema import ECS, Event, Ingress, Interface, StatsDetail, StatsEvent, StatsTruesource, rfc3339

        snap = self.snapshot(publisher_sent, publisher_dropped)
        now, total = snap["now"], snap["total"]
        last = snap["last_packet"]
        return StatsEvent(
            timestamp=rfc3339(int(now), int(now % 1 * 1_000_000)),
            ecs=ECS,
            event=Event(kind="metric", dataset="truesource.stats", module="truesource"),
            observer=msgspec.structs.replace(observer, ingress=Ingress(interface=Interface(name=interface))),
            truesource=StatsTruesource(stats=StatsDetail(
                final=final, uptime=snap["uptime"], total=total, drops=snap["drops"], rules=snap["rules"],
                last_packet=rfc3339(int(last), int(last % 1 * 1_000_000)) if last else None,
                workers=[s.as_dict() for s in self.workers.values()])),
        )
