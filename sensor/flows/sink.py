"""Where a run's flow records go: taken from the table once per batch, directions set, handed to each output."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sensor.flows.ecs import FLOW_TOPIC, flow_lines
from sensor.flows.record import classify_direction
from sensor.flows.settings import FlowSettings


class FlowSink:
    """The outputs of one run: a flow store, an IPFIX collector, the ZeroMQ topic `flow` (any of them, or none:
    then flows are only counted). `table` is the loop's flow table (None in a parent whose workers build flows)."""

    def __init__(self, settings: FlowSettings, table=None, store=None, ipfix=None,
                 publish: Callable[[str, str], None] | None = None, observer=None) -> None:
        self.settings = settings
        self.table = table
        self.store = store
        self.ipfix = ipfix
        self.publish = publish
        self.observer = observer or None  # a schema.Observer
        self.records = 0
        self.packets = 0
        self.on_records: Callable[[np.ndarray], None] | None = None  # issue 13: the encrypted-DNS check

    def drain(self) -> int:
        """Records the table emitted since the last call (after each batch), out to every output."""
        arr = self.table.take() if self.table is not None else np.zeros(0)
        self.deliver(arr)
        return len(arr)

    def deliver(self, arr: np.ndarray) -> None:
        """Records from this process's table or a worker's: direction set, then to every output."""
        if len(arr):
            classify_direction(arr, self.settings.internal)
            if self.on_records is not None:
                self.on_records(arr)
            self.records += len(arr)
            self.packets += int(arr["packets"].sum())
            if self.ipfix is not None:
                self.ipfix.export(arr)
            if self.publish is not None:
                for line in flow_lines(arr, self.observer):
                    self.publish(FLOW_TOPIC, line)
        if self.store is not None:
            self.store.write(arr)  # also when empty: a quiet capture still rotates its file

    def expire_idle(self, now_us: int) -> None:
        """Live capture with no traffic: idle flows still leave on wall-clock time."""
        if self.table is not None:
            self.table.expire_idle(now_us)
            self.drain()

    def finish(self) -> None:
        """End of a replay or stop: every flow out (reason forced), outputs closed."""
        if self.table is not None:
            self.table.flush()
            self.drain()
        self.close()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.ipfix is not None:
            self.ipfix.close()

    def summary(self) -> str:
        parts = [f"flows: {self.records:,} records ({self.packets:,} packets)"]
        if self.store is not None:
            parts.append(f"{len(self.store.files)} store file(s) in {self.store.directory}")
            if self.store.lost:
                parts.append(f"{self.store.lost:,} records not stored (flow store errors)")
        if self.ipfix is not None:
            parts.append(f"IPFIX {self.ipfix.messages:,} messages, {self.ipfix.send_errors:,} send errors")
        return ", ".join(parts)
