#!/usr/bin/env python3
"""The query log's store, alternatives measured side by side (issue 15, decision 0122): what the writer process
pays per query, and what a `who-asked` for a rare name costs as a whole process over 10,000,000 stored queries.

Writer side, on the entries of the bench capture (bench/make_capture.py: 1,000,000 frames, ~395,000 queries),
CPU seconds of this process for each step:

- `decode`: the packed buffers to QueryLogEntry tuples (the compiled decoder, with the store's caps);
- `sqlite`: QueryStore.append_packed (the shipped store since decision 0180: packed segments, keys sorted at close);
- `parquet`: the same rows as an Arrow table (ts, rname, client, entry MessagePack), sorted by rname, written
  as one LZ4 Parquet segment (what a columnar store queried with DuckDB would write);
- `duckdb`: the same Arrow table appended to a DuckDB table;
- `raw`: the packed buffers written as they are, with only a per-entry offset and name hash (the floor of a
  store that decodes nothing on the write path: the entry's fields would be read back from the bytes).

Reader side: 10,000,000 generated rows (ts, rname, client) in 20 Parquet segments, sorted by rname within each,
row groups of 65,536 (so row-group statistics prune a rare name to one group per segment); `who-asked` is
modelled as a whole `python -c` process that imports duckdb and runs the lookup (SQLite's figure is from
bench/querylog.py, docs/querylog.md). Usage:

    python bench/querylog_engines.py [--capture bench/out/capture.pcap] [--rows 10000000]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def packed_buffers(capture: str) -> list[bytes]:
    import pcapy

    from sensor.loop import make_loop

    reader = pcapy.open_offline(capture)
    loop = make_loop(reader.datalink(), (53,), {}, query_log=True)
    parts, frame = [], 1
    while True:
        data, meta = reader.next_batch(4096)
        if not meta:
            break
        loop.run_batch(data, meta, frame)
        frame += len(meta) // 16
        parts.append(loop.take_query_log_packed())
    loop.flush_query_log()
    parts.append(loop.take_query_log_packed())
    return parts


def writer_side(capture: str, tmp: str) -> dict[str, float]:
    import duckdb
    import msgspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sensor.loop import decode_query_log
    from sensor.querylog.packed import ENTRY_HEADER
    from sensor.querylog.store import QueryStore
    from sensor.querylog.writer import WriterLimits

    parts = packed_buffers(capture)
    out: dict[str, float] = {}
    t = cpu()
    caps = WriterLimits().caps  # what the writer keeps of each entry's answers
    entries = [e for p in parts for e in decode_query_log(p, caps=caps)]
    out["decode"] = cpu() - t
    out["queries"] = len(entries)

    from sensor.loop import querylog_segment_functions

    # the shipped store since decision 0180: the packed buffers appended as they come, keys walked and sorted
    keys_of, sort_keys = querylog_segment_functions()
    store = QueryStore.open_writer(os.path.join(tmp, "q.db"), keys_of=keys_of, sort_keys=sort_keys)
    t = cpu()
    for part in parts:
        store.append_packed(part)
    out["sqlite"] = cpu() - t
    store.close()

    encode = msgspec.msgpack.Encoder().encode

    def table():
        ts, rname, client, blob = [], [], [], []
        for e in entries:
            ts.append(e.ts_sec * 1_000_000 + e.ts_usec)
            name = e.qname.lower().strip(".")
            rname.append(".".join(name.split(".")[::-1]) + ".")
            client.append(e.client_ip)
            blob.append(encode(e))
        t = pa.table({"ts": ts, "rname": rname, "client": client, "entry": blob})
        return t.sort_by("rname")

    t = cpu()
    pq.write_table(table(), os.path.join(tmp, "segment.parquet"), compression="lz4", row_group_size=65_536)
    out["parquet"] = cpu() - t

    t = cpu()
    db = duckdb.connect(os.path.join(tmp, "q.duckdb"))
    db.register("arrow", table())
    db.execute("CREATE TABLE q AS SELECT * FROM arrow")
    db.close()
    out["duckdb"] = cpu() - t

    t = cpu()
    unpack = ENTRY_HEADER.unpack_from
    with open(os.path.join(tmp, "raw.bin"), "wb") as f:
        offsets, hashes = [], []
        for p in parts:
            position = 0
            while position < len(p):
                header = unpack(p, position)
                name_start = position + ENTRY_HEADER.size
                hashes.append(hash(p[name_start:name_start + header[16]].lower()))
                offsets.append(position)
                position += header[0]
            f.write(p)
    out["raw"] = cpu() - t
    return out


def reader_side(tmp: str, rows: int, repeat: int) -> dict[str, float]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(1)
    segments = 20
    per = rows // segments
    names = np.array([f"com.example{rng.randrange(97)}.d{i}-{rng.randrange(10**6)}." for i in range(300_000)], "<U64")
    rare = "com.example3.rare-name-asked-10-times."
    folder = os.path.join(tmp, "segments")
    os.makedirs(folder)
    nrng = np.random.default_rng(1)
    for s in range(segments):
        picks = names[np.minimum(nrng.zipf(1.3, per) - 1, len(names) - 1)]
        if s % 4 == 0:
            picks[:2] = rare
        order = np.argsort(picks, kind="stable")
        table = pa.table({"ts": np.arange(per, dtype=np.int64)[order] + s * per, "rname": picks[order],
                          "client": nrng.integers(0, 2**32, per, dtype=np.int64)})
        pq.write_table(table, os.path.join(folder, f"seg-{s:03d}.parquet"), compression="lz4", row_group_size=65_536)
    script = (f"import duckdb; print(duckdb.sql(\"SELECT count(*) FROM '{folder}/*.parquet' "
              f"WHERE rname = '{rare}'\").fetchall())")
    walls = []
    for _ in range(repeat):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        walls.append(time.monotonic() - started)
    startup = []
    for _ in range(repeat):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import duckdb"], check=True)
        startup.append(time.monotonic() - started)
    return {"rows": rows, "matches": done.stdout.strip(), "who_asked_process_s": statistics.median(walls),
            "import_duckdb_s": statistics.median(startup)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capture", default=os.path.join(BENCH, "out", "capture.pcap"))
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip", action="append", default=[], choices=("writer", "reader"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="truesource-engines-") as tmp:
        if "writer" not in args.skip:
            out = writer_side(args.capture, tmp)
            n = out.pop("queries")
            print(f"writer side, {n:,} queries of {args.capture} (CPU s; us a query):")
            for step, seconds in out.items():
                print(f"  {step:<8}{seconds:>8.2f} s{seconds / n * 1e6:>8.2f} us")
        if "reader" not in args.skip:
            print("reader side:", reader_side(tmp, args.rows, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
