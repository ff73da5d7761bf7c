"""Flows from live capture on a real veth: one worker and two, the default filter widened to all IP."""

from __future__ import annotations

import json

import pytest
from test_capture_live import stop, wait_started, wait_total

from conftest import PCAPS
from sensor.flows.build import flows_from_captures
from sensor.flows.record import format_addresses
from sensor.flows.store import read_flows

pytestmark = pytest.mark.netns

# the demo capture holds DNS and non-DNS traffic (ICMP, NTP, HTTPS...): with flows on, all of it must be seen
CAPTURE = str(PCAPS / "demo-resolver.pcap")


def flow_keys(arr) -> list[tuple]:
    """Flows without their times (tcpreplay re-times packets): key, packets, bytes."""
    src = format_addresses(arr["src_hi"], arr["src_lo"], arr["ip_version"])
    dst = format_addresses(arr["dst_hi"], arr["dst_lo"], arr["ip_version"])
    return sorted((src[i], dst[i], int(r["src_port"]), int(r["dst_port"]), int(r["proto"]), int(r["vlan"]),
                   int(r["packets"]), int(r["bytes"])) for i, r in enumerate(arr))


@pytest.mark.parametrize("workers", [1, 2])
def test_live_flows_equal_replay_flows(wire, tmp_path, workers: int) -> None:
    """tcpreplay the demo capture into the mirror port with --flows: the store holds the same flows (keys,
    packets, bytes) as a replay of the file. Timeouts long enough that re-timing cannot split a flow."""
    store = tmp_path / "store"
    offline = flows_from_captures([CAPTURE], idle_timeout=600)
    endpoint = f"ipc://{tmp_path}/events"  # statistics, to know when the capture has seen the traffic
    proc = wire.start_capture("--rules", str(PCAPS / "pcaps.rules"), "--out", "/dev/null", "--workers", str(workers),
                              "--flow-store", str(store), "--flow-idle-timeout", "600",
                              "--summary-json", str(tmp_path / "s.json"), "--publish", endpoint,
                              "--stats-interval", "0.5")
    wait_started(proc)
    wire.replay(CAPTURE, pps=2000)
    wait_total(endpoint, "flows_created", len(offline))
    _, err = stop(proc)
    live = read_flows(str(store))
    assert flow_keys(live) == flow_keys(offline), err
    assert (live["end_reason"] == 4).all()  # all still open at the stop: flushed, reason forced
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["counters"]["flows_created"] == len(offline)
    if workers == 2:
        assert all(w["flows_created"] > 0 for w in summary["workers"]), summary["workers"]
