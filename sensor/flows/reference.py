"""The pure-Python flow table: the readable spec of ext/flows.pxi and its test oracle (ReferenceLoop uses it).

Rules both tables follow, packet by packet (docs/flows.md, "Records" and "Timeouts"):
1. The frame's first IP header is accounted (inside tunnels only the outermost, as a router's exporter sees it);
   a header the decoder would reject (truncated, bad version or length) is not.
2. Idle flows leave first: from the least recently updated, while `now - end > idle`, reason idle.
3. The packet's flow is looked up; if `now - start > active` it is emitted (reason active) and restarted.
4. A new flow when the table is full evicts the least recently updated one first (reason evicted).
5. The flow takes the packet (start = min, end = max of packet times) and becomes the most recent.
6. A TCP packet with FIN or RST ends its flow (reason end).
Fragments (IPv4 MF or offset, IPv6 non-atomic fragment header) are accounted without ports: the whole
datagram lands in one flow keyed by addresses and protocol, with no reassembly state to bound.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

import numpy as np

from sensor.flows.record import (
    END_ACTIVE,
    END_END,
    END_EVICTED,
    END_FORCED,
    END_IDLE,
    FLOW_DTYPE,
    ICMP_PROTOCOLS,
)
from sensor.flows.settings import FlowSettings

MICROSECONDS = 1_000_000
PORTED_PROTOCOLS = frozenset({6, 17, 132})  # TCP, UDP, SCTP: ports in the first four bytes
PROTO_TCP = 6
TCP_FIN_RST = 0x05
IPV6_EXTENSIONS = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
IPV6_FRAGMENT = 44
MAX_IPV6_EXT_HEADERS = 8  # as the decoder: a longer chain stops the walk (the flow keeps the last next header)
_V4_MAPPED = 0xFFFF << 32


def _halves(address: bytes) -> tuple[int, int]:
    if len(address) == 4:
        return 0, _V4_MAPPED | int.from_bytes(address, "big")
    value = int.from_bytes(address, "big")
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def flow_fields(version: int, packet: bytes) -> tuple | None:
    """(src, dst, proto, src_port, dst_port, tcp_flags, ip_length) of one IP packet; None if the header is bad."""
    n = len(packet)
    if version == 4:
        if n < 20 or packet[0] >> 4 != 4:
            return None
        ihl = (packet[0] & 0x0F) * 4
        total = struct.unpack_from("!H", packet, 2)[0]
        if ihl < 20 or ihl > n or total < ihl or total > n:
            return None
        proto = packet[9]
        src, dst = packet[12:16], packet[16:20]
        fragment = struct.unpack_from("!H", packet, 6)[0] & 0x3FFF  # MF or an offset
        return (src, dst, proto, *_ports(proto, packet[ihl:total], fragment), total)
    if n < 40 or packet[0] >> 4 != 6:
        return None
    plen = struct.unpack_from("!H", packet, 4)[0]
    if plen == 0 or 40 + plen > n:
        return None
    src, dst = packet[8:24], packet[24:40]
    nh, pos, end, count, fragment = packet[6], 40, 40 + plen, 0, False
    while nh in IPV6_EXTENSIONS or nh == IPV6_FRAGMENT:
        if count == MAX_IPV6_EXT_HEADERS:
            fragment = True  # unreadable chain: no ports
            break
        count += 1
        if nh == IPV6_FRAGMENT:
            if pos + 8 > end:
                fragment = True
                break
            word = struct.unpack_from("!H", packet, pos + 2)[0]
            nh, pos = packet[pos], pos + 8
            if word & 0xFFF9:  # an offset or more fragments: not atomic
                fragment = True
                break
        else:
            if pos + 2 > end:
                fragment = True
                break
            length = (packet[pos + 1] + 1) * 8
            if pos + length > end:
                fragment = True
                break
            nh, pos = packet[pos], pos + length
    return (src, dst, nh, *_ports(nh, packet[pos:end], fragment), end)


def _ports(proto: int, payload: bytes, fragment: bool) -> tuple[int, int, int]:
    """(src_port, dst_port, tcp_flags) from the transport header; zeros when it is a fragment or too short."""
    if fragment:
        return 0, 0, 0
    if proto in PORTED_PROTOCOLS and len(payload) >= 4:
        sport, dport = struct.unpack_from("!HH", payload)
        flags = payload[13] if proto == PROTO_TCP and len(payload) >= 14 else 0
        return sport, dport, flags
    if proto in ICMP_PROTOCOLS and len(payload) >= 2:
        return 0, (payload[0] << 8) | payload[1], 0
    return 0, 0, 0


class ReferenceFlowTable:
    """Unidirectional flows keyed by (vlan, version, src, dst, proto, ports), in least-recently-updated order."""

    def __init__(self, settings: FlowSettings | None = None) -> None:
        settings = settings or FlowSettings()
        self.idle_us = int(settings.idle_timeout * MICROSECONDS)
        self.active_us = int(settings.active_timeout * MICROSECONDS)
        self.max_flows = settings.max_flows
        self._flows: OrderedDict[tuple, list[int]] = OrderedDict()  # key -> [start, end, packets, bytes, flags]
        self._out: list[tuple] = []

    def __len__(self) -> int:
        return len(self._flows)

    @property
    def count(self) -> int:
        return len(self._flows)

    def account(self, version: int, packet: bytes, vlan: int | None, now_us: int, counters: dict) -> None:
        """One IP packet (bytes from its IP header on) seen at `now_us`."""
        fields = flow_fields(version, packet)
        if fields is None:
            return
        src, dst, proto, sport, dport, flags, length = fields
        key = (-1 if vlan is None else vlan, version, src, dst, proto, sport, dport)
        flows = self._flows
        self.expire_idle(now_us)
        flow = flows.get(key)
        if flow is not None and now_us - flow[0] > self.active_us:
            self._emit(key, flows.pop(key), END_ACTIVE)
            flow = None
        if flow is None:
            if len(flows) >= self.max_flows:
                evicted_key, evicted = flows.popitem(last=False)
                self._emit(evicted_key, evicted, END_EVICTED)
                counters["flows_evicted"] += 1
            flow = flows[key] = [now_us, now_us, 0, 0, 0]
            counters["flows_created"] += 1
        else:
            flows.move_to_end(key)
        flow[0] = min(flow[0], now_us)
        flow[1] = max(flow[1], now_us)
        flow[2] += 1
        flow[3] += length
        flow[4] |= flags
        if proto == PROTO_TCP and flags & TCP_FIN_RST:
            self._emit(key, flows.pop(key), END_END)

    def expire_idle(self, now_us: int) -> None:
        """Idle flows out, least recently updated first, until one is not idle (rule 2)."""
        flows = self._flows
        while flows:
            oldest_key, oldest = next(iter(flows.items()))
            if now_us - oldest[1] <= self.idle_us:
                break
            self._emit(oldest_key, flows.pop(oldest_key), END_IDLE)

    def flush(self) -> None:
        """Every flow out, oldest first, reason forced (end of a replay, or stop)."""
        while self._flows:
            key, flow = self._flows.popitem(last=False)
            self._emit(key, flow, END_FORCED)

    def take(self) -> np.ndarray:
        """The records emitted since the last take, as a FLOW_DTYPE array."""
        out = np.array(self._out, dtype=FLOW_DTYPE)
        self._out = []
        return out

    def _emit(self, key: tuple, flow: list[int], reason: int) -> None:
        vlan, version, src, dst, proto, sport, dport = key
        start, end, packets, nbytes, flags = flow
        self._out.append((start, end, *_halves(src), *_halves(dst), sport, dport, proto, version, flags, reason,
                          0, vlan, packets, nbytes))
