"""TCP reassembly as Linux does it (out of order, overlaps, urgent bytes, SYN data, RST, bad checksums) on one
stream, fast path == reference, with checksums verified.

Input: segments, each 4 bytes: a start and a length in the stream of two framed queries (bytes 0-1: start, byte 2:
length), then a control byte: bit 0 SYN, bit 1 FIN, bit 2 RST, bit 3 URG (the pointer at the segment's middle),
bit 4 decoy bytes (the same place, other bytes: an overlap conflict), bit 5 a bad checksum, bit 6 the sequence
number shifted by 64 KiB (a jump past the window), bit 7 a TFO cookie option. The stream starts with a handshake
unless the first control byte says otherwise, so both "seen" and "joined mid-connection" streams are reached.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from fuzz.common import DLT_RAW, PROTO_TCP, differential, ip_packet, with_checksums

INSTRUMENT = ("sensor.decode",)
SEGMENT = struct.Struct("!HBB")
ISN = 0xFFFFFF00  # near the wrap, so sequence arithmetic wraps within a few segments
MAX_SEGMENTS = 40
TFO_OPTION = b"\x22\x0a" + bytes(8) + b"\x01\x01"  # kind 34, an 8-byte cookie, two NOPs


def stream_bytes() -> bytes:
    from dnslib import DNSRecord

    messages = [DNSRecord.question(name).pack() for name in ("first.evil.com", "second.example")]
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


STREAM = stream_bytes()
DECOY = bytes(b ^ 0x20 for b in STREAM)  # letters change case, lengths and pointers change value


def segment(seq: int, flags: int, payload: bytes, urgent: int = 0, options: bytes = b"") -> bytes:
    offset = (20 + len(options)) // 4
    header = struct.pack("!HHIIBBHHH", 40000, 53, seq & 0xFFFFFFFF, 0, offset << 4, flags, 65535, 0, urgent)
    return header + options + payload


def frames_of(data: bytes) -> list[bytes]:
    frames = []
    if not data or not data[0] & 1:
        frames.append(with_checksums(ip_packet(PROTO_TCP, segment(ISN, 0x02, b""))))
        reply = struct.pack("!HHIIBBHHH", 53, 40000, 7000, ISN + 1, 5 << 4, 0x12, 65535, 0, 0)
        frames.append(with_checksums(ip_packet(PROTO_TCP, reply, reverse=True)))
    at = 1
    while at + SEGMENT.size <= len(data) and len(frames) < MAX_SEGMENTS:
        start, length, control = SEGMENT.unpack_from(data, at)
        at += SEGMENT.size
        start %= len(STREAM) + 8
        source = DECOY if control & 0x10 else STREAM
        payload = source[start:start + length]
        flags = 0x18 | (0x02 if control & 1 else 0) | (0x01 if control & 2 else 0) | (0x04 if control & 4 else 0)
        urgent = 0
        if control & 8:
            flags |= 0x20
            urgent = len(payload) // 2 + 1
        seq = ISN + 1 + start + (65_536 if control & 0x40 else 0) - (1 if control & 1 else 0)
        options = TFO_OPTION if control & 0x80 else b""
        packet = with_checksums(ip_packet(PROTO_TCP, segment(seq, flags, payload, urgent, options)))
        if control & 0x20:
            packet = packet[:-1] + bytes([packet[-1] ^ 0xFF]) if payload else packet[:36] + b"\xde\xad"
        frames.append(packet)
    return frames


def fuzz_one(data: bytes) -> None:
    limits = {"max_tcp_streams": 3, "tcp_idle_timeout": 5, "checksums": 1, "mirror_sources": ()}
    frames = frames_of(data)
    differential(DLT_RAW, (53,), frames, limits=limits)
    if data and data[0] & 0x80:
        differential(DLT_RAW, (53,), frames, limits=limits, batch_size=1)


def encode(first: int, segments: list[tuple[int, int, int]]) -> bytes:
    return bytes([first]) + b"".join(SEGMENT.pack(s, n, c) for s, n, c in segments)


def seeds() -> Iterator[bytes]:
    """The attack forms of pcaps/attacks/ in this framing: in order, 1-3-2, 2-1-3, overlaps, decoys, urgent."""
    n = len(STREAM)
    yield encode(0, [(0, n, 0)])
    yield encode(0, [(0, 9, 0), (21, n - 21, 0), (9, 12, 0)])
    yield encode(0, [(9, 12, 0), (0, 9, 0), (21, n - 21, 0)])
    yield encode(0, [(0, 20, 0), (10, n - 10, 0)])
    yield encode(0, [(0, 22, 0), (10, 12, 0x10), (22, n - 22, 0)])
    yield encode(0, [(0, 30, 8), (30, n - 30, 0)])
    yield encode(0, [(0, 15, 0), (15, 20, 0x20), (15, n - 15, 0)])
    yield encode(0, [(0, 15, 0), (500, 0, 4), (15, n - 15, 0)])
    yield encode(0, [(0, 15, 0), (0, 0, 1), (15, n - 15, 0)])
    yield encode(1, [(0, n, 0x81), (0, n, 0)])
    yield encode(0, [(30, 10, 0), (20, 30, 0x10), (25, 5, 0), (0, 30, 0), (40, n - 40, 2)])
    yield encode(0, [(0, 10, 0), (10, 20, 0x40), (30, n - 30, 0)])
