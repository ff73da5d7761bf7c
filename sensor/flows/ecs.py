"""Flow records as ECS events for the ZeroMQ topic `flow` (schema: docs/events.md, "flow")."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sensor.community_id import community_id, icmp_community_id
from sensor.flows.record import (
    DIRECTIONS,
    END_REASONS,
    ICMP_PROTOCOLS,
    PROTOCOLS,
    format_addresses,
    iso_time,
    tcp_flags_text,
)
from sensor.schema import (
    ECS,
    Endpoint,
    Event,
    FlowDetail,
    FlowEvent,
    FlowIcmp,
    FlowTruesource,
    Network,
    Observer,
    Related,
    Vlan,
    encode,
)

FLOW_TOPIC = "flow"
PORT_PROTOCOLS = (6, 17, 132)  # TCP, UDP, SCTP: the record's ports are ports


def _packed(hi: int, lo: int, version: int) -> bytes:
    if version == 4:
        return (lo & 0xFFFFFFFF).to_bytes(4, "big")
    return hi.to_bytes(8, "big") + lo.to_bytes(8, "big")


def flow_events(arr: np.ndarray, observer: Observer | None) -> Iterator[FlowEvent]:
    """One ECS record per flow record (addresses formatted once per distinct address, vectorized). ICMP has no
    ports: its type and code go under `truesource.flow.icmp` (ECS has no ICMP field set) and into its Community
    ID, never into `source.port`/`destination.port`."""
    src = format_addresses(arr["src_hi"], arr["src_lo"], arr["ip_version"])
    dst = format_addresses(arr["dst_hi"], arr["dst_lo"], arr["ip_version"])
    vlans: dict[int, Vlan] = {}
    for i, rec in enumerate(arr.tolist()):
        (start, end, src_hi, src_lo, dst_hi, dst_lo, sport, dport, proto, version, flags, reason, direction, vlan,
         packets, nbytes) = rec
        network = Network(type=f"ipv{version}", iana_number=str(proto), packets=packets, bytes=nbytes,
                          direction=DIRECTIONS.get(direction, "unknown"), transport=PROTOCOLS.get(proto))
        detail = FlowDetail(tcp_flags=tcp_flags_text(flags), tcp_flags_value=flags, end_reason=reason,
                            direction=direction)
        source = Endpoint(ip=src[i], packets=packets, bytes=nbytes)
        destination = Endpoint(ip=dst[i])
        if proto in PORT_PROTOCOLS:
            source.port, destination.port = sport, dport
            network.community_id = community_id(_packed(src_hi, src_lo, version), _packed(dst_hi, dst_lo, version),
                                                proto, sport, dport)
        elif proto in ICMP_PROTOCOLS:
            detail.icmp = FlowIcmp(type=dport >> 8, code=dport & 0xFF)  # the record keeps type*256+code (SiLK)
            network.community_id = icmp_community_id(_packed(src_hi, src_lo, version),
                                                     _packed(dst_hi, dst_lo, version), proto, dport >> 8, dport & 0xFF)
        if vlan >= 0:
            network.vlan = vlans.get(vlan) or vlans.setdefault(vlan, Vlan(id=str(vlan)))
        yield FlowEvent(
            timestamp=iso_time(end), ecs=ECS,
            event=Event(kind="event", category=["network"], type=["connection"], action="flow",
                        dataset="truesource.flow", module="truesource", start=iso_time(start), end=iso_time(end),
                        duration=(end - start) * 1000, reason=END_REASONS.get(reason, str(reason))),
            source=source, destination=destination,
            related=Related(ip=[src[i], dst[i]] if src[i] != dst[i] else [src[i]]),
            network=network, observer=observer, truesource=FlowTruesource(flow=detail))


def flow_lines(arr: np.ndarray, observer: Observer | None) -> Iterator[str]:
    for event in flow_events(arr, observer):
        yield encode(event)
