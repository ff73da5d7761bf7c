"""The local flow store: Parquet files partitioned by date and sensor (hive style), rotated like nfcapd's.

Layout (docs/flows.md, "Store"): `DIR/date=YYYY-MM-DD/sensor=NAME/flows-YYYYmmddHHMMSS-PID-SEQ.parquet`, the
date being the flows' start day (UTC, packet time) and the keys only in the path (decision 0120). Columns: the
FLOW_DTYPE fields as signed types every engine reads the same (no uint64, which Spark turns into a decimal:
address halves and counters are int64 holding the same 64 bits, ports and small codes int32), times as UTC
microsecond timestamps, and the addresses again as text (`src_addr`, `dst_addr`) dictionary-encoded for SQL.

A file is written as `.parquet.tmp`, fsynced and renamed when complete, so a reader never sees half a file,
even after a full disk or a power cut; a file that cannot be completed is removed and its records counted
as lost (`lost`), and the store goes on with the next file. Readers skip, and name, a file they cannot read.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa

try:  # decision 0198: the writer's modules without pyarrow.parquet's and pyarrow.compute's Python layers
    from pyarrow import _compute as _native_compute
    from pyarrow import _parquet as _native_parquet
except ImportError:  # pragma: no cover - a pyarrow without them: the public modules below
    _native_compute = _native_parquet = None

from sensor.errors import StartupError
from sensor.flows.record import FLOW_DTYPE, FLOW_FIELDS, format_addresses

log = logging.getLogger(__name__)

ROTATE_SECONDS = 300.0  # nfcapd's default rotation: one file per 5 minutes
MAX_FILE_RECORDS = 10_000_000  # and a size bound, so a flood does not make one enormous file (~300 MB)
# Records buffered before a row group is written: the store's whole buffer (77 bytes a record, plus the Arrow
# table made from it while it is written: ~25 MB at the default). Larger groups read a little faster, but
# 1 Mi records cost ~885 MB RSS under a flood of unique addresses (issue 14).
ROW_GROUP_RECORDS = 1 << 17
SUFFIX = ".parquet"
TMP = ".tmp"
# LZ4 over zstd: files ~30% larger, reads twice as fast (bench/flows.py), and the scan rate is the goal.
COMPRESSION = "lz4"
TIME_COLUMNS = ("start_us", "end_us")
INT_COLUMNS = tuple(name for name in FLOW_FIELDS if name not in TIME_COLUMNS)
TIMESTAMP = pa.timestamp("us", tz="UTC")
DAY_US = 86_400 * 1_000_000
# What each integer field is stored as: the same bits in a type without surprises in Spark, Trino, ClickHouse.
STORED = {name: (np.int64 if FLOW_DTYPE[name].itemsize == 8 else np.int32) for name in INT_COLUMNS}
# Parquet encodings by column (decision 0192): dictionary pages only where values repeat. Times and ports are
# nearly unique per flow: a dictionary of them costs a hash per value and a larger file (start_us 5.4 -> 3.6 MB
# plain, 0.07 -> 0.02 s CPU per 860k flows). Min/max statistics on every column but the address texts, whose
# string statistics cost as much as the column and prune nothing (addresses are not in row order).
PLAIN_COLUMNS = ("start_us", "end_us", "src_port", "dst_port")
NO_STATISTICS = ("src_addr", "dst_addr")


class FlowStoreError(StartupError):
    """A flow store that cannot be written or read: the message names the path."""


def partition_value(text: str) -> str:
    """A hive partition value as a path component: percent-encoded like Hive and Spark do, so a sensor named
    `a/b` cannot leave its directory."""
    return quote(text, safe="-_.~ ") or "%00"


class _Texts:
    """Formatted addresses by key, as sorted numpy arrays: a row group's distinct keys are looked up at once."""

    def __init__(self, dtype: str) -> None:
        self.keys = np.zeros(0, dtype)
        self.texts = np.zeros(0, object)

    def lookup(self, keys: np.ndarray, format_rows: Callable[[np.ndarray], np.ndarray], limit: int) -> np.ndarray:
        """The texts of `keys` (distinct); `format_rows(rows)` formats those of keys[rows] not known yet."""
        out = np.empty(len(keys), object)
        if not len(keys):
            return out
        if len(self.keys):
            at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
            found = self.keys[at] == keys
            out[found] = self.texts[at[found]]
            missing = np.flatnonzero(~found)
        else:
            missing = np.arange(len(keys))
        if len(missing):
            out[missing] = format_rows(missing)
            if len(self.keys) + len(missing) > limit:  # a flood of new addresses: start over
                self.keys, self.texts = self.keys[:0], self.texts[:0]
            keys_all = np.concatenate([self.keys, keys[missing]])
            order = np.argsort(keys_all, kind="stable")
            self.keys, self.texts = keys_all[order], np.concatenate([self.texts, out[missing]])[order]
        return out


class AddressTexts:
    """Addresses already formatted, kept between row groups (decision 0194): the same clients and servers come
    back in every group, so each is formatted once per run rather than once per group and column. Bounded: at
    `limit` addresses of a family (a flood of new ones) it starts over, costing what no cache costs."""

    def __init__(self, limit: int = 1 << 16) -> None:
        self.limit = limit
        self.v4 = _Texts("u8")  # by the address's low half (::ffff:a.b.c.d)
        self.v6 = _Texts("S16")  # by its 16 bytes


def _int_array(values: np.ndarray) -> pa.Array:
    """A contiguous numpy integer array as an Arrow array, without a copy (nor pa.array's checks for pandas and
    masked arrays, which import numpy.ma)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def _dictionary_encode(array: pa.Array) -> pa.DictionaryArray:
    """Arrow's hash-based dictionary_encode, called through pyarrow._compute when it is there (pyarrow.compute,
    which Array.dictionary_encode imports, builds a Python wrapper for every kernel: ~25 ms of start-up)."""
    if _native_compute is not None:
        try:
            return _native_compute.call_function("dictionary_encode", [array])
        except (AttributeError, TypeError):  # pragma: no cover - another pyarrow's private API
            pass
    return array.dictionary_encode()


def _address_column(hi: np.ndarray, lo: np.ndarray, version: np.ndarray,
                    cache: AddressTexts | None = None, v4: np.ndarray | None = None) -> pa.DictionaryArray:
    """Addresses as dictionary-encoded text: each distinct address is formatted once (and once a run with a
    `cache`). Arrow's hash-based dictionary_encode finds them (no sort): IPv4 rows by their low half, IPv6 rows
    by both halves as 16 bytes."""
    cache = cache or AddressTexts()
    v4 = version == 4 if v4 is None else v4
    all4 = bool(v4.all())
    indices = np.empty(len(hi), np.int32)
    encoded4 = _dictionary_encode(_int_array(lo if all4 else lo[v4]))
    uniq4 = encoded4.dictionary.to_numpy()
    if all4:
        indices[:] = encoded4.indices.to_numpy()
    else:
        indices[v4] = encoded4.indices.to_numpy()

    def format4(rows: np.ndarray) -> np.ndarray:
        return format_addresses(np.zeros(len(rows), np.uint64), uniq4[rows], np.full(len(rows), 4, np.uint8))

    text = cache.v4.lookup(uniq4, format4, cache.limit)
    if not all4:
        halves = np.empty((int((~v4).sum()), 2), ">u8")
        halves[:, 0], halves[:, 1] = hi[~v4], lo[~v4]
        binary = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(halves), [None, pa.py_buffer(halves)])
        encoded6 = _dictionary_encode(binary)
        indices[~v4] = len(uniq4) + encoded6.indices.to_numpy()
        dictionary = encoded6.dictionary
        uniq6 = np.frombuffer(dictionary.buffers()[1], ">u8", count=2 * len(dictionary)).reshape(-1, 2)

        def format6(rows: np.ndarray) -> np.ndarray:
            return format_addresses(uniq6[rows, 0].astype(np.uint64), uniq6[rows, 1].astype(np.uint64),
                                    np.full(len(rows), 6, np.uint8))

        text = np.concatenate([text, cache.v6.lookup(uniq6.copy().view("S16").ravel(), format6, cache.limit)])
    return pa.DictionaryArray.from_arrays(_int_array(indices), pa.array(text.tolist(), pa.string()))


class Columns:
    """The store's integer columns of up to `size` records, reused from one row group to the next (decision
    0195): Arrow wraps them without a copy for the write, so no row group allocates (and page-faults in) fresh
    memory for them. `fill` copies the record fields in blocks that stay in cache."""

    BLOCK = 8192  # records per block: 590 KB of records

    def __init__(self, size: int) -> None:
        self.size = size
        self.arrays = {name: np.empty(size, np.int64 if name in TIME_COLUMNS else STORED[name])
                       for name in FLOW_FIELDS}
        # written through views of the record field's own type: uint64 bits into int64 as they are
        self._targets = {name: array.view(FLOW_DTYPE[name]) if array.itemsize == FLOW_DTYPE[name].itemsize
                         and FLOW_DTYPE[name].kind == "u" else array for name, array in self.arrays.items()}

    def fill(self, arr: np.ndarray) -> dict[str, np.ndarray]:
        n = len(arr)
        for at in range(0, n, self.BLOCK):
            block = arr[at:at + self.BLOCK]
            for name, target in self._targets.items():
                target[at:at + len(block)] = block[name]
        return {name: array[:n] for name, array in self.arrays.items()}


def to_table(arr: np.ndarray, cache: AddressTexts | None = None, columns: Columns | None = None) -> pa.Table:
    """Flow records as an Arrow table in the store's columns; `cache`: address texts kept between calls;
    `columns`: buffers to reuse (the table then holds them: write it before the next call)."""
    cache = cache or AddressTexts()
    if columns is None or columns.size < len(arr):
        columns = Columns(len(arr))
    fields = columns.fill(arr)
    n = len(arr)
    table = {name: pa.Array.from_buffers(TIMESTAMP, n, [None, pa.py_buffer(fields[name])])
             for name in TIME_COLUMNS}
    for name in INT_COLUMNS:
        table[name] = _int_array(fields[name])
    version = fields["ip_version"]
    v4 = version == 4
    for side in ("src", "dst"):
        table[f"{side}_addr"] = _address_column(fields[f"{side}_hi"].view(np.uint64),
                                                fields[f"{side}_lo"].view(np.uint64), version, cache, v4)
    if SCHEMA is None:
        return pa.table(table)
    return pa.Table.from_arrays(list(table.values()), schema=SCHEMA)


SCHEMA: pa.Schema | None = None
# Every column is required (never null): Parquet then writes no definition levels (decision 0197).
SCHEMA = pa.schema([field.with_nullable(False) for field in to_table(np.zeros(0, FLOW_DTYPE)).schema])
WRITER_OPTIONS = {
    "compression": COMPRESSION,
    "use_dictionary": [name for name in SCHEMA.names if name not in PLAIN_COLUMNS],
    "write_statistics": [name for name in SCHEMA.names if name not in NO_STATISTICS],
}


class _File:
    """One store file being written (as PATH.tmp) for one partition."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sink: pa.NativeFile | None = None
        self.writer = _parquet_writer(self, path + TMP)
        self.records = 0

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table, row_group_size=len(table))

    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            if self.sink is not None:
                self.sink.close()


_NATIVE_WRITER = [_native_parquet is not None]  # False once the private writer has refused its arguments


def _parquet_writer(file: _File, path: str) -> Any:
    """pyarrow._parquet.ParquetWriter on a file opened here, with the arguments pyarrow.parquet.ParquetWriter
    passes it (the same file, byte for byte, without importing pyarrow.parquet and pyarrow.fs: ~40 ms CPU of
    every start-up with a store); the public writer if this pyarrow's private one takes other arguments."""
    if _NATIVE_WRITER[0]:
        sink = pa.OSFile(path, "wb")
        try:
            writer = _native_parquet.ParquetWriter(
                sink, SCHEMA, version="2.6", writer_engine_version="V2", data_page_version="1.0",
                use_compliant_nested_type=True, store_schema=True, **WRITER_OPTIONS)
            file.sink = sink
            return writer
        except (AttributeError, TypeError):  # pragma: no cover - another pyarrow's private API
            sink.close()
            _NATIVE_WRITER[0] = False
    import pyarrow.parquet as pq

    return pq.ParquetWriter(path, SCHEMA, **WRITER_OPTIONS)


def remove_stale_tmp(directory: str) -> list[str]:
    """`.tmp` files left by a writer that was killed (its pid, in the name, no longer runs): never complete,
    never read; removed so that they do not fill the disk. A live writer's files are left alone."""
    removed = []
    for folder, _, names in os.walk(directory):
        for name in names:
            if not (name.startswith("flows-") and name.endswith(SUFFIX + TMP)):
                continue
            try:
                pid = int(name.split("-")[2])
                os.kill(pid, 0)
                continue  # still running (or not ours to signal: then leave it)
            except ProcessLookupError:
                pass
            except (ValueError, IndexError, PermissionError):
                continue
            try:
                os.unlink(os.path.join(folder, name))
                removed.append(os.path.join(folder, name))
            except OSError:
                pass
    return removed


class FlowStoreWriter:
    """Appends flow records to a store directory, one open file per date partition; every file is rotated
    after `rotate_seconds` or `max_records`. At most `row_group` records are buffered (`buffered`)."""

    def __init__(self, directory: str, rotate_seconds: float = ROTATE_SECONDS,
                 max_records: int = MAX_FILE_RECORDS, row_group: int = ROW_GROUP_RECORDS,
                 sensor: str | None = None) -> None:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as err:
            raise FlowStoreError(f"{directory}: cannot create the flow store: {err.strerror}") from None
        if not os.access(directory, os.W_OK):
            raise FlowStoreError(f"{directory}: cannot write to the flow store: permission denied")
        if row_group < 1 or max_records < 1:
            raise FlowStoreError(f"{directory}: row group and file size must be at least one record")
        self.directory = directory
        self.sensor = sensor or socket.gethostname()
        self.rotate_seconds = rotate_seconds
        self.max_records = max_records
        self.row_group = row_group
        self.files: list[str] = []  # completed files, in order
        self.records = 0
        self.lost = 0  # records of files that could not be completed (a full disk): removed, counted
        self.errors: list[str] = []  # the first error of each kind, said once
        self._pending: np.ndarray | None = None  # row_group records, allocated at the first write, reused
        self._columns: Columns | None = None
        self.buffered = 0  # records held in memory (gauge): fewer than row_group between writes
        self._open: dict[int, _File] = {}  # day number -> its file
        self._opened = 0.0
        self._sequence = 0
        self._texts = AddressTexts()
        for path in remove_stale_tmp(directory):
            log.info("%s: removed, an unfinished file of a flow-store writer that was killed", path)

    def write(self, arr: np.ndarray) -> None:
        """Buffer records; write row groups when `row_group` are buffered; rotate when the files are old.
        Called once per batch, even with no records, so that a quiet live capture still rotates."""
        n = len(arr)
        self.records += n
        at = 0
        while at < n:  # copied into the row group's buffer, a row group written each time it is full
            if self._pending is None:
                self._pending = np.empty(self.row_group, FLOW_DTYPE)
            count = min(self.row_group - self.buffered, n - at)
            target, part = self._pending[self.buffered:self.buffered + count], arr[at:at + count]
            if part.dtype == FLOW_DTYPE and part.flags.c_contiguous:
                target.view(np.uint8)[:] = part.view(np.uint8)  # a memcpy; numpy copies a packed dtype by field
            else:
                target[:] = part
            self.buffered += count
            at += count
            if self.buffered >= self.row_group:
                self._write_pending()
        if self._open and time.monotonic() - self._opened >= self.rotate_seconds:
            self._write_pending()
            self._close_files()

    def close(self) -> None:
        self._write_pending()
        self._close_files()

    def _write_pending(self) -> None:
        if not self.buffered:
            return
        assert self._pending is not None
        arr, self.buffered = self._pending[:self.buffered], 0  # a view: written out before the buffer is reused
        days = arr["start_us"] // DAY_US
        first = int(days[0])
        if (days == first).all():
            self._write_day(first, arr)
            return
        order = np.argsort(days, kind="stable")
        arr, days = arr[order], days[order]
        cuts = np.flatnonzero(np.diff(days)) + 1
        for part in np.split(arr, cuts):
            self._write_day(int(part["start_us"][0] // DAY_US), part)

    def _write_day(self, day: int, arr: np.ndarray) -> None:
        while len(arr):
            file = self._open.get(day) or self._open_file(day)
            if file is None:
                self.lost += len(arr)
                return
            room = self.max_records - file.records
            head, arr = arr[:room], arr[room:]
            try:
                if self._columns is None:
                    self._columns = Columns(self.row_group)
                file.write(to_table(head, self._texts, self._columns))
                file.records += len(head)
            except OSError as err:
                self.lost += len(head)
                self._abandon(day, err)
                continue
            if file.records >= self.max_records:
                self._close_file(day)

    def _open_file(self, day: int) -> _File | None:
        self._sequence += 1
        date = time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))
        folder = os.path.join(self.directory, f"date={date}", f"sensor={partition_value(self.sensor)}")
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        path = os.path.join(folder, f"flows-{stamp}-{os.getpid()}-{self._sequence:04d}{SUFFIX}")
        try:
            os.makedirs(folder, exist_ok=True)
            file = _File(path)
        except OSError as err:
            self._say(f"{path}: cannot create: {err}")
            return None
        if not self._open:
            self._opened = time.monotonic()
        self._open[day] = file
        return file

    def _close_files(self) -> None:
        for day in list(self._open):
            self._close_file(day)

    def _close_file(self, day: int) -> None:
        """Complete a file: footer written, data on disk (fsync), then the rename makes it visible."""
        file = self._open.pop(day)
        try:
            file.close()
            descriptor = os.open(file.path + TMP, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(file.path + TMP, file.path)
            _fsync_directory(os.path.dirname(file.path))
        except OSError as err:
            self.lost += file.records
            self._remove(file, err)
            return
        self.files.append(file.path)

    def _abandon(self, day: int, err: OSError) -> None:
        file = self._open.pop(day)
        self.lost += file.records  # the row groups already in it go with it
        try:
            file.close()
        except OSError:
            pass
        self._remove(file, err)

    def _remove(self, file: _File, err: OSError) -> None:
        try:
            os.unlink(file.path + TMP)
        except OSError:
            pass
        self._say(f"{file.path}: not stored ({err}); its records are counted as lost")

    def _say(self, message: str) -> None:
        """Log an error once per kind (a full disk would otherwise log every batch)."""
        kind = message.split("(")[-1][:40]
        if kind not in self.errors:
            self.errors.append(kind)
            log.error("flow store: %s", message)


def _fsync_directory(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def store_files(paths: Iterable[str]) -> list[str]:
    """The Parquet files named, or held by the directories named and their partitions (sorted by path: the
    partitions by date, then the names, which start with the time). `.tmp` files being written are not."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = []
            for folder, subfolders, names in os.walk(path):
                subfolders.sort()
                found += [os.path.join(folder, name) for name in names if name.endswith(SUFFIX)]
            files += sorted(found)
        elif os.path.exists(path):
            files.append(path)
        else:
            raise FlowStoreError(f"{path}: no such flow store or file")
    return files


def skip_unreadable(path: str, err: Exception, named: Iterable[str] = ()) -> None:
    """A file of a store directory that cannot be read (cut short by a crash of an older version, damaged):
    named on standard error and skipped, so that one bad file does not refuse the whole store. A file named
    on its own is an error (FlowStoreError): there is nothing else to read."""
    if path in named:
        raise FlowStoreError(f"{path}: not a readable flow store file ({err})")
    print(f"truesource: {path}: skipped, not a readable flow store file ({err})", file=sys.stderr)


def read_flows(paths: str | Sequence[str], on_skip=skip_unreadable) -> np.ndarray:
    """Every flow record of the store directories or Parquet files named, as one FLOW_DTYPE array.

    Vectorized, a row group at a time (so Arrow holds one group, not the whole store, beside the result): each
    column is decoded by Arrow and copied into the record array in one step; the text address columns are not
    read. An unreadable file is skipped and passed to `on_skip`.
    """
    import pyarrow.parquet as pq  # here: the writer does without it

    if isinstance(paths, str):
        paths = [paths]
    named = [path for path in paths if not os.path.isdir(path)]
    files = []
    for path in store_files(paths):
        try:
            files.append((path, pq.ParquetFile(path)))
        except (pa.ArrowException, OSError) as err:
            on_skip(path, err, named)
    out = np.empty(sum(parquet.metadata.num_rows for _, parquet in files), FLOW_DTYPE)
    position = 0
    for path, parquet in files:
        start = position
        try:
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group, columns=list(FLOW_FIELDS))
                for name in FLOW_FIELDS:
                    at = position
                    for chunk in table.column(name).chunks:
                        if name in TIME_COLUMNS:
                            chunk = chunk.view(pa.int64())  # zero-copy: a timestamp is an int64
                        # an int64 column into a uint64 field keeps the bits: the value written
                        out[name][at:at + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
                        at += len(chunk)
                position += table.num_rows
        except (pa.ArrowException, OSError, KeyError) as err:
            on_skip(path, err, named)
            position = start
    return out[:position]
