#!/usr/bin/env python3
"""A capture that attacks the TCP stream table's memory (issue 14): many DNS-over-TCP streams, each announcing a
65,535-byte message and sending all of it but the last 1,300 bytes, round robin, so that every stream holds a
~64 KB partial message at the same time (4,096 streams: ~260 MB without a byte limit).

Frames are built with struct in a classic pcap (Ethernet), TCP checksums right; the filler's checksum is computed
once. Usage:

    python bench/make_tcp_partials.py OUT.pcap --streams 2000
"""

from __future__ import annotations

import argparse
import struct
import sys

ETHER = bytes.fromhex("020000000002" "020000000001" "0800")
SERVER = bytes((10, 9, 0, 53))
MSS = 1460
SEGMENTS = 44  # 44 x 1,460 = 64,240 bytes: short of the 2 + 65,535 the prefix announces, so never complete


def word_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def client(index: int) -> bytes:
    return bytes((10, 8, (index >> 8) & 0xFF, index & 0xFF))


def segment(src: bytes, sport: int, seq: int, payload: bytes, payload_sum: int, ident: int) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, 53, seq & 0xFFFFFFFF, 1, 5 << 4, 0x18, 64240, 0, 0)
    pseudo = src + SERVER + struct.pack("!BBH", 0, 6, len(header) + len(payload))
    tcp = header[:16] + struct.pack("!H", fold(word_sum(pseudo + header) + payload_sum)) + header[18:] + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ident & 0xFFFF, 0, 64, 6, 0, src, SERVER)
    ip = ip[:10] + struct.pack("!H", fold(word_sum(ip))) + ip[12:]
    return ETHER + ip + tcp


def write(path: str, streams: int) -> dict:
    first = b"\xff\xff" + b"q" * (MSS - 2)  # the length prefix: 65,535 bytes to come
    rest = b"q" * MSS
    first_sum, rest_sum = word_sum(first), word_sum(rest)
    frames = written = 0
    with open(path, "wb") as out:
        out.write(struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262_144, 1))
        for k in range(SEGMENTS):
            payload, payload_sum = (first, first_sum) if k == 0 else (rest, rest_sum)
            for i in range(streams):
                data = segment(client(i), 10_000 + i % 50_000, 1_000 + k * MSS, payload, payload_sum, frames)
                usec = frames  # 1 us apart: no stream goes idle
                out.write(struct.pack("=IIII", 1_780_000_000 + usec // 1_000_000, usec % 1_000_000, len(data),
                                      len(data)))
                out.write(data)
                frames += 1
                written += len(data)
    return {"frames": frames, "bytes": written, "streams": streams}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the pcap to write")
    parser.add_argument("--streams", type=int, default=2_000, help="TCP streams, each left with a partial message")
    args = parser.parse_args(argv)
    info = write(args.out, args.streams)
    print(f"{args.out}: {info['frames']:,} frames, {info['bytes'] / 1e6:.1f} MB, {info['streams']:,} streams")
    return 0


if __name__ == "__main__":
    sys.exit(main())
