"""Per-direction TCP state for DNS over TCP: in-order reassembly and the 2-byte length framing (RFC 1035 4.2.2).

The table is a bounded LRU keyed by (VLAN id, source address, source port, destination address,
destination port). Only packets change it, in packet order and by packet time (no timer sweeps it), so
the fast path and this reference keep and evict exactly the same streams.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from sensor.decode.transport import TCP_FIN, TCP_RST, TCP_SYN, TcpSegment

# Pending state per stream is bounded by the framing (at most 65,535 + 2 bytes), so the number of streams
# bounds memory: 4096 streams hold at most 256 MiB in the worst case and far less in practice.
MAX_TCP_STREAMS = 4096
# A DNS client waits a few seconds for an answer; a stream silent for 30 s of packet time is over.
TCP_IDLE_TIMEOUT = 30
MAX_TCP_MESSAGE = 65_537  # the 2-byte prefix says at most 65,535, plus the prefix itself
MIN_TCP_BYTES = 262_144  # room for one stream's largest partial message grown by a large segment
MICROSECONDS = 1_000_000
SEQUENCE_MODULUS = 1 << 32  # TCP sequence numbers wrap (RFC 9293 3.4)
HALF_SEQUENCE_SPACE = 1 << 31
LENGTH_PREFIX = struct.Struct("!H")

StreamKey = tuple[int | None, bytes, int, bytes, int]


@dataclass(slots=True)
class Stream:
    """One direction of one connection: the next sequence number expected and the partial message."""

    expected: int
    last_seen: int  # packet time in microseconds
    pending: bytearray = field(default_factory=bytearray)
    held: int = 0  # bytes the fast path has allocated for `pending` (its buf_cap): what the byte limit counts


class TcpStreams:
    """The bounded stream table; `counters` receives the tcp_* events."""

    def __init__(self, counters: dict[str, int], max_streams: int, idle_timeout: float, max_bytes: int = -1) -> None:
        if max_streams < 1:
            raise ValueError("max_tcp_streams must be at least 1")
        if max_bytes < 0:
            max_bytes = max(max_streams * MAX_TCP_MESSAGE, MIN_TCP_BYTES)  # the framing's limit only
        if max_bytes < MIN_TCP_BYTES:
            raise ValueError(f"max_tcp_bytes must be at least {MIN_TCP_BYTES}")
        self._max_bytes = max_bytes
        self.buffered = 0  # bytes held by partial messages, as the fast path allocates them
        self._streams: OrderedDict[StreamKey, Stream] = OrderedDict()  # least recently used first
        self._counters = counters
        self._max_streams = max_streams
        self._idle_us = int(idle_timeout * MICROSECONDS)

    def __len__(self) -> int:
        return len(self._streams)

    def segment(self, key: StreamKey, segment: TcpSegment, now_us: int) -> list[bytes]:
        """Take one segment of one direction; return the DNS messages it completes, in order.

        The steps (docs/decoding.md, "TCP framing"): an idle stream is dropped as expired whatever the
        segment; a SYN without payload opens the stream or starts it over at seq + 1; a FIN or RST without
        payload drops it; any other segment without payload changes nothing (it does not keep a stream
        alive). A segment with payload opens the stream if there is none, is joined, retransmitted or a
        gap, refreshes the stream, and a FIN or RST on it then drops the stream.
        """
        stream = self._streams.get(key)
        if stream is not None and self._idle(stream, now_us):
            self._release(stream)
            del self._streams[key]
            self._counters["tcp_stream_expired"] += 1
            stream = None
        syn = bool(segment.flags & TCP_SYN)
        closing = bool(segment.flags & (TCP_FIN | TCP_RST))
        data_seq = (segment.seq + 1) % SEQUENCE_MODULUS if syn else segment.seq  # the SYN takes one number
        if not segment.payload:
            if syn:
                if stream is None:
                    stream = self._create(key, now_us)
                self._release(stream)
                stream.pending.clear()
                stream.expected = data_seq
                self._touch(key, stream, now_us)
            elif closing and stream is not None:
                self._release(stream)
                del self._streams[key]
            return []
        if stream is None:
            # Joined mid-connection (or the SYN was missed): assume the segment starts a message.
            stream = self._create(key, now_us)
            stream.expected = data_seq
        messages = self._feed(stream, data_seq, segment.payload)
        self._touch(key, stream, now_us)
        if closing:
            self._release(stream)
            del self._streams[key]
        return messages

    def _idle(self, stream: Stream, now_us: int) -> bool:
        return now_us - stream.last_seen > self._idle_us

    def _touch(self, key: StreamKey, stream: Stream, now_us: int) -> None:
        stream.last_seen = now_us
        self._streams.move_to_end(key)

    def _create(self, key: StreamKey, now_us: int) -> Stream:
        """A new stream, evicting the least recently used one when the table is full."""
        if len(self._streams) >= self._max_streams:
            _, oldest = self._streams.popitem(last=False)
            self._release(oldest)
            self._counters["tcp_stream_expired" if self._idle(oldest, now_us) else "tcp_stream_evicted"] += 1
        stream = self._streams[key] = Stream(0, now_us)
        return stream

    def _feed(self, stream: Stream, seq: int, payload: bytes) -> list[bytes]:
        """Join a segment with payload to its stream; the complete messages it yields."""
        start = signed_difference(seq, stream.expected)
        if start < 0 and signed_difference(seq + len(payload), stream.expected) <= 0:
            # Wholly before what was expected: a retransmission of data already taken.
            self._counters["tcp_retransmission"] += 1
            return []
        if start != 0:
            # A gap, reordering or partial overlap: the pending message cannot be completed.
            self._counters["tcp_gap"] += 1
            self._release(stream)
            stream.pending.clear()
        stream.expected = (seq + len(payload)) % SEQUENCE_MODULUS
        if not stream.pending:  # the fast path decodes the segment in place and keeps only what is left
            stream.pending += payload
            messages = _take_messages(stream.pending)
            if stream.pending:
                self._hold(stream, len(stream.pending))
            return messages
        need = len(stream.pending) + len(payload)
        if need > stream.held:
            self._hold(stream, need)
        stream.pending += payload
        messages = _take_messages(stream.pending)
        if not stream.pending:
            self._release(stream)
        return messages

    # Bytes accounting (issue 14, the memory budget), as ext/tcpstreams.pxi allocates: a partial message holds
    # what its buffer last grew to until it is complete or dropped.
    def _hold(self, stream: Stream, need: int) -> None:
        """Grow a stream's buffer to `need` bytes, first dropping least recently used partials over the limit."""
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


def signed_difference(a: int, b: int) -> int:
    """a - b in TCP sequence arithmetic: the 32-bit difference read as signed (RFC 9293 3.4)."""
    difference = (a - b) % SEQUENCE_MODULUS
    return difference - SEQUENCE_MODULUS if difference >= HALF_SEQUENCE_SPACE else difference


def _take_messages(pending: bytearray) -> list[bytes]:
    """Cut every complete length-prefixed message off the front of `pending` (a 0 length gives b'')."""
    messages = []
    while len(pending) >= LENGTH_PREFIX.size:
        (length,) = LENGTH_PREFIX.unpack_from(pending)
        if len(pending) < LENGTH_PREFIX.size + length:
            break  # at most 2 + 65,534 bytes stay pending
        messages.append(bytes(pending[LENGTH_PREFIX.size : LENGTH_PREFIX.size + length]))
        del pending[: LENGTH_PREFIX.size + length]
    return messages
