"""ReferenceLoop: the pure-Python twin of sensor._loop.FastLoop, one frame at a time and easy to read."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

from sensor.anomalies import AnomalyRecord, MirrorSources
from sensor.decode.anomaly import Anomaly
from sensor.decode.checksum import CHECKSUMS_AUTO, ChecksumPolicy, transport_ok
from sensor.decode.cnames import cname_hit
from sensor.decode.correlate import MAX_PENDING_QUERIES, QUERY_TIMEOUT, Correlator
from sensor.decode.dnsmsg import decode_message, presentation_name, stream_partial_name
from sensor.decode.edns import client_subnet
from sensor.decode.ip import IpPacket, decode_ip, walk_ipv6_extensions
from sensor.decode.link import DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2, IPV4, PPPOE, decode_ethernet, decode_link
from sensor.decode.reassembly import FRAGMENT_TIMEOUT, MAX_FRAGMENT_BYTES, MAX_FRAGMENTED_DATAGRAMS, Reassembler
from sensor.decode.tcpstream import MAX_TCP_STREAMS, MICROSECONDS, TCP_IDLE_TIMEOUT, TcpStreams, take_messages
from sensor.decode.transport import PROTO_TCP, PROTO_UDP, decode_tcp, decode_udp
from sensor.decode.tunnel import (
    ETHERNET,
    MAX_TUNNEL_DEPTH,
    PROTO_GRE,
    Inner,
    decode_gre,
    decode_pppoe,
    decode_udp_tunnel,
)
from sensor.querylog.record import QueryLogEntry
from sensor.records import COUNTERS, DnsMessage
from sensor.rules.matcher import match_table

# One record per frame in pcapy-ng's next_batch meta: four native-endian uint32.
BATCH_META = struct.Struct("=IIII")  # seconds, microseconds, offset into data, captured length
NO_RULE = -1
MAX_PORT = 65535
BAD_CHECKSUM_QUERY = "bad_checksum_query"
BAD_CHECKSUM_RESPONSE = "bad_checksum_response"
TUNNEL_UNTRUSTED = "tunnel_untrusted"
CNAME_COUNTERS = ("dns_cname_hits", "dns_bad_answers")  # what cname_hit counts


class Flow(NamedTuple):
    """The record fields layers 2-4 give (of the innermost packet, inside any tunnels), in DnsMessage order,
    and the tunnels crossed."""

    vlan_id: int | None
    src_ip: bytes
    dst_ip: bytes
    transport: int
    src_port: int
    dst_port: int
    tunnel: str | None


class FrameState:
    """What a frame's outer layers leave for the record: the sender's MAC, the first tunnel's outer addresses, and
    `shadow`, an anomaly name when the frame is only looked at (the resolver would not see it): its queries make
    no record, only an anomaly when they would hit, and nothing past the first reason is counted. `deferred`: a
    UDP response's checks not made yet (the query log is off), made only if it would be a CNAME hit (decision
    0162): (packet, the UDP datagram, the IPv4 header's verdict or None)."""

    __slots__ = ("mac", "outer", "shadow", "handshake", "deferred")

    def __init__(self) -> None:
        self.mac: bytes | None = None
        self.outer: tuple[bytes, bytes] | None = None
        self.shadow: str | None = None
        self.handshake: bool | None = None
        self.deferred: tuple[IpPacket, bytes, bool | None] | None = None


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
        max_tcp_bytes: int = -1,
        max_ooo_bytes: int = -1,
        allow: bytes = b"",
        patterns: Callable[[str], int] | None = None,
        flows=None,
        query_log: bool = False,
        max_pending_queries: int = MAX_PENDING_QUERIES,
        query_timeout: float = QUERY_TIMEOUT,
        max_fragmented_datagrams: int = MAX_FRAGMENTED_DATAGRAMS,
        max_fragment_bytes: int = MAX_FRAGMENT_BYTES,
        fragment_timeout: float = FRAGMENT_TIMEOUT,
        checksums: int = CHECKSUMS_AUTO,
        mirror_sources: Sequence[str] = (),
    ) -> None:
        self.linktype = linktype
        for port in ports:
            if not 0 < port <= MAX_PORT:
                raise ValueError(f"port {port} is outside 1-{MAX_PORT}")
        self.ports = frozenset(ports)
        self.set_rules(table, allow, patterns)
        self.emit_all = emit_all
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._anomalies: list[AnomalyRecord] = []
        self._when = (0, 0, 0)
        self._streams = TcpStreams(self._counters, max_tcp_streams, tcp_idle_timeout, report=self._stream_anomaly,
                                   max_bytes=max_tcp_bytes, max_ooo_bytes=max_ooo_bytes)
        self.flows = flows  # a ReferenceFlowTable: every frame's first IP header is accounted in it
        self._fragments = Reassembler(self._counters, max_fragmented_datagrams, max_fragment_bytes, fragment_timeout,
                                      self._fragment_anomaly)
        self._checksums = ChecksumPolicy(checksums, self._counters)
        self._mirrors = MirrorSources(mirror_sources)
        self._correlator = Correlator(self._counters, max_pending_queries, query_timeout) if query_log else None

    def set_rules(self, table: dict, allow: bytes = b"", patterns: Callable[[str], int] | None = None) -> None:
        """Rules for the next batch on: the table, one allow byte per rule, the wildcard/regex matcher."""
        self.table = table
        self.allow = bytes(allow)
        self.patterns = patterns

    def counters(self) -> dict[str, int]:
        """Every counter of sensor.records.COUNTERS, plus the gauges of table_sizes()."""
        return {**self._counters, **self.table_sizes()}

    def table_sizes(self) -> dict[str, int]:
        """How full each bounded table is now: TCP streams, fragmented datagrams, pending queries (0 when off)."""
        return {
            "tcp_streams": len(self._streams),
            "fragmented_datagrams": len(self._fragments),
            "pending_queries": len(self._correlator) if self._correlator is not None else 0,
            "tcp_buffered_bytes": self._streams.buffered,
            "tcp_ooo_bytes": self._streams.ooo_total,
            "fragment_bytes": self._fragments.held,
        }

    def take_anomalies(self) -> list[AnomalyRecord]:
        """Anomalies seen since the last take, in order (sensor/anomalies.py makes events of them)."""
        taken, self._anomalies = self._anomalies, []
        return taken

    def _stream_anomaly(self, kind: str, key: tuple, pending: bytes) -> None:
        vlan_id, src, src_port, dst, dst_port = key
        self._anomalies.append(AnomalyRecord(kind, *self._when, vlan_id, src, dst, PROTO_TCP, src_port, dst_port,
                                             stream_partial_name(pending)))

    def _fragment_anomaly(self, kind: str, key: tuple) -> None:
        vlan_id, _, key_protocol, src, dst, _ = key
        self._anomalies.append(AnomalyRecord(kind, *self._when, vlan_id, src, dst, 0, 0, 0, None))

    def take_query_log(self) -> list[QueryLogEntry]:
        """Query-log entries finished since the last take, in finishing order ([] when the log is off)."""
        return self._correlator.take() if self._correlator is not None else []

    def flush_query_log(self) -> None:
        """Finish every pending query as unanswered (end of a capture, or stop)."""
        if self._correlator is not None:
            self._correlator.flush()

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
        self._when = (frame, ts_sec, ts_usec)
        state = FrameState()
        # A cooked capture marks what the capturing host sent (packet type 4): its checksums are not filled in
        # yet (offload), and the host's own frames are no decoy aimed at it.
        self._checksums.outgoing = (self.linktype == DLT_LINUX_SLL and data[:2] == b"\x00\x04") or (
            self.linktype == DLT_LINUX_SLL2 and len(data) >= 11 and data[10] == 4)
        try:
            messages, flow = self._frame_messages(data, ts_sec * MICROSECONDS + ts_usec, state)
        except Anomaly as anomaly:
            if state.shadow is None:  # a shadowed frame was counted once, by its first reason
                self._counters[anomaly.reason] += 1
            return []
        finally:
            self._checksums.end_frame()
        records = []
        for message in messages:
            if state.shadow is not None:
                self._shadow_message(message, flow, state)
                continue
            record = self._decode_message(message, (frame, ts_sec, ts_usec), flow, state)
            if record is not None:
                records.append(record)
        return records

    def _shadow(self, state: FrameState, reason: str, anomaly: str) -> None:
        """The frame is counted under `reason` and from now on only looked at for `anomaly`."""
        if state.shadow is None:
            self._counters[reason] += 1
            state.shadow = anomaly

    def _shadow_message(self, message: bytes, flow: Flow, state: FrameState) -> None:
        """A query the resolver never sees: an anomaly if it would hit, nothing counted."""
        try:
            question = decode_message(message)
        except Anomaly:
            return
        vlan_id, src, dst, transport, src_port, dst_port, _ = flow
        outer_src, outer_dst = (None, None) if state.shadow != TUNNEL_UNTRUSTED or state.outer is None \
            else state.outer
        if question.is_response:  # a response the client never gets: an anomaly when it would be a CNAME hit
            _, cname = cname_hit(message, question, self._target_rule, dict.fromkeys(CNAME_COUNTERS, 0))
            if cname is not None:
                kind = BAD_CHECKSUM_RESPONSE if state.shadow == BAD_CHECKSUM_QUERY else state.shadow or ""
                self._response_anomaly(kind, flow, cname, outer_src, outer_dst)
            return
        if self._rule(question) == NO_RULE:
            return
        frame, ts_sec, ts_usec = self._when
        self._anomalies.append(AnomalyRecord(state.shadow or "", frame, ts_sec, ts_usec, vlan_id, src, dst, transport,
                                             src_port, dst_port, presentation_name(question.labels), outer_src,
                                             outer_dst))

    def _response_anomaly(self, kind: str, flow: Flow, cname, outer_src: bytes | None = None,
                          outer_dst: bytes | None = None) -> None:
        """A response that would be a CNAME hit: named by its client (the response's receiver, as a CNAME hit's
        event is) and the target that matched."""
        vlan_id, src, dst, transport, src_port, dst_port, _ = flow
        frame, ts_sec, ts_usec = self._when
        matched, records = cname
        self._anomalies.append(AnomalyRecord(kind, frame, ts_sec, ts_usec, vlan_id, dst, src, transport, dst_port,
                                             src_port, records[matched][2], outer_src, outer_dst))

    def _response_dropped(self, state: FrameState) -> bool:
        """The deferred checks of a UDP response that would hit (decision 0162): the IPv4 header, then the UDP
        checksum, counted as a query's are; True when the client's kernel drops it."""
        assert state.deferred is not None
        packet, segment, header = state.deferred
        state.deferred = None
        if not self._checksums.active:
            return False
        if header is not None and not self._checksums.accept(header):
            self._counters["bad_ip_checksum"] += 1
            return True
        if not self._checksums.accept(transport_ok(PROTO_UDP, packet.src, packet.dst, segment)):
            self._counters["bad_udp_checksum"] += 1
            return True
        return False

    def _rule(self, question) -> int:
        rule = match_table(self.table, question.labels)
        if rule == NO_RULE and self.patterns is not None:  # wildcards and regexes: least specific
            rule = self.patterns(presentation_name(question.labels).lower())
        if rule != NO_RULE and rule < len(self.allow) and self.allow[rule]:
            return NO_RULE
        return rule

    def _target_rule(self, labels: list[str]) -> int:
        """A CNAME target's rule, matched as a query's name is (sensor/decode/cnames.py)."""
        rule = match_table(self.table, labels)
        if rule == NO_RULE and self.patterns is not None:
            rule = self.patterns(presentation_name(labels).lower())
        if rule != NO_RULE and rule < len(self.allow) and self.allow[rule]:
            return NO_RULE
        return rule

    def _frame_messages(self, data: bytes, now_us: int, state: FrameState) -> tuple[list[bytes], Flow]:
        """Layers 2-4, through any tunnels: the DNS messages this frame carries (or completes) and the
        innermost addresses they travel on."""
        link = decode_link(self.linktype, data)
        state.mac = source_mac(self.linktype, data)
        vlan_id, protocol, packet_bytes = link.vlan_id, link.protocol, data[link.offset :]
        tunnels: list[str] = []
        accounted = self.flows is None
        while True:
            if protocol == PPPOE:
                inner = self._open(tunnels, decode_pppoe, packet_bytes)
            else:
                if not accounted:  # flows see the outermost IP header, before any DNS check
                    accounted = True
                    self.flows.account(protocol, packet_bytes, vlan_id, now_us, self._counters)
                packet = decode_ip(protocol, packet_bytes, 0)
                # An IPv4 header's checksum is checked once the packet is known to matter (DNS that can hit, a
                # tunnel), so that other traffic costs nothing; a fragment's at once, before reassembly.
                header = packet.header_ok if protocol == IPV4 else None
                if packet.fragment is not None:
                    if header is not None and self._checksums.active and not self._checksums.accept(header):
                        raise Anomaly("bad_ip_checksum")  # Linux drops it before reassembly
                    header = None
                    if state.shadow is not None:
                        raise Anomaly("ip_fragment")  # not counted: the frame was counted by its first reason
                    packet = self._reassemble(protocol, vlan_id, packet, now_us)
                if packet.protocol == PROTO_GRE:
                    self._check_header(header, state)
                    inner = self._open(tunnels, decode_gre, packet.payload, packet, state)
                elif packet.protocol == PROTO_UDP:
                    datagram = decode_udp(packet.payload, self.ports)
                    if not datagram.tunnel:
                        self._check_transport(PROTO_UDP, packet, state, header)
                        break
                    self._check_header(header, state)
                    inner = self._open(tunnels, partial(decode_udp_tunnel, datagram.dst_port), datagram.payload,
                                       packet, state)
                elif packet.protocol == PROTO_TCP:
                    segment = decode_tcp(packet.payload, self.ports)
                    self._check_transport(PROTO_TCP, packet, state, header)
                    break
                else:
                    raise Anomaly("not_udp_tcp")
            protocol, packet_bytes = inner.kind, inner.payload
            if protocol == ETHERNET:
                # The client's VLAN is the innermost Ethernet frame's, not the transport network's.
                link = decode_ethernet(packet_bytes)
                state.mac = packet_bytes[6:12]
                vlan_id, protocol, packet_bytes = link.vlan_id, link.protocol, packet_bytes[link.offset :]
        tunnel = "/".join(tunnels) or None
        if packet.protocol == PROTO_UDP:
            flow = Flow(vlan_id, packet.src, packet.dst, PROTO_UDP, datagram.src_port, datagram.dst_port, tunnel)
            return [datagram.payload], flow
        flow = Flow(vlan_id, packet.src, packet.dst, PROTO_TCP, segment.src_port, segment.dst_port, tunnel)
        if state.shadow is not None:
            return take_messages(bytearray(segment.payload)), flow  # this segment alone; no stream state
        key = (vlan_id, packet.src, segment.src_port, packet.dst, segment.dst_port)
        messages = self._streams.segment(key, segment, now_us)
        state.handshake = self._streams.handshake
        if not segment.payload:
            raise Anomaly("tcp_no_payload")  # counted after the stream saw its SYN, FIN or RST
        return messages, flow

    def _check_header(self, header: bool | None, state: FrameState) -> None:
        """An IPv4 header checksum still to check (`header`: its verdict; None: none or checked already)."""
        if header is None or not self._checksums.active or self._checksums.accept(header):
            return
        if state.shadow is not None:
            raise Anomaly("bad_ip_checksum")  # not counted: the frame was counted by its first reason
        self._shadow(state, "bad_ip_checksum", BAD_CHECKSUM_QUERY)

    def _check_transport(self, protocol: int, packet: IpPacket, state: FrameState, header: bool | None) -> None:
        """The IPv4 header, then the UDP or TCP checksum, once the datagram is known to be DNS: a bad one shadows
        the frame. A UDP response without the query log is checked later, only when it would be a CNAME hit (the
        one hit a response makes; decision 0162): `state.deferred`."""
        segment = packet.payload
        if protocol == PROTO_UDP:  # Linux trims the IP payload to the UDP length before checking
            segment = segment[: int.from_bytes(segment[4:6], "big")]
            if len(segment) >= 11 and segment[10] & 0x80 and self._correlator is None:
                if state.shadow is None:
                    state.deferred = (packet, segment, header)
                return
        self._check_header(header, state)
        if state.shadow is not None or not self._checksums.active:
            return
        if not self._checksums.accept(transport_ok(protocol, packet.src, packet.dst, segment)):
            if protocol == PROTO_UDP:
                self._shadow(state, "bad_udp_checksum", BAD_CHECKSUM_QUERY)
            else:
                self._shadow(state, "bad_tcp_checksum", BAD_CHECKSUM_QUERY)

    def _reassemble(self, version: int, vlan_id: int | None, packet: IpPacket, now_us: int) -> IpPacket:
        """A fragment: held (counted ip_fragment or ip_fragment_not_first), or the one completing its
        datagram, which this frame then carries on from the transport layer."""
        fragment = packet.fragment
        assert fragment is not None  # only fragments are passed here
        key = (vlan_id, version, fragment.key_protocol, packet.src, packet.dst, fragment.ident)
        whole = self._fragments.add(key, now_us, fragment.offset, fragment.more, fragment.protocol, packet.payload)
        if whole is None:
            raise Anomaly("ip_fragment" if fragment.offset == 0 else "ip_fragment_not_first")
        payload, protocol = whole
        if version == IPV4:
            return IpPacket(packet.src, packet.dst, protocol, payload)
        return walk_ipv6_extensions(protocol, payload, packet.src, packet.dst, reassembled=True)

    def _open(self, tunnels: list[str], decode: Callable[[bytes], Inner], data: bytes,
              carrier: IpPacket | None = None, state: FrameState | None = None) -> Inner:
        """One more tunnel: refused past MAX_TUNNEL_DEPTH before its header is read; `tunneled` counts a
        frame once, when its first tunnel header has been read. A mirror tunnel (`carrier`: the IP packet it
        came in) from a sender not in --mirror-source shadows the frame (counted tunnel_untrusted)."""
        if len(tunnels) == MAX_TUNNEL_DEPTH:
            raise Anomaly("tunnel_too_deep")
        inner = decode(data)
        tunnels.append(inner.name)
        if len(tunnels) == 1:
            self._counters["tunneled"] += 1
        if carrier is not None and state is not None and state.outer is None:
            state.outer = (carrier.src, carrier.dst)
            if not self._mirrors.trusts(carrier.src):
                self._shadow(state, "tunnel_untrusted", TUNNEL_UNTRUSTED)
        return inner

    def _decode_message(self, message: bytes, when: tuple[int, int, int], flow: Flow,
                        state: FrameState) -> DnsMessage | None:
        """One DNS message: counted as a query, a response or one dns_* reason; matched when a query; a record
        only when emitted (a hit, or any message under emit_all), and then a query's EDNS Client Subnet read."""
        try:
            question = decode_message(message)
        except Anomaly as anomaly:
            self._counters[anomaly.reason] += 1
            return None
        rule = NO_RULE
        cname = None
        if question.is_response:
            if state.deferred is None:
                rule, cname = cname_hit(message, question, self._target_rule, self._counters)
            else:  # nothing is counted of a response its client's kernel drops: counted once it passes
                scratch = dict.fromkeys(CNAME_COUNTERS, 0)
                rule, cname = cname_hit(message, question, self._target_rule, scratch)
                if cname is not None and self._response_dropped(state):
                    self._response_anomaly(BAD_CHECKSUM_RESPONSE, flow, cname)
                    return None
                for key, value in scratch.items():
                    self._counters[key] += value
            self._counters["dns_responses"] += 1
            if rule != NO_RULE:
                self._counters["hits"] += 1
        else:
            self._counters["dns_queries"] += 1
            rule = match_table(self.table, question.labels)
            if rule == NO_RULE and self.patterns is not None:  # wildcards and regexes: least specific
                rule = self.patterns(presentation_name(question.labels).lower())
            if rule != NO_RULE and rule < len(self.allow) and self.allow[rule]:
                self._counters["allowed"] += 1
                rule = NO_RULE
            if rule != NO_RULE:
                self._counters["hits"] += 1
        if question.qdcount > 1:
            self._counters["dns_extra_questions"] += 1
        if self._correlator is not None:
            self._correlator.message(
                message, when, flow, question.flags, presentation_name(question.labels), question.qtype,
                question.qclass,
            )
        if rule == NO_RULE and not self.emit_all:
            return None  # not emitted: its EDNS is not read
        subnet = None
        if not question.is_response:
            try:
                subnet = client_subnet(message, question.end)
            except Anomaly as anomaly:
                self._counters[anomaly.reason] += 1
        *layers, tunnel = flow
        return DnsMessage._make((
            *when, *layers, question.dns_id, question.flags, question.qdcount,
            presentation_name(question.labels), question.qtype, question.qclass, rule, tunnel, subnet,
            state.mac, state.outer, state.handshake, cname,
        ))


def source_mac(linktype: int, frame: bytes) -> bytes | None:
    """The sender's link address: Ethernet's source, or a cooked capture's address when it is 6 bytes long."""
    if linktype == DLT_EN10MB:
        return frame[6:12]
    if linktype == DLT_LINUX_SLL and frame[4:6] == b"\x00\x06":
        return frame[6:12]
    if linktype == DLT_LINUX_SLL2 and frame[11] == 6:
        return frame[12:18]
    return None
