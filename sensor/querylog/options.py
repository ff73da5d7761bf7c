"""The query log's settings and defaults: light to import, since every `truesource` command builds the whole
parser (sensor/commands/querylog.py and sensor/commands/common.py turn options into these)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

SEGMENT_ROWS = 200_000  # queries per segment: readers scan the open one unindexed (45-67 ms here when full)
DEFAULT_MAX_MB = 10_240  # a store left to itself stops at 10 GiB (about 40 M queries at 244 bytes each)
QUERY_LOG_ENV = "TRUESOURCE_QUERY_LOG"  # where the commands read when --query-log is not given
DEFAULT_AROUND_WINDOW = 300.0  # seconds either side of --around
DEFAULT_ATTRIBUTION_WINDOW = 5.0  # sensor.attribution.DEFAULT_WINDOW, here without its imports (a test checks)
DEFAULT_RESOLVER_TOLERANCE = 1.0  # seconds either side of --resolver-query: clocks of the IDS and the sensor differ
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
RELATIVE = re.compile(r"^([+-]?)(\d+(?:\.\d+)?)([smhdw]?)$")


@dataclass(frozen=True, slots=True)
class Retention:
    """How much the writer keeps: queries newer than `max_age_seconds` (packet time against the clock) and a
    file of at most `max_bytes`. 0: no limit. Both drop whole segments, oldest first; the open segment stays."""

    max_age_seconds: float = 0.0
    max_bytes: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.max_age_seconds or self.max_bytes)


@dataclass(frozen=True, slots=True)
class QueryLogOptions:
    path: str
    retention: Retention = Retention()
    segment_rows: int = SEGMENT_ROWS
    publish: bool = False  # --publish-queries: every logged query on topic dns.query too


def directory_message(path: str) -> str:
    """The one line for a --query-log that names a directory."""
    return f"{path}: is a directory; --query-log takes a file (e.g. {os.path.join(path, 'queries.db')})"
