"""DNS code numbers to the mnemonics dnslib uses, with RFC 3597 names for the ones it does not know.

The tables are dnslib's, written out in sensor/dnsnames.py (loaded on the first lookup): a hit needs the names,
not the ~36 ms import of dnslib.
"""

from __future__ import annotations

from functools import cache


@cache
def _tables() -> tuple[dict[int, str], dict[int, str], dict[int, str]]:
    from sensor.dnsnames import CLASSES, OPCODES, QTYPES

    return QTYPES, CLASSES, OPCODES

# Header flag bits of the second header word, in the order ECS lists dns.header_flags.
HEADER_FLAGS = (("AA", 0x0400), ("TC", 0x0200), ("RD", 0x0100), ("RA", 0x0080), ("AD", 0x0020), ("CD", 0x0010))


def qtype_name(code: int) -> str:
    return _tables()[0].get(code) or f"TYPE{code}"


def qclass_name(code: int) -> str:
    return _tables()[1].get(code) or f"CLASS{code}"


def opcode_name(code: int) -> str:
    return _tables()[2].get(code) or f"OPCODE{code}"


def header_flags(flags: int) -> list[str]:
    return [name for name, bit in HEADER_FLAGS if flags & bit]
