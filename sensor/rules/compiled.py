"""A rule set in the form the decode loops take (built by the selector, sensor/loop.py: `compile_rules`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """A rule set in the form the loops take: built once, shared by the loops of every file or worker."""

    table: object  # a compiled SuffixSet, or the RuleSet's table for the reference loop
    allow: bytes
    patterns: Callable[[str], int] | None
    count: int

    def loop_args(self) -> dict[str, Any]:
        return {"allow": self.allow, "patterns": self.patterns}
