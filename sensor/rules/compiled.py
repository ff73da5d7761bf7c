"""The compiled rule set: one file the sensor maps and uses in place, without parsing (docs/rules.md).

Layout (little-endian, every section 8-byte aligned; FORMAT_VERSION changes with any change here):

  header     magic, format version, CRC-32 of the whole file (header with the CRC field zero, then the body),
             file length, rule and key counts, table capacity, the label-count bitmap, a (offset, length) pair per
             section
  table      `capacity` 24-byte entries of the suffix-hash table (ext/suffixset.pxi's SuffixEntry): FNV-1a 64 hash
             of the name hashed right to left, the rule deciding for the name and the one for names below it
             (-1 none), the key's offset and length in the key area, a used flag. Open addressing, linear probing,
             load at most 1/2. A hit is confirmed by comparing the key's bytes, so a hash collision never matches.
  keys       the table's names: the same bytes as the patterns area (a table name is its rules' pattern)
  columns    per rule: kind, allow, format index (bytes), file index (u16), line, metadata index (u32)
  patterns   per rule: u32 offsets into a UTF-8 area (the lowercase name, or the wildcard/regex source)
  texts      per rule: u32 offsets into a UTF-8 area; an empty span means the text is the pattern (no section at
             all when no rule has a text of its own)
  pattern rules   the wildcard and regex rule indices (u32): stored as source text, compiled on first use
  metas      u32 offsets into JSON objects, one per metadata record (decoded only when a hit needs it)
  info       JSON: files, formats, the load report's counts, the sensor version, the format option

The compiled loop (SuffixSet.mapped) and the reference loop (MappedTable, below: the same probe in Python)
read the same bytes. A file whose checksum, version or layout is wrong raises CompiledRulesError; it is never
used for matching.
"""

from __future__ import annotations

import io
import itertools
import json
import mmap
import os
import struct
import zlib
from array import array
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from sensor import __version__
from sensor.errors import RuleError
from sensor.rules.model import NO_META, LoadReport, Rule, RuleMeta, RuleSet

MAGIC = b"TSRULES\x00"
FORMAT_VERSION = 1
SUFFIX = ".tsrules"
ENTRY = struct.Struct("<QiiIHBx")  # = SuffixEntry in ext/suffixset.pxi, 24 bytes
ENTRY_DTYPE = [("hash", "<u8"), ("own", "<i4"), ("below", "<i4"), ("key_off", "<u4"), ("key_len", "<u2"),
               ("used", "u1"), ("pad", "u1")]
FNV_OFFSET, FNV_PRIME, MASK64 = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1
SECTIONS = ("table", "keys", "kind", "allow", "format", "file", "line", "meta", "pattern_offsets", "pattern_area",
            "text_offsets", "text_area", "pattern_rules", "meta_offsets", "meta_area", "info")
# magic, version, header length, crc, file length, rules, keys, capacity, labels low/high, then the sections
HEAD = struct.Struct("<8sIIIxxxxQQQQQQ")
HEADER = struct.Struct(HEAD.format + "QQ" * len(SECTIONS))
CRC_AT = 16  # offset of the CRC field in the header
MAX_AREA = (1 << 32) - 1  # u32 offsets
# The compiled SuffixSet type, registered by the selector (sensor/loop.py) when it loads the compiled module: only
# the selector imports sensor._loop (tests/test_layering.py). None: the table is built here in Python, same bytes.
NATIVE_SUFFIX_SET: Any = None


class CompiledRulesError(RuleError):
    """A compiled rule-set file that cannot be used: wrong magic, version, checksum or layout."""


def is_compiled(path: str) -> bool:
    """Does this path name a compiled rule-set file (by its first bytes)?"""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


# -- writing -------------------------------------------------------------------------------------------------


def fnv_reversed(key: bytes) -> int:
    """FNV-1a 64 of the key read right to left (keys are lowercase already): the loop's suffix hash."""
    h = FNV_OFFSET
    for c in reversed(key):
        h = ((h ^ c) * FNV_PRIME) & MASK64
    return h


def table_bytes(table: dict, free: bool = False) -> tuple[bytes, bytes, int, int, int]:
    """The suffix table's entries and keys as the file holds them, built by the compiled SuffixSet when it is
    there, else here in Python (the same insertion order and probing, so the same bytes; slower). `free`: empty the
    dict once the C table holds it (60 MB less at the peak with a million rules)."""
    if NATIVE_SUFFIX_SET is not None and os.environ.get("TRUESOURCE_PURE", "") in ("", "0"):
        compiled = NATIVE_SUFFIX_SET(table)
        if free:
            table.clear()
        return compiled.dump()
    return _table_bytes_python(table)


def _table_bytes_python(table: dict) -> tuple[bytes, bytes, int, int, int]:
    capacity = 16
    while capacity < 2 * len(table):
        capacity *= 2
    mask = capacity - 1
    entries = bytearray(capacity * ENTRY.size)
    used = bytearray(capacity)
    keys = bytearray()
    labels = [0, 0]
    for name, slots in table.items():
        key = name.encode("ascii")
        count = key.count(b".") + 1 if key else 0
        labels[(count >> 6) & 1] |= 1 << (count & 63)
        h = fnv_reversed(key)
        i = h & mask
        while used[i]:
            i = (i + 1) & mask
        used[i] = 1
        if isinstance(slots, int):
            own, below = (slots & 0xFFFFFFFF) - 1, (slots >> 32) - 1
        else:
            own, below = slots
        ENTRY.pack_into(entries, i * ENTRY.size, h, own, below, len(keys), len(key), 1)
        keys += key
    return bytes(entries), bytes(keys), capacity, labels[0], labels[1]


def _offsets_and_area(values) -> tuple[array, bytes]:
    """u32 offsets (one more than values) and the UTF-8 area they index. ASCII (every name) is measured by its
    characters: a list of a million encoded names would cost 50 MB at the peak."""
    values = values if isinstance(values, list) else list(values)
    joined = "".join(values)
    if joined.isascii():
        lengths = map(len, values)
        area = joined.encode("ascii")
    else:
        encoded = [v.encode("utf-8", "surrogatepass") for v in values]
        lengths = map(len, encoded)
        area = b"".join(encoded)
    del joined
    if len(area) > MAX_AREA:
        raise RuleError("rules too large for a compiled file (a string area over 4 GiB)")
    offsets = array("I", [0])
    offsets.extend(itertools.accumulate(lengths))
    return offsets, area


def compiled_bytes(ruleset: RuleSet, rules_format: str | None = None, sources: list[str] | None = None) -> bytes:
    """The whole file for a RuleSet that still has its name table (before compile_rules drops it)."""
    out = io.BytesIO()
    write_compiled(ruleset, out, rules_format, sources)
    return out.getvalue()


def write_compiled(ruleset: RuleSet, out: BinaryIO, rules_format: str | None = None,
                   sources: list[str] | None = None, free_table: bool = False) -> None:
    """Write the file section by section to a seekable binary stream, the CRC computed on the way and put into the
    header last: no copy of the whole file is ever held (a million rules: 100 MB less at the peak). `free_table`:
    the RuleSet's name table is emptied on the way (a caller that maps the file next and needs no table)."""
    if array("H").itemsize != 2 or array("I").itemsize != 4:
        raise RuleError("compiled rule files need 16- and 32-bit array items")
    n = len(ruleset)
    keys = len(ruleset.table)
    entries, _, capacity, low, high = table_bytes(ruleset.table, free_table)
    pattern_offsets, pattern_area = _offsets_and_area(ruleset._pattern)
    entries = _keys_in_patterns(entries, pattern_offsets)
    text_offsets: bytes | array = b""  # no texts of their own (most feeds): no section
    text_area = b""
    if ruleset._text:
        text_offsets, text_area = _offsets_and_area([ruleset._text.get(i, "") for i in range(n)])
    meta_offsets, meta_area = _offsets_and_area(json.dumps(_meta_json(m), separators=(",", ":"))
                                                for m in ruleset.metas)
    report = ruleset.report
    info = {"sensor": __version__, "rules_format": rules_format, "sources": sources or [],
            "files": ruleset.files, "formats": ruleset.formats,
            "report": {"by_kind": report.by_kind, "by_format": report.by_format,
                       "duplicates": len(report.duplicates), "skipped_files": report.skipped_files,
                       "empty_files": report.empty_files}}
    bodies: list[Any] = [
        memoryview(entries).cast("B"), b"", ruleset._kind, ruleset.allow, ruleset._format, ruleset._file,
        ruleset._line, ruleset._meta, pattern_offsets, pattern_area, text_offsets, text_area,
        array("I", ruleset.patterns), meta_offsets, meta_area, json.dumps(info).encode()]
    sizes = [memoryview(body).nbytes for body in bodies]
    places: list[int] = []
    offset = HEADER.size
    for size in sizes:
        offset = (offset + 7) & ~7
        places += [offset, size]
        offset += size
    layout = places[::2]
    key_at, patterns_at = SECTIONS.index("keys"), SECTIONS.index("pattern_area")
    places[2 * key_at:2 * key_at + 2] = places[2 * patterns_at:2 * patterns_at + 2]  # the keys are the patterns
    header = HEADER.pack(MAGIC, FORMAT_VERSION, HEADER.size, 0, offset, n, keys, capacity, low, high, *places)
    start = out.tell()
    out.write(header)
    crc, written = zlib.crc32(header), len(header)
    for body, at in zip(bodies, layout, strict=True):
        pad = bytes(at - written)
        view = memoryview(body).cast("B")
        out.write(pad)
        out.write(view)
        crc = zlib.crc32(view, zlib.crc32(pad, crc))
        written = at + len(view)
    end = out.tell()
    out.seek(start + CRC_AT)
    out.write(struct.pack("<I", crc))
    out.seek(end)


def _keys_in_patterns(entries: bytes, pattern_offsets: array):
    """Point each table entry's key at its rule's pattern (a table name is the pattern of the rules it holds), so
    the file holds every name once: 20 MB less to map and checksum at a million rules."""
    import numpy as np

    table = np.frombuffer(entries, dtype=ENTRY_DTYPE).copy()
    offsets = np.frombuffer(pattern_offsets, dtype=np.uint32).astype(np.int64)
    used = table["used"] != 0
    rules = np.where(table["own"] >= 0, table["own"], table["below"])[used].astype(np.int64)
    lengths = offsets[rules + 1] - offsets[rules]
    if not np.array_equal(lengths, table["key_len"][used].astype(np.int64)):
        raise RuleError("compiled rule set: a table name is not its rule's pattern")
    table["key_off"][used] = offsets[rules]
    return table.view(np.uint8)  # bytes for the writer, without a copy


def _meta_json(meta: RuleMeta) -> dict:
    fields = {k: getattr(meta, k) for k in ("id", "category", "severity", "description", "reference", "source")
              if getattr(meta, k) is not None}
    if meta.extra:
        fields["extra"] = [list(pair) for pair in meta.extra]
    return fields


def write_atomically(path: str, data) -> None:
    """Write to a temporary file beside `path`, fsync, rename: a reader sees the old file or the whole new one.
    `data`: bytes, or a function that writes to the open binary file."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


# -- reading -------------------------------------------------------------------------------------------------


class MappedTable(Mapping):
    """The file's suffix table as the reference loop reads it: name -> packed slots (model.pack_slots), the
    same probe as ext/suffixset.pxi's SuffixSet.find, in Python."""

    def __init__(self, view: memoryview, table: tuple[int, int], keys: tuple[int, int], capacity: int,
                 count: int, labels: tuple[int, int] = ((1 << 64) - 1, (1 << 64) - 1)) -> None:
        self._view, self._table, self._keys = view, table[0], keys
        self._mask, self._count = capacity - 1, count
        self._labels = labels[0] | (labels[1] << 64)

    def get(self, name, default=None):
        try:
            key = name.encode("ascii").lower()
        except (UnicodeEncodeError, AttributeError):
            return default
        count = key.count(b".") + 1 if key else 0
        if not (self._labels >> (count & 127)) & 1:  # the file's label-count bitmap, as SuffixSet.match reads it
            return default
        h = fnv_reversed(key)
        i = h & self._mask
        keys_at, keys_len = self._keys
        for _ in range(self._mask + 1):
            stored, own, below, key_off, key_len, used = ENTRY.unpack_from(self._view, self._table + i * ENTRY.size)
            if not used:
                return default
            if stored == h and key_len == len(key) and key_off + key_len <= keys_len \
                    and self._view[keys_at + key_off:keys_at + key_off + key_len] == key:
                return (own + 1) | ((below + 1) << 32)
            i = (i + 1) & self._mask
        return default

    def __getitem__(self, name):
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        keys_at = self._keys[0]
        for i in range(self._mask + 1):
            _, _, _, key_off, key_len, used = ENTRY.unpack_from(self._view, self._table + i * ENTRY.size)
            if used:
                yield bytes(self._view[keys_at + key_off:keys_at + key_off + key_len]).decode("ascii")

    def __len__(self) -> int:
        return self._count


class MappedRuleSet:
    """A RuleSet read from a compiled file: the same reading interface (len, rule(i), allow, files, formats,
    patterns, report, duplicates, table), its columns left in the mapping until asked for."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < HEADER.size:
                    raise CompiledRulesError(f"{path}: not a compiled rule set (too short)")
                # Every page is read by the checksum anyway: populated in one call rather than a fault per page.
                self._map = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                                      prot=mmap.PROT_READ)
        except FileNotFoundError:
            raise CompiledRulesError(f"{path}: cannot read compiled rules: no such file") from None
        except OSError as err:
            raise CompiledRulesError(f"{path}: cannot read compiled rules: {err.strerror}") from None
        self._view = memoryview(self._map)
        try:
            self._check(size)
        except CompiledRulesError:
            self.close()
            raise

    def _check(self, size: int) -> None:
        view, path = self._view, self.path
        magic, version, header_len, crc, length, n, keys, capacity, low, high = HEAD.unpack_from(view, 0)
        if magic != MAGIC:
            raise CompiledRulesError(f"{path}: not a compiled rule set")
        if version != FORMAT_VERSION or header_len != HEADER.size:
            raise CompiledRulesError(f"{path}: compiled rule-set format {version}, this sensor reads "
                                     f"{FORMAT_VERSION} (run `truesource rules compile` again)")
        if length != size:
            raise CompiledRulesError(f"{path}: compiled rule set cut off ({size:,} of {length:,} bytes)")
        check = zlib.crc32(view[:CRC_AT])
        check = zlib.crc32(b"\0\0\0\0", check)
        if zlib.crc32(view[CRC_AT + 4:], check) != crc:
            raise CompiledRulesError(f"{path}: compiled rule set corrupt (checksum mismatch)")
        places = HEADER.unpack_from(view, 0)[len(HEAD.unpack_from(view, 0)):]
        self._sections = {}
        for index, name in enumerate(SECTIONS):
            start, span = places[2 * index], places[2 * index + 1]
            if start < HEADER.size or start + span > size:
                raise CompiledRulesError(f"{path}: compiled rule set section {name} outside the file")
            self._sections[name] = (start, span)
        sizes = {"kind": n, "allow": n, "format": n, "file": 2 * n, "line": 4 * n, "meta": 4 * n,
                 "pattern_offsets": 4 * (n + 1), "text_offsets": 4 * (n + 1), "table": capacity * ENTRY.size}
        for name, expected in sizes.items():
            if self._sections[name][1] != expected and not (name == "text_offsets" and not self._sections[name][1]):
                raise CompiledRulesError(f"{path}: compiled rule set section {name} has the wrong size")
        if capacity < 2 or capacity & (capacity - 1) or keys >= capacity:
            raise CompiledRulesError(f"{path}: compiled rule set table capacity {capacity} does not fit")
        try:
            info = json.loads(bytes(self._part("info")))
            self.files = list(info["files"])
            self.formats = list(info["formats"])
            report = info["report"]
            self.report = LoadReport(dict(report["by_kind"]), dict(report["by_format"]), [],
                                     [tuple(item) for item in report["skipped_files"]],
                                     [tuple(item) for item in report["empty_files"]])
            self._duplicates = int(report["duplicates"])
            self.info = info
        except (ValueError, KeyError, TypeError) as err:
            raise CompiledRulesError(f"{path}: compiled rule set information unreadable ({err})") from None
        for name in ("pattern_rules", "meta_offsets"):
            if self._sections[name][1] % 4 or (name == "meta_offsets" and self._sections[name][1] < 8):
                raise CompiledRulesError(f"{path}: compiled rule set section {name} has the wrong size")
        self._count, self._keys, self._capacity, self._labels = n, keys, capacity, (low, high)
        self._kind = self._part("kind")
        self.allow = bytes(self._part("allow"))
        self._format = self._part("format")
        self._file = self._part("file").cast("H")
        self._line = self._part("line").cast("I")
        self._meta = self._part("meta").cast("I")
        self._pattern_offsets = self._part("pattern_offsets").cast("I")
        self._text_offsets = self._part("text_offsets").cast("I")
        self.patterns = list(self._part("pattern_rules").cast("I"))
        self._meta_offsets = self._part("meta_offsets").cast("I")
        self._meta_cache: dict[int, RuleMeta] = {}
        for index in self.patterns:
            if index >= n:
                raise CompiledRulesError(f"{path}: compiled rule set pattern rule {index} out of range")

    def _part(self, name: str) -> memoryview:
        start, span = self._sections[name]
        return self._view[start:start + span]

    def close(self) -> None:
        """Let go of the mapping (once no loop uses it; a SuffixSet made from it keeps it alive)."""
        for name in [k for k, v in vars(self).items() if isinstance(v, memoryview)]:
            getattr(self, name).release()
        try:
            self._map.close()
        except BufferError:  # a loop's SuffixSet still reads it; it goes when that does
            pass

    def __len__(self) -> int:
        return self._count

    @property
    def duplicates(self) -> int:
        return self._duplicates

    @property
    def table(self) -> MappedTable:
        return MappedTable(self._view, self._sections["table"], self._sections["keys"], self._capacity,
                           self._keys, self._labels)

    def suffix_set(self, suffix_set_type: Any) -> Any:
        """The compiled loop's table (`suffix_set_type`: the compiled SuffixSet, handed in by the selector),
        reading this file in place."""
        table, keys = self._sections["table"], self._sections["keys"]
        try:
            return suffix_set_type.mapped(self._map, table[0], self._capacity, keys[0], keys[1], self._keys,
                                          self._labels[0], self._labels[1], self._count)
        except ValueError as err:
            raise CompiledRulesError(f"{self.path}: compiled rule set unusable: {err}") from None

    def drop_table(self) -> None:
        """Nothing to free: the table lives in the mapping."""

    def _string(self, offsets: memoryview, area: str, index: int) -> str:
        start, end = offsets[index], offsets[index + 1]
        base, span = self._sections[area]
        if not start <= end <= span:
            raise CompiledRulesError(f"{self.path}: compiled rule set string {index} outside its area")
        return bytes(self._view[base + start:base + end]).decode("utf-8", "surrogatepass")

    def pattern(self, index: int) -> str:
        return self._string(self._pattern_offsets, "pattern_area", index)

    def meta(self, index: int) -> RuleMeta:
        if index == 0:
            return NO_META
        meta = self._meta_cache.get(index)
        if meta is None:
            try:
                fields = json.loads(self._string(self._meta_offsets, "meta_area", index))
                extra = tuple(tuple(pair) for pair in fields.pop("extra", ()))
                meta = RuleMeta(**fields, extra=extra)
            except (ValueError, TypeError, IndexError) as err:
                raise CompiledRulesError(f"{self.path}: compiled rule set metadata {index} unreadable") from err
            self._meta_cache[index] = meta
        return meta

    def rule(self, index: int) -> Rule:
        pattern = self.pattern(index)
        text = (self._string(self._text_offsets, "text_area", index) if len(self._text_offsets) else "") or pattern
        try:
            return Rule(self._kind[index], pattern, bool(self.allow[index]), text, self.files[self._file[index]],
                        self._line[index], self.formats[self._format[index]] if self.formats else "native",
                        self.meta(self._meta[index]))
        except IndexError:
            raise CompiledRulesError(f"{self.path}: compiled rule set rule {index} refers outside it") from None

    @property
    def rules(self) -> list[Rule]:
        return [self.rule(i) for i in range(self._count)]

    def counts(self) -> dict:
        return {"rules": len(self), "by_kind": dict(self.report.by_kind), "by_format": dict(self.report.by_format),
                "duplicates": self.duplicates, "files": list(self.files)}


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """A rule set in the form the loops take (built by the selector, sensor/loop.py: `compile_rules`): built once,
    shared by the loops of every file or worker."""

    table: object  # a compiled SuffixSet, or the RuleSet's table for the reference loop
    allow: bytes
    patterns: Callable[[str], int] | None
    count: int

    def loop_args(self) -> dict[str, Any]:
        return {"allow": self.allow, "patterns": self.patterns}
