#!/usr/bin/env python3
"""A capture that attacks the out-of-order queue and the fragment table's memory (issue 13, decisions 0171 and
0172): many DNS-over-TCP streams, each missing its third byte and then sent 40 segments of 1,400 bytes behind the
hole, round robin (every stream holds a ~56 KB queue at the same time: 1,500 streams, ~84 MB without a total
limit); then single 8-byte IPv4 fragments at offset 64,000, one per datagram (each makes the table allocate a
64 KiB buffer: 2,000 of them, ~128 MB if counted by their 8 bytes).

Frames are built with struct in a classic pcap (Ethernet), checksums right. Usage:

    python bench/make_ooo_fragments.py OUT.pcap --streams 1500 --fragments 2000
"""

from __future__ import annotations

import argparse
import struct
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from make_tcp_partials import ETHER, SERVER, client, fold, word_sum  # noqa: E402

SEGMENTS = 40  # queued behind the hole: within OOO_SEGMENTS (64), OOO_STREAM_BYTES (128 KiB) and the window
SIZE = 1_400


def ip_packet(src: bytes, protocol: int, body: bytes, ident: int, frag: int = 0) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), ident & 0xFFFF, frag, 64, protocol, 0, src, SERVER)
    return ETHER + ip[:10] + struct.pack("!H", fold(word_sum(ip))) + ip[12:] + body


def tcp_segment(src: bytes, sport: int, seq: int, payload: bytes, payload_sum: int, ident: int) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, 53, seq & 0xFFFFFFFF, 1, 5 << 4, 0x18, 64240, 0, 0)
    pseudo = src + SERVER + struct.pack("!BBH", 0, 6, len(header) + len(payload))
    tcp = header[:16] + struct.pack("!H", fold(word_sum(pseudo + header) + payload_sum)) + header[18:] + payload
    return ip_packet(src, 6, tcp, ident)


def write(path: str, streams: int, fragments: int) -> dict:
    start, filler = b"\xff\xff", b"o" * SIZE  # a length prefix, then the hole at the third byte
    start_sum, filler_sum = word_sum(start), word_sum(filler)
    frames = 0
    with open(path, "wb") as out:
        out.write(struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262_144, 1))

        def frame(data: bytes) -> None:
            nonlocal frames
            usec = frames  # 1 us apart: nothing goes idle or expires
            out.write(struct.pack("=IIII", 1_780_000_000 + usec // 1_000_000, usec % 1_000_000, len(data), len(data)))
            out.write(data)
            frames += 1

        for k in range(-1, SEGMENTS):
            for i in range(streams):
                sport = 10_000 + i % 50_000
                if k < 0:
                    frame(tcp_segment(client(i), sport, 1_000, start, start_sum, frames))
                else:
                    frame(tcp_segment(client(i), sport, 1_003 + k * SIZE, filler, filler_sum, frames))
        for i in range(fragments):
            frame(ip_packet(client(i), 17, b"f" * 8, 0x7000 + i, 0x2000 | (64_000 // 8)))
    return {"frames": frames, "streams": streams, "fragments": fragments}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the pcap to write")
    parser.add_argument("--streams", type=int, default=1_500)
    parser.add_argument("--fragments", type=int, default=2_000)
    args = parser.parse_args(argv)
    info = write(args.out, args.streams, args.fragments)
    print(f"{args.out}: {info['frames']:,} frames, {info['streams']:,} streams, {info['fragments']:,} fragments")
    return 0


if __name__ == "__main__":
    sys.exit(main())
