"""Every table that traffic can grow stays at its limit under a flood of unique keys, and says what it evicted.

The pattern, one test per table (docs/limits.md lists them; a branch adding a table adds a row there and a test
here): build the table with a small limit, feed it FLOOD unique keys through its real entry point (packets for
the loop's tables, records for the tables behind it, real sockets for the outputs), then `assert_bounded`:
the size is exactly the limit and the eviction counter is FLOOD - limit. Named after the attack each one stops.
"""

from __future__ import annotations

import os
import struct
import threading

import pytest
import zmq

from sensor.attribution import ResolverAttribution
from sensor.capture.workers import WatermarkMerge
from sensor.decode import ReferenceLoop
from sensor.heuristics.config import HeuristicsConfig
from sensor.heuristics.engine import HeuristicEngine
from sensor.outputs.jsonlines import JsonLinesWriter
from sensor.outputs.publisher import Publisher
from sensor.records import DnsMessage

try:
    from sensor import _loop
except ImportError:
    _loop = None

LIMIT = 64
FLOOD = 1_000
DLT_RAW = 101
START = 1_767_225_600


def assert_bounded(size: int, evicted: int, limit: int = LIMIT, flood: int = FLOOD) -> None:
    """The shared check: the table holds exactly `limit` entries, and the counter names every other one."""
    assert size == limit, f"table holds {size}, limit {limit}"
    assert evicted == flood - limit, f"counter says {evicted} evicted, {flood - limit} were"


def loops(**limits) -> list:
    limits.setdefault("checksums", 0)  # the frames below are built by hand, without checksums
    made = [ReferenceLoop(DLT_RAW, (53,), {}, False, **limits)]
    if _loop is not None:
        made.append(_loop.FastLoop(DLT_RAW, (53,), {}, False, **limits))
    return made


def tcp_frame(client_port: int, flags: int = 0x02, payload: bytes = b"", seq: int = 1000) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", client_port, 53, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, bytes([192, 0, 2, 1]),
                       bytes([192, 0, 2, 53])) + tcp


def batch(frames: list[bytes], step_usec: int) -> tuple[bytes, bytes]:
    meta, offset = [], 0
    for i, frame in enumerate(frames):
        usec = i * step_usec
        meta.append(struct.pack("=IIII", START + usec // 1_000_000, usec % 1_000_000, offset, len(frame)))
        offset += len(frame)
    return b"".join(frames), b"".join(meta)


# ---- the decode loop: TCP DNS streams (ext/tcpstreams.pxi and its reference twin) ------------------------


@pytest.mark.parametrize("kind", ["reference", "fast"])
def test_syn_flood_from_unique_ports_evicts_least_recent_stream(kind: str) -> None:
    if kind == "fast" and _loop is None:
        pytest.skip("sensor._loop is not built")
    loop = loops(max_tcp_streams=LIMIT, tcp_idle_timeout=30)[0 if kind == "reference" else 1]
    # A half-open connection per port, and a partial message on each: the worst case per stream.
    frames = [tcp_frame(10_000 + i, 0x18, b"\x00\x40" + b"x" * 20) for i in range(FLOOD)]
    loop.run_batch(*batch(frames, 1000), 1)
    counters = loop.counters()
    assert_bounded(counters["tcp_streams"], counters["tcp_stream_evicted"])
    assert counters["tcp_stream_expired"] == 0


@pytest.mark.parametrize("kind", ["reference", "fast"])
def test_slow_syn_flood_counts_idle_streams_as_expired(kind: str) -> None:
    if kind == "fast" and _loop is None:
        pytest.skip("sensor._loop is not built")
    loop = loops(max_tcp_streams=LIMIT, tcp_idle_timeout=0.5)[0 if kind == "reference" else 1]
    frames = [tcp_frame(10_000 + i) for i in range(FLOOD)]
    loop.run_batch(*batch(frames, 100_000), 1)  # 100 ms apart: the oldest of 64 is 6.4 s old, past 0.5 s idle
    counters = loop.counters()
    assert_bounded(counters["tcp_streams"], counters["tcp_stream_expired"])
    assert counters["tcp_stream_evicted"] == 0


def tcp_segment(client_port: int, seq: int, payload: bytes) -> bytes:
    """A PSH/ACK data segment at `seq` (tcp_frame's segments start at 1000)."""
    frame = bytearray(tcp_frame(client_port, 0x18, payload))
    struct.pack_into("!I", frame, 24, seq)
    return bytes(frame)


@pytest.mark.parametrize("kind", ["reference", "fast"])
def test_partial_message_flood_across_streams_stays_within_max_tcp_bytes(kind: str) -> None:
    """Each stream announces a 65,535-byte message and sends 40,000 bytes of it in two segments: without a byte
    limit 200 streams would hold 8 MB; with max_tcp_bytes 1 MiB the least recent partials go, each counted."""
    if kind == "fast" and _loop is None:
        pytest.skip("sensor._loop is not built")
    limit = 1 << 20
    loop = loops(max_tcp_streams=4096, tcp_idle_timeout=30, max_tcp_bytes=limit)[0 if kind == "reference" else 1]
    frames = []
    for i in range(200):
        frames.append(tcp_frame(20_000 + i, 0x18, b"\xff\xff" + b"x" * 19_998))
        frames.append(tcp_segment(20_000 + i, 1000 + 20_000, b"y" * 20_000))  # grows the held buffer
    loop.run_batch(*batch(frames, 1000), 1)
    counters = loop.counters()
    assert 0 < counters["tcp_buffered_bytes"] <= limit
    assert counters["tcp_streams"] == 200  # the streams stay; only their partial messages go
    held = counters["tcp_buffered_bytes"] // 40_000
    assert counters["tcp_buffer_evicted"] == 200 - held, counters


def test_both_decoders_drop_the_same_partials_for_the_byte_limit() -> None:
    if _loop is None:
        pytest.skip("sensor._loop is not built")
    made = loops(max_tcp_streams=64, tcp_idle_timeout=30, max_tcp_bytes=300_000)
    frames = []
    for i in range(300):  # partial messages of varied sizes, some completed, some continued, over 80 ports
        port = 30_000 + (i * 7) % 80
        size = 1_000 + (i * 977) % 30_000
        frames.append(tcp_frame(port, 0x18, struct.pack("!H", size + 5_000) + b"z" * size))
    for loop in made:
        loop.run_batch(*batch(frames, 1000), 1)
    reference, fast = (loop.counters() for loop in made)
    assert reference["tcp_buffer_evicted"] > 0
    assert reference == fast


@pytest.mark.parametrize("kind", ["reference", "fast"])
def test_out_of_order_flood_stays_at_the_limit(kind: str) -> None:
    """One stream, its first byte missing, then a flood of one-byte segments ahead of it: the out-of-order queue
    holds OOO_SEGMENTS and counts every other one dropped."""
    from sensor.decode.tcpstream import OOO_SEGMENTS

    if kind == "fast" and _loop is None:
        pytest.skip("sensor._loop is not built")
    loop = loops()[0 if kind == "reference" else 1]
    frames = [tcp_frame(40_000, 0x18, b"\x00", seq=1000)]  # opens the stream; its message is never complete
    frames += [tcp_frame(40_000, 0x18, b"x", seq=1002 + 2 * i) for i in range(FLOOD)]
    loop.run_batch(*batch(frames, 1000), 1)
    counters = loop.counters()
    assert_bounded(counters["tcp_out_of_order"], counters["tcp_ooo_dropped"], limit=OOO_SEGMENTS)


@pytest.mark.parametrize("kind", ["reference", "fast"])
def test_out_of_order_flood_across_streams_stays_within_max_ooo_bytes(kind: str) -> None:
    """200 streams, each its first byte missing and 40 segments of 1,000 bytes queued behind the hole (8 MB of
    waiting bytes, each stream within its own limits): with max_ooo_bytes 256 KiB the least recently used streams
    lose their queues (tcp_ooo_evicted), none is refused for the total (tcp_ooo_dropped stays 0), the queue's
    cost (bytes and OOO_SEGMENT_COST each) never passes the limit; and a query reordered after the flood is still
    decoded: the flood does not keep it out (decision 0171)."""
    from sensor.decode.tcpstream import MIN_OOO_BYTES, OOO_SEGMENT_COST

    if kind == "fast" and _loop is None:
        pytest.skip("sensor._loop is not built")
    loop = loops(max_tcp_streams=4096, tcp_idle_timeout=30, max_ooo_bytes=MIN_OOO_BYTES)[
        0 if kind == "reference" else 1]
    peak = 0
    for stream in range(200):
        frames = [tcp_frame(20_000 + stream, 0x18, b"\x00", seq=1000)]
        frames += [tcp_segment(20_000 + stream, 1002 + 1000 * k, b"x" * 1000) for k in range(40)]
        loop.run_batch(*batch(frames, 10), 1)
        peak = max(peak, loop.table_sizes()["tcp_ooo_bytes"])
    counters = loop.counters()
    assert peak <= MIN_OOO_BYTES
    assert counters["tcp_ooo_dropped"] == 0
    assert counters["tcp_ooo_evicted"] > 0
    assert counters["tcp_out_of_order"] == 200 * 40
    held = MIN_OOO_BYTES // (40 * (1000 + OOO_SEGMENT_COST)) + 1  # the streams whose queues can still be there
    assert counters["tcp_ooo_evicted"] >= 200 - held
    query = bytes.fromhex("1234010000010000000000000465766976076578616d706c650000010001")
    message = struct.pack("!H", len(query)) + query
    late = [tcp_frame(30_000, 0x02, seq=999),  # its SYN: the next expected byte is 1000
            tcp_segment(30_000, 1000 + 10, message[10:]), tcp_segment(30_000, 1000, message[:10])]
    before = counters["dns_queries"]
    loop.run_batch(*batch(late, 10), 1)
    assert loop.counters()["dns_queries"] == before + 1


def test_both_decoders_evict_the_same_out_of_order_queues() -> None:
    if _loop is None:
        pytest.skip("sensor._loop is not built")
    from sensor.decode.tcpstream import MIN_OOO_BYTES

    made = loops(max_tcp_streams=64, tcp_idle_timeout=30, max_ooo_bytes=MIN_OOO_BYTES)
    frames = []
    for round_ in range(6):  # streams interleaved, sizes varied, some holes filled: the LRU order matters
        for stream in range(30):
            port = 21_000 + stream
            if round_ == 0:
                frames.append(tcp_frame(port, 0x18, b"\x00", seq=1000))
            size = 1500 + 97 * ((stream * 7 + round_) % 13)
            frames.append(tcp_segment(port, 1002 + 3000 * round_ + (stream % 3), b"y" * size))
            if stream % 5 == round_ % 5:
                frames.append(tcp_segment(port, 1001, b"z"))  # the hole filled: the queue drains
    for loop in made:
        loop.run_batch(*batch(frames, 10), 1)
    assert made[0].counters() == made[1].counters()
    assert made[0].counters()["tcp_ooo_evicted"] > 0


# ---- behind the loop: resolver attribution, heuristics, the workers' merge --------------------------------


def query(i: int, src: bytes, dst: bytes, flags: int = 0x0100, name: str | None = None, usec: int = 0) -> tuple:
    return DnsMessage(i, START + usec // 1_000_000, usec % 1_000_000, None, src, dst, 17, 40_000, 53, i, flags, 1,
                      name or f"n{i}.evil.example", 1, 1, 0)


def address(i: int) -> bytes:
    return bytes([10, (i >> 16) & 255, (i >> 8) & 255, i & 255])


def test_client_query_flood_in_one_window_keeps_the_newest_clients() -> None:
    attribution = ResolverAttribution(window=3600, max_recent=LIMIT)
    for i in range(FLOOD):
        assert attribution.link(DnsMessage._make(query(i, address(i), bytes([192, 0, 2, 53])))) is None
    c = attribution.counters()
    assert_bounded(c["attribution_recent"], c["attribution_evicted"])
    assert [q.name for q in attribution.remembered()][0] == f"n{FLOOD - LIMIT}.evil.example"  # oldest went first


def test_queries_to_many_resolvers_forget_the_least_recent_resolver() -> None:
    attribution = ResolverAttribution(window=3600, max_learned=LIMIT)
    for i in range(FLOOD):  # a client asking a new "resolver" each time: each destination is learned
        attribution.link(DnsMessage._make(query(i, bytes([192, 0, 2, 1]), address(i))))
    c = attribution.counters()
    assert_bounded(c["attribution_learned"], c["attribution_learned_evicted"])


def heuristic_records(count: int, sub: str = "a") -> list[DnsMessage]:
    return [DnsMessage._make(query(i, address(i), bytes([192, 0, 2, 53]), name=f"{sub}{i}.x{i:05d}qz.com",
                                   usec=i * 1000)) for i in range(count)]


def test_tunnel_windows_for_unique_clients_and_domains_stay_at_max_keys() -> None:
    engine = HeuristicEngine(HeuristicsConfig(detectors=("tunnel",), tunnel_max_keys=LIMIT))
    for record in heuristic_records(FLOOD):
        engine.observe(record)
    c = engine.counters()
    assert_bounded(c["tunnel_keys"], c["tunnel_evictions"])


def test_unique_random_labels_keep_the_dga_score_cache_at_its_limit() -> None:
    engine = HeuristicEngine(HeuristicsConfig(detectors=("dga",)))
    engine.dga.score_cache = LIMIT
    for record in heuristic_records(FLOOD):
        engine.observe(record)
    c = engine.counters()
    assert_bounded(len(engine.dga._scores), c["dga_score_cache_evictions"])


def test_unique_names_keep_the_registered_domain_cache_at_its_limit() -> None:
    from sensor.heuristics.domains import DomainSplitter

    engine = HeuristicEngine(HeuristicsConfig(detectors=("dga",)))
    engine.splitter = DomainSplitter(cache_size=LIMIT)
    for record in heuristic_records(FLOOD):
        engine.observe(record)
    c = engine.counters()
    assert_bounded(c["split_cache_size"], c["split_cache_evictions"])


def test_a_stalled_worker_cannot_make_the_merge_hold_every_hit() -> None:
    merge = WatermarkMerge(2, max_pending=LIMIT)
    released = 0
    for i in range(FLOOD):  # worker 0 reads on; worker 1 never reports past time 0
        merge.add(0, START * 1_000_000 + i, [(None, query(i, address(i), address(0), usec=i))])
        released += len(merge.ready())
    c = merge.counters()
    assert_bounded(c["merge_pending"], c["merge_released_early"])
    assert released == FLOOD - LIMIT


# ---- outputs: the publisher's queue, the JSON-lines pipe ---------------------------------------------------


def test_subscriber_that_never_reads_fills_only_the_high_water_mark() -> None:
    """inproc: no kernel buffers between the sockets, so the queue is exactly the two high-water marks."""
    endpoint = f"inproc://bounded-{os.getpid()}"
    publisher = Publisher(endpoint, hwm=LIMIT)
    context = zmq.Context.instance()
    subscriber = context.socket(zmq.SUB)
    subscriber.setsockopt(zmq.RCVHWM, LIMIT)
    subscriber.setsockopt(zmq.LINGER, 0)
    subscriber.connect(endpoint)
    subscriber.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        publisher.wait_for_subscribers(1, 5)
        for i in range(FLOOD):
            publisher.write("dns.hit", f'{{"n":{i}}}')
        assert publisher.sent + publisher.dropped == FLOOD
        assert LIMIT <= publisher.sent <= 2 * LIMIT, publisher.sent  # the publisher's queue + the subscriber's
        assert publisher.dropped == FLOOD - publisher.sent
    finally:
        subscriber.close()
        publisher.close(linger=0)


def test_pipe_nobody_reads_holds_at_most_the_buffer_limit(monkeypatch) -> None:
    import io

    read_end, write_end = os.pipe()
    limit = 64 * 1024
    stdout = io.TextIOWrapper(os.fdopen(write_end, "wb"), encoding="ascii")
    monkeypatch.setattr("sys.stdout", stdout)
    writer = JsonLinesWriter("-", blocking=False, buffer_limit=limit)
    line = "x" * 99  # 100 bytes with its newline
    done = threading.Event()

    def write_all() -> None:
        for _ in range(20_000):  # 2 MB: far past the pipe (64 KiB) and the buffer (64 KiB)
            writer.write("dns.hit", line)
        done.set()

    thread = threading.Thread(target=write_all, daemon=True)
    thread.start()
    assert done.wait(10), "the writer blocked on a pipe nobody reads"
    c = writer.state_counters()
    assert c["out_buffered_bytes"] <= limit
    assert writer.lines + writer.lines_dropped == 20_000 and writer.lines_dropped > 0
    kept = writer.lines
    writer.close()  # waits CLOSE_WAIT for a reader that never comes, then drops the rest
    assert writer.lines + writer.lines_dropped == 20_000 and writer.lines < kept
    os.close(read_end)


# ---- the limits as options ---------------------------------------------------------------------------------


def test_max_tcp_streams_option_bounds_the_replay(tmp_path) -> None:
    from conftest import run_cli

    frames = [tcp_frame(10_000 + i, 0x18, b"\x00\x40" + b"x" * 20) for i in range(FLOOD)]
    capture = tmp_path / "syn-flood.pcap"
    with open(capture, "wb") as handle:
        handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, DLT_RAW))
        for i, frame in enumerate(frames):
            handle.write(struct.pack("<IIII", START, i, len(frame), len(frame)) + frame)
    rules = tmp_path / "r.rules"
    rules.write_text("evil.example\n")
    result = run_cli("replay", str(capture), "--rules", str(rules), "--max-tcp-streams", str(LIMIT),
                     "--checksums", "off", "--summary-json", str(tmp_path / "s.json"))  # frames built by hand
    assert result.returncode == 0, result.stderr
    import json

    counters = json.loads((tmp_path / "s.json").read_text())["counters"]
    assert counters["tcp_stream_evicted"] == FLOOD - LIMIT
    bad = run_cli("replay", str(capture), "--rules", str(rules), "--max-tcp-streams", "0")
    assert bad.returncode == 2 and bad.stderr.strip() == "truesource: --max-tcp-streams: must be at least 1"
