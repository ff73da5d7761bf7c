"""`truesource querylog export OUT`: the query log as Parquet partitioned like the flow store (decision 0120),
`OUT/date=YYYY-MM-DD/sensor=NAME/queries-SEGMENT.parquet`, for engines that read at scale (Spark, Trino,
DuckDB, ClickHouse).

One file per store segment and day (the query's packet time, UTC), named by the segment: exporting again
rewrites the same files (the open segment's with what it holds now), so an export run every few minutes keeps
the copy current without duplicates; segments removed by retention stay in the export until removed there.
Each file is written as `.tmp`, fsynced and renamed. Columns are flat and signed (no uint64), addresses as text.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from sensor.errors import StartupError
from sensor.querylog.record import STATUS_NAMES

DAY_US = 86_400 * 1_000_000


def schema():
    import pyarrow as pa

    answer = pa.struct([("name", pa.string()), ("type", pa.int32()), ("ttl", pa.int64()), ("data", pa.string())])
    return pa.schema([
        ("ts", pa.timestamp("us", tz="UTC")), ("client_ip", pa.string()), ("client_port", pa.int32()),
        ("server_ip", pa.string()), ("server_port", pa.int32()), ("transport", pa.int32()), ("vlan_id", pa.int32()),
        ("tunnel", pa.string()), ("dns_id", pa.int32()), ("qname", pa.string()), ("qtype", pa.int32()),
        ("qclass", pa.int32()), ("status", pa.string()), ("rcode", pa.int32()), ("response_flags", pa.int32()),
        ("latency_us", pa.int64()), ("answers", pa.list_(answer)), ("answers_dropped", pa.int32()),
        ("retransmissions", pa.int32()), ("frame", pa.int64()),
    ])


def columns(entries) -> dict[str, list]:
    from sensor.querylog.store import address_text

    out: dict[str, list] = {name: [] for name in schema().names}
    for e in entries:
        out["ts"].append(e.ts_sec * 1_000_000 + e.ts_usec)
        out["client_ip"].append(address_text(e.client_ip))
        out["client_port"].append(e.client_port)
        out["server_ip"].append(address_text(e.server_ip))
        out["server_port"].append(e.server_port)
        out["transport"].append(e.transport)
        out["vlan_id"].append(e.vlan_id)
        out["tunnel"].append(e.tunnel)
        out["dns_id"].append(e.dns_id)
        out["qname"].append(e.qname)
        out["qtype"].append(e.qtype)
        out["qclass"].append(e.qclass)
        out["status"].append(STATUS_NAMES.get(e.status, str(e.status)))
        out["rcode"].append(e.rcode)
        out["response_flags"].append(e.response_flags)
        out["latency_us"].append(e.latency_us)
        out["answers"].append([{"name": a[0], "type": a[1], "ttl": a[2], "data": a[3]} for a in e.answers])
        out["answers_dropped"].append(e.answers_dropped)
        out["retransmissions"].append(e.retransmissions)
        out["frame"].append(e.frame)
    return out


def write_atomically(table, path: str) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path + ".tmp", compression="zstd")
    descriptor = os.open(path + ".tmp", os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(path + ".tmp", path)


def export(store, out: str, sensor: str, since_us: int | None = None, until_us: int | None = None) -> tuple[int, int]:
    """Every segment of `store` with queries in [since, until) into `out`; (queries, files) written."""
    import time

    import pyarrow as pa

    from sensor.flows.store import partition_value
    from sensor.loop import decode_query_log

    store.decode = lambda data, caps: decode_query_log(data, caps=caps)
    target = schema()
    queries = files = 0
    for segment in store._segments_in(since_us, until_us):
        by_day: dict[int, list] = {}
        for entry in store.segment_entries(segment, since_us, until_us):
            by_day.setdefault((entry.ts_sec * 1_000_000 + entry.ts_usec) // DAY_US, []).append(entry)
        for day, entries in sorted(by_day.items()):
            date = time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))
            folder = os.path.join(out, f"date={date}", f"sensor={partition_value(sensor)}")
            os.makedirs(folder, exist_ok=True)
            table = pa.Table.from_pydict(columns(entries), schema=target)
            write_atomically(table, os.path.join(folder, f"queries-{segment.id:010d}.parquet"))
            queries += len(entries)
            files += 1
    return queries, files


def run_export(args: argparse.Namespace) -> int:
    from sensor.querylog.lookup import open_store, parse_time

    store = open_store(args)
    since = parse_time(args.since, "--since") if args.since else None
    until = parse_time(args.until, "--until") if args.until else None
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        raise StartupError(f"{args.out}: cannot create the export directory: {err.strerror}") from None
    try:
        queries, files = export(store, args.out, args.sensor_name or socket.gethostname(), since, until)
    except OSError as err:
        raise StartupError(f"{args.out}: export failed: {err}") from None
    print(f"querylog export: {queries:,} queries in {files:,} file(s) under {args.out}", file=sys.stderr)
    return 0
