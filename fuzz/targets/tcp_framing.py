"""DNS over TCP: segment sequences on a few streams through a 3-stream table, fast path == reference.

Input: segments, each a 4-byte header then its payload. Header byte 0: bits 0-1 the client port (four
connections), bit 2 server to client, bits 3-5 SYN/FIN/RST, bit 6 IPv6; bytes 1-2: a signed offset from the
sequence number the stream expects next (0: in order; else a gap, a retransmission or an overlap); byte 3: the
payload length. Times advance 20 ms a segment against a 50 ms idle timeout, so expiry is reached too.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from fuzz.common import DLT_RAW, PROTO_TCP, differential, dns_payloads, ip_packet, tcp_segment

INSTRUMENT = ("sensor.decode",)
SEGMENT_HEADER = struct.Struct("!BhB")
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH_ACK = 0x01, 0x02, 0x04, 0x18
CLIENT_PORTS = (40000, 40001, 40002, 40003)
MAX_SEGMENTS = 48


def segments_of(data: bytes) -> list[bytes]:
    frames: list[bytes] = []
    next_seq: dict[tuple[int, bool, bool], int] = {}
    at = 0
    while at + SEGMENT_HEADER.size <= len(data) and len(frames) < MAX_SEGMENTS:
        control, offset, length = SEGMENT_HEADER.unpack_from(data, at)
        at += SEGMENT_HEADER.size
        payload = data[at:at + length]
        at += length
        port, reverse, v6 = CLIENT_PORTS[control & 3], bool(control & 4), bool(control & 0x40)
        flags = TCP_PSH_ACK | (TCP_SYN if control & 8 else 0) | (TCP_FIN if control & 16 else 0) \
            | (TCP_RST if control & 32 else 0)
        key = (port, reverse, v6)
        seq = next_seq.get(key, 1000) + offset
        next_seq[key] = seq + len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)
        sport, dport = (53, port) if reverse else (port, 53)
        frames.append(ip_packet(PROTO_TCP, tcp_segment(payload, seq, flags, sport, dport), v6, reverse))
    return frames


def encode_segments(segments: list[tuple[int, int, bytes]]) -> bytes:
    """(control, offset, payload) triples as one input (payloads over 255 bytes are cut)."""
    return b"".join(SEGMENT_HEADER.pack(c, o, len(p[:255])) + p[:255] for c, o, p in segments)


def fuzz_one(data: bytes) -> None:
    frames = segments_of(data)
    differential(DLT_RAW, (53,), frames)
    if data and data[0] & 0x80:
        differential(DLT_RAW, (53,), frames, batch_size=1)


def seeds() -> Iterator[bytes]:
    """Messages from the shipped captures, length-prefixed, whole, split in three, and packed two a segment."""
    messages = [m for m in dns_payloads(8) if len(m) < 250][:60]
    for index, message in enumerate(messages):
        framed = len(message).to_bytes(2, "big") + message
        port = index & 3
        yield encode_segments([(port | 8, -1, b""), (port, 0, framed)])
        third = max(len(framed) // 3, 1)
        yield encode_segments([(port, 0, framed[:1]), (port, 0, framed[1:third]), (port, 0, framed[third:]),
                               (port | 4, 0, framed)])
        yield encode_segments([(port | 0x40, 0, framed + framed[:5]), (port | 0x40, 40, framed[5:]),
                               (port | 0x40, -len(framed), framed), (port | 16, 0, b"")])
