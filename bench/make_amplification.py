#!/usr/bin/env python3
"""A capture that attacks the query log's size (issue 14): DNS responses that decode into far more than they
weigh on the wire.

- UDP responses with no query (logged `response_only`), each packed with --answers A records (default 110)
  whose owner is a pointer to a 255-byte question name: ~2 KB on the wire, ~29 KB of answer text decoded.
- TCP responses of 65,535 bytes (the largest a 2-byte length allows, ~4,000 answers under the same name), each
  after its query, over a TCP connection with its handshake, in 1,460-byte segments.

Frames are built with struct (fast enough for hundreds of MB) in a classic pcap (Ethernet). Usage:

    python bench/make_amplification.py OUT.pcap --udp-mb 29 --tcp-mb 26
"""

from __future__ import annotations

import argparse
import struct
import sys

ETHER = bytes.fromhex("020000000002" "020000000001" "0800")
CLIENT, SERVER = bytes((10, 9, 0, 2)), bytes((10, 9, 0, 53))
MSS = 1460


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_packet(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0, 64, proto, 0, src, dst)
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, ident: int) -> bytes:
    segment = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload  # checksum 0: none (IPv4)
    return ETHER + ip_packet(src, dst, 17, segment, ident)


def tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes,
        ident: int) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(header) + len(payload))
    header = header[:16] + struct.pack("!H", checksum(pseudo + header + payload)) + header[18:]
    return ETHER + ip_packet(src, dst, 6, header + payload, ident)


def long_name(index: int) -> bytes:
    """A 255-byte name in wire form (three labels of 63 and one of 61), unique per index."""
    tag = f"{index:08x}".encode()
    labels = [tag + b"a" * 55, b"b" * 63, b"c" * 63, b"d" * 61]
    wire = b"".join(bytes((len(label),)) + label for label in labels) + b"\0"
    assert len(wire) == 255, len(wire)
    return wire


def response(dns_id: int, name: bytes, answers: int, qr: bool = True) -> bytes:
    flags = 0x8180 if qr else 0x0100
    message = struct.pack("!HHHHHH", dns_id, flags, 1, answers if qr else 0, 0, 0) + name + struct.pack("!HH", 1, 1)
    if qr:
        record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4)
        message += b"".join(record + struct.pack("!I", 0xC0000200 + (k & 0xFF)) for k in range(answers))
    return message


def write(path: str, udp_mb: float, tcp_mb: float, answers: int) -> dict:
    frames = 0
    written = 0
    ts = 1_780_000_000.0
    with open(path, "wb") as out:
        out.write(struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262_144, 1))

        def frame(data: bytes) -> None:
            nonlocal frames, written, ts
            ts += 0.000_05
            sec = int(ts)
            out.write(struct.pack("=IIII", sec, int((ts - sec) * 1e6), len(data), len(data)))
            out.write(data)
            frames += 1
            written += len(data)

        index = 0
        while written < udp_mb * 1e6:  # response-only: no query sent
            frame(udp(SERVER, CLIENT, 53, 1024 + index % 60_000, response(index & 0xFFFF, long_name(index), answers),
                      index))
            index += 1
        udp_bytes = written
        max_answers = (65_535 - 12 - 255 - 4) // 16
        port = 20_000
        while written - udp_bytes < tcp_mb * 1e6:
            port += 1
            name = long_name(index)
            index += 1
            query = response(port & 0xFFFF, name, 0, qr=False)
            reply = response(port & 0xFFFF, name, max_answers)
            c_seq, s_seq = 1000, 50_000
            frame(tcp(CLIENT, SERVER, port, 53, c_seq, 0, 0x02, b"", port))
            frame(tcp(SERVER, CLIENT, 53, port, s_seq, c_seq + 1, 0x12, b"", port))
            frame(tcp(CLIENT, SERVER, port, 53, c_seq + 1, s_seq + 1, 0x10, b"", port))
            framed = struct.pack("!H", len(query)) + query
            frame(tcp(CLIENT, SERVER, port, 53, c_seq + 1, s_seq + 1, 0x18, framed, port))
            c_seq += 1 + len(framed)
            data = struct.pack("!H", len(reply)) + reply
            seq = s_seq + 1
            for at in range(0, len(data), MSS):
                frame(tcp(SERVER, CLIENT, 53, port, seq, c_seq, 0x18, data[at:at + MSS], port))
                seq += len(data[at:at + MSS])
            frame(tcp(CLIENT, SERVER, port, 53, c_seq, seq, 0x11, b"", port))
            frame(tcp(SERVER, CLIENT, 53, port, seq, c_seq + 1, 0x11, b"", port))
    return {"frames": frames, "bytes": written, "responses": index}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the pcap to write")
    parser.add_argument("--udp-mb", type=float, default=29.0, help="MB of UDP responses without a query")
    parser.add_argument("--tcp-mb", type=float, default=26.0, help="MB of 65 KB TCP responses")
    parser.add_argument("--answers", type=int, default=110, help="answers per UDP response")
    args = parser.parse_args(argv)
    made = write(args.out, args.udp_mb, args.tcp_mb, args.answers)
    print(f"{args.out}: {made['frames']:,} frames, {made['bytes'] / 1e6:.1f} MB, {made['responses']:,} responses",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
