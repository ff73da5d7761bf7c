"""DNS code numbers to the mnemonics dnslib uses, with RFC 3597 names for the ones it does not know.

The tables are dnslib's, written out in sensor/dnsnames.py: a hit needs the names, not the ~36 ms import of
dnslib (nor a file read after capture dropped root).
"""

from __future__ import annotations

from sensor.dnsnames import CLASSES, OPCODES, QTYPES, RCODES

# Header flag bits of the second header word, in the order ECS lists dns.header_flags.
HEADER_FLAGS = (("AA", 0x0400), ("TC", 0x0200), ("RD", 0x0100), ("RA", 0x0080), ("AD", 0x0020), ("CD", 0x0010))


def qtype_name(code: int) -> str:
    return QTYPES.get(code) or f"TYPE{code}"


def qclass_name(code: int) -> str:
    return CLASSES.get(code) or f"CLASS{code}"


def opcode_name(code: int) -> str:
    return OPCODES.get(code) or f"OPCODE{code}"


def rcode_name(code: int) -> str:
    return RCODES.get(code) or f"RCODE{code}"


def header_flags(flags: int) -> list[str]:
    return [name for name, bit in HEADER_FLAGS if flags & bit]
