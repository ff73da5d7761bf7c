"""What a heuristic detector reports: its name, score, the threshold it crossed, and the evidence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class HeuristicHit:
    detector: str  # "dga" or "tunnel"
    score: float
    threshold: float
    evidence: dict[str, Any]  # JSON-ready: strings, numbers, lists, dicts
