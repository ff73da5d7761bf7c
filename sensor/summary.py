"""A run's summary on standard error (what was seen, what was not decoded and why, every loss), and as JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sensor.errors import SensorError
from sensor.records import FRAME_REASONS, MESSAGE_REASONS, TCP_EVENTS

log = logging.getLogger("truesource")


@dataclass(slots=True)
class Summary:
    """What a command's ending prints and writes: its lines, then (by the BatchRunner) the sinks' lines."""

    lines: list[str] = field(default_factory=list)
    json_path: str | None = None
    json_body: dict[str, Any] = field(default_factory=dict)


def counter_lines(c: Mapping[str, int], seconds: float, title: str, outputs: Sequence[object]) -> list[str]:
    """The run's counters: what was seen, what was not decoded and why, the publisher and --out losses."""
    rate = c["packets"] / seconds if seconds > 0 else 0.0
    lines = [
        f"{title}: {c['packets']:,} packets, {c['bytes']:,} bytes in {seconds:.3f} s ({rate:,.0f} packets/s)",
        f"DNS: {c['dns_queries']:,} queries, {c['dns_responses']:,} responses, {c['hits']:,} hits",
    ]
    for heading, names in (("frames not decoded", FRAME_REASONS), ("DNS messages not read", MESSAGE_REASONS),
                           ("other", TCP_EVENTS + ("dns_extra_questions", "dns_bad_edns", "tunneled"))):
        parts = [f"{name} {c[name]:,}" for name in names if c[name]]
        if parts:
            lines.append(f"{heading}: " + ", ".join(parts))
    for output in outputs:
        if hasattr(output, "summary"):  # the publisher: sent, undelivered (no subscriber), dropped
            lines.append(output.summary())
        if getattr(output, "lines_dropped", 0):
            lines.append(f"--out {getattr(output, 'path', '')}: {getattr(output, 'lines', 0):,} written, "
                         f"{getattr(output, 'lines_dropped', 0):,} dropped ({getattr(output, 'drop_reason', '')})")
        summary_line = getattr(output, "summary_line", None)
        if summary_line is not None:  # the Kafka output: sent, failed, dropped
            lines.append(summary_line())
    return lines


def output_counters(outputs: Sequence[object]) -> dict[str, int]:
    """What the outputs sent, left undelivered or dropped, for --summary-json: every loss there too."""
    totals: dict[str, int] = {}
    for output in outputs:
        state = getattr(output, "state_counters", None)
        if state is not None:
            for key, value in state().items():
                totals[key] = totals.get(key, 0) + value
    return totals


def lost_lines(outputs: Sequence[object]) -> bool:
    """Say, as the run's last line, which --out file lost lines; True if one did."""
    lost = False
    for output in outputs:
        if getattr(output, "lines_dropped", 0):  # replay waits for a pipe: only a full disk drops
            log.error("--out %s: %d event lines lost (%s)", getattr(output, "path", ""),
                      getattr(output, "lines_dropped", 0), getattr(output, "drop_reason", ""))
            lost = True
    return lost


def write_json(path: str, summary: Mapping[str, Any]) -> None:
    try:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=1)
            handle.write("\n")
    except OSError as err:
        raise SensorError(f"{path}: cannot write summary: {err.strerror}") from None
