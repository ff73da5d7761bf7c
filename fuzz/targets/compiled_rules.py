"""Compiled rule-set files (sensor/rules/compiled.py) as a hostile or damaged disk would give them: the loader
may only raise CompiledRulesError, and a file it accepts must decide the same in the compiled loop (reading the
mapping in place) and the reference loop (reading it through MappedTable).

Input: byte 0 is flags (bit 0: recompute the CRC after the damage, so the layout checks behind it are reached;
bit 1: recompute the length field too), the rest is the file.
"""

from __future__ import annotations

import atexit
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from fuzz.common import DLT_RAW, PROTO_UDP, RULES, batch_of, compiled_loop, describe, ip_packet, udp_datagram
from fuzz.targets.rule_parsers import query_for
from sensor.rules.compiled import CRC_AT, CompiledRulesError, MappedRuleSet, compiled_bytes
from sensor.rules.loader import load_rules

INSTRUMENT = ("sensor.rules.compiled", "sensor.decode")
NAMES_CHECKED = 6
_handle, _path = tempfile.mkstemp(prefix="truesource-fuzz-", suffix=".tsrules")
atexit.register(os.unlink, _path)


def repaired(flags: int, data: bytes) -> bytes:
    data = bytearray(data)
    if flags & 2 and len(data) >= 32:
        struct.pack_into("<Q", data, 24, len(data))
    if flags & 1 and len(data) >= CRC_AT + 4:
        struct.pack_into("<I", data, CRC_AT, 0)
        struct.pack_into("<I", data, CRC_AT, zlib.crc32(data))
    return bytes(data)


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    os.ftruncate(_handle, 0)
    os.pwrite(_handle, repaired(data[0], data[1:]), 0)
    try:
        mapped = MappedRuleSet(_path)
    except CompiledRulesError:
        return
    try:
        table = mapped.suffix_set(compiled_loop().SuffixSet)
        for index in range(min(len(mapped), 50)):
            mapped.rule(index)
        names = [name for _, name in zip(range(NAMES_CHECKED), mapped.table, strict=False)]
    except CompiledRulesError:
        return
    except UnicodeDecodeError:
        return  # a key that is not ASCII: the loops never meet it (queries are ASCII presentation form)
    from sensor.decode import ReferenceLoop

    frames = [ip_packet(PROTO_UDP, udp_datagram(query)) for name in names + ["www.example.com"]
              if (query := query_for(name)) is not None]
    batch = batch_of(frames)
    fast = compiled_loop().FastLoop(DLT_RAW, (53,), table, True, allow=mapped.allow).run_batch(*batch, 1)
    reference = ReferenceLoop(DLT_RAW, (53,), mapped.table, True, allow=mapped.allow).run_batch(*batch, 1)
    if [tuple(r) for r in fast] != [tuple(r) for r in reference]:
        raise AssertionError("compiled and reference loops disagree on a compiled file: "
                             + describe(reference, fast))


def seeds() -> Iterator[bytes]:
    for path in sorted(Path(RULES).iterdir()) + [Path(RULES).parent / "pcaps" / "pcaps.rules"]:
        if path.suffix == ".md" or not path.is_file():
            continue
        data = compiled_bytes(load_rules([str(path)]))
        for flags in (0, 1, 3):
            yield bytes([flags]) + data
