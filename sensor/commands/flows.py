"""`truesource flows` (filter, list, aggregate, IP sets out) and `truesource ipset` (combine IP sets).

Flows come from a flow store (directories or Parquet files) or straight from capture files (pcap, pcapng:
replayed through the flow table first); the kind is told by the file's first bytes, not its name. A store is
read a row group at a time and only the columns the filter and the output need, so a scan's memory is the
matching records, not the store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from sensor.errors import StartupError

PCAP_MAGICS = {b"\xa1\xb2\xc3\xd4", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1"}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
PARQUET_MAGIC = b"PAR1"
SORT_KEYS = ("flows", "packets", "bytes")
IPSET_OPERATIONS = ("union", "intersect", "difference")


def register(subparsers: Any) -> None:
    """Add the `flows` and `ipset` commands; each sets `run`, the function main() calls with the arguments."""
    flows = subparsers.add_parser(
        "flows", help="filter, list and aggregate flow records (nfdump filters, rwstats-style statistics)")
    flows.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="flow store directory or Parquet file, or pcap/pcapng captures (flows built first)")
    flows.add_argument("--filter", default="", metavar="EXPR",
                       help="nfdump filter, e.g. 'proto udp and dst port 53 and not dst net 10.0.0.0/8'")
    flows.add_argument("--aggregate", metavar="FIELDS",
                       help="bin by fields, comma separated: srcip, dstip, srcport, dstport, proto, "
                            "srcnet, dstnet (/24 for IPv4, /64 for IPv6)")
    flows.add_argument("--sort", choices=SORT_KEYS, metavar="KEY",
                       help="flows, packets or bytes, largest first (default: flows when aggregating; "
                            "when listing, first-seen time)")
    flows.add_argument("--top", type=int, metavar="N", help="only the first N rows")
    flows.add_argument("--percentage", type=float, metavar="P",
                       help="with --aggregate: only bins at or above P%% of the total of the sort key (rwstats)")
    flows.add_argument("--json", action="store_true", help="one JSON object a line")
    flows.add_argument("--ipset-out", metavar="FILE",
                       help="also write the addresses of the rows output as an IP set (one address or CIDR a line)")
    flows.add_argument("--ipset-field", choices=("srcip", "dstip"), metavar="FIELD",
                       help="srcip or dstip (default: the first address field aggregated, else srcip)")
    flows.add_argument("--internal", action="append", default=[], metavar="CIDR",
                       help="internal networks, for the direction of flows built from captures (repeatable)")
    flows.set_defaults(run=run_flows)

    ipset = subparsers.add_parser("ipset", help="combine IP set files: union, intersect, difference (rwsettool)")
    ipset.add_argument("operation", choices=IPSET_OPERATIONS, metavar="OPERATION",
                       help="union, intersect, or difference (the first set minus the others)")
    ipset.add_argument("files", nargs="+", metavar="FILE", help="IP set files: one address or CIDR a line")
    ipset.add_argument("--out", default="-", metavar="FILE", help="default: standard output")
    ipset.set_defaults(run=run_ipset)


def run_ipset(args: argparse.Namespace) -> int:
    from sensor.flows.ipset import combine, read_ipset, write_ipset

    sets = [read_ipset(path) for path in args.files]
    write_ipset(combine(args.operation, sets), args.out)
    return 0


def run_flows(args: argparse.Namespace) -> int:
    from sensor.flows.filter import FilterError

    try:
        return _run_flows(args)
    except FilterError as err:
        # One line with the reason and column, then the expression with a caret under the place.
        print(f"truesource: {err}\n{err.pointer()}", file=sys.stderr)
        return err.exit_code


def _run_flows(args: argparse.Namespace) -> int:
    from sensor.flows.filter import compile_filter
    from sensor.flows.record import FLOW_DTYPE
    from sensor.flows.stats import ADDRESS_FIELDS, aggregate, columns_for, parse_fields

    flow_filter = compile_filter(args.filter)
    fields = parse_fields(args.aggregate) if args.aggregate else None
    if args.top is not None and args.top < 0:
        raise StartupError("--top: must be 0 or more")
    if args.percentage is not None and not 0 <= args.percentage <= 100:
        raise StartupError("--percentage: must be between 0 and 100")
    if args.percentage is not None and fields is None:
        raise StartupError("--percentage needs --aggregate")
    ipset_field = args.ipset_field
    if args.ipset_out and ipset_field is None:
        ipset_field = next((f for f in fields or () if f in ADDRESS_FIELDS), "srcip")
    if args.ipset_out and fields is not None and ipset_field not in fields:
        raise StartupError(f"--ipset-field {ipset_field}: not one of the --aggregate fields")
    if fields is not None:
        wanted = columns_for(fields)
    else:
        wanted = set(FLOW_DTYPE.names or ())
    cut_offs: list = []  # a capture cut off mid-frame: its flows before the cut are shown, then exit 1
    columns, scanned = scan(args.sources, flow_filter, wanted, args.internal, cut_offs)
    done = 1 if cut_offs else 0
    out = sys.stdout
    if fields is not None:
        bins = aggregate(columns, fields, args.sort or "flows", args.top, args.percentage)
        rows = bin_rows(bins)
        if args.json:
            for row in rows:
                out.write(json.dumps(row) + "\n")
        else:
            write_bins_table(out, bins, rows, scanned)
        if args.ipset_out:
            hi, lo = bins.keys[ipset_field]
            _write_ipset_from(hi, lo, args.ipset_out)
        return done
    records = order_records(columns, args.sort, args.top)
    if args.json:
        from sensor.flows.record import flow_dicts

        for row in flow_dicts(records):
            out.write(json.dumps(row) + "\n")
    else:
        write_flow_table(out, records, scanned, len(columns["packets"]))
    if args.ipset_out:
        side = "src" if ipset_field == "srcip" else "dst"
        _write_ipset_from(records[f"{side}_hi"], records[f"{side}_lo"], args.ipset_out)
    return done


def _write_ipset_from(hi: Any, lo: Any, path: str) -> None:
    from sensor.flows.ipset import IPSet, write_ipset

    write_ipset(IPSet.from_halves(hi, lo), path)


# Sources

def source_kind(path: str) -> str:
    """"store" (a directory or Parquet file) or "capture" (pcap/pcapng), from the first bytes."""
    if os.path.isdir(path):
        return "store"
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except FileNotFoundError:
        raise StartupError(f"{path}: no such file or directory") from None
    except OSError as err:
        raise StartupError(f"{path}: cannot read: {err.strerror}") from None
    if magic == PARQUET_MAGIC:
        return "store"
    if magic in PCAP_MAGICS or magic == PCAPNG_MAGIC:
        return "capture"
    raise StartupError(f"{path}: neither a flow store (Parquet) nor a capture (pcap, pcapng)")


def scan(sources: Sequence[str], flow_filter, wanted: set[str], internal: Sequence[str] = (),
         cut_offs: list | None = None):
    """The records of every source that pass the filter, as a dict of the `wanted` columns; and how many
    records were read in all. A capture cut off mid-frame is appended to `cut_offs` (see flows_from_captures)."""
    import numpy as np

    kinds = [(path, source_kind(path)) for path in sources]  # every source checked before any is read
    needed = sorted(set(wanted) | set(flow_filter.fields))
    parts: list[dict] = []
    scanned = 0
    captures = [path for path, kind in kinds if kind == "capture"]
    stores = [path for path, kind in kinds if kind == "store"]
    if captures:
        from sensor.flows.build import flows_from_captures

        records = flows_from_captures(captures, internal=internal, cut_offs=cut_offs)
        scanned += len(records)
        keep = flow_filter.mask(records, len(records))
        parts.append({name: records[name][keep] for name in wanted})
    for batch in _store_batches(stores, needed):
        n = len(batch[needed[0]])
        scanned += n
        keep = flow_filter.mask(batch, n)
        if keep.all():
            parts.append({name: batch[name] for name in wanted})
        else:
            parts.append({name: batch[name][keep] for name in wanted})
    if not parts:
        from sensor.flows.record import FLOW_DTYPE

        return {name: np.zeros(0, FLOW_DTYPE[name]) for name in wanted}, 0
    if len(parts) == 1:
        return parts[0], scanned
    return {name: np.concatenate([part[name] for part in parts]) for name in wanted}, scanned


def _store_batches(paths: Sequence[str], columns: list[str]):
    """Column arrays of the store's records, a row group batch at a time (times as int64 microseconds)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sensor.flows.record import FLOW_DTYPE
    from sensor.flows.store import skip_unreadable, store_files

    named = [path for path in paths if not os.path.isdir(path)]
    for path in store_files(paths):
        try:
            parquet = pq.ParquetFile(path)
            missing = [name for name in columns if parquet.schema_arrow.get_field_index(name) < 0]
            if missing:
                raise StartupError(f"{path}: not a flow store file (no column {missing[0]})")
        except (pa.ArrowException, OSError) as err:  # one bad file does not refuse the store: named, skipped
            skip_unreadable(path, err, named)
            continue
        for group in range(parquet.num_row_groups):  # the writer's row groups bound memory
            try:
                batch = parquet.read_row_group(group, columns=columns, use_threads=True)
            except (pa.ArrowException, OSError) as err:
                skip_unreadable(path, err, named)
                break
            out = {}
            for name in columns:
                column = batch.column(name)
                if pa.types.is_timestamp(column.type):
                    column = column.cast(pa.int64())
                # int64 and int32 columns (the store's types) to the record's: the same bits, the same values
                out[name] = column.to_numpy().astype(FLOW_DTYPE[name], copy=False)
            yield out


# Output

def address_text(hi, lo):
    """Addresses in record form as text (object array), IPv4 told by the ::ffff:0:0/96 mapping."""
    import numpy as np

    from sensor.flows.record import format_addresses

    hi = np.asarray(hi, dtype=np.uint64)
    lo = np.asarray(lo, dtype=np.uint64)
    mapped = (hi == np.uint64(0)) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    return format_addresses(hi, lo, np.where(mapped, 4, 6).astype(np.uint8))


def bin_rows(bins) -> list[dict]:
    """Each bin as a dict: the aggregation fields by their filter-language names, counts, percentages."""
    from sensor.flows.stats import NETWORK_BITS_V4, NETWORK_BITS_V6, NETWORK_FIELDS

    columns: dict[str, list] = {}
    for field in bins.fields:
        key = bins.keys[field]
        if len(key) == 2:
            text = address_text(*key).tolist()
            if field in NETWORK_FIELDS:
                text = [f"{t}/{NETWORK_BITS_V6 if ':' in t else NETWORK_BITS_V4}" for t in text]
            columns[field] = text
        else:
            columns[field] = key[0].tolist()
    columns["flows"] = bins.flows.tolist()
    columns["packets"] = bins.packets.tolist()
    columns["bytes"] = bins.bytes.tolist()
    columns["percent"] = [round(value, 6) for value in bins.percent.tolist()]
    columns["cumul_percent"] = [round(value, 6) for value in bins.cumulative_percent.tolist()]
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def write_bins_table(out, bins, rows: list[dict], scanned: int) -> None:
    """rwstats' layout: what went in, what came out, then one row a bin with percent and cumulative percent."""
    from sensor.flows.record import PROTOCOLS

    metric = bins.sort.capitalize()
    out.write(f"INPUT: {bins.total_records:,} records (of {scanned:,} scanned) for {bins.total_bins:,} bins "
              f"and {bins.total:,} total {bins.sort}\n")
    out.write(f"OUTPUT: {len(bins):,} bins by {bins.sort}\n")
    headers = list(bins.fields) + ["flows", "packets", "bytes", f"%{metric}", "cumul_%"]
    table = []
    for row in rows:
        cells = [str(row[field]) if field != "proto" else PROTOCOLS.get(row[field], str(row[field]))
                 for field in bins.fields]
        cells += [str(row["flows"]), str(row["packets"]), str(row["bytes"]),
                  f"{row['percent']:.6f}", f"{row['cumul_percent']:.6f}"]
        table.append(cells)
    widths = [max([len(h)] + [len(r[i]) for r in table]) for i, h in enumerate(headers)]
    out.write("|".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)) + "|\n")
    for cells in table:
        out.write("|".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + "|\n")


def order_records(columns: dict, sort: str | None, top: int | None):
    """The records as a FLOW_DTYPE array, by first-seen time or by `sort` largest first, cut to `top`."""
    import numpy as np

    from sensor.flows.record import FLOW_DTYPE

    n = len(columns["packets"])
    if sort is None:
        order = np.argsort(columns["start_us"], kind="stable")
    else:
        values = np.ones(n, dtype=np.uint64) if sort == "flows" else columns[sort]
        order = np.argsort(values.max() - values, kind="stable") if n else np.zeros(0, dtype=np.int64)
    if top is not None:
        order = order[:top]
    records = np.empty(len(order), dtype=FLOW_DTYPE)
    for name in FLOW_DTYPE.names or ():
        records[name] = columns[name][order]
    return records


def write_flow_table(out, records, scanned: int, matched: int) -> None:
    """nfdump's default listing: first seen, duration, protocol, source and destination, counts."""
    import time

    from sensor.flows.record import PROTOCOLS

    src = address_text(records["src_hi"], records["src_lo"])
    dst = address_text(records["dst_hi"], records["dst_lo"])
    header = (f"{'Date first seen (UTC)':<23} {'Duration':>9} {'Proto':<5} {'Src IP Addr:Port':>30}    "
              f"{'Dst IP Addr:Port':<30} {'Packets':>8} {'Bytes':>10} {'Flows':>5}\n")
    out.write(header)
    named = zip(*(records[name].tolist() for name in ("start_us", "end_us", "src_port", "dst_port", "proto",
                                                       "packets", "bytes")), strict=True)
    for i, (start, end, sport, dport, proto, packets, nbytes) in enumerate(named):
        seconds, micros = divmod(start, 1_000_000)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{micros // 1000:03d}"
        duration = (end // 1000 - start // 1000) / 1000
        source = _endpoint(src[i], sport)
        destination = _endpoint(dst[i], dport)
        out.write(f"{when:<23} {duration:>9.3f} {PROTOCOLS.get(proto, str(proto)).upper():<5} {source:>30} -> "
                  f"{destination:<30} {packets:>8} {nbytes:>10} {1:>5}\n")
    packets_total = int(records["packets"].sum()) if len(records) else 0
    bytes_total = int(records["bytes"].sum()) if len(records) else 0
    out.write(f"Summary: {len(records):,} flows shown of {matched:,} matching, {scanned:,} scanned; "
              f"shown: {packets_total:,} packets, {bytes_total:,} bytes\n")


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
