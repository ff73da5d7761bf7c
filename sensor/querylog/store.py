"""The query-log store: one SQLite file in WAL mode, written by one sensor, read by any number of processes.

Why this shape (docs/decisions/0055-querylog-sqlite-segments.md): SQLite needs no server and, in WAL mode,
readers in other processes see every committed batch while the writer goes on. The queries go into segments,
one table each (`q_<n>`), of at most `segment_rows` queries. The segment being written has no name index:
random inserts into a B-tree index of millions of names dirty one page per query and cut the insert rate
four-fold (measured); instead a full segment gets its indexes in one sorted build, and readers scan the small
open segment. Retention drops whole segments, which costs nothing per query.

A query is a row (ts, rname, client, entry): `rname` is the lowercase labels reversed and each followed by a
dot (`example.evil.login.`), so a name and everything below it are one key range; `entry` is the whole
QueryLogEntry in MessagePack (msgspec: a safe decoder, and any language reads it). `r_<n>` holds the A/AAAA
answers' addresses of the segment's queries for `resolved-ip`.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import msgspec

from sensor.errors import StartupError
from sensor.querylog.limits import CACHE_KIB
from sensor.querylog.options import SEGMENT_ROWS, Retention
from sensor.querylog.record import QueryLogEntry

SCHEMA_VERSION = "1"
BUSY_TIMEOUT_MS = 10_000  # how long a reader or writer waits for the other's lock before giving up
JOURNAL_LIMIT = 64 << 20  # the WAL file is cut back to this after a checkpoint
A, AAAA = 1, 28
MAX_SEGMENT_BYTES = 64 << 20  # a segment closes at this many bytes of rows if not at its row count first
MIN_SEGMENT_BYTES = 256 << 10
ROW_OVERHEAD = 40  # bytes a row costs beside its entry and name (id, ts, client, record header; measured ~35)
RESOLVED_OVERHEAD = 24  # an address row of r_<n>
# Retention keeps the used pages under the limit minus room for the open segment (this many times the largest
# segment measured on disk, indexes included) and for the WAL (cut back to one segment after a checkpoint).
SIZE_HEADROOM = 1.25


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
    rows INTEGER NOT NULL DEFAULT 0,
    indexed INTEGER NOT NULL DEFAULT 0,  -- 1: full, its name and address indexes built
    created REAL NOT NULL
);
"""
SEGMENT_SCHEMA = """
CREATE TABLE q_{n}(
    id INTEGER PRIMARY KEY,      -- insertion order within the segment
    ts INTEGER NOT NULL,         -- the query's packet time, microseconds since the epoch (UTC)
    rname TEXT NOT NULL,         -- lowercase labels reversed, each followed by '.': 'example.evil.login.'
    client BLOB NOT NULL,        -- 4 or 16 bytes
    entry BLOB NOT NULL          -- the QueryLogEntry, MessagePack array in field order
);
CREATE TABLE r_{n}(
    query_id INTEGER NOT NULL,   -- q_{n}.id
    ip BLOB NOT NULL             -- an A or AAAA answer's address, 4 or 16 bytes
);
"""
SEGMENT_INDEXES = """
CREATE INDEX IF NOT EXISTS q_{n}_rname ON q_{n}(rname, ts);
CREATE INDEX IF NOT EXISTS r_{n}_ip ON r_{n}(ip);
"""

_encode = msgspec.msgpack.Encoder().encode
_decode_entry = msgspec.msgpack.Decoder(QueryLogEntry).decode


def decode_entry(blob: bytes) -> QueryLogEntry:
    """A stored entry back to its record (each answer comes back as a list, not a tuple)."""
    return _decode_entry(blob)


def split_labels(name: str) -> list[str]:
    """Labels of a presentation-form name; a `\\.` inside a label is not a boundary. The root has none."""
    if name in (".", ""):
        return []
    if "\\" not in name:
        return name.split(".")
    labels, current, i = [], [], 0
    while i < len(name):
        c = name[i]
        if c == "\\" and i + 1 < len(name):
            current.append(name[i:i + 2])
            i += 2
            continue
        if c == ".":
            labels.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    labels.append("".join(current))
    return labels


def reversed_name(name: str) -> str:
    """'Login.Evil.example' -> 'example.evil.login.'; the root -> ''. A name and everything below it share
    its reversed form as a prefix, so `--subdomains` is one index range."""
    if "\\" not in name:
        name = name.lower().strip(".")
        return ".".join(name.split(".")[::-1]) + "." if name else ""
    labels = split_labels(name.lower().rstrip(".") if not name.endswith("\\.") else name.lower())
    return ".".join(labels[::-1]) + "." if labels else ""


def name_range(name: str) -> tuple[str, str | None]:
    """[low, high) of the reversed names of `name` and every name below it; high None: every name."""
    low = reversed_name(name)
    return (low, low[:-1] + "/") if low else ("", None)  # '/' sorts right after '.'


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


class QueryStore:
    """The SQLite query log. `QueryStore.open_writer(path)` creates it; `QueryStore.open_reader(path)` only reads."""

    def __init__(self, connection: sqlite3.Connection, path: str, segment_rows: int = SEGMENT_ROWS,
                 segment_bytes: int = MAX_SEGMENT_BYTES) -> None:
        self.db = connection
        self.path = path
        self.segment_rows = segment_rows
        self.segment_bytes = segment_bytes  # a segment also closes when its rows hold this many bytes
        # writer: called after each segment closes (the writer applies retention: one batch may fill several)
        self.on_segment_closed: Callable[[], None] | None = None
        self._open: Segment | None = None  # writer: the segment being filled
        self._open_bytes = 0  # writer: bytes in the open segment's rows (estimated as they are inserted)
        self._used_at_open = 0  # writer: the file's used bytes when the open segment was made
        self.largest_segment = 0  # writer: the most a closed segment took on disk, indexes included
        self._lock = None  # writer: the open lock file that keeps a second writer out

    @classmethod
    def open_writer(cls, path: str, segment_rows: int = SEGMENT_ROWS, segment_bytes: int = MAX_SEGMENT_BYTES,
                    cache_kib: int = CACHE_KIB) -> QueryStore:
        if segment_rows < 1:
            raise StartupError("--query-log-segment-rows: must be at least 1")
        lock = _writer_lock(path)
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # before the first table: dropped segments shrink the file
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StartupError(f"{path}: the query log needs WAL mode (got {mode}; a network file system?)")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a power cut can lose the last batches, never corrupt
            db.execute(f"PRAGMA cache_size=-{cache_kib}")
            # the WAL is cut back to a segment's size after a checkpoint: it counts towards --query-log-max-mb
            db.execute(f"PRAGMA journal_size_limit={min(JOURNAL_LIMIT, segment_bytes)}")
            # and checkpointed at half a segment, or SQLite's default 1,000 pages (4 MB) if less
            db.execute(f"PRAGMA wal_autocheckpoint={min(max(segment_bytes // 2 // 4096, 16), 1000)}")
            db.executescript(SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        except sqlite3.DatabaseError as err:
            raise StartupError(f"{path}: cannot open query log: {err}") from None
        store = cls(db, path, segment_rows, segment_bytes)
        store._lock = lock
        store.check_schema()
        for segment in store.segments()[:-1]:  # a writer that stopped between filling and indexing
            if not segment.indexed:
                store._close_segment(segment)
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
        store.check_schema()
        return store

    def check_schema(self) -> None:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as err:
            raise StartupError(f"{self.path}: not a query log ({err})") from None
        if row is None or row[0] != SCHEMA_VERSION:
            raise StartupError(f"{self.path}: not a query log of schema {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()
        if self._lock is not None:
            self._lock.close()

    def segments(self) -> list[Segment]:
        try:
            return [Segment(i, f, la, r, bool(x)) for i, f, la, r, x in self.db.execute(
                "SELECT id, first_ts, last_ts, rows, indexed FROM segments ORDER BY id")]
        except sqlite3.DatabaseError as err:
            raise StartupError(f"{self.path}: cannot read query log: {err}") from None

    # --- writing -------------------------------------------------------------------------------------------

    def insert(self, entries: Sequence[QueryLogEntry]) -> int:
        """Store a batch: one transaction per segment it falls in; a segment that fills (by rows or by bytes)
        gets its indexes."""
        done = 0
        while done < len(entries):
            segment = self._open or self._current_segment()
            room = self.segment_rows - segment.rows
            done += self._insert_into(segment, entries[done:done + room])
            if self._open is None and self.on_segment_closed is not None:
                self.on_segment_closed()
        return done

    def _current_segment(self) -> Segment:
        segments = self.segments()
        if segments and not segments[-1].indexed and segments[-1].rows < self.segment_rows:
            self._open = segments[-1]
            self._open_bytes = self.db.execute(
                f"SELECT coalesce(sum(length(entry) + length(rname)), 0) + count(*) * {ROW_OVERHEAD} "
                f"FROM q_{self._open.id}").fetchone()[0]
            return self._open
        self._open_bytes = 0
        self._used_at_open = self.used_bytes()
        db = self.db
        with _transaction(db):
            cursor = db.execute("INSERT INTO segments(rows, indexed, created) VALUES (0, 0, ?)", (time.time(),))
            n = int(cursor.lastrowid or 0)  # set by the INSERT just made
            for statement in SEGMENT_SCHEMA.format(n=n).split(";"):
                if statement.strip():
                    db.execute(statement)
        self._open = Segment(n, None, None, 0, False)
        return self._open

    def _insert_into(self, segment: Segment, entries: Sequence[QueryLogEntry]) -> int:
        """Insert the entries that fit the open segment (its rows and bytes); how many."""
        rows: list[tuple] = []
        resolved: list[tuple[int, bytes]] = []
        encode = _encode
        inet_pton = socket.inet_pton
        next_id = segment.rows + 1
        first: int | None = None
        last: int | None = None
        size = self._open_bytes
        room = self.segment_bytes
        for e in entries:
            if size >= room and rows:  # full by bytes: the rest goes into the next segment
                break
            ts = e.ts_sec * 1_000_000 + e.ts_usec
            if first is None or ts < first:
                first = ts
            if last is None or ts > last:
                last = ts
            name = e.qname
            if "\\" in name:
                rname = reversed_name(name)
            else:
                name = name.lower().strip(".")
                rname = ".".join(name.split(".")[::-1]) + "." if name else ""
            blob = encode(e)
            size += len(blob) + len(rname) + ROW_OVERHEAD
            rows.append((next_id, ts, rname, e.client_ip, blob))
            for answer in e.answers:
                if answer[1] == A:
                    resolved.append((next_id, inet_pton(socket.AF_INET, answer[3])))
                    size += RESOLVED_OVERHEAD
                elif answer[1] == AAAA:
                    resolved.append((next_id, inet_pton(socket.AF_INET6, answer[3])))
                    size += RESOLVED_OVERHEAD
            next_id += 1
        if not rows:
            self._close_segment(segment)
            self._open = None
            return 0
        assert first is not None and last is not None  # rows were made, so both were set
        first = first if segment.first_ts is None else min(first, segment.first_ts)
        last = last if segment.last_ts is None else max(last, segment.last_ts)
        n = segment.id
        db = self.db
        with _transaction(db):
            db.executemany(f"INSERT INTO q_{n} VALUES (?,?,?,?,?)", rows)
            if resolved:
                db.executemany(f"INSERT INTO r_{n} VALUES (?,?)", resolved)
            db.execute("UPDATE segments SET rows = ?, first_ts = ?, last_ts = ? WHERE id = ?",
                       (next_id - 1, first, last, n))
        self._open = Segment(n, first, last, next_id - 1, False)
        self._open_bytes = size
        if self._open.rows >= self.segment_rows or size >= room:
            self._close_segment(self._open)
            self._open = None
        return len(rows)

    def _close_segment(self, segment: Segment) -> None:
        """Build a full segment's indexes in one sorted pass; readers use them from the commit on."""
        db = self.db
        with _transaction(db):
            for statement in SEGMENT_INDEXES.format(n=segment.id).split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("UPDATE segments SET indexed = 1 WHERE id = ?", (segment.id,))
        if self._used_at_open:  # measured on disk: rows of a few KB leave pages part empty, beyond the estimate
            self.largest_segment = max(self.largest_segment, self.used_bytes() - self._used_at_open)
            self._used_at_open = 0

    def used_bytes(self) -> int:
        """Bytes of the file in use (free pages excluded)."""
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    def apply_retention(self, retention: Retention, now: float | None = None) -> RetentionResult:
        """Drop full segments whose newest query is older than the age limit, then the oldest full segments
        while the file is over the size limit; the freed pages go back to the file system."""
        result = RetentionResult()
        if retention.max_age_seconds:
            horizon = int(((time.time() if now is None else now) - retention.max_age_seconds) * 1_000_000)
            for segment in self.segments():
                if segment.indexed and segment.last_ts is not None and segment.last_ts < horizon:
                    self._drop(segment)
                    result.segments_by_age += 1
                    result.queries_deleted += segment.rows
        if retention.max_bytes:
            # room is left for the open segment to fill and be indexed, and for the WAL: so the files stay
            # within the limit between two passes (a pass runs on every segment the writer closes)
            segment_size = self.largest_segment or self.segment_bytes  # as measured once one has closed
            wal = min(segment_size, self.segment_bytes)  # checkpointed at half a segment, cut back to one
            target = max(retention.max_bytes - SIZE_HEADROOM * segment_size - wal, 0)
            for segment in self.segments():
                if self.used_bytes() <= target or not segment.indexed:
                    break
                self._drop(segment)
                self._vacuum()
                result.segments_by_size += 1
                result.queries_deleted += segment.rows
        if result.segments_by_age or result.segments_by_size:
            self._vacuum()
        return result

    def _drop(self, segment: Segment) -> None:
        db = self.db
        with _transaction(db):
            db.execute(f"DROP TABLE IF EXISTS q_{segment.id}")
            db.execute(f"DROP TABLE IF EXISTS r_{segment.id}")
            db.execute("DELETE FROM segments WHERE id = ?", (segment.id,))
        if self._open is not None and self._open.id == segment.id:
            self._open = None

    def _vacuum(self) -> None:
        self.db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page: it steps once
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # --- reading -------------------------------------------------------------------------------------------

    def by_name(self, name: str, subdomains: bool, since_us: int | None = None,
                until_us: int | None = None) -> Iterator[tuple[int, QueryLogEntry]]:
        """(ts, entry) of the queries for `name` (and every name below it with `subdomains`) in [since, until)."""
        where, params = [], []
        if subdomains:
            low, high = name_range(name)
            if high is not None:
                where.append("rname >= ? AND rname < ?")
                params += [low, high]
        else:
            where.append("rname = ?")
            params.append(reversed_name(name))
        where, params = _time(where, params, since_us, until_us)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        for segment in self._segments_in(since_us, until_us):
            for ts, blob in self._rows(f"SELECT ts, entry FROM q_{segment.id} {clause}", params):
                yield ts, decode_entry(blob)

    def by_time(self, since_us: int | None = None, until_us: int | None = None) -> Iterator[QueryLogEntry]:
        """Every stored query in [since, until), segment by segment, in time order within each."""
        where, params = _time([], [], since_us, until_us)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        for segment in self._segments_in(since_us, until_us):
            for (blob,) in self._rows(f"SELECT entry FROM q_{segment.id} {clause} ORDER BY ts, id", params):
                yield decode_entry(blob)

    def names_by_time(self, since_us: int | None = None,
                      until_us: int | None = None) -> Iterator[tuple[str, bytes]]:
        """(rname, encoded entry) of every stored query in [since, until), in the order stored (the order
        queries finished: close to time order); the caller decodes only the entries it keeps (decode_entry)."""
        where, params = _time([], [], since_us, until_us)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        for segment in self._segments_in(since_us, until_us):
            yield from self._rows(f"SELECT rname, entry FROM q_{segment.id} {clause}", params)

    def by_resolved_ip(self, ip: bytes) -> Iterator[QueryLogEntry]:
        """Queries one of whose A/AAAA answers was `ip`."""
        for segment in self._segments_in(None, None):
            n = segment.id
            sql = f"SELECT q.entry FROM r_{n} r JOIN q_{n} q ON q.id = r.query_id WHERE r.ip = ?"
            for (blob,) in self._rows(sql, [ip]):
                yield decode_entry(blob)

    def count(self) -> int:
        return sum(s.rows for s in self.segments())

    def _segments_in(self, since_us: int | None, until_us: int | None) -> list[Segment]:
        return [s for s in self.segments() if s.rows
                and (since_us is None or (s.last_ts or 0) >= since_us)
                and (until_us is None or (s.first_ts or 0) < until_us)]  # a segment with rows has both times

    def _rows(self, sql: str, params: list) -> Iterator[tuple]:
        try:
            yield from self.db.execute(sql, params)
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):  # dropped by retention since the segment list was read
                return
            raise StartupError(f"{self.path}: cannot read query log: {err}") from None
        except sqlite3.DatabaseError as err:
            raise StartupError(f"{self.path}: cannot read query log: {err}") from None


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


def _time(where: list, params: list, since_us: int | None, until_us: int | None) -> tuple[list, list]:
    if since_us is not None:
        where.append("ts >= ?")
        params.append(since_us)
    if until_us is not None:
        where.append("ts < ?")
        params.append(until_us)
    return where, params


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
