"""The one selector of compiled vs reference code: the fast path (sensor/_loop, built from ext/) or its
pure-Python twin, for the decode loop, the rule table, the flow table and the query-log decoder.

TRUESOURCE_PURE=1 forces the reference twins everywhere (tests, and platforms without a compiler); nothing else
in sensor/ imports sensor._loop. Each compiled name and its twin (TWINS below; docs/architecture.md):

    ext/loop.pyx  FastLoop          <-> sensor/decode/loop.py       ReferenceLoop
    ext/          SuffixSet         <-> sensor/rules/model.py       RuleSet.table (a dict)
    ext/          FlowTable         <-> sensor/flows/reference.py   ReferenceFlowTable
    ext/          decode_query_log  <-> sensor/querylog/packed.py   decode_entries_reference
    ext/          querylog_segment_keys, querylog_sort_keys
                                    <-> sensor/querylog/segment.py  segment_keys_reference, sort_keys_reference
    ext/          HitLineWriter     <-> sensor/hitline.py           HitLines.line
    ext/          ClientHitWindow   <-> sensor/attribution.py       ResolverAttribution.link
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sensor.querylog.record import QueryLogEntry
from sensor.rules import compiled as rule_file
from sensor.rules.compiled import CompiledRules
from sensor.rules.model import RuleSet
from sensor.rules.patterns import PatternMatcher

if TYPE_CHECKING:  # numpy (the flow record's dtype) loads only when flows are on
    from sensor.flows.settings import FlowSettings

log = logging.getLogger(__name__)

compiled: ModuleType | None
try:
    import sensor._loop

    compiled = sensor._loop
except ImportError:  # not built: the reference path still gives the same records, slower
    compiled = None
# a compiled rule-set file's table is built by the C SuffixSet when there is one (sensor/rules/compiled.py)
rule_file.NATIVE_SUFFIX_SET = compiled.SuffixSet if compiled is not None else None

# compiled name in sensor._loop -> "module:name" of its pure-Python twin (tests/test_layering.py checks both exist)
TWINS = {
    "FastLoop": "sensor.decode.loop:ReferenceLoop",
    "SuffixSet": "sensor.rules.model:RuleSet",
    "FlowTable": "sensor.flows.reference:ReferenceFlowTable",
    "decode_query_log": "sensor.querylog.packed:decode_entries_reference",
    "querylog_segment_keys": "sensor.querylog.segment:segment_keys_reference",
    "querylog_sort_keys": "sensor.querylog.segment:sort_keys_reference",
    "HitLineWriter": "sensor.hitline:HitLines",
    "ClientHitWindow": "sensor.attribution:ResolverAttribution",
}

__all__ = ["TWINS", "CompiledRules", "client_hit_window", "compile_rules", "compiled", "decode_query_log",
           "hit_line_writer", "keep_batch_memory", "make_flow_table", "make_loop", "pure_requested",
           "querylog_segment_functions", "use_compiled"]

# glibc's malloc in a process that reads batches (decision 0209): blocks under MALLOC_MMAP_THRESHOLD from the heap,
# and up to MALLOC_TRIM_THRESHOLD freed at its top kept, so each batch's large buffers reuse the last batch's pages
# instead of coming back from the kernel zeroed. glibc's own moving thresholds reach these values (up to 32 and
# 64 MiB) once it has freed one large enough block; this starts there.
MALLOC_MMAP_THRESHOLD = 4 << 20
MALLOC_TRIM_THRESHOLD = 16 << 20


def keep_batch_memory() -> bool:
    """Set the malloc thresholds above (BatchRunner, once per process that decodes). It changes no result, only
    where memory comes from, so it applies with TRUESOURCE_PURE too. False where it could not be set (no compiled
    module, or a C library without mallopt): the defaults stay, slower."""
    if compiled is None or not hasattr(compiled, "keep_freed_memory"):
        return False
    return bool(compiled.keep_freed_memory(MALLOC_TRIM_THRESHOLD, MALLOC_MMAP_THRESHOLD))


def pure_requested() -> bool:
    return os.environ.get("TRUESOURCE_PURE", "") not in ("", "0")


def use_compiled(pure: bool | None = None) -> bool:
    """True when the compiled twin runs: built, and neither `pure` nor TRUESOURCE_PURE asks for the reference."""
    if pure is None:
        pure = pure_requested()
    return not pure and compiled is not None


def compile_rules(ruleset: RuleSet, pure: bool | None = None, keep_table: bool = True) -> CompiledRules:
    """The loops' form of a rule set; `keep_table=False` frees the RuleSet's name table once compiled."""
    matcher = PatternMatcher(ruleset)
    if not use_compiled(pure):
        table: object = ruleset.table
    elif hasattr(ruleset, "suffix_set"):  # a compiled rule-set file (sensor/rules/compiled.py): read in place
        assert compiled is not None
        table = ruleset.suffix_set(compiled.SuffixSet)
    else:
        assert compiled is not None
        table = compiled.SuffixSet(ruleset.table)
        if not keep_table:
            ruleset.drop_table()
    return CompiledRules(table, bytes(ruleset.allow), matcher.match if matcher else None, len(ruleset))


def make_loop(linktype: int, ports: Sequence[int], rules: CompiledRules | dict, emit_all: bool = False,
              pure: bool | None = None, **limits: Any) -> Any:
    """A loop for one capture's link type; `rules` from compile_rules(), or a bare table (no allow, no patterns)."""
    if isinstance(rules, dict):
        rules = CompiledRules(rules, b"", None, 0)
    if use_compiled(pure):
        assert compiled is not None
        return compiled.FastLoop(linktype, ports, rules.table, emit_all, **limits, **rules.loop_args(),
                                 entry_type=QueryLogEntry)
    if not (pure if pure is not None else pure_requested()):
        log.warning("compiled fast path not built; using the pure-Python reference decoder")
    from sensor.decode.loop import ReferenceLoop

    if not hasattr(rules.table, "get"):
        raise TypeError("the reference loop needs the rule table as a mapping")
    return ReferenceLoop(linktype, ports, rules.table, emit_all, **limits, **rules.loop_args())  # type: ignore[arg-type]


def make_flow_table(settings: FlowSettings, pure: bool | None = None) -> Any:
    """The fast path's flow table, or the reference one (TRUESOURCE_PURE=1, or no compiled module)."""
    if use_compiled(pure) and hasattr(compiled, "FlowTable"):
        from sensor.flows.record import FLOW_DTYPE

        assert compiled is not None
        return compiled.FlowTable(FLOW_DTYPE, settings.idle_timeout, settings.active_timeout, settings.max_flows)
    from sensor.flows.reference import ReferenceFlowTable

    return ReferenceFlowTable(settings)


def decode_query_log(data: bytes, pure: bool | None = None,
                     caps: tuple[int, int, int] = (-1, -1, -1)) -> list[QueryLogEntry]:
    """The packed query-log entries of a loop (sensor/querylog/packed.py), decoded by the compiled twin when used.
    `caps`: what an entry keeps of its answers (records, bytes of text, records of a response without a query;
    negative: no cap), as the store asks."""
    if use_compiled(pure):
        assert compiled is not None
        return compiled.decode_query_log(bytes(data), QueryLogEntry, *caps)
    from sensor.querylog.packed import decode_entries_reference

    return decode_entries_reference(data, caps)


def querylog_segment_functions(pure: bool | None = None) -> tuple[Any, Any]:
    """The query-log store's walk of packed entries into lookup keys and its sort of them at a segment's close
    (ext/querylog_index.pxi), or their twins in sensor/querylog/segment.py."""
    if use_compiled(pure) and hasattr(compiled, "querylog_segment_keys"):
        assert compiled is not None
        return compiled.querylog_segment_keys, compiled.querylog_sort_keys
    from sensor.querylog.segment import segment_keys_reference, sort_keys_reference

    return segment_keys_reference, sort_keys_reference


def hit_line_writer(lines: Any, pure: bool | None = None) -> Any:
    """HitLines.line() compiled (ext/hitline.pxi), over the same HitLines' caches; None: the twin writes."""
    if use_compiled(pure) and hasattr(compiled, "HitLineWriter"):
        assert compiled is not None
        return compiled.HitLineWriter(lines)
    return None


def client_hit_window(attribution: Any, pure: bool | None = None) -> Any:
    """ResolverAttribution.link() with its client-query case compiled (ext/attribution.pxi), over the same
    tables; None: link() itself."""
    if use_compiled(pure) and hasattr(compiled, "ClientHitWindow"):
        assert compiled is not None
        return compiled.ClientHitWindow(attribution)
    return None
