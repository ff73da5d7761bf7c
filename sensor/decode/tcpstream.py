"""Per-direction TCP state for DNS over TCP, reassembled as the resolver's Linux kernel does, then the 2-byte
length framing (RFC 1035 4.2.2). The reference twin of ext/tcpstreams.pxi; the policy is docs/decoding.md,
"TCP reassembly".

The table is a bounded LRU keyed by (VLAN id, source address, source port, destination address,
destination port). Only packets change it, in packet order and by packet time (no timer sweeps it), so
the fast path and this reference keep and evict exactly the same streams.

What follows Linux (net/ipv4/tcp_input.c): segments ahead of the next expected byte wait in an out-of-order
queue; a segment wholly inside a queued one is dropped, one covering queued ones replaces them, and when the
queue drains the earlier bytes win (tcp_data_queue_ofo, tcp_ofo_queue). Bytes already delivered win over any
retransmission. Data on a SYN is ignored without a TCP Fast Open cookie. A RST counts only at the exact next
sequence number and a SYN on a stream that carried data is ignored (RFC 5961 3.2, 4.2); a FIN ends the stream
once everything before it has arrived, so the port can be used again. The urgent byte is taken out of the
stream (Linux's default, tcp_stdurg=0 without SO_OOBINLINE, which neither unbound nor BIND sets).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from sensor.decode.transport import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TCP_URG, TcpSegment

# Pending state per stream is bounded by the framing (at most 65,535 + 2 bytes) and the out-of-order limits
# below, so the number of streams bounds memory.
MAX_TCP_STREAMS = 4096
# A DNS client waits a few seconds for an answer; a stream silent for 30 s of packet time is over.
TCP_IDLE_TIMEOUT = 30
MAX_TCP_MESSAGE = 65_537  # the 2-byte prefix says at most 65,535, plus the prefix itself
MIN_TCP_BYTES = 262_144  # room for one stream's largest partial message grown by a large segment
MICROSECONDS = 1_000_000
SEQUENCE_MODULUS = 1 << 32  # TCP sequence numbers wrap (RFC 9293 3.4)
HALF_SEQUENCE_SPACE = 1 << 31
LENGTH_PREFIX = struct.Struct("!H")
# Out of order: a segment starting this far or further past the next expected byte is a capture gap, not a
# reordering (Linux's default receive window for a DNS server socket is about this size), and the stream resyncs.
OOO_WINDOW = 65_536
OOO_SEGMENTS = 64  # per stream: more waiting segments is a flood, not reordering
OOO_STREAM_BYTES = 131_072  # per stream: two windows, room for partly overlapping copies
OOO_TOTAL_BYTES = 8 * 1024 * 1024  # all streams together: max_ooo_bytes without a memory budget
# What a waiting segment costs beside its bytes (its entry and the allocator's header): a flood of one-byte
# segments is counted as the memory it takes (decision 0171).
OOO_SEGMENT_COST = 64
MIN_OOO_BYTES = 262_144  # room for one stream's whole queue (OOO_STREAM_BYTES and 64 entries) twice over
# Anomaly names (sensor/anomalies.py turns them into events).
OVERLAP_CONFLICT = "tcp_overlap_conflict"
EVICTED_MID_MESSAGE = "stream_evicted_mid_message"

StreamKey = tuple[int | None, bytes, int, bytes, int]
Report = Callable[[str, StreamKey, bytes], None]  # anomaly name, stream, the partial message (prefix included)


@dataclass(slots=True)
class Stream:
    """One direction of one connection: the next sequence number expected and the partial message."""

    expected: int
    last_seen: int  # packet time in microseconds
    pending: bytearray = field(default_factory=bytearray)
    ooo: list[tuple[int, bytes]] = field(default_factory=list)  # (sequence number, bytes), by sequence
    has_data: bool = False
    syn: bool = False  # this direction's SYN was seen
    synack: bool = False  # and the peer's SYN-ACK: the three-way handshake
    urgent: int | None = None  # the sequence number of the urgent byte still to come
    fin: int | None = None  # the sequence number of a FIN that arrived ahead of data
    acked: int | None = None  # the highest acknowledgement the peer sent: bytes the host received
    held: int = 0  # bytes the fast path has allocated for `pending` (its buf_cap): what the byte limit counts

    @property
    def ooo_bytes(self) -> int:
        return sum(len(data) for _, data in self.ooo)


class TcpStreams:
    """The bounded stream table; `counters` receives the tcp_* events, `report` the anomalies."""

    def __init__(self, counters: dict[str, int], max_streams: int, idle_timeout: float,
                 report: Report | None = None, *, max_bytes: int = -1, max_ooo_bytes: int = -1) -> None:
        if max_streams < 1:
            raise ValueError("max_tcp_streams must be at least 1")
        if max_bytes < 0:
            max_bytes = max(max_streams * MAX_TCP_MESSAGE, MIN_TCP_BYTES)  # the framing's limit only
        if max_bytes < MIN_TCP_BYTES:
            raise ValueError(f"max_tcp_bytes must be at least {MIN_TCP_BYTES}")
        self._max_bytes = max_bytes
        if max_ooo_bytes < 0:
            max_ooo_bytes = OOO_TOTAL_BYTES
        if max_ooo_bytes < MIN_OOO_BYTES:
            raise ValueError(f"max_ooo_bytes must be at least {MIN_OOO_BYTES}")
        self._max_ooo_bytes = max_ooo_bytes
        self.buffered = 0  # bytes held by partial messages, as the fast path allocates them
        self._streams: OrderedDict[StreamKey, Stream] = OrderedDict()  # least recently used first
        self._counters = counters
        self._max_streams = max_streams
        self._idle_us = int(idle_timeout * MICROSECONDS)
        self._report = report or (lambda kind, key, partial: None)
        # What the waiting segments cost, all streams: their bytes and OOO_SEGMENT_COST each (StreamTable.ooo_total)
        self.ooo_total = 0
        self.handshake = False  # of the stream the last segment() delivered messages on

    def __len__(self) -> int:
        return len(self._streams)

    def segment(self, key: StreamKey, segment: TcpSegment, now_us: int) -> list[bytes]:
        """Take one segment of one direction; return the DNS messages it completes, in order."""
        stream = self._streams.get(key)
        if stream is not None and self._idle(stream, now_us):
            self._remove(key)
            self._counters["tcp_stream_expired"] += 1
            stream = None
        flags = segment.flags
        if flags & TCP_ACK and not flags & TCP_RST:
            # The peer's acknowledgement: bytes before it reached the host, seen here or not (a capture gap).
            peer = self._streams.get((key[0], key[3], key[4], key[1], key[2]))
            if peer is not None and (peer.acked is None or signed_difference(segment.ack, peer.acked) > 0):
                peer.acked = segment.ack
        if flags & TCP_RST:
            # RFC 5961 3.2: only a RST at exactly the next expected number ends the stream; its data never counts.
            if stream is not None:
                if segment.seq == stream.expected:
                    self._remove(key)
                else:
                    self._counters["tcp_rst_ignored"] += 1
            return []
        payload = segment.payload
        if flags & TCP_SYN:
            if stream is not None and stream.has_data:
                self._counters["tcp_syn_ignored"] += 1  # RFC 5961 4.2: a SYN inside a live stream
                return []
            if payload and not segment.fast_open:
                self._counters["tcp_syn_data_ignored"] += 1  # without a TFO cookie the kernel drops SYN data
                payload = b""
            if stream is None:
                stream = self._create(key, now_us)
            else:
                self._reset(stream)
            stream.expected = (segment.seq + 1) % SEQUENCE_MODULUS  # the SYN takes one number
            stream.syn = True
            stream.synack = False
            if flags & TCP_ACK:  # a SYN-ACK completes the peer's handshake
                peer = self._streams.get((key[0], key[3], key[4], key[1], key[2]))
                if peer is not None and peer.syn and not peer.has_data:
                    peer.synack = True
            seq = stream.expected
        else:
            seq = segment.seq
            if stream is None:
                if not payload:
                    return []
                # Joined mid-connection (or the SYN was missed): assume the segment starts a message.
                stream = self._create(key, now_us)
                stream.expected = seq
        if payload or flags & TCP_SYN:  # a bare ACK or FIN does not keep a stream alive
            self._touch(key, stream, now_us)
        if flags & TCP_URG:
            self._urgent(stream, seq, segment.urgent)
        messages = self._accept(key, stream, seq, payload) if payload else []
        self.handshake = stream.syn and stream.synack
        if flags & TCP_FIN:
            fin = (seq + len(payload)) % SEQUENCE_MODULUS
            if signed_difference(fin, stream.expected) >= 0:
                stream.fin = fin  # ends the stream now, or once the data before it has arrived
        if stream.fin is not None and stream.fin == stream.expected:
            self._remove(key)
        return messages

    def _urgent(self, stream: Stream, seq: int, pointer: int) -> None:
        """Linux's tcp_check_urg: the byte before the pointer is urgent, if not already passed or superseded."""
        at = (seq + pointer - 1) % SEQUENCE_MODULUS if pointer else seq
        if signed_difference(at, stream.expected) < 0:
            return
        if stream.urgent is not None and signed_difference(at, stream.urgent) <= 0:
            return
        stream.urgent = at

    def _accept(self, key: StreamKey, stream: Stream, seq: int, payload: bytes) -> list[bytes]:
        """Bytes at `seq`: delivered, queued out of order, or dropped as already delivered."""
        stream.has_data = True
        start = signed_difference(seq, stream.expected)
        if start + len(payload) <= 0:
            self._counters["tcp_retransmission"] += 1
            self._conflict(key, stream, payload, -start)
            return []
        if start < 0:
            # A retransmission that also carries new bytes: the bytes already delivered win (Linux reads from
            # rcv_nxt), the rest is new.
            self._counters["tcp_overlap"] += 1
            self._conflict(key, stream, payload[:-start], -start)
            payload = payload[-start:]
            start = 0
        if start >= OOO_WINDOW:
            self._counters["tcp_gap"] += 1  # a capture gap: what was pending cannot complete
            self._reset(stream)
            stream.expected = seq
            start = 0
        if start > 0 and stream.acked is not None and signed_difference(stream.acked, stream.expected) > 0:
            # The peer acknowledged bytes the sensor never saw: a capture gap, not a hole the host waits on.
            self._counters["tcp_gap"] += 1
            skip = min(signed_difference(stream.acked, stream.expected), start)
            self._release(stream)
            stream.pending.clear()
            stream.urgent = None
            stream.expected = (stream.expected + skip) % SEQUENCE_MODULUS
            start -= skip
        if start > 0:
            self._queue(key, stream, start, payload)
            return []
        if not stream.pending and not stream.ooo and not (
                stream.urgent is not None and 0 <= signed_difference(stream.urgent, stream.expected) < len(payload)):
            # The fast path decodes a segment in place and keeps (allocates) only what is left of it.
            stream.expected = (stream.expected + len(payload)) % SEQUENCE_MODULUS
            stream.pending += payload
            messages = take_messages(stream.pending)
            if stream.pending:
                self._hold(stream, len(stream.pending))
            return messages
        self._deliver(stream, payload)
        self._drain(key, stream)
        messages = take_messages(stream.pending)
        if not stream.pending:
            self._release(stream)
        return messages

    def _conflict(self, key: StreamKey, stream: Stream, old: bytes, behind: int) -> None:
        self._note_conflict(key, stream, self._differs(stream, old, behind))

    @staticmethod
    def _differs(stream: Stream, old: bytes, behind: int) -> bool:
        """`old` (bytes ending `behind` bytes before the next expected one) against what was delivered, where
        the partial message still holds it: a different copy is an overlap conflict."""
        end = len(stream.pending) - behind + len(old)
        begin = end - len(old)
        if begin < 0 or end > len(stream.pending) or not old:
            return False
        return stream.pending[begin:end] != old

    def _queue(self, key: StreamKey, stream: Stream, start: int, payload: bytes) -> None:
        """Linux's tcp_data_queue_ofo: positions relative to the next expected byte."""
        end = start + len(payload)
        conflict = False
        positioned = [(signed_difference(s, stream.expected), data) for s, data in stream.ooo]
        for s, data in positioned:
            e = s + len(data)
            low, high = max(s, start), min(e, end)
            if low < high and data[low - s : high - s] != payload[low - start : high - start]:
                conflict = True
            if s <= start and end <= e:
                self._counters["tcp_overlap"] += 1  # all its bytes are queued already: the first copy stays
                self._note_conflict(key, stream, conflict)
                return
        covered = [(s, data) for s, data in positioned if start <= s and s + len(data) <= end]
        freed = sum(len(data) for _, data in covered)
        held = stream.ooo_bytes - freed
        if len(stream.ooo) - len(covered) >= OOO_SEGMENTS or held + len(payload) > OOO_STREAM_BYTES:
            self._counters["tcp_ooo_dropped"] += 1
            return
        cost = len(payload) + OOO_SEGMENT_COST
        released = freed + len(covered) * OOO_SEGMENT_COST
        if self.ooo_total - released + cost > self._max_ooo_bytes:
            self._ooo_make_room(stream, self.ooo_total - released + cost - self._max_ooo_bytes)
        if covered or any(s < end and start < s + len(data) for s, data in positioned):
            self._counters["tcp_overlap"] += 1
        self._note_conflict(key, stream, conflict)
        kept = [(s, data) for s, data in positioned if not (start <= s and s + len(data) <= end)]
        kept.append((start, payload))
        kept.sort(key=lambda item: item[0])  # stable: an equal start keeps the older copy first
        stream.ooo = [((stream.expected + s) % SEQUENCE_MODULUS, data) for s, data in kept]
        self.ooo_total += cost - released
        self._counters["tcp_out_of_order"] += 1

    def _ooo_make_room(self, keep: Stream, excess: int) -> None:
        """The memory budget (StreamTable.ooo_make_room): the least recently used other streams lose their
        waiting segments until `excess` is freed; a flood of reordered junk does not keep a later segment out."""
        for other in self._streams.values():  # least recently used first
            if excess <= 0:
                break
            if other is keep or not other.ooo:
                continue
            freed = other.ooo_bytes + len(other.ooo) * OOO_SEGMENT_COST
            self.ooo_total -= freed
            other.ooo = []
            self._counters["tcp_ooo_evicted"] += 1
            excess -= freed

    def _note_conflict(self, key: StreamKey, stream: Stream, conflict: bool) -> None:
        if conflict:
            self._counters["tcp_overlap_conflict"] += 1
            self._report(OVERLAP_CONFLICT, key, bytes(stream.pending))

    def _drain(self, key: StreamKey, stream: Stream) -> None:
        """Linux's tcp_ofo_queue: queued segments reached by the next expected byte, earlier bytes winning. Any
        conflict is reported once, after the drain."""
        conflict = False
        while stream.ooo:
            seq, data = stream.ooo[0]
            start = signed_difference(seq, stream.expected)
            if start > 0:
                break
            del stream.ooo[0]
            self.ooo_total -= len(data) + OOO_SEGMENT_COST
            if start + len(data) <= 0:
                continue
            if start < 0:
                conflict |= self._differs(stream, data[:-start], -start)
                data = data[-start:]
            self._deliver(stream, data)
        self._note_conflict(key, stream, conflict)

    def _deliver(self, stream: Stream, data: bytes) -> None:
        """In-order bytes at stream.expected into the partial message, less the urgent byte."""
        length = len(data)
        if stream.urgent is not None:
            at = signed_difference(stream.urgent, stream.expected)
            if 0 <= at < length:
                stream.urgent = None
                self._counters["tcp_urgent_dropped"] += 1
                self._append(stream, data[:at])  # two appends, as the fast path grows its buffer
                self._append(stream, data[at + 1 :])
                stream.expected = (stream.expected + length) % SEQUENCE_MODULUS
                return
        self._append(stream, data)
        stream.expected = (stream.expected + length) % SEQUENCE_MODULUS

    # Bytes accounting (issue 14, the memory budget), as ext/tcpstreams.pxi allocates: a partial message holds
    # what its buffer last grew to until it is complete or dropped.
    def _append(self, stream: Stream, data: bytes) -> None:
        """StreamTable.append: the buffer grows to exactly what it must hold, never shrinks while held."""
        if not data:
            return
        need = len(stream.pending) + len(data)
        if need > stream.held:
            self._hold(stream, need)
        stream.pending += data

    def _hold(self, stream: Stream, need: int) -> None:
        """Grow a stream's buffer to `need` bytes, first dropping least recently used partials over the limit
        (StreamTable.make_room): the streams stay, their next bytes are taken as they come."""
        excess = self.buffered - stream.held + need - self._max_bytes
        if excess > 0:
            for other in self._streams.values():  # least recently used first
                if other is stream or not other.held:
                    continue
                freed = other.held
                self._release(other)
                other.pending.clear()
                self._counters["tcp_buffer_evicted"] += 1
                excess -= freed
                if excess <= 0:
                    break
        self.buffered += need - stream.held
        stream.held = need

    def _release(self, stream: Stream) -> None:
        self.buffered -= stream.held
        stream.held = 0

    def _idle(self, stream: Stream, now_us: int) -> bool:
        return now_us - stream.last_seen > self._idle_us

    def _touch(self, key: StreamKey, stream: Stream, now_us: int) -> None:
        stream.last_seen = now_us
        self._streams.move_to_end(key)

    def _reset(self, stream: Stream) -> None:
        self._release(stream)
        stream.pending.clear()
        self.ooo_total -= stream.ooo_bytes + len(stream.ooo) * OOO_SEGMENT_COST
        stream.ooo = []
        stream.urgent = None
        stream.fin = None
        stream.acked = None

    def _remove(self, key: StreamKey) -> None:
        self._reset(self._streams.pop(key))

    def _create(self, key: StreamKey, now_us: int) -> Stream:
        """A new stream, evicting the least recently used one when the table is full. Evicting one in the middle
        of a message is reported: a flood of streams is how a query is hidden from a sensor."""
        if len(self._streams) >= self._max_streams:
            oldest_key, oldest = next(iter(self._streams.items()))
            if self._idle(oldest, now_us):
                self._counters["tcp_stream_expired"] += 1
            else:
                self._counters["tcp_stream_evicted"] += 1
                if oldest.pending or oldest.ooo:
                    self._counters["tcp_evicted_mid_message"] += 1
                    self._report(EVICTED_MID_MESSAGE, oldest_key, bytes(oldest.pending))
            self._remove(oldest_key)
        stream = self._streams[key] = Stream(0, now_us)
        return stream


def signed_difference(a: int, b: int) -> int:
    """a - b in TCP sequence arithmetic: the 32-bit difference read as signed (RFC 9293 3.4)."""
    difference = (a - b) % SEQUENCE_MODULUS
    return difference - SEQUENCE_MODULUS if difference >= HALF_SEQUENCE_SPACE else difference


def take_messages(pending: bytearray) -> list[bytes]:
    """Cut every complete length-prefixed message off the front of `pending` (a 0 length gives b'')."""
    messages = []
    while len(pending) >= LENGTH_PREFIX.size:
        (length,) = LENGTH_PREFIX.unpack_from(pending)
        if len(pending) < LENGTH_PREFIX.size + length:
            break  # at most 2 + 65,534 bytes stay pending
        messages.append(bytes(pending[LENGTH_PREFIX.size : LENGTH_PREFIX.size + length]))
        del pending[: LENGTH_PREFIX.size + length]
    return messages
