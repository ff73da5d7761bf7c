"""ReferenceLoop: the pure-Python twin of sensor._loop.FastLoop, one frame at a time and easy to read."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from sensor.decode.anomaly import Anomaly
from sensor.decode.dnsmsg import decode_message, presentation_name
from sensor.decode.ip import decode_ip
from sensor.decode.link import decode_link
from sensor.decode.tcpstream import MAX_TCP_STREAMS, MICROSECONDS, TCP_IDLE_TIMEOUT, TcpStreams
from sensor.decode.transport import PROTO_TCP, PROTO_UDP, decode_tcp, decode_udp
from sensor.records import COUNTERS, DnsMessage
from sensor.rules.matcher import match_table

# One record per frame in pcapy-ng's next_batch meta: four native-endian uint32.
BATCH_META = struct.Struct("=IIII")  # seconds, microseconds, offset into data, captured length
NO_RULE = -1
MAX_PORT = 65535


class Flow(NamedTuple):
    """The record fields layers 2-4 give, in DnsMessage order."""

    vlan_id: int | None
    src_ip: bytes
    dst_ip: bytes
    transport: int
    src_port: int
    dst_port: int


class ReferenceLoop:
    """Decode frames of one link type; return DnsMessage records and keep the counters of docs/decoding.md."""

    def __init__(
        self,
        linktype: int,
        ports: Sequence[int],
        table: dict[str, list[int]],
        emit_all: bool = False,
        *,
        max_tcp_streams: int = MAX_TCP_STREAMS,
        tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
    ) -> None:
        self.linktype = linktype
        for port in ports:
            if not 0 < port <= MAX_PORT:
                raise ValueError(f"port {port} is outside 1-{MAX_PORT}")
        self.ports = frozenset(ports)
        self.table = table
        self.emit_all = emit_all
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._streams = TcpStreams(self._counters, max_tcp_streams, tcp_idle_timeout)

    def counters(self) -> dict[str, int]:
        """Every counter of sensor.records.COUNTERS, plus `tcp_streams`: streams tracked now."""
        return {**self._counters, "tcp_streams": len(self._streams)}

    def run_batch(self, data: bytes, meta: bytes, first_frame: int) -> list[DnsMessage]:
        """Decode one pcapy-ng batch; `first_frame` is the 1-based number of its first frame."""
        records: list[DnsMessage] = []
        for index, (sec, usec, offset, caplen) in enumerate(BATCH_META.iter_unpack(meta)):
            if offset + caplen > len(data):
                raise ValueError("batch metadata points past its data")  # a caller's bug, not traffic
            records += self.run_frame(first_frame + index, sec, usec, data[offset : offset + caplen])
        return records

    def run_frame(self, frame: int, ts_sec: int, ts_usec: int, data: bytes) -> list[DnsMessage]:
        """Decode one frame; malformed input is counted, never raised."""
        self._counters["packets"] += 1
        self._counters["bytes"] += len(data)
        try:
            messages, flow = self._frame_messages(data, ts_sec * MICROSECONDS + ts_usec)
        except Anomaly as anomaly:
            self._counters[anomaly.reason] += 1
            return []
        records = []
        for message in messages:
            record = self._decode_message(message, (frame, ts_sec, ts_usec), flow)
            if record is not None and (self.emit_all or record.rule != NO_RULE):
                records.append(record)
        return records

    def _frame_messages(self, data: bytes, now_us: int) -> tuple[list[bytes], Flow]:
        """Layers 2-4: the DNS messages this frame carries (or completes) and the addresses they travel on."""
        link = decode_link(self.linktype, data)
        packet = decode_ip(link.version, data, link.offset)
        if packet.protocol == PROTO_UDP:
            transport = decode_udp(packet.payload, self.ports)
        elif packet.protocol == PROTO_TCP:
            transport = decode_tcp(packet.payload, self.ports)
        else:
            raise Anomaly("not_udp_tcp")
        flow = Flow(link.vlan_id, packet.src, packet.dst, packet.protocol, transport.src_port, transport.dst_port)
        if packet.protocol == PROTO_UDP:
            return [transport.payload], flow
        key = (link.vlan_id, packet.src, transport.src_port, packet.dst, transport.dst_port)
        messages = self._streams.segment(key, transport, now_us)
        if not transport.payload:
            raise Anomaly("tcp_no_payload")  # counted after the stream saw its SYN, FIN or RST
        return messages, flow

    def _decode_message(self, message: bytes, when: tuple[int, int, int], flow: Flow) -> DnsMessage | None:
        """One DNS message: counted as a query, a response or one dns_* reason; matched when a query."""
        try:
            question = decode_message(message)
        except Anomaly as anomaly:
            self._counters[anomaly.reason] += 1
            return None
        if question.qdcount > 1:
            self._counters["dns_extra_questions"] += 1
        rule = NO_RULE
        if question.is_response:
            self._counters["dns_responses"] += 1
        else:
            self._counters["dns_queries"] += 1
            rule = match_table(self.table, question.labels)
            if rule != NO_RULE:
                self._counters["hits"] += 1
        return DnsMessage(
            *when, *flow, question.dns_id, question.flags, question.qdcount,
            presentation_name(question.labels), question.qtype, question.qclass, rule,
        )
