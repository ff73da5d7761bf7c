"""A response's rcode, flags and answer section (RFC 1035 4.1.3), with data in the query log's text forms.

The text forms are documented in sensor/querylog/record.py. Names go through the same walker as the question
(`read_name`), so compression and its limits are handled once. A malformed answer section ends the walk: the
records read before it are kept.
"""

from __future__ import annotations

import ipaddress
import struct

from sensor.decode.anomaly import Anomaly
from sensor.decode.dnsmsg import HEADER_LENGTH, presentation_name, read_name

HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
RR_FIXED = struct.Struct("!HHIH")  # type, class, TTL, rdata length
QUESTION_FIXED = 4  # type and class after a question's name
RCODE_MASK = 0x000F
TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_PTR, TYPE_MX, TYPE_TXT, TYPE_AAAA = 1, 2, 5, 12, 15, 16, 28
NAME_TYPES = frozenset({TYPE_NS, TYPE_CNAME, TYPE_PTR})


def response_fields(message: bytes) -> tuple[int, int, tuple]:
    """The response's flags word, its 4-bit rcode, and its answers ((owner, type, ttl, data), ...)."""
    _, flags, qdcount, ancount, _, _ = HEADER.unpack_from(message)
    return flags, flags & RCODE_MASK, read_answers(message, qdcount, ancount)


def read_answers(message: bytes, qdcount: int, ancount: int) -> tuple:
    answers = []
    try:
        position = HEADER_LENGTH
        for _ in range(qdcount):
            _, position = read_name(message, position)
            position += QUESTION_FIXED
        for _ in range(ancount):
            labels, position = read_name(message, position)
            if position + RR_FIXED.size > len(message):
                break
            rrtype, _, ttl, rdlength = RR_FIXED.unpack_from(message, position)
            start = position + RR_FIXED.size
            position = start + rdlength
            if position > len(message):
                break
            answers.append((presentation_name(labels), rrtype, ttl, rdata_text(message, rrtype, start, position)))
    except Anomaly:
        pass
    return tuple(answers)


def rdata_text(message: bytes, rrtype: int, start: int, end: int) -> str:
    """The text form of one record's data; the RFC 3597 generic form when the type is not known or the data
    does not fit its type."""
    rdata = message[start:end]
    if rrtype == TYPE_A and len(rdata) == 4:
        return str(ipaddress.IPv4Address(rdata))
    if rrtype == TYPE_AAAA and len(rdata) == 16:
        return str(ipaddress.IPv6Address(rdata))
    try:
        if rrtype in NAME_TYPES:
            labels, name_end = read_name(message, start)
            if name_end == end:
                return presentation_name(labels)
        elif rrtype == TYPE_MX and len(rdata) >= 3:
            labels, name_end = read_name(message, start + 2)
            if name_end == end:
                return f"{int.from_bytes(rdata[:2], 'big')} {presentation_name(labels)}"
        elif rrtype == TYPE_TXT and rdata:
            text = txt_text(rdata)
            if text is not None:
                return text
    except Anomaly:
        pass
    return generic_text(rdata)


def txt_text(rdata: bytes) -> str | None:
    """Each character-string quoted (RFC 1035 5.1); None when the lengths do not fill the data exactly."""
    strings = []
    position = 0
    while position < len(rdata):
        end = position + 1 + rdata[position]
        if end > len(rdata):
            return None
        strings.append('"' + "".join(txt_char(byte) for byte in rdata[position + 1 : end]) + '"')
        position = end
    return " ".join(strings)


def txt_char(byte: int) -> str:
    if byte in (0x22, 0x5C):  # '"' and '\'
        return "\\" + chr(byte)
    if 0x20 <= byte <= 0x7E:
        return chr(byte)
    return f"\\{byte:03d}"


def generic_text(rdata: bytes) -> str:
    """RFC 3597 3: `\\# length hex`."""
    return f"\\# {len(rdata)} {rdata.hex()}" if rdata else "\\# 0"
