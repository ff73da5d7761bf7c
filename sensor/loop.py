"""Selects the decode loop: the compiled fast path, or the pure-Python reference when asked.

TRUESOURCE_PURE=1 forces the reference path (tests, and platforms without a compiler).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

log = logging.getLogger(__name__)

try:
    from sensor import _loop as compiled
except ImportError:  # not built: the reference path still gives the same records, slower
    compiled = None


def pure_requested() -> bool:
    return os.environ.get("TRUESOURCE_PURE", "") not in ("", "0")


def compile_rules(table: dict[str, list[int]], pure: bool | None = None):
    """The rule table in the form the loop wants: a compiled SuffixSet, or the dict itself for the reference."""
    if pure is None:
        pure = pure_requested()
    if pure or compiled is None:
        return table
    return compiled.SuffixSet(table)


def make_loop(linktype: int, ports: Sequence[int], table, emit_all: bool = False, pure: bool | None = None,
              **limits):
    """A loop for one capture's link type; `table` from compile_rules() or a RuleSet's table."""
    if pure is None:
        pure = pure_requested()
    if not pure and compiled is not None:
        return compiled.FastLoop(linktype, ports, table, emit_all, **limits)
    if not pure:
        log.warning("compiled fast path not built; using the pure-Python reference decoder")
    from sensor.decode.loop import ReferenceLoop

    if not isinstance(table, dict):
        raise TypeError("the reference loop needs the rule table as a dict")
    return ReferenceLoop(linktype, ports, table, emit_all, **limits)
