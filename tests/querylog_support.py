"""Helpers for the query-log tests: run a loop (fast or reference) over a capture with correlation on."""

from __future__ import annotations

import glob
from pathlib import Path

import pcapy
import pytest

from sensor.decode import ReferenceLoop
from sensor.querylog.record import QueryLogEntry

try:
    from sensor import _loop
except ImportError:
    _loop = None

ROOT = Path(__file__).resolve().parents[1]
QUERYLOG_PCAPS = ROOT / "pcaps" / "querylog"
PEER_DIR = ROOT.parent / "shared" / "pcaps" / "peers"
RULES = ROOT / "pcaps" / "pcaps.rules"
KINDS = ("fast", "reference")


def rule_table() -> dict[str, list[int]]:
    from sensor.rules.loader import load_rules

    return load_rules([str(RULES)]).table


def make(kind: str, linktype: int, ports=(53,), table=None, emit_all: bool = False, **options):
    """A loop of `kind` with the query log on; the fast one is skipped when not built."""
    table = rule_table() if table is None else table
    if kind == "fast":
        if _loop is None:
            pytest.skip("sensor._loop is not built")
        return _loop.FastLoop(linktype, ports, table, emit_all, query_log=True, entry_type=QueryLogEntry, **options)
    return ReferenceLoop(linktype, ports, table, emit_all, query_log=True, **options)


def batches(path: Path, size: int):
    reader = pcapy.open_offline(str(path))
    frame = 1
    while True:
        try:
            data, meta = reader.next_batch(size)
        except pcapy.PcapError:
            return
        if not meta:
            return
        yield frame, data, meta
        frame += len(meta) // 16


def run_capture(kind: str, path: Path, batch_size: int = 4096, **options):
    """(records, query-log entries after the final flush, counters, loop)."""
    linktype = pcapy.open_offline(str(path)).datalink()
    loop = make(kind, linktype, **options)
    records, entries = [], []
    for first, data, meta in batches(path, batch_size):
        records += loop.run_batch(data, meta, first)
        entries += loop.take_query_log()
    loop.flush_query_log()
    entries += loop.take_query_log()
    return records, entries, loop.counters(), loop


def every_capture() -> list[Path]:
    found = []
    for folder in (ROOT / "pcaps", QUERYLOG_PCAPS, PEER_DIR):
        for pattern in ("*.pcap", "*.pcapng"):
            found += [Path(p) for p in glob.glob(str(folder / pattern))]
    return sorted(found)
