"""Runs the enabled heuristic detectors over each query the loop hands over."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from sensor.heuristics.config import HeuristicsConfig
from sensor.heuristics.dga import DgaDetector
from sensor.heuristics.domains import DomainSplitter
from sensor.heuristics.hit import HeuristicHit
from sensor.heuristics.tunnel import TunnelDetector
from sensor.records import DnsMessage

if TYPE_CHECKING:  # a hit from the runner (sensor/messages.py) has the same fields as the loop's tuple
    from sensor.messages import DnsRecord


class HeuristicEngine:
    def __init__(self, config: HeuristicsConfig | None = None) -> None:
        self.config = config or HeuristicsConfig()
        self.splitter = DomainSplitter()
        self.exempt = frozenset(self.config.exempt_domains)
        self.dga = DgaDetector(self.config) if "dga" in self.config.detectors else None
        self.tunnel = TunnelDetector(self.config) if "tunnel" in self.config.detectors else None
        self._counters = Counter({"queries": 0, "responses_ignored": 0, "no_registered_domain": 0, "exempt": 0})

    def observe(self, msg: DnsMessage | DnsRecord) -> list[HeuristicHit]:
        """Hits for one decoded message; responses are ignored (the detectors judge what clients ask)."""
        if msg.flags & 0x8000:
            self._counters["responses_ignored"] += 1
            return []
        self._counters["queries"] += 1
        split = self.splitter.split(msg.qname)
        if split is None:
            self._counters["no_registered_domain"] += 1
            return []
        if split.registered in self.exempt:
            self._counters["exempt"] += 1
            return []
        hits = []
        if self.dga is not None:
            hit = self.dga.check(split.registered, split.label)
            if hit is not None:
                hits.append(hit)
        if self.tunnel is not None:
            ts = msg.ts_sec + msg.ts_usec / 1e6
            hit = self.tunnel.observe(ts, msg.src_ip, split.registered, split.sub_labels, split.sub_bytes, msg.qtype)
            if hit is not None:
                hits.append(hit)
        return hits

    def counters(self) -> dict[str, int]:
        out = dict(self._counters)
        if self.dga is not None:
            out.update(self.dga.counters)
        if self.tunnel is not None:
            out.update(self.tunnel.counters)
            out["tunnel_keys"] = len(self.tunnel.windows)
        cache = self.splitter.split.cache_info()
        out["split_cache_size"] = cache.currsize
        out["split_cache_evictions"] = cache.misses - cache.currsize  # every miss is stored; the rest were evicted
        return out
