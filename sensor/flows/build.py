"""Flows from capture files: replay them through a BatchRunner with flows on and return every record."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from sensor.capture.files import CaptureFile
from sensor.errors import CaptureCutOff
from sensor.events import Origin
from sensor.flows.record import FLOW_DTYPE, classify_direction
from sensor.flows.reference import ReferenceFlowTable
from sensor.flows.settings import ACTIVE_TIMEOUT, IDLE_TIMEOUT, MAX_FLOWS, FlowSettings
from sensor.loop import make_flow_table
from sensor.runner import BatchRunner

DNS_PORTS = (53,)
log = logging.getLogger("truesource")

__all__ = ["DNS_PORTS", "flows_from_captures"]


def flows_from_captures(paths: Sequence[str], ports: Sequence[int] = DNS_PORTS,
                        idle_timeout: float = IDLE_TIMEOUT, active_timeout: float = ACTIVE_TIMEOUT,
                        max_flows: int = MAX_FLOWS, internal: Sequence[str] = (),
                        pure: bool | None = None, cut_offs: list[CaptureCutOff] | None = None) -> np.ndarray:
    """Every flow of the capture files, replayed in order through one flow table, flushed at the end.

    A capture cut off mid-frame ends the reading there, as in `replay`: the flows of the frames before the cut
    are kept, the cut is logged as an error and appended to `cut_offs` (the commands then exit 1).
    """
    settings = FlowSettings(idle_timeout, active_timeout, max_flows, tuple(internal))
    table = make_flow_table(settings, pure)
    parts: list[np.ndarray] = []
    runner = BatchRunner(ports, {}, flow_table=table, on_flows=parts.append,
                         pure=isinstance(table, ReferenceFlowTable))  # the loop must match its table
    captures = [CaptureFile(path) for path in paths]
    for capture in captures:
        runner.open(capture.linktype, Origin(capture_file=capture.name))
        try:
            for batch in capture.batches():
                runner.feed(batch)
        except CaptureCutOff as cut:
            log.error("%s; the flows of the frames before it are kept", cut)
            if cut_offs is not None:
                cut_offs.append(cut)
            break
    runner.finish()
    flows = np.concatenate(parts) if parts else np.zeros(0, FLOW_DTYPE)
    return classify_direction(flows, settings.internal)
