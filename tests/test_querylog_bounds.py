"""The query log bounded by bytes under the amplification attack (issue 14): responses packed with ~110 answers
under a 255-byte name, and 65 KB responses over TCP, from a capture made by bench/make_amplification.py.

Each entry keeps at most MAX_ANSWERS answers and MAX_ANSWER_BYTES of their text (RESPONSE_ONLY_ANSWERS for a
response with no query), says how many it dropped, and the writer counts them; segments close by bytes, so
--query-log-max-mb holds while the replay writes; the pipe's messages are bounded in bytes."""

from __future__ import annotations

import sys

import pytest
from querylog_support import batches

from conftest import ROOT
from sensor.loop import compiled, decode_query_log, make_loop
from sensor.querylog.packed import decode_entries_reference
from sensor.querylog.record import STATUS_RESPONSE_ONLY
from sensor.querylog.store import QueryStore
from sensor.querylog.writer import (
    MAX_ANSWER_BYTES,
    MAX_ANSWERS,
    PIPE_MESSAGE_BYTES,
    RESPONSE_ONLY_ANSWERS,
    split_packed,
)

sys.path.insert(0, str(ROOT / "bench"))
import make_amplification  # noqa: E402
import querylog_flood  # noqa: E402

CAPS = (MAX_ANSWERS, MAX_ANSWER_BYTES, RESPONSE_ONLY_ANSWERS)


@pytest.fixture(scope="module")
def amplification(tmp_path_factory):
    path = tmp_path_factory.mktemp("amplification") / "amplification.pcap"
    made = make_amplification.write(str(path), udp_mb=3.0, tcp_mb=3.0, answers=110)
    return path, made


def packed_entries(path) -> bytes:
    loop = make_loop(1, (53,), {}, query_log=True)
    packed = b""
    for first, data, meta in batches(path, 4096):
        loop.run_batch(data, meta, first)
        packed += loop.take_query_log_packed()
    loop.flush_query_log()
    return packed + loop.take_query_log_packed()


@pytest.fixture(scope="module")
def small_amplification(tmp_path_factory):
    """Small enough for the pure-Python decoder (tens of thousands of answers a second)."""
    path = tmp_path_factory.mktemp("amplification") / "small.pcap"
    return path, make_amplification.write(str(path), udp_mb=0.2, tcp_mb=0.5, answers=110)


@pytest.mark.skipif(compiled is None, reason="sensor._loop is not built")
def test_packed_answers_flood_is_capped_per_entry_alike_in_both_decoders(small_amplification):
    """Every entry keeps at most the caps and says how many answers it dropped; the compiled decoder and its
    pure-Python twin agree, with and without caps."""
    path, made = small_amplification
    packed = packed_entries(path)
    capped = decode_query_log(packed, caps=CAPS)
    assert capped == decode_entries_reference(packed, CAPS)
    assert decode_query_log(packed) == decode_entries_reference(packed)
    assert len(capped) == made["responses"]
    for entry in capped:
        cap = RESPONSE_ONLY_ANSWERS if entry.status == STATUS_RESPONSE_ONLY else MAX_ANSWERS
        assert len(entry.answers) <= cap
        assert sum(len(a[0]) + len(a[3]) for a in entry.answers) <= MAX_ANSWER_BYTES
        assert entry.answers_dropped > 0  # every response of this capture is over a cap
    tcp = [e for e in capped if e.transport == 6]
    assert tcp and all(len(e.answers) + e.answers_dropped == (65_535 - 12 - 255 - 4) // 16 for e in tcp)  # ANCOUNT
    udp = [e for e in capped if e.transport == 17]
    assert udp and all(len(e.answers) == RESPONSE_ONLY_ANSWERS and e.answers_dropped == 106 for e in udp)


def test_pipe_messages_are_bounded_in_bytes(small_amplification):
    """The pipe's high-water mark counts messages: a batch of 65 KB responses is sent in parts of whole entries
    of at most PIPE_MESSAGE_BYTES (an entry larger than that alone), which together are the batch."""
    path, _ = small_amplification
    packed = packed_entries(path)
    parts = split_packed(packed, 200_000)
    assert len(parts) > 1 and b"".join(parts) == packed
    assert all(len(part) <= 200_000 for part in parts)
    assert sum(len(decode_query_log(part)) for part in parts) == len(decode_query_log(packed))
    assert split_packed(packed[:1000], PIPE_MESSAGE_BYTES) == [packed[:1000]] and split_packed(b"", 10) == []


def test_answer_amplification_flood_keeps_the_store_within_max_mb_and_memory_bounded(amplification, tmp_path):
    """6 MB of amplification traffic made a 189 MB store with --query-log-max-mb 5 and 475 MB RSS before; now
    the store stays within the limit (+10%) at every sample while the replay writes, the sensor (which writes
    its query log itself: decision 0207) stays within 300 MB, and the summary counts the truncated entries."""
    path, made = amplification
    store = tmp_path / "q.db"
    result = querylog_flood.flood(str(path), str(store), max_mb=2.0)
    assert result["returncode"] == 0, result
    assert 0 < result["peak_store_mb"] <= 2.0 * 1.1, result
    assert result["peak_rss_mb"] < 300, result
    summary = result["summary"][0]
    assert f"{made['responses']:,} queries written" in summary and "removed by retention" in summary
    assert f"{made['responses']:,} with answers cut to the per-entry cap" in summary
    reader = QueryStore.open_reader(str(store))
    kept = list(reader.by_time())
    assert kept and all(e.answers_dropped > 0 for e in kept)
    assert 0 < len(kept) < made["responses"]  # the oldest segments went to hold the limit


def test_query_log_export_is_hive_partitioned_and_read_back_by_duckdb(tmp_path):
    """`truesource querylog export`: date= and sensor= only in the path, a sensor named `100` a string with
    explicit hive types, signed columns; every stored query read back; exporting again rewrites the same files."""
    duckdb = pytest.importorskip("duckdb")
    from conftest import PCAPS, run_cli

    store = tmp_path / "q.db"
    replay = run_cli("replay", str(PCAPS / "demo-resolver.pcap"), "--rules", str(PCAPS / "pcaps.rules"),
                     "--no-progress", "--out", "/dev/null", "--query-log", str(store), "--query-log-segment-rows", "50")
    assert replay.returncode == 0, replay.stderr
    stored = list(QueryStore.open_reader(str(store)).by_time())
    out = tmp_path / "export"
    for _ in range(2):
        done = run_cli("querylog", "export", str(out), "--query-log", str(store), "--sensor-name", "100")
        assert done.returncode == 0, done.stderr
        assert f"{len(stored):,} queries" in done.stderr
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files and all(f.startswith("date=2026-01-01/sensor=100/queries-") for f in files)
    assert len(files) == -(-len(stored) // 50)  # one per segment, not duplicated by the second export
    source = (f"read_parquet('{out}/**/*.parquet', hive_partitioning = true, "
              "hive_types = {'date': DATE, 'sensor': VARCHAR})")
    types = dict(duckdb.sql(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {source})").fetchall())
    assert types["sensor"] == "VARCHAR" and types["date"] == "DATE" and types["ts"] == "TIMESTAMP WITH TIME ZONE"
    assert not [name for name, kind in types.items() if kind.startswith("U")], types
    rows = duckdb.sql(f"SELECT sensor, qname, client_ip, len(answers), status FROM {source} "
                      "ORDER BY ts, frame").fetchall()
    assert {r[0] for r in rows} == {"100"} and len(rows) == len(stored)
    from sensor.querylog.record import STATUS_NAMES
    from sensor.querylog.store import address_text

    want = sorted((e.qname, address_text(e.client_ip), len(e.answers), STATUS_NAMES[e.status]) for e in stored)
    assert sorted(r[1:] for r in rows) == want
    import pyarrow.parquet as pq

    assert not {"date", "sensor"} & set(pq.ParquetFile(out / files[0]).schema_arrow.names)  # only in the path


def test_writer_limits_are_parameters_a_memory_budget_can_set(small_amplification, tmp_path):
    """The caps and buffers come from WriterLimits through the real writer process (a budget will size them)."""
    from sensor.querylog.options import QueryLogOptions
    from sensor.querylog.writer import QueryLogWriter, WriterLimits

    path, made = small_amplification
    limits = WriterLimits(pipe_message_bytes=50_000, write_rows=10, max_answers=1, response_only_answers=1)
    assert limits.memory_bytes() < WriterLimits().memory_bytes()
    writer = QueryLogWriter(QueryLogOptions(str(tmp_path / "q.db")), limits)
    sink = writer.sink(blocking=True)
    loop = make_loop(1, (53,), {}, query_log=True)
    for first, data, meta in batches(path, 4096):
        loop.run_batch(data, meta, first)
        sink.take(loop)
    sink.flush(loop)
    line, died = writer.stop(sink)
    assert not died
    assert f"{made['responses']:,} queries written" in line and f"{made['responses']:,} with answers cut" in line
    stored = list(QueryStore.open_reader(str(tmp_path / "q.db")).by_time())
    assert len(stored) == made["responses"] and all(len(e.answers) == 1 for e in stored)


def test_hunt_on_a_capped_entry_says_how_many_answers_were_dropped(small_amplification, tmp_path):
    """A retrospective hit on an entry the cap cut carries `truesource.query.answers_dropped`."""
    import json

    from conftest import run_cli

    path, made = small_amplification
    store = tmp_path / "q.db"
    done = run_cli("replay", str(path), "--rules", str(ROOT / "pcaps" / "pcaps.rules"), "--no-progress",
                   "--out", "/dev/null", "--query-log", str(store))
    assert done.returncode == 0, done.stderr
    rules = tmp_path / "rules.txt"
    rules.write_text("b" * 63 + "." + "c" * 63 + "." + "d" * 61 + "\n")  # the parent of every flood name
    hunt = run_cli("hunt", "--rules", str(rules), "--query-log", str(store))
    assert hunt.returncode == 0, hunt.stderr
    events = [json.loads(line) for line in hunt.stdout.splitlines()]
    assert len(events) == made["responses"]
    for event in events:
        query = event["truesource"]["query"]
        assert query["answers_dropped"] > 0 and len(event["dns"]["answers"]) + query["answers_dropped"] in (110, 4079)
