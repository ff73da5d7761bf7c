"""The writer pipe: a capture's sink never waits on a writer that is behind, and counts what it drops; the
writer process stores what it is sent, including the reference loop's entries, and says why it cannot start."""

from __future__ import annotations

import time

import pytest
import zmq
from dnslib import QTYPE, RR, A, DNSHeader, DNSQuestion, DNSRecord
from scapy.all import IP, UDP, Ether

from conftest import make_batch
from sensor.errors import StartupError
from sensor.loop import compiled, make_loop
from sensor.querylog.store import QueryStore
from sensor.querylog.writer import PIPE_BATCHES, QueryLogOptions, QueryLogSink, QueryLogWriter

DLT_EN10MB = 1


def make(kind: str, linktype: int, table: dict):
    """A loop with the query log on: the compiled one (skipped when not built) or the reference."""
    if kind == "fast" and compiled is None:
        pytest.skip("sensor._loop is not built")
    return make_loop(linktype, (53,), table, query_log=True, pure=kind == "reference")


def exchange(index: int) -> list[bytes]:
    """A query from a client and the resolver's answer."""
    name = f"host{index}.example"
    query = DNSRecord(DNSHeader(id=index & 0xFFFF, rd=1), q=DNSQuestion(name, QTYPE.A))
    response = query.reply()
    response.add_answer(RR(name, QTYPE.A, rdata=A(f"192.0.2.{index % 250 + 1}"), ttl=60))
    client = f"10.7.{index // 250 % 250}.{index % 250 + 1}"
    return [bytes(Ether() / IP(src=client, dst="10.7.255.53") / UDP(sport=40000, dport=53) / query.pack()),
            bytes(Ether() / IP(src="10.7.255.53", dst=client) / UDP(sport=53, dport=40000) / response.pack())]


@pytest.fixture(scope="module")
def batch() -> tuple[bytes, bytes]:
    frames = [f for i in range(200) for f in exchange(i)]
    return make_batch(frames, step_usec=100)


def test_capture_sink_never_waits_and_counts_drops(batch):
    """Nobody reads the pipe: after the queues fill, every batch is dropped at once and its entries counted;
    what was sent arrives whole."""
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 4)
    pull.setsockopt(zmq.LINGER, 0)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    sink = QueryLogSink(f"tcp://127.0.0.1:{port}", blocking=False)
    loop = make("fast", DLT_EN10MB, table={})
    data, meta = batch
    rounds = PIPE_BATCHES * 4
    started = time.monotonic()
    for _ in range(rounds):
        loop.run_batch(data, meta, 1)
        sink.take(loop)
    elapsed = time.monotonic() - started
    assert sink.dropped > 0 and sink.dropped % 200 == 0
    assert sink.sent + sink.dropped // 200 == rounds
    assert elapsed < 30, "the sink waited for the writer"
    from sensor.loop import decode_query_log
    from sensor.querylog.writer import receive

    received = 0
    while pull.poll(1000):
        received += len(decode_query_log(bytes(receive(pull)[0])))
    assert received == sink.sent * 200
    sink.close()
    pull.close()
    context.term()


@pytest.mark.parametrize("kind", ["fast", "reference"])
def test_writer_process_stores_every_entry_of_either_loop(tmp_path, batch, kind):
    path = str(tmp_path / f"{kind}.db")
    writer = QueryLogWriter(QueryLogOptions(path, segment_rows=150))
    sink = writer.sink(blocking=True)
    loop = make(kind, DLT_EN10MB, table={})
    data, meta = batch
    loop.run_batch(data, meta, 1)
    sink.flush(loop)
    sink.close()
    summary = writer.close()
    assert summary["written"] == 200 and summary["error"] is None
    store = QueryStore.open_reader(path)
    entries = list(store.by_time())
    assert len(entries) == 200
    assert [s.rows for s in store.segments()] == [150, 50]  # one full (indexed), one open
    assert [s.indexed for s in store.segments()] == [True, False]
    assert {e.qname for e in entries} == {f"host{i}.example" for i in range(200)}
    assert all(e.status == 0 and e.rcode == 0 and e.answers[0][3] == f"192.0.2.{int(e.qname[4:-8]) % 250 + 1}"
               for e in entries)
    assert len(list(store.by_resolved_ip(bytes([192, 0, 2, 1])))) == 1  # host0 (host250... not made)


def test_writer_that_cannot_open_the_store_fails_at_start(tmp_path):
    with pytest.raises(StartupError, match="cannot open query log"):
        QueryLogWriter(QueryLogOptions(str(tmp_path / "missing-dir" / "q.db")))


def test_a_second_writer_is_refused_while_the_first_writes(tmp_path):
    path = str(tmp_path / "q.db")
    first = QueryLogWriter(QueryLogOptions(path))
    try:
        with pytest.raises(StartupError, match="another sensor is writing this query log"):
            QueryLogWriter(QueryLogOptions(path))
    finally:
        first.close()
    QueryLogWriter(QueryLogOptions(path)).close()  # free again once the first has stopped


def test_replay_pipe_gives_whole_messages_from_pieces(batch):
    """A replay's OS pipe (decision 0181): messages written a few bytes at a time come out whole, in order, the
    packed ones as sent and the others decoded; a message cut off by the producer's end is not given, and the
    end is seen."""
    import os

    from sensor.messages import Entries, PackedEntries, decode_query_log_message, encode
    from sensor.querylog.writer import FRAME_MESSAGE, FRAME_PACKED, PIPE_HEADER, PipeSource, open_pipe

    loop = make("reference", DLT_EN10MB, {})
    loop.run_batch(*batch, 1)
    entries = loop.take_query_log()
    packed = os.urandom(5000)
    stream = (PIPE_HEADER.pack(len(packed), FRAME_PACKED) + packed
              + PIPE_HEADER.pack(len(encode(Entries(entries[:3]))), FRAME_MESSAGE) + encode(Entries(entries[:3]))
              + PIPE_HEADER.pack(len(encode(PackedEntries(b"xyz"))), FRAME_MESSAGE) + encode(PackedEntries(b"xyz"))
              + PIPE_HEADER.pack(100, FRAME_PACKED) + b"cut off")
    read_end, write_end = open_pipe()
    source = PipeSource(read_end)
    got = []
    try:
        for start in range(0, len(stream), 7):
            os.write(write_end, stream[start:start + 7])
            while (message := source.receive()) is not None:
                got.append(message)
        os.close(write_end)
        assert source.receive() is None and source.ended
        assert not source.poll(1)
    finally:
        source.close()
    assert [bytes(got[0][0]), got[0][1], got[0][2]] == [packed, None, len(packed)]
    assert got[1][0] is None and got[1][1] == decode_query_log_message(encode(Entries(entries[:3])))
    assert bytes(got[2][0]) == b"xyz" and got[2][1] is None
    assert len(got) == 3


def test_replay_pipe_carries_messages_larger_than_the_pipe_whole():
    """The sink writes header and body with one writev (decision 0181): on a pipe smaller than the message the
    writes are partial, and the reader, draining as it can, still gets each message whole and in order."""
    import fcntl
    import os
    import threading

    from sensor.messages import PackedEntries
    from sensor.querylog.writer import F_SETPIPE_SZ, PipeSource, QueryLogSink, open_pipe

    read_end, write_end = open_pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)  # the smallest pipe: every message below is written in parts
    bodies = [os.urandom(size) for size in (3, 4096, 4091, 70_000, 1, 300_000)]
    source, got = PipeSource(read_end), []

    def drain() -> None:
        while not source.ended:
            if source.poll(100):
                while (message := source.receive()) is not None:
                    got.append(bytes(message[0]))

    reader = threading.Thread(target=drain)
    reader.start()
    sink = QueryLogSink(None, True, pipe=write_end)
    for body in bodies:
        sink._send_pipe(PackedEntries(body), 0)
    os.close(write_end)
    reader.join(timeout=30)
    source.close()
    assert not reader.is_alive()
    assert got == bodies and sink.sent == len(bodies)
