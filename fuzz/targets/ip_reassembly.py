"""IP fragment reassembly as Linux does it (overlaps, fragments inside held data, resends, bad header checksums,
RFC 7112 first fragments), IPv4 and IPv6, fast path == reference, with checksums verified.

Input: byte 0 bit 0 IPv6; then fragments, each 3 bytes: start and length in 8-byte units within one UDP datagram
carrying a query (byte 0, byte 1), and a control byte: bit 0 more fragments (else last), bit 1 decoy bytes,
bit 2 a bad IPv4 header checksum, bit 3 another identification (a second datagram), bits 4-5 a frame gap of 0,
1, 10 or 40 s (the 30 s timeout).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from fuzz.common import DLT_RAW, differential, with_checksums

INSTRUMENT = ("sensor.decode",)
MAX_FRAGMENTS = 32
CLIENT4, SERVER4 = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 53])
CLIENT6, SERVER6 = bytes.fromhex("20010db8000000000000000000000001"), bytes.fromhex("20010db8000000000000000000000053")


def datagram(v6: bool) -> bytes:
    """The UDP header (checksum over the whole) and a padded query: the bytes the fragments cut."""
    from dnslib import DNSRecord

    message = DNSRecord.question("fragmented.evil.com").pack() + bytes(64)
    udp = struct.pack("!HHHH", 40000, 53, 8 + len(message), 0) + message
    if v6:
        whole = struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + CLIENT6 + SERVER6 + udp
        return with_checksums(whole)[40:]
    whole = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0) + CLIENT4 + SERVER4 + udp
    return with_checksums(whole)[20:]


PAYLOAD = {False: datagram(False), True: datagram(True)}


def fragment(v6: bool, ident: int, offset: int, more: bool, data: bytes, bad_checksum: bool) -> bytes:
    if v6:
        header = struct.pack("!BBHI", 17, 0, offset | more, ident)
        return struct.pack("!IHBB", 6 << 28, 8 + len(data), 44, 64) + CLIENT6 + SERVER6 + header + data
    packet = with_checksums(struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(data), ident, (0x2000 if more else 0)
                                        | offset // 8, 64, 17, 0) + CLIENT4 + SERVER4 + data)
    if bad_checksum:
        packet = packet[:10] + bytes([packet[10] ^ 0x01]) + packet[11:]
    return packet


def frames_of(data: bytes) -> tuple[list[bytes], list[int]]:
    v6 = bool(data and data[0] & 1)
    payload = PAYLOAD[v6]
    frames, gaps = [], []
    at = 1
    while at + 3 <= len(data) and len(frames) < MAX_FRAGMENTS:
        start, length, control = data[at], data[at + 1], data[at + 2]
        at += 3
        offset = (start * 8) % (len(payload) + 8)
        piece = payload[offset:offset + max(length, 1) * 8]
        if control & 2:
            piece = bytes(b ^ 0x20 for b in piece)
        frames.append(fragment(v6, 0x77 + (control >> 3 & 1), offset, bool(control & 1), piece, bool(control & 4)))
        gaps.append((0, 1, 10, 40)[control >> 4 & 3])
    return frames, gaps


def fuzz_one(data: bytes) -> None:
    frames, gaps = frames_of(data)
    limits = {"checksums": 1, "mirror_sources": (), "fragment_timeout": 30.0}
    # Frame times: each fragment's gap after the one before (the harness spaces frames evenly; a long gap is
    # modelled by padding frames that decode to nothing).
    spaced: list[bytes] = []
    for frame, gap in zip(frames, gaps, strict=True):
        spaced += [b""] * (gap * 50)  # 50 empty frames a second at the harness's 20 ms spacing
        spaced.append(frame)
    differential(DLT_RAW, (53,), spaced[:4000], limits=limits)


def encode(v6: bool, fragments: list[tuple[int, int, int]]) -> bytes:
    return bytes([int(v6)]) + b"".join(bytes(f) for f in fragments)


def seeds() -> Iterator[bytes]:
    """The attack forms of pcaps/attacks/: in order, reversed, a decoy inside, an overlap then a resend, a bad
    header checksum, two datagrams interleaved, a timeout."""
    for v6 in (False, True):
        n = len(PAYLOAD[v6]) // 8 + 1
        yield encode(v6, [(0, 4, 1), (4, n, 0)])
        yield encode(v6, [(4, n, 0), (0, 4, 1)])
        yield encode(v6, [(0, 6, 1), (3, 2, 3), (6, n, 0)])
        yield encode(v6, [(0, 3, 1), (2, 2, 3), (0, 3, 1), (3, n, 0)])
        yield encode(v6, [(0, 3, 1), (3, n, 4), (3, n, 0)])
        yield encode(v6, [(0, 3, 1), (0, 3, 9), (3, n, 0), (3, n, 8)])
        yield encode(v6, [(0, 3, 1), (3, n, 0x30)])
