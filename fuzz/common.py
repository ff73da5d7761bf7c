"""What the fuzz targets share: the differential check, the input framing, the seed sources.

Input framing for the frame targets (`frames_of`): any byte string is a valid input, so the fuzzer never wastes
runs on inputs the harness refuses. One selector byte (link type, DNS ports, emit-all), then frames, each
prefixed by its length in two bytes (big-endian); a length past the end takes what is left.
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
PEERS = ROOT.parent / "shared" / "pcaps" / "peers"
RULES = ROOT / "rules"

DLT_NULL, DLT_EN10MB, DLT_RAW, DLT_LOOP, DLT_LINUX_SLL, DLT_LINUX_SLL2 = 0, 1, 101, 108, 113, 276
LINKTYPES = (DLT_EN10MB, DLT_RAW, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_NULL, DLT_LOOP, 147, 228)  # 147, 228: unsupported
PORT_SETS = ((53,), (53, 5353, 5355, 1053, 8053))
# Rules whose names generated and shipped traffic uses, so that hits, allow rules and EDNS reads are reached.
TABLE = {"com": [0, 0], "evil.com": [1, 1], "example": [-1, 2], "": [3, 3], "a": [4, 4], "google.com": [5, 5]}
ALLOW = bytes([0, 0, 0, 0, 1, 0])
# Small stream table and idle time: the fuzzer reaches eviction and expiry within a few frames. Checksums are not
# checked and every tunnel sender is a mirror here (frames are built with zero checksums); the reassembly targets
# verify checksums they compute (fuzz/targets/tcp_reassembly.py, ip_reassembly.py).
LIMITS = {"max_tcp_streams": 3, "tcp_idle_timeout": 0.05, "checksums": 0, "mirror_sources": ("any",)}
# The other tables the loops keep, small, so that fuzzed traffic reaches their eviction and expiry paths: the
# query log's pending queries, IP reassembly, the flow table.
QUERY_LOG_LIMITS = {"query_log": True, "max_pending_queries": 4, "query_timeout": 0.05,
                    "max_fragmented_datagrams": 3, "max_fragment_bytes": 65535, "fragment_timeout": 0.05}
FLOW_LIMITS = {"idle_timeout": 0.05, "active_timeout": 0.2, "max_flows": 5}
FRAME_GAP_US = 20_000  # packet time between two frames of one input
MAX_FRAMES = 64


class Disagreement(AssertionError):
    """The fast path and the reference decoder gave different records or counters: a finding."""


def install_extension() -> None:
    """Use the sanitizer-instrumented build of sensor._loop when TRUESOURCE_FUZZ_EXT names it (make fuzz)."""
    path = os.environ.get("TRUESOURCE_FUZZ_EXT")
    if not path:
        return
    import importlib.util
    import sys

    import sensor

    spec = importlib.util.spec_from_file_location("sensor._loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["sensor._loop"] = module
    sensor._loop = module


def compiled_loop():
    from sensor import _loop

    return _loop


def selector_byte(linktype: int, ports: Sequence[int] = (53,), emit_all: bool = True) -> int:
    return LINKTYPES.index(linktype) | (PORT_SETS.index(tuple(ports)) << 3) | (emit_all << 4)


def frames_of(data: bytes) -> tuple[int, tuple[int, ...], bool, list[bytes]]:
    """(link type, ports, emit_all, frames) from one fuzz input."""
    if not data:
        return DLT_EN10MB, PORT_SETS[0], True, []
    selector = data[0]
    linktype = LINKTYPES[selector & 7]
    ports = PORT_SETS[(selector >> 3) & 1]
    emit_all = not (selector >> 4) & 1 or (selector >> 5) & 1  # mostly emit everything: more to compare
    frames, at = [], 1
    while at < len(data) and len(frames) < MAX_FRAMES:
        length = int.from_bytes(data[at:at + 2], "big")
        frames.append(data[at + 2:at + 2 + length])
        at += 2 + length
    return linktype, ports, bool(emit_all), frames


def encode_frames(linktype: int, frames: Sequence[bytes], ports: Sequence[int] = (53,)) -> bytes:
    """The inverse of frames_of, for seeds and regression inputs."""
    out = bytearray([selector_byte(linktype, ports, True) & ~(1 << 4)])
    for frame in frames[:MAX_FRAMES]:
        frame = frame[:0xFFFF]
        out += len(frame).to_bytes(2, "big") + frame
    return bytes(out)


def batch_of(frames: Sequence[bytes], first_index: int = 0, start_sec: int = 1_767_225_600) -> tuple[bytes, bytes]:
    """Frames as one next_batch() result; frame i of the input is at packet time start + i * FRAME_GAP_US."""
    meta, offset = [], 0
    for index, frame in enumerate(frames, first_index):
        usec = index * FRAME_GAP_US
        meta.append(struct.pack("=IIII", start_sec + usec // 1_000_000, usec % 1_000_000, offset, len(frame)))
        offset += len(frame)
    return b"".join(frames), b"".join(meta)


def describe(reference: list, fast: list) -> str:
    from sensor.records import DnsMessage

    for index, (ours, theirs) in enumerate(zip(reference, fast, strict=False)):
        if tuple(ours) != tuple(theirs):
            fields = [f"{name}: reference={a!r} fast={b!r}"
                      for name, a, b in zip(DnsMessage._fields, ours, theirs, strict=True) if a != b]
            return f"record {index}: " + "; ".join(fields)
    return f"record counts differ: reference {len(reference)}, fast {len(fast)}"


def differential(linktype: int, ports: Sequence[int], frames: Sequence[bytes], emit_all: bool = True,
                 limits: dict | None = None, batch_size: int = 0, rules: tuple | None = None) -> list:
    """Run both decoders over the frames; raise Disagreement unless records and counters are equal.

    `batch_size` 0 gives every frame in one batch; otherwise batches of that many frames (the loops keep TCP
    state across batches, so the split must not change anything). `rules`: (table, allow, patterns), else
    the small TABLE above."""
    from sensor.decode import ReferenceLoop
    from sensor.flows.settings import FlowSettings
    from sensor.loop import make_flow_table
    from sensor.querylog.record import QueryLogEntry

    limits = {**QUERY_LOG_LIMITS, **(LIMITS if limits is None else limits)}
    table, allow, patterns = rules or (TABLE, ALLOW, None)
    settings = FlowSettings(**FLOW_LIMITS)
    reference_flows, fast_flows = make_flow_table(settings, pure=True), make_flow_table(settings, pure=False)
    reference_loop = ReferenceLoop(linktype, ports, table, emit_all, allow=allow, patterns=patterns,
                                   flows=reference_flows, **limits)
    fast_loop = compiled_loop().FastLoop(linktype, ports, table, emit_all, allow=allow, patterns=patterns,
                                         flows=fast_flows, entry_type=QueryLogEntry, **limits)
    step = batch_size or max(len(frames), 1)
    reference, fast = [], []
    logged: tuple[list, list] = ([], [])
    flows: tuple[list, list] = ([], [])
    for first in range(0, len(frames), step):
        chunk_data, chunk_meta = batch_of(frames[first:first + step], first)
        reference += reference_loop.run_batch(chunk_data, chunk_meta, first + 1)
        fast += fast_loop.run_batch(chunk_data, chunk_meta, first + 1)
        for side, (loop, flow_table) in enumerate(((reference_loop, reference_flows), (fast_loop, fast_flows))):
            logged[side].extend(loop.take_query_log())
            flows[side].append(flow_table.take())
    for side, (loop, flow_table) in enumerate(((reference_loop, reference_flows), (fast_loop, fast_flows))):
        loop.flush_query_log()
        logged[side].extend(loop.take_query_log())
        flow_table.flush()
        flows[side].append(flow_table.take())
    if [tuple(r) for r in fast] != [tuple(r) for r in reference]:
        raise Disagreement(f"link type {linktype}, ports {tuple(ports)}: {describe(reference, fast)}")
    anomalies = ([tuple(a) for a in reference_loop.take_anomalies()], [tuple(a) for a in fast_loop.take_anomalies()])
    if anomalies[0] != anomalies[1]:
        raise Disagreement(f"link type {linktype}: anomalies (reference, fast): {anomalies[0]!r} != {anomalies[1]!r}")
    if logged[0] != logged[1]:
        raise Disagreement(f"link type {linktype}: query log (reference, fast): {logged[0]!r} != {logged[1]!r}")
    reference_records, fast_records = (b"".join(a.tobytes() for a in side) for side in flows)
    if reference_records != fast_records:
        raise Disagreement(f"link type {linktype}: flow records differ ({len(flows[0])} batches)")
    ours, theirs = reference_loop.counters(), fast_loop.counters()
    diff = {k: (ours.get(k), theirs.get(k)) for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)}
    if diff:
        raise Disagreement(f"link type {linktype}, ports {tuple(ports)}: counters (reference, fast): {diff}")
    return reference


# ---- seeds -----------------------------------------------------------------------------------------------


def captures() -> list[Path]:
    found: list[Path] = []
    for folder in (PCAPS, PEERS):
        for pattern in ("*.pcap", "*.pcapng"):
            found += [Path(p) for p in glob.glob(str(folder / pattern))]
    return sorted(found)


def capture_frames(path: Path, limit: int = 10_000) -> tuple[int, list[bytes]] | None:
    """(link type, frames) of a capture, or None when libpcap cannot open it."""
    import pcapy

    try:
        reader = pcapy.open_offline(str(path))
    except pcapy.PcapError:
        return None
    frames: list[bytes] = []
    while len(frames) < limit:
        try:
            header, packet = reader.next()
        except pcapy.PcapError:
            break
        if header is None:
            break
        frames.append(packet)
    return reader.datalink(), frames


def dns_payloads(limit_per_capture: int = 40) -> Iterator[bytes]:
    """DNS messages carried on UDP in the shipped and peer captures (scapy reads the layers)."""
    from scapy.all import DNS, UDP, rdpcap
    from scapy.error import Scapy_Exception

    for path in captures():
        try:
            packets = rdpcap(str(path), count=400)
        except (Scapy_Exception, OSError, EOFError, struct.error, ValueError):
            continue
        taken = 0
        for packet in packets:
            if UDP in packet and (DNS in packet or 53 in (packet[UDP].sport, packet[UDP].dport)):
                payload = bytes(packet[UDP].payload)
                if payload:
                    yield payload
                    taken += 1
            if taken >= limit_per_capture:
                break


# ---- frames built by hand (struct, not scapy: a fuzz run builds thousands per second) ----------------------

CLIENT4, SERVER4 = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 53])
CLIENT6, SERVER6 = bytes.fromhex("20010db8000000000000000000000001"), bytes.fromhex("20010db8000000000000000000000053")
PROTO_UDP, PROTO_TCP = 17, 6


def ip_packet(protocol: int, transport: bytes, v6: bool = False, reverse: bool = False) -> bytes:
    """A RAW-link-type IPv4 or IPv6 packet (checksums zero: neither decoder checks them)."""
    src, dst = (CLIENT6, SERVER6) if v6 else (CLIENT4, SERVER4)
    if reverse:
        src, dst = dst, src
    if v6:
        return struct.pack("!IHBB", 6 << 28, len(transport), protocol, 64) + src + dst + transport
    return struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(transport), 0, 0, 64, protocol, 0) + src + dst + transport


def udp_datagram(payload: bytes, sport: int = 40000, dport: int = 53) -> bytes:
    payload = payload[:65_507]
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp_segment(payload: bytes, seq: int, flags: int, sport: int = 40000, dport: int = 53) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 0, 5 << 4, flags, 65535, 0, 0) + payload


def with_checksums(packet: bytes) -> bytes:
    """A RAW IPv4 or IPv6 packet from ip_packet with its IPv4 header, UDP or TCP checksum filled in (a fragment:
    only the header's)."""
    from sensor.decode.checksum import ones_sum

    data = bytearray(packet)
    if data[0] >> 4 == 4:
        ihl = (data[0] & 0x0F) * 4
        data[10:12] = b"\x00\x00"
        data[10:12] = (0xFFFF - ones_sum(bytes(data[:ihl]))).to_bytes(2, "big")
        src, dst, protocol, start = bytes(data[12:16]), bytes(data[16:20]), data[9], ihl
        if int.from_bytes(data[6:8], "big") & 0x3FFF:
            return bytes(data)
    else:
        src, dst, protocol, start = bytes(data[8:24]), bytes(data[24:40]), data[6], 40
    at = start + (6 if protocol == 17 else 16)
    if protocol not in (6, 17) or len(data) < at + 2:
        return bytes(data)
    data[at:at + 2] = b"\x00\x00"
    segment = bytes(data[start:])
    length = len(segment)
    if len(src) == 16:
        pseudo = src + dst + length.to_bytes(4, "big") + bytes([0, 0, 0, protocol])
    else:
        pseudo = src + dst + bytes([0, protocol]) + length.to_bytes(2, "big")
    value = 0xFFFF - ones_sum(segment, ones_sum(pseudo))
    data[at:at + 2] = (value or (0xFFFF if protocol == 17 else 0)).to_bytes(2, "big")
    return bytes(data)
