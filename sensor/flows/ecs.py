"""Flow records as ECS events for the ZeroMQ topic `flow` (schema: docs/events.md, "flow")."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from sensor.community_id import community_id
from sensor.flows.record import (
    DIRECTIONS,
    END_REASONS,
    ICMP_PROTOCOLS,
    PROTOCOLS,
    format_addresses,
    iso_time,
    tcp_flags_text,
)

FLOW_TOPIC = "flow"


def _packed(hi: int, lo: int, version: int) -> bytes:
    if version == 4:
        return (lo & 0xFFFFFFFF).to_bytes(4, "big")
    return hi.to_bytes(8, "big") + lo.to_bytes(8, "big")


def flow_events(arr: np.ndarray, observer: dict) -> Iterator[dict]:
    """One ECS dict per flow record (addresses formatted once per distinct address, vectorized)."""
    src = format_addresses(arr["src_hi"], arr["src_lo"], arr["ip_version"])
    dst = format_addresses(arr["dst_hi"], arr["dst_lo"], arr["ip_version"])
    for i, rec in enumerate(arr.tolist()):
        (start, end, src_hi, src_lo, dst_hi, dst_lo, sport, dport, proto, version, flags, reason, direction, vlan,
         packets, nbytes) = rec
        network = {
            "type": f"ipv{version}",
            "iana_number": str(proto),
            "packets": packets,
            "bytes": nbytes,
            "direction": DIRECTIONS.get(direction, "unknown"),
        }
        if proto in PROTOCOLS:
            network["transport"] = PROTOCOLS[proto]
        if proto in (6, 17, 132):
            network["community_id"] = community_id(_packed(src_hi, src_lo, version), _packed(dst_hi, dst_lo, version),
                                                    proto, sport, dport)
        if vlan >= 0:
            network["vlan"] = {"id": str(vlan)}
        event = {
            "@timestamp": iso_time(end),
            "event": {"kind": "event", "category": ["network"], "type": ["connection"], "action": "flow",
                      "dataset": "truesource.flow", "module": "truesource", "start": iso_time(start),
                      "end": iso_time(end), "duration": (end - start) * 1000,
                      "reason": END_REASONS.get(reason, str(reason))},
            "source": {"ip": src[i], "port": sport, "packets": packets, "bytes": nbytes},
            "destination": {"ip": dst[i], "port": dport},
            "network": network,
            "observer": observer,
            "truesource": {"flow": {"tcp_flags": tcp_flags_text(flags), "tcp_flags_value": flags,
                                    "end_reason": reason, "direction": direction}},
        }
        if proto in ICMP_PROTOCOLS:
            event["icmp"] = {"type": dport >> 8, "code": dport & 0xFF}
        yield event


def flow_lines(arr: np.ndarray, observer: dict) -> Iterator[str]:
    encoder = json.JSONEncoder(separators=(",", ":"))
    for event in flow_events(arr, observer):
        yield encoder.encode(event)
