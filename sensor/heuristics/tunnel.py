"""DNS tunnelling: per (client address, registered domain), in tumbling windows of packet time, the signs of
data carried in names: many distinct subdomains, long labels, data-carrying query types, bytes of names.

A window opens at a key's first query and closes `tunnel_window` seconds later (the next query after that
opens a new one). A key alerts at most once per window: a tunnel that keeps running alerts again in each
later window in which it still crosses the thresholds, so it is seen as ongoing without one alert per query.
Windows live in a table of at most `tunnel_max_keys`; past it the least recently seen key is evicted and
counted (`tunnel_evictions`); a flood of clients or domains costs memory no larger than the limit.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from sensor.heuristics.config import HeuristicsConfig
from sensor.heuristics.hit import HeuristicHit

DISTINCT_CAP_FACTOR = 4  # distinct subdomains are counted exactly up to 4x the threshold, then only "at least"
SAMPLE_CHARS = 80  # the evidence keeps one subdomain as an example, cut to this length


@dataclass(slots=True)
class Window:
    start: float
    queries: int = 0
    long_queries: int = 0
    data_queries: int = 0
    name_bytes: int = 0
    max_label: int = 0
    distinct: set[int] = field(default_factory=set)  # hashes of lowercase subdomains, bounded by the cap
    alerted: bool = False
    sample: str = ""


class TunnelDetector:
    def __init__(self, config: HeuristicsConfig) -> None:
        self.config = config
        self.data_qtypes = frozenset(config.tunnel_data_qtypes)
        self.distinct_cap = config.tunnel_min_distinct * DISTINCT_CAP_FACTOR
        self.windows: OrderedDict[tuple[bytes, str], Window] = OrderedDict()
        self.counters = Counter({"tunnel_hits": 0, "tunnel_evictions": 0, "tunnel_windows": 0})

    def observe(
        self,
        ts: float,
        client: bytes,
        registered: str,
        sub_labels: tuple[str, ...],
        sub_bytes: tuple[int, ...],
        qtype: int,
    ) -> HeuristicHit | None:
        cfg = self.config
        key = (client, registered)
        win = self.windows.get(key)
        if win is None or ts - win.start >= cfg.tunnel_window or ts < win.start - cfg.tunnel_window:
            # new key, or its window is over (a clock that jumps back a whole window also restarts it)
            win = Window(ts)
            self.counters["tunnel_windows"] += 1
            if key not in self.windows and len(self.windows) >= cfg.tunnel_max_keys:
                self.windows.popitem(last=False)
                self.counters["tunnel_evictions"] += 1
            self.windows[key] = win
        self.windows.move_to_end(key)
        win.queries += 1
        if qtype in self.data_qtypes:
            win.data_queries += 1
        if sub_labels:
            longest = max(sub_bytes)
            win.max_label = max(win.max_label, longest)
            if longest >= cfg.tunnel_long_label:
                win.long_queries += 1
            win.name_bytes += sum(sub_bytes) + len(sub_bytes)  # + one length byte per label, as on the wire
            if len(win.distinct) < self.distinct_cap:
                win.distinct.add(hash(".".join(sub_labels).lower()))
            win.sample = ".".join(sub_labels)[:SAMPLE_CHARS]
        if win.alerted or len(win.distinct) < cfg.tunnel_min_distinct:
            return None
        met = self._indicators(win)
        if len(met) < cfg.tunnel_min_indicators:
            return None
        win.alerted = True
        self.counters["tunnel_hits"] += 1
        return HeuristicHit("tunnel", float(len(met)), float(cfg.tunnel_min_indicators), self._evidence(key, win, met))

    def _indicators(self, win: Window) -> list[str]:
        cfg = self.config
        met = ["distinct_subdomains"]  # the caller checked it: required
        if win.long_queries / win.queries >= cfg.tunnel_long_share:
            met.append("long_labels")
        if win.data_queries / win.queries >= cfg.tunnel_data_share:
            met.append("data_qtypes")
        if win.name_bytes >= cfg.tunnel_name_bytes:
            met.append("name_bytes")
        return met

    def _evidence(self, key: tuple[bytes, str], win: Window, met: list[str]) -> dict:
        client, registered = key
        return {
            "client": str(ipaddress.ip_address(client)) if len(client) in (4, 16) else client.hex(),
            "registered_domain": registered,
            "window_start": win.start,
            "window_seconds": self.config.tunnel_window,
            "queries": win.queries,
            "distinct_subdomains": len(win.distinct),
            "distinct_capped": len(win.distinct) >= self.distinct_cap,
            "long_label_share": round(win.long_queries / win.queries, 3),
            "data_qtype_share": round(win.data_queries / win.queries, 3),
            "name_bytes": win.name_bytes,
            "max_label_bytes": win.max_label,
            "indicators": met,
            "sample_subdomain": win.sample,
        }
