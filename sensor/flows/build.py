"""Flows from capture files: replay them through the loop with flows on and return every record."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from sensor.capture.files import CaptureFile
from sensor.errors import CaptureCutOff
from sensor.flows.record import FLOW_DTYPE, classify_direction
from sensor.flows.settings import ACTIVE_TIMEOUT, IDLE_TIMEOUT, MAX_FLOWS, FlowSettings
from sensor.loop import make_loop, pure_requested

DNS_PORTS = (53,)
log = logging.getLogger("truesource")


def make_flow_table(settings: FlowSettings, pure: bool | None = None):
    """The fast path's flow table, or the reference one (TRUESOURCE_PURE=1, or no compiled module)."""
    from sensor import loop as selector

    if pure is None:
        pure = pure_requested()
    if not pure and selector.compiled is not None and hasattr(selector.compiled, "FlowTable"):
        return selector.compiled.FlowTable(FLOW_DTYPE, settings.idle_timeout, settings.active_timeout,
                                           settings.max_flows)
    from sensor.flows.reference import ReferenceFlowTable

    return ReferenceFlowTable(settings)


def flows_from_captures(paths: Sequence[str], ports: Sequence[int] = DNS_PORTS,
                        idle_timeout: float = IDLE_TIMEOUT, active_timeout: float = ACTIVE_TIMEOUT,
                        max_flows: int = MAX_FLOWS, internal: Sequence[str] = (),
                        pure: bool | None = None, cut_offs: list | None = None) -> np.ndarray:
    """Every flow of the capture files, replayed in order through one flow table, flushed at the end.

    A capture cut off mid-frame ends the reading there, as in `replay`: the flows of the frames before the cut
    are kept, the cut is logged as an error and appended to `cut_offs` (the commands then exit 1).
    """
    settings = FlowSettings(idle_timeout, active_timeout, max_flows, tuple(internal))
    if pure is None:
        pure = pure_requested()
    table = make_flow_table(settings, pure)
    from sensor.flows.reference import ReferenceFlowTable

    pure = isinstance(table, ReferenceFlowTable)  # the loop must match its table
    captures = [CaptureFile(path) for path in paths]
    parts: list[np.ndarray] = []
    for capture in captures:
        loop = make_loop(capture.linktype, ports, {}, pure=pure, flows=table)
        try:
            for batch in capture.batches():
                loop.run_batch(batch.data, batch.meta, batch.first_frame)
                parts.append(table.take())
        except CaptureCutOff as cut:
            log.error("%s; the flows of the frames before it are kept", cut)
            if cut_offs is not None:
                cut_offs.append(cut)
            break
    table.flush()
    parts.append(table.take())
    flows = np.concatenate(parts) if parts else np.zeros(0, FLOW_DTYPE)
    return classify_direction(flows, settings.internal)
