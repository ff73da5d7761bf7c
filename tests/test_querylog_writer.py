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
