"""The local flow store: a directory of Parquet files, rotated like nfcapd's, readable by DuckDB and pandas.

Columns (docs/flows.md, "Store"): the FLOW_DTYPE integer fields as they are (addresses as two uint64 halves, so
the sensor reads them back with no parsing), times as UTC microsecond timestamps, and the addresses again as
text (`src_addr`, `dst_addr`) dictionary-encoded for SQL: each distinct address is formatted and stored once.
A file is written as `.parquet.tmp` and renamed when complete, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sensor.errors import StartupError
from sensor.flows.record import FLOW_DTYPE, FLOW_FIELDS, format_addresses

ROTATE_SECONDS = 300.0  # nfcapd's default rotation: one file per 5 minutes
MAX_FILE_RECORDS = 10_000_000  # and a size bound, so a flood does not make one enormous file (~300 MB)
ROW_GROUP_RECORDS = 1 << 20  # records buffered before a row group is written: large groups read fastest
SUFFIX = ".parquet"
# LZ4 over zstd: files ~30% larger, reads twice as fast (bench/flows.py), and the scan rate is the goal.
COMPRESSION = "lz4"
TIME_COLUMNS = ("start_us", "end_us")
INT_COLUMNS = tuple(name for name in FLOW_FIELDS if name not in TIME_COLUMNS)
TIMESTAMP = pa.timestamp("us", tz="UTC")


class FlowStoreError(StartupError):
    """A flow store that cannot be written or read: the message names the path."""


def _address_column(hi: np.ndarray, lo: np.ndarray, version: np.ndarray) -> pa.DictionaryArray:
    """Addresses as dictionary-encoded text: each distinct address is formatted once. Arrow's hash-based
    dictionary_encode finds them (no sort): IPv4 rows by their low half, IPv6 rows by both halves as 16 bytes."""
    v4 = version == 4
    indices = np.empty(len(hi), np.int32)
    encoded4 = pa.array(lo[v4]).dictionary_encode()
    uniq4 = encoded4.dictionary.to_numpy()
    indices[v4] = encoded4.indices.to_numpy()
    text = [format_addresses(np.zeros(len(uniq4), np.uint64), uniq4, np.full(len(uniq4), 4, np.uint8))]
    if not v4.all():
        halves = np.empty((int((~v4).sum()), 2), ">u8")
        halves[:, 0], halves[:, 1] = hi[~v4], lo[~v4]
        binary = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(halves), [None, pa.py_buffer(halves)])
        encoded6 = binary.dictionary_encode()
        uniq6 = np.frombuffer(encoded6.dictionary.buffers()[1], ">u8", count=2 * len(encoded6.dictionary))
        uniq6 = uniq6.reshape(-1, 2).astype(np.uint64)
        indices[~v4] = len(uniq4) + encoded6.indices.to_numpy()
        text.append(format_addresses(uniq6[:, 0].copy(), uniq6[:, 1].copy(), np.full(len(uniq6), 6, np.uint8)))
    dictionary = pa.array(np.concatenate(text).tolist(), pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(indices), dictionary)


def to_table(arr: np.ndarray) -> pa.Table:
    """Flow records as an Arrow table in the store's columns."""
    columns = {name: pa.array(arr[name].astype(np.int64)).cast(TIMESTAMP) for name in TIME_COLUMNS}
    for name in INT_COLUMNS:
        columns[name] = pa.array(np.ascontiguousarray(arr[name]))
    columns["src_addr"] = _address_column(arr["src_hi"], arr["src_lo"], arr["ip_version"])
    columns["dst_addr"] = _address_column(arr["dst_hi"], arr["dst_lo"], arr["ip_version"])
    return pa.table(columns)


class FlowStoreWriter:
    """Appends flow records to a store directory; a new file every `rotate_seconds` or `max_records`."""

    def __init__(self, directory: str, rotate_seconds: float = ROTATE_SECONDS,
                 max_records: int = MAX_FILE_RECORDS, row_group: int = ROW_GROUP_RECORDS) -> None:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as err:
            raise FlowStoreError(f"{directory}: cannot create the flow store: {err.strerror}") from None
        if not os.access(directory, os.W_OK):
            raise FlowStoreError(f"{directory}: cannot write to the flow store: permission denied")
        self.directory = directory
        self.rotate_seconds = rotate_seconds
        self.max_records = max_records
        self.row_group = row_group
        self.files: list[str] = []  # completed files, in order
        self.records = 0
        self._pending: list[np.ndarray] = []
        self._pending_count = 0
        self._writer: Any = None  # a pq.ParquetWriter while a file is open
        self._path = ""
        self._opened = 0.0
        self._in_file = 0
        self._sequence = 0

    def write(self, arr: np.ndarray) -> None:
        """Buffer records; write a row group when enough are buffered; rotate when the file is old or full.
        Called once per batch, even with no records, so that a quiet live capture still rotates."""
        if len(arr):
            self._pending.append(arr)
            self._pending_count += len(arr)
            self.records += len(arr)
        if self._pending_count >= self.row_group:
            self._write_pending()
        if self._writer is not None and time.monotonic() - self._opened >= self.rotate_seconds:
            self._write_pending()
            self._close_file()

    def close(self) -> None:
        self._write_pending()
        self._close_file()

    def _write_pending(self) -> None:
        while self._pending_count:
            arr = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending, self._pending_count = [], 0
            if self._writer is None:
                self._open_file()
            room = self.max_records - self._in_file
            head, rest = arr[:room], arr[room:]
            self._writer.write_table(to_table(head), row_group_size=len(head))
            self._in_file += len(head)
            if len(rest):
                self._close_file()
                self._pending, self._pending_count = [rest], len(rest)

    def _open_file(self) -> None:
        self._sequence += 1
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        self._path = os.path.join(self.directory, f"flows-{stamp}-{os.getpid()}-{self._sequence:04d}{SUFFIX}")
        self._writer = pq.ParquetWriter(self._path + ".tmp", to_table(np.zeros(0, FLOW_DTYPE)).schema,
                                        compression=COMPRESSION)
        self._opened = time.monotonic()
        self._in_file = 0

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        os.replace(self._path + ".tmp", self._path)
        self.files.append(self._path)
        self._writer = None


def store_files(paths: Iterable[str]) -> list[str]:
    """The Parquet files named, or held by the directories named (sorted: their names start with the time)."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, name) for name in os.listdir(path) if name.endswith(SUFFIX))
        elif os.path.exists(path):
            files.append(path)
        else:
            raise FlowStoreError(f"{path}: no such flow store or file")
    return files


def read_flows(paths: str | Sequence[str]) -> np.ndarray:
    """Every flow record of the store directories or Parquet files named, as one FLOW_DTYPE array.

    Vectorized, a row group at a time (so Arrow holds one group, not the whole store, beside the result): each
    column is decoded by Arrow and copied into the record array in one step; the text address columns are not
    read.
    """
    if isinstance(paths, str):
        paths = [paths]
    files = []
    for path in store_files(paths):
        try:
            files.append((path, pq.ParquetFile(path)))
        except (pa.ArrowException, OSError) as err:
            raise FlowStoreError(f"{path}: not a readable flow store file ({err})") from None
    out = np.empty(sum(parquet.metadata.num_rows for _, parquet in files), FLOW_DTYPE)
    position = 0
    for path, parquet in files:
        for group in range(parquet.num_row_groups):
            try:
                table = parquet.read_row_group(group, columns=list(FLOW_FIELDS))
            except (pa.ArrowException, OSError, KeyError) as err:
                raise FlowStoreError(f"{path}: not a readable flow store file ({err})") from None
            for name in FLOW_FIELDS:
                at = position
                for chunk in table.column(name).chunks:
                    if name in TIME_COLUMNS:
                        chunk = chunk.view(pa.int64())  # zero-copy: a timestamp is an int64
                    out[name][at:at + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
                    at += len(chunk)
            position += table.num_rows
    return out
