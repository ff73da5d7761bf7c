"""The query-log store, schema 2: the loop's packed entries in segment files, found through sorted key files,
listed in a small SQLite catalogue; written by one sensor, read by any number of processes.

Why this shape (docs/decisions/0180-querylog-packed-segments.md): decoding every entry into Python objects and
making a row of it cost the writer ~12 us a query (decision 0122); now the writer appends the packed buffers
it receives to the open segment's file as they are (`PATH.segments/<n>.entries`), with each entry's lookup
keys from one compiled walk (`<n>.keys`, sensor/querylog/segment.py), and sorts the keys once when the segment
closes (`<n>.index`). Readers decode only the entries they return. The catalogue (`PATH`, SQLite in WAL mode)
holds, per segment, its time range, its entries and the bytes of its files committed so far: a reader reads
a segment's files only up to what the catalogue says, so it never sees half a batch. Retention drops whole
segments (their row in the catalogue, then their files).

A store of schema 1 (SQLite rows, decision 0055) is refused with a message, never read or changed.
"""

from __future__ import annotations

import mmap
import os
import socket
import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from sensor.errors import StartupError
from sensor.querylog.limits import CACHE_KIB, MAX_ANSWER_BYTES, MAX_ANSWERS, RESPONSE_ONLY_ANSWERS
from sensor.querylog.options import SEGMENT_ROWS, Retention
from sensor.querylog.record import QueryLogEntry
from sensor.querylog.segment import (  # noqa: F401  the name helpers, imported from here by the commands
    ENTRY_HEADER,
    KEY_ADDRESS,
    KEY_NAME,
    KEY_RECORD,
    SUFFIX_LABELS,
    address_key,
    entries_at,
    find_sorted,
    find_unsorted,
    name_key,
    pack_entries,
    reversed_name,
    segment_keys_reference,
    sort_keys_reference,
    split_labels,
    walk_names,
)

SCHEMA_VERSION = "2"
CNAME_IN = b"\x00\x05\x00\x01"  # a CNAME record's type and class (IN), as a stored response holds them
HUNT_CHUNK = 4096  # entries per chunk of names_and_cnames_by_segment
BUSY_TIMEOUT_MS = 10_000  # how long a reader or writer waits for the other's lock before giving up
A, AAAA = 1, 28
MAX_SEGMENT_BYTES = 64 << 20  # a segment closes at this many bytes of files if not at its row count first
MIN_SEGMENT_BYTES = 256 << 10
# Retention keeps the files under the limit minus room for the open segment (this many times the largest
# segment, its index included) to fill.
SIZE_HEADROOM = 1.25
CAPS = (MAX_ANSWERS, MAX_ANSWER_BYTES, RESPONSE_ONLY_ANSWERS)
MANY = 64  # a read that returns more entries than this decodes them with the compiled decoder when given


def segment_bytes_for(max_bytes: int) -> int:
    """A segment's byte size for a store limit: a twentieth of it (so retention, which drops whole segments,
    holds the limit within a few percent), between 256 KiB and 64 MiB; 64 MiB without a limit."""
    if not max_bytes:
        return MAX_SEGMENT_BYTES
    return int(min(max(max_bytes // 20, MIN_SEGMENT_BYTES), MAX_SEGMENT_BYTES))


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments(
    id INTEGER PRIMARY KEY,
    first_ts INTEGER,            -- earliest and latest query time in it, microseconds since the epoch (UTC)
    last_ts INTEGER,
    rows INTEGER NOT NULL DEFAULT 0,     -- entries committed
    bytes INTEGER NOT NULL DEFAULT 0,    -- bytes of <id>.entries committed
    keys INTEGER NOT NULL DEFAULT 0,     -- key records committed (in <id>.keys, or <id>.index once closed)
    indexed INTEGER NOT NULL DEFAULT 0,  -- 1: full, its keys sorted into <id>.index
    created REAL NOT NULL
);
"""


def segments_dir(path: str) -> str:
    return path + ".segments"


def address_bytes(text: str) -> bytes:
    """An IPv4 or IPv6 address in text to its 4 or 16 bytes; StartupError when it is neither."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, text.strip())
        except OSError:
            continue
    raise StartupError(f"{text!r} is not an IP address")


@lru_cache(maxsize=65_536)
def address_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def name_range(name: str) -> tuple[str, str | None]:
    """[low, high) of the reversed names of `name` and every name below it; high None: every name."""
    low = reversed_name(name)
    return (low, low[:-1] + "/") if low else ("", None)  # '/' sorts right after '.'


def entry_time(entry: QueryLogEntry) -> int:
    return entry.ts_sec * 1_000_000 + entry.ts_usec


def decode_reference(data: bytes, caps: tuple[int, int, int] = CAPS) -> list[QueryLogEntry]:
    from sensor.querylog.packed import decode_entries_reference

    return decode_entries_reference(data, caps)


@dataclass(slots=True)
class RetentionResult:
    segments_by_age: int = 0
    segments_by_size: int = 0
    queries_deleted: int = 0


@dataclass(frozen=True, slots=True)
class Segment:
    id: int
    first_ts: int | None
    last_ts: int | None
    rows: int
    indexed: bool
    bytes: int = 0
    keys: int = 0


def _schema_of(db: sqlite3.Connection) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    return None if row is None else row[0]


def _refusal(path: str, version: str | None) -> StartupError:
    if version == "1":
        return StartupError(f"{path}: a query log of schema 1 (SQLite rows, written before truesource 2's packed "
                            f"segments); this version reads schema {SCHEMA_VERSION} only: read or export it with the "
                            "version that wrote it, or give --query-log a new path")
    return StartupError(f"{path}: not a query log of schema {SCHEMA_VERSION}")


class QueryStore:
    """The query log. `QueryStore.open_writer(path)` creates it; `QueryStore.open_reader(path)` only reads.

    The writer is given the compiled walk and sort (sensor/loop.py selects them); without them it uses their
    reference twins. `decode` turns packed entries into records (the reference decoder unless given)."""

    def __init__(self, connection: sqlite3.Connection, path: str, segment_rows: int = SEGMENT_ROWS,
                 segment_bytes: int = MAX_SEGMENT_BYTES) -> None:
        self.db = connection
        self.path = path
        self.dir = segments_dir(path)
        self.segment_rows = segment_rows
        self.segment_bytes = segment_bytes  # a segment also closes when its files hold this many bytes
        self.caps = CAPS
        self.keys_of: Callable = segment_keys_reference
        self.sort_keys: Callable[[bytes], bytes] = sort_keys_reference
        self.decode: Callable[[bytes, tuple[int, int, int]], list[QueryLogEntry]] | None = None
        # writer: called after each segment closes (the writer applies retention: one batch may fill several)
        self.on_segment_closed: Callable[[], None] | None = None
        self._open: Segment | None = None  # writer: the segment being filled
        self._files: tuple[int, int] | None = None  # writer: the open segment's entries and keys descriptors
        self.largest_segment = 0  # writer: the most a closed segment took on disk, its index included
        self.uncommitted = 0  # writer: entries in the open segment's files that readers do not see yet
        self._lock = None  # writer: the open lock file that keeps a second writer out

    # --- opening -------------------------------------------------------------------------------------------

    @classmethod
    def open_writer(cls, path: str, segment_rows: int = SEGMENT_ROWS, segment_bytes: int = MAX_SEGMENT_BYTES,
                    cache_kib: int = CACHE_KIB, keys_of: Callable | None = None,
                    sort_keys: Callable | None = None) -> QueryStore:
        if segment_rows < 1:
            raise StartupError("--query-log-segment-rows: must be at least 1")
        if os.path.isdir(path):
            from sensor.querylog.options import directory_message

            raise StartupError(directory_message(path))
        if os.path.exists(path) and os.path.getsize(path):  # looked at read-only first: a refused store is not touched
            reader = cls.open_reader(path)
            reader.close()
        elif os.path.isdir(segments_dir(path)) and os.listdir(segments_dir(path)):
            # a new catalogue would number its segments from 1 again, onto another store's files
            raise StartupError(f"{path}: no catalogue, but {segments_dir(path)} holds a store's segment files: "
                               "move them away, or give --query-log another path")
        lock = _writer_lock(path)
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StartupError(f"{path}: the query log needs WAL mode (got {mode}; a network file system?)")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a power cut can lose the last batches, never corrupt
            db.execute(f"PRAGMA cache_size=-{min(cache_kib, 4096)}")  # the catalogue is small
            db.executescript(SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            os.makedirs(segments_dir(path), exist_ok=True)
        except sqlite3.DatabaseError as err:
            lock.close()
            raise StartupError(f"{path}: cannot open query log: {err}") from None
        except OSError as err:
            lock.close()
            raise StartupError(f"{path}: cannot open query log: {err.strerror}") from None
        store = cls(db, path, segment_rows, segment_bytes)
        store._lock = lock
        if keys_of is not None:
            store.keys_of = keys_of
        if sort_keys is not None:
            store.sort_keys = sort_keys
        store.check_schema()
        segments = store.segments()
        for segment in segments[:-1]:  # a writer that stopped between filling and indexing
            if not segment.indexed:
                store._close_segment(segment)
        if segments and not segments[-1].indexed:
            store._recover(segments[-1])
        return store

    @classmethod
    def open_reader(cls, path: str) -> QueryStore:
        """Read-only; a missing file or one that is not a query log is a StartupError (exit 2), never created."""
        if not os.path.exists(path):
            raise StartupError(f"{path}: no query log here (write one with --query-log on replay or capture)")
        if os.path.isdir(path):
            from sensor.querylog.options import directory_message

            raise StartupError(directory_message(path))
        if not os.access(path, os.R_OK):
            raise StartupError(f"{path}: cannot read query log: permission denied")
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except sqlite3.DatabaseError as err:
            raise StartupError(f"{path}: cannot open query log: {err}") from None
        store = cls(db, path)
        try:
            store.check_schema()
            row = db.execute("SELECT value FROM meta WHERE key = 'caps'").fetchone()
        except (StartupError, sqlite3.DatabaseError):
            db.close()
            raise
        if row is not None:
            store.caps = tuple(int(x) for x in row[0].split(","))  # type: ignore[assignment]
        return store

    def set_caps(self, caps: tuple[int, int, int]) -> None:
        """What an entry keeps of its answers when read (decision 0121), as the writer's limits say: kept in
        the catalogue, since the store keeps the responses whole and the readers apply the caps."""
        self.caps = caps
        with _transaction(self.db):
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('caps', ?)", (",".join(map(str, caps)),))

    def check_schema(self) -> None:
        try:
            version = _schema_of(self.db)
        except sqlite3.DatabaseError as err:
            raise StartupError(f"{self.path}: not a query log ({err})") from None
        if version != SCHEMA_VERSION:
            raise _refusal(self.path, version)

    def close(self) -> None:
        if self._files is not None:
            for descriptor in self._files:
                os.close(descriptor)
            self._files = None
        self.db.close()
        if self._lock is not None:
            self._lock.close()

    def segments(self) -> list[Segment]:
        try:
            return [Segment(i, f, la, r, bool(x), b, k) for i, f, la, r, x, b, k in self.db.execute(
                "SELECT id, first_ts, last_ts, rows, indexed, bytes, keys FROM segments ORDER BY id")]
        except sqlite3.DatabaseError as err:
            raise StartupError(f"{self.path}: cannot read query log: {err}") from None

    def _file(self, segment_id: int, kind: str) -> str:
        return os.path.join(self.dir, f"{segment_id:010d}.{kind}")

    # --- writing -------------------------------------------------------------------------------------------

    def insert(self, entries: Sequence[QueryLogEntry]) -> int:
        """Store decoded entries (packed again: the reference loop's, or tests'); how many."""
        return self.append_packed(pack_entries(entries))[0] if entries else 0

    def append_packed(self, parts, commit: bool = True) -> tuple[int, bytes]:
        """Store the loop's packed entries as they are (one buffer, or a list of them), in as many segments as
        they fill, with one catalogue transaction per segment; (entries stored, the packed entries whose
        answers the caps may cut). `commit=False`: the open segment's files grow but readers see them only
        from the next commit (`commit()`; a segment that fills is committed as it closes)."""
        done = 0
        suspects = []
        segment = None
        for data in [parts] if not isinstance(parts, list) else parts:
            position = 0
            view = memoryview(data)
            while position < len(view):
                segment = self._open or self._new_segment()
                room_rows = self.segment_rows - segment.rows
                room_bytes = max(self.segment_bytes - segment.bytes - segment.keys * KEY_RECORD.size, 1)
                end, count, first, last, keys, suspect = self.keys_of(view, position, room_rows, room_bytes,
                                                                       segment.bytes, *self.caps)
                entries_fd, keys_fd = self._open_files(segment)
                _write_all(entries_fd, view[position:end])
                _write_all(keys_fd, keys)
                if suspect:
                    suspects.append(suspect)
                first = first if segment.first_ts is None else min(first, segment.first_ts)
                last = last if segment.last_ts is None else max(last, segment.last_ts)
                segment = self._open = Segment(segment.id, first, last, segment.rows + count, False,
                                               segment.bytes + end - position,
                                               segment.keys + len(keys) // KEY_RECORD.size)
                done += count
                self.uncommitted += count
                position = end
                if segment.rows >= self.segment_rows or \
                        segment.bytes + segment.keys * KEY_RECORD.size >= self.segment_bytes:
                    self._commit(segment)
                    self._close_segment(segment)
                    self._open = segment = None
                    if self.on_segment_closed is not None:
                        self.on_segment_closed()
        if segment is not None and commit:
            self._commit(segment)
        return done, b"".join(suspects)

    def commit(self) -> None:
        """Readers see the open segment as its files hold it now."""
        if self._open is not None:
            self._commit(self._open)

    def _commit(self, segment: Segment) -> None:
        """What the open segment's files hold, for readers: written after the bytes are in the files."""
        with _transaction(self.db):
            self.db.execute("UPDATE segments SET rows = ?, first_ts = ?, last_ts = ?, bytes = ?, keys = ? WHERE id = ?",
                            (segment.rows, segment.first_ts, segment.last_ts, segment.bytes, segment.keys, segment.id))
        self.uncommitted = 0  # only the open segment has uncommitted entries

    def _new_segment(self) -> Segment:
        with _transaction(self.db):
            cursor = self.db.execute("INSERT INTO segments(rows, indexed, created) VALUES (0, 0, ?)", (time.time(),))
        n = int(cursor.lastrowid or 0)
        self._open = Segment(n, None, None, 0, False)
        return self._open

    def _open_files(self, segment: Segment) -> tuple[int, int]:
        if self._files is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            self._files = (os.open(self._file(segment.id, "entries"), flags, 0o644),
                           os.open(self._file(segment.id, "keys"), flags, 0o644))
        return self._files

    def _close_files(self) -> None:
        if self._files is not None:
            for descriptor in self._files:
                os.close(descriptor)
            self._files = None

    def _recover(self, segment: Segment) -> None:
        """The open segment as the catalogue has it: bytes past its last commit (a writer killed between
        writing and committing) are cut off; if the files are shorter (a power cut), the whole entries are
        walked again."""
        entries_path, keys_path = self._file(segment.id, "entries"), self._file(segment.id, "keys")
        size = os.path.getsize(entries_path) if os.path.exists(entries_path) else 0
        key_size = os.path.getsize(keys_path) if os.path.exists(keys_path) else 0
        if size >= segment.bytes and key_size >= segment.keys * KEY_RECORD.size:
            for name, length in ((entries_path, segment.bytes), (keys_path, segment.keys * KEY_RECORD.size)):
                with open(name, "ab") as handle:
                    handle.truncate(length)
            self._open = segment
            return
        with open(entries_path, "rb") as handle:
            data = handle.read(segment.bytes)
        end, count, first, last, keys, _ = self.keys_of(data, 0, 1 << 62, 1 << 62, 0, *self.caps) if data else (
            0, 0, None, None, b"", b"")
        with open(entries_path, "ab") as handle:
            handle.truncate(end)
        with open(keys_path, "wb") as handle:
            handle.write(keys)
        with _transaction(self.db):
            self.db.execute("UPDATE segments SET rows = ?, first_ts = ?, last_ts = ?, bytes = ?, keys = ? WHERE id = ?",
                            (count, first, last, end, len(keys) // KEY_RECORD.size, segment.id))
        self._open = Segment(segment.id, first, last, count, False, end, len(keys) // KEY_RECORD.size)

    def _close_segment(self, segment: Segment) -> None:
        """Sort a full segment's keys into its index; readers use it from the commit on."""
        self._close_files()
        keys_path = self._file(segment.id, "keys")
        index_path = self._file(segment.id, "index")
        try:
            with open(keys_path, "rb") as handle:
                keys = handle.read(segment.keys * KEY_RECORD.size)
        except FileNotFoundError:
            keys = b""
        with open(index_path + ".tmp", "wb") as handle:
            handle.write(self.sort_keys(keys))
        os.replace(index_path + ".tmp", index_path)
        with _transaction(self.db):
            self.db.execute("UPDATE segments SET indexed = 1 WHERE id = ?", (segment.id,))
        try:
            os.unlink(keys_path)
        except FileNotFoundError:
            pass
        self.largest_segment = max(self.largest_segment, self.segment_size(segment.id))

    def segment_size(self, segment_id: int) -> int:
        size = 0
        for kind in ("entries", "keys", "index"):
            try:
                size += os.path.getsize(self._file(segment_id, kind))
            except OSError:
                pass
        return size

    def used_bytes(self) -> int:
        """Bytes of the store's files: the catalogue (and its WAL) and every segment's."""
        size = 0
        for name in (self.path, self.path + "-wal", self.path + "-shm"):
            try:
                size += os.path.getsize(name)
            except OSError:
                pass
        try:
            with os.scandir(self.dir) as listing:
                for item in listing:
                    try:
                        size += item.stat().st_size
                    except OSError:
                        pass
        except OSError:
            pass
        return size

    def apply_retention(self, retention: Retention, now: float | None = None) -> RetentionResult:
        """Drop full segments whose newest query is older than the age limit, then the oldest full segments
        while the store is over the size limit."""
        result = RetentionResult()
        if retention.max_age_seconds:
            horizon = int(((time.time() if now is None else now) - retention.max_age_seconds) * 1_000_000)
            for segment in self.segments():
                if segment.indexed and segment.last_ts is not None and segment.last_ts < horizon:
                    self._drop(segment)
                    result.segments_by_age += 1
                    result.queries_deleted += segment.rows
        if retention.max_bytes:
            # room is left for the open segment to fill and be indexed: the files stay within the limit
            # between two passes (a pass runs on every segment the writer closes)
            segment_size = self.largest_segment or self.segment_bytes
            target = max(retention.max_bytes - SIZE_HEADROOM * segment_size, 0)
            for segment in self.segments():
                if self.used_bytes() <= target or not segment.indexed:
                    break
                self._drop(segment)
                result.segments_by_size += 1
                result.queries_deleted += segment.rows
        if result.segments_by_age or result.segments_by_size:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return result

    def _drop(self, segment: Segment) -> None:
        with _transaction(self.db):
            self.db.execute("DELETE FROM segments WHERE id = ?", (segment.id,))
        for kind in ("entries", "keys", "index"):
            try:
                os.unlink(self._file(segment.id, kind))
            except FileNotFoundError:
                pass
        if self._open is not None and self._open.id == segment.id:
            self._open = None
            self._close_files()

    # --- reading -------------------------------------------------------------------------------------------

    def _decode(self, data: bytes, count: int) -> list[QueryLogEntry]:
        if self.decode is not None:
            return self.decode(data, self.caps)
        return decode_reference(data, self.caps)

    def _map(self, segment: Segment, kind: str, length: int):
        """A segment file's first `length` bytes, mapped (b"" when the file is gone: dropped by retention)."""
        if length <= 0:
            return b""
        try:
            with open(self._file(segment.id, kind), "rb") as handle:
                return mmap.mmap(handle.fileno(), length, access=mmap.ACCESS_READ)
        except (FileNotFoundError, ValueError):
            return b""
        except OSError as err:
            raise StartupError(f"{self.path}: cannot read query log: {err.strerror}") from None

    def _keys(self, segment: Segment, key: int) -> list[tuple[int, int]]:
        length = segment.keys * KEY_RECORD.size
        if segment.indexed:
            return find_sorted(self._map(segment, "index", length), key)
        keys = self._map(segment, "keys", length)
        if not keys:  # closed since the catalogue was read
            return find_sorted(self._map(segment, "index", length), key)
        return find_unsorted(keys, key)

    def _entries_at(self, segment: Segment, offsets: Iterable[int]) -> list[QueryLogEntry]:
        offsets = sorted(set(offsets))
        if not offsets:
            return []
        data = self._map(segment, "entries", segment.bytes)
        if not data:
            return []
        return self._decode(entries_at(data, offsets), len(offsets))

    def by_name(self, name: str, subdomains: bool, since_us: int | None = None,
                until_us: int | None = None) -> Iterator[tuple[int, QueryLogEntry]]:
        """(ts, entry) of the queries for `name` (and every name below it with `subdomains`) in [since, until)."""
        wanted = reversed_name(name)
        if subdomains and len(split_labels(wanted[:-1])) < 2:  # a top-level name, or the root: no key below it
            for ts, entry in self._scan(since_us, until_us, lambda rname: rname.startswith(wanted)):
                yield ts, entry
            return
        depth = len(split_labels(wanted[:-1])) if wanted else 0
        key = name_key(name) if not subdomains or depth <= SUFFIX_LABELS else name_key(name, SUFFIX_LABELS)
        for segment in self._segments_in(since_us, until_us):
            offsets = [offset for offset, kind in self._keys(segment, key) if subdomains or kind == KEY_NAME]
            for entry in self._entries_at(segment, offsets):
                rname = reversed_name(entry.qname)
                if rname != wanted and not (subdomains and rname.startswith(wanted)):
                    continue  # a hash collision
                ts = entry_time(entry)
                if (since_us is None or ts >= since_us) and (until_us is None or ts < until_us):
                    yield ts, entry

    def _scan(self, since_us, until_us, keep: Callable[[str], bool]) -> Iterator[tuple[int, QueryLogEntry]]:
        for segment in self._segments_in(since_us, until_us):
            data = self._map(segment, "entries", segment.bytes)
            offsets = [offset for offset, qname in walk_names(data) if keep(reversed_name(qname))]
            for entry in self._entries_at(segment, offsets):
                ts = entry_time(entry)
                if (since_us is None or ts >= since_us) and (until_us is None or ts < until_us):
                    yield ts, entry

    def segment_entries(self, segment: Segment, since_us: int | None = None,
                        until_us: int | None = None) -> list[QueryLogEntry]:
        """A segment's queries in [since, until), in time order (the order stored within one time)."""
        data = self._map(segment, "entries", segment.bytes)
        if not data:
            return []
        entries = self._decode(bytes(data), segment.rows)
        if since_us is not None or until_us is not None:
            entries = [e for e in entries if (since_us is None or entry_time(e) >= since_us)
                       and (until_us is None or entry_time(e) < until_us)]
        entries.sort(key=entry_time)
        return entries

    def by_time(self, since_us: int | None = None, until_us: int | None = None) -> Iterator[QueryLogEntry]:
        """Every stored query in [since, until), segment by segment, in time order within each."""
        for segment in self._segments_in(since_us, until_us):
            yield from self.segment_entries(segment, since_us, until_us)

    def names_by_time(self, since_us: int | None = None,
                      until_us: int | None = None) -> Iterator[tuple[str, bytes]]:
        """(query name, packed entry) of every stored query in [since, until), in the order stored (the order
        queries finished: close to time order); the caller decodes only the entries it keeps (decode_one)."""
        unpack = ENTRY_HEADER.unpack_from
        for segment in self._segments_in(since_us, until_us):
            data = self._map(segment, "entries", segment.bytes)
            for offset, qname in walk_names(data):
                if since_us is not None or until_us is not None:
                    header = unpack(data, offset)
                    ts = header[6] * 1_000_000 + header[7]
                    if since_us is not None and ts < since_us or until_us is not None and ts >= until_us:
                        continue
                yield qname, entries_at(data, (offset,))

    def names_and_cnames_by_segment(self, since_us: int | None = None,
                                    until_us: int | None = None) -> Iterator[tuple[bytes, list[tuple[str, int, bool]]]]:
        """As names_by_time, in chunks of a segment: its entries (mapped) and (query name, offset, candidate) of each,
        `candidate` saying whether its stored response may hold a CNAME record (`hunt`, decision 0163): its bytes
        after the name hold a CNAME's type and class (00 05 00 01). One search over each segment (in C) finds the
        marks; the walk compares each entry's end with the next mark only, so that the caller decodes only the
        candidates (together). A false candidate costs one decode; a CNAME of a class other than IN is missed."""
        size = ENTRY_HEADER.size
        head = struct.Struct("=I46xH")  # an entry's length, and its name's length (offset 50)
        unpack_head = head.unpack_from
        unpack = ENTRY_HEADER.unpack_from
        timed = since_us is not None or until_us is not None
        for segment in self._segments_in(since_us, until_us):
            data = self._map(segment, "entries", segment.bytes)
            if not data:
                continue
            marks = []
            found = data.find(CNAME_IN)
            while found >= 0:
                marks.append(found)
                found = data.find(CNAME_IN, found + 1)
            marks.append(len(data))  # a sentinel: no mark lies at or past the end
            mark = marks[0]
            next_mark = 1
            rows = []
            position, end = 0, len(data)
            while position + size <= end:
                length, name_len = unpack_head(data, position)
                if length < size or position + length > end:
                    break
                after = position + length
                candidate = False
                if mark < after:  # a mark inside this entry: one after its name, wholly inside, makes a candidate
                    body = position + size + name_len
                    while mark < body:
                        mark = marks[next_mark]
                        next_mark += 1
                    candidate = mark + len(CNAME_IN) <= after
                    while mark < after:
                        mark = marks[next_mark]
                        next_mark += 1
                if timed:
                    header = unpack(data, position)
                    ts = header[6] * 1_000_000 + header[7]
                    if since_us is not None and ts < since_us or until_us is not None and ts >= until_us:
                        position = after
                        continue
                rows.append((bytes(data[position + size:position + size + name_len]).decode("ascii"), position,
                             candidate))
                position = after
                if len(rows) == HUNT_CHUNK:
                    yield data, rows
                    rows = []
            if rows:
                yield data, rows
            rows = data = marks = None  # type: ignore[assignment]  # unmapped before the next segment is mapped

    def decode_many(self, packed: Sequence[bytes]) -> list[QueryLogEntry]:
        """Packed entries decoded together, in order (one call of the decoder)."""
        return self._decode(b"".join(packed), len(packed)) if packed else []

    def decode_one(self, packed: bytes) -> QueryLogEntry:
        return self._decode(packed, 1)[0]

    def by_resolved_ip(self, ip: bytes) -> Iterator[QueryLogEntry]:
        """Queries one of whose A/AAAA answers was `ip`."""
        key = address_key(ip)
        text = address_text(ip)
        for segment in self._segments_in(None, None):
            offsets = [offset for offset, kind in self._keys(segment, key) if kind == KEY_ADDRESS]
            for entry in self._entries_at(segment, offsets):
                if any(a[1] in (A, AAAA) and _same_address(a[3], ip, text) for a in entry.answers):
                    yield entry

    def count(self) -> int:
        return sum(s.rows for s in self.segments())

    def _segments_in(self, since_us: int | None, until_us: int | None) -> list[Segment]:
        return [s for s in self.segments() if s.rows
                and (since_us is None or (s.last_ts or 0) >= since_us)
                and (until_us is None or (s.first_ts or 0) < until_us)]  # a segment with rows has both times


def _same_address(data: str, ip: bytes, text: str) -> bool:
    if data == text:
        return True
    try:
        return socket.inet_pton(socket.AF_INET if len(ip) == 4 else socket.AF_INET6, data) == ip
    except OSError:
        return False


def _write_all(descriptor: int, data) -> None:
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


def _writer_lock(path: str):
    """An exclusive lock on PATH.lock for the writer's lifetime: two sensors writing one store would clash on
    the segment being filled, so the second is refused at start."""
    import fcntl

    try:
        handle = open(path + ".lock", "a")
    except OSError as err:
        raise StartupError(f"{path}: cannot open query log: {err.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StartupError(f"{path}: another sensor is writing this query log") from None
    return handle


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (the write lock at once, so a reader never sees half a batch) ... COMMIT, or ROLLBACK."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (a full disk): keep its error
            db.execute("ROLLBACK")
        raise
