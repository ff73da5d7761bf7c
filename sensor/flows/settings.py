"""Flow settings: the timeouts and the table bound, with the exporters' defaults they follow (docs/decisions/0030)."""

from __future__ import annotations

from dataclasses import dataclass, field

IDLE_TIMEOUT = 15.0  # seconds without a packet; Cisco NetFlow's "inactive timeout" default
ACTIVE_TIMEOUT = 1800.0  # seconds from a flow's first packet; Cisco NetFlow's and YAF's "active timeout" default
# Flows held at once; a slot is ~100 bytes, so 256 Ki flows is ~26 MB. A flood of new keys beyond it evicts the
# least recently updated flow (counted as flows_evicted) rather than growing without bound.
MAX_FLOWS = 262_144
# `truesource profile` (sensor/flows/profile.py); here so the command line reads them without numpy.
DEFAULT_THRESHOLD = 1.0  # percent of packets: the report's `rwstats --percentage=1`
TOP_DESTINATIONS = 10  # the report's `rwstats --count=10`


@dataclass(frozen=True, slots=True)
class FlowSettings:
    """How flows are built: timeouts in seconds of packet time, the table bound, the internal networks."""

    idle_timeout: float = IDLE_TIMEOUT
    active_timeout: float = ACTIVE_TIMEOUT
    max_flows: int = MAX_FLOWS
    internal: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.idle_timeout > 0:
            raise ValueError(f"flow idle timeout must be above 0 seconds, not {self.idle_timeout}")
        if not self.active_timeout > 0:
            raise ValueError(f"flow active timeout must be above 0 seconds, not {self.active_timeout}")
        if self.max_flows < 1:
            raise ValueError(f"max flows must be at least 1, not {self.max_flows}")
