"""Heuristic detectors for what no rule list names yet: generated names (DGA) and DNS tunnelling."""

from sensor.heuristics.config import HeuristicsConfig, HeuristicsConfigError
from sensor.heuristics.engine import HeuristicEngine
from sensor.heuristics.hit import HeuristicHit

__all__ = ["HeuristicEngine", "HeuristicHit", "HeuristicsConfig", "HeuristicsConfigError"]
