"""EDNS Client Subnet (RFC 7871) of a query: the walk to the OPT record and its option 8.

Only for a query that becomes a record. The walk skips the questions after the first, the answer and
authority records, and the additional records up to the first OPT record; it stops there (a second OPT is
not looked for) and, inside the OPT record, at the first ECS option. Names are only skipped: length bytes
and pointers, which are never followed (docs/decoding.md, "EDNS Client Subnet").
"""

from __future__ import annotations

import ipaddress
import struct

from sensor.decode.anomaly import Anomaly

COUNTS = struct.Struct("!HHHH")  # QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT at offset 4 of the header
COUNTS_OFFSET = 4
QUESTION_FIXED = 4  # type, class
RR_FIXED = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH
OPTION_HEADER = struct.Struct("!HH")  # option code, option length
ECS_FIXED = struct.Struct("!HBB")  # family, source prefix length, scope prefix length
TYPE_OPT = 41  # RFC 6891
OPTION_ECS = 8  # RFC 7871
POINTER_TAG = 0xC0
MAX_LABEL_LENGTH = 0x3F
# A query holds one question and one or two additional records (OPT, TSIG); even an UPDATE rarely holds
# dozens. The walk is linear in the message anyway; the cap keeps it short when the counts claim 65,535
# records. Reaching it is dns_bad_edns.
MAX_EDNS_WALK_RECORDS = 64
# A query's OPT record carries a handful of options (cookie, padding, keepalive, ECS); the 17th one before
# ECS is dns_bad_edns, for the same reason.
MAX_EDNS_OPTIONS = 16
# Address family -> (bytes of a full address, the network class that prints it).
FAMILIES = {1: (4, ipaddress.IPv4Network), 2: (16, ipaddress.IPv6Network)}


def client_subnet(message: bytes, after_question: int) -> str | None:
    """The ECS subnet of a query whose first question ends at `after_question`; None when it has none.

    Raises Anomaly("dns_bad_edns") when a record on the way, the OPT record or the option is malformed.
    """
    qdcount, ancount, nscount, arcount = COUNTS.unpack_from(message, COUNTS_OFFSET)
    if arcount == 0:
        return None  # the common case: nothing to walk
    position = after_question
    walked = 0
    for _ in range(qdcount - 1):
        walked = _count(walked)
        position = _skip_name(message, position) + QUESTION_FIXED
        if position > len(message):
            raise Anomaly("dns_bad_edns")
    for index in range(ancount + nscount + arcount):
        walked = _count(walked)
        start = position
        position = _skip_name(message, position)
        if position + RR_FIXED.size > len(message):
            raise Anomaly("dns_bad_edns")
        rrtype, _, _, rdlength = RR_FIXED.unpack_from(message, position)
        rdata = position + RR_FIXED.size
        position = rdata + rdlength
        if position > len(message):
            raise Anomaly("dns_bad_edns")
        if rrtype == TYPE_OPT and index >= ancount + nscount:
            if message[start] != 0:
                raise Anomaly("dns_bad_edns")  # RFC 6891 6.1.2: the OPT record's owner is the root
            return _ecs_option(message[rdata:position])
    return None


def _count(walked: int) -> int:
    if walked == MAX_EDNS_WALK_RECORDS:
        raise Anomaly("dns_bad_edns")
    return walked + 1


def _skip_name(message: bytes, position: int) -> int:
    """The offset after the name at `position`: after its zero byte, or after its first pointer."""
    while True:
        if position >= len(message):
            raise Anomaly("dns_bad_edns")
        length = message[position]
        if length == 0:
            return position + 1
        if length & POINTER_TAG == POINTER_TAG:
            if position + 2 > len(message):
                raise Anomaly("dns_bad_edns")
            return position + 2
        if length > MAX_LABEL_LENGTH:
            raise Anomaly("dns_bad_edns")
        position += 1 + length


def _ecs_option(rdata: bytes) -> str | None:
    """The first ECS option among the OPT record's options, as "address/prefix"; None when there is none."""
    position = 0
    seen = 0
    while position < len(rdata):
        if seen == MAX_EDNS_OPTIONS:
            raise Anomaly("dns_bad_edns")
        seen += 1
        if position + OPTION_HEADER.size > len(rdata):
            raise Anomaly("dns_bad_edns")
        code, length = OPTION_HEADER.unpack_from(rdata, position)
        position += OPTION_HEADER.size
        if position + length > len(rdata):
            raise Anomaly("dns_bad_edns")
        if code == OPTION_ECS:
            return _subnet(rdata[position : position + length])
        position += length
    return None


def _subnet(option: bytes) -> str:
    """RFC 7871 6: family, source prefix, scope prefix, then exactly the bytes the source prefix needs."""
    if len(option) < ECS_FIXED.size:
        raise Anomaly("dns_bad_edns")
    family, source, _ = ECS_FIXED.unpack_from(option)
    if family not in FAMILIES:
        raise Anomaly("dns_bad_edns")
    size, network = FAMILIES[family]
    if source > size * 8 or len(option) != ECS_FIXED.size + (source + 7) // 8:
        raise Anomaly("dns_bad_edns")
    # Bits past the source prefix must be zero (RFC 7871 6); they are masked rather than refused.
    address = int.from_bytes(option[ECS_FIXED.size :].ljust(size, b"\x00"), "big")
    mask = ((1 << source) - 1) << (size * 8 - source)
    return str(network(((address & mask).to_bytes(size, "big"), source)))
