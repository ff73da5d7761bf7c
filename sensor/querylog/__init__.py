"""The query log: every client query with its correlated response (docs/querylog.md).

`record` holds the entry both loops hand over (`QueryLogEntry`); the correlation and IP reassembly happen in
the fast path (`ext/correlate.pxi`, `ext/reassembly.pxi`) and their reference twins in `sensor/decode/`.
"""

from sensor.querylog.record import (
    STATUS_ANSWERED,
    STATUS_NAMES,
    STATUS_RESPONSE_ONLY,
    STATUS_UNANSWERED,
    QueryLogEntry,
)

__all__ = [
    "STATUS_ANSWERED",
    "STATUS_NAMES",
    "STATUS_RESPONSE_ONLY",
    "STATUS_UNANSWERED",
    "QueryLogEntry",
]
