"""DNS header and first question: the name walk with its limits, and the name's presentation form.

dnslib reads the header and the question's type and class. The name walker is our own: dnslib's
`decode_name` accepts label types 0x40-0xBF, caps neither pointer hops nor the 255-byte name length,
and rejects labels that are not UTF-8 instead of escaping them.
"""

from __future__ import annotations

from typing import NamedTuple

from dnslib.buffer import BufferError
from dnslib.dns import DNSError, DNSHeader
from dnslib.label import DNSBuffer

from sensor.decode.anomaly import Anomaly

HEADER_LENGTH = 12  # RFC 1035 4.1.1
# Without a bound, a chain of (strictly backward) pointers still costs one step per byte of the message;
# legitimate names need two or three hops.
MAX_POINTER_HOPS = 16
MAX_NAME_WIRE_LENGTH = 255  # RFC 1035 2.3.4: labels with their length bytes, plus the final zero
POINTER_TAG = 0xC0  # the top two bits of a length byte that make it a compression pointer
POINTER_OFFSET_MASK = 0x3FFF
MAX_LABEL_LENGTH = 0x3F  # 63, RFC 1035 2.3.4; 0x40-0xBF are the extended/unallocated label types (RFC 6891)
QR_RESPONSE = 0x8000
MAX_PARTIAL_LABELS = 127  # a name has at most 127 labels (255 bytes)


class Question(NamedTuple):
    """The header fields a record carries and the first question; `labels` are in presentation form."""

    dns_id: int
    flags: int
    qdcount: int
    labels: list[str]
    qtype: int
    qclass: int
    end: int  # offset just after the first question (its type and class): where an EDNS walk starts

    @property
    def is_response(self) -> bool:
        return bool(self.flags & QR_RESPONSE)


def decode_message(message: bytes) -> Question:
    """Read the header and the first question of one DNS message; raise Anomaly with the dns_* reason."""
    buffer = DNSBuffer(message)
    try:
        header = DNSHeader.parse(buffer)
    except DNSError:
        raise Anomaly("dns_too_short") from None
    if header.q == 0:
        raise Anomaly("dns_no_question")
    labels, buffer.offset = read_name(message, HEADER_LENGTH)
    try:
        qtype, qclass = buffer.unpack("!HH")
    except BufferError:
        raise Anomaly("dns_truncated") from None
    return Question(header.id, header.bitmap, header.q, labels, qtype, qclass, buffer.offset)


def read_name(message: bytes, start: int) -> tuple[list[str], int]:
    """Walk one name (RFC 1035 4.1.4) from `start`: its escaped labels and the offset just after it.

    Each step's checks, in this order (docs/decoding.md): the length byte must be in the message
    (dns_truncated); a pointer needs its second byte (dns_truncated), must point strictly before where the
    current run of labels started (dns_bad_pointer) and be at most the MAX_POINTER_HOPS-th
    (dns_too_many_pointers); 0x40-0xBF is dns_bad_label_type; a label must keep the name, counting the
    final zero, within 255 bytes (dns_name_too_long), then end within the message (dns_truncated).
    """
    labels: list[str] = []
    position = start
    run_start = start  # a pointer must land before this: strictly backwards, so no loops
    end = -1  # where the name ends in the message: after the first pointer, or after the final zero
    hops = 0
    wire_length = 1  # the final zero byte
    while True:
        if position >= len(message):
            raise Anomaly("dns_truncated")
        length = message[position]
        if length == 0:
            if end < 0:
                end = position + 1
            return labels, end
        if length & POINTER_TAG == POINTER_TAG:
            if position + 1 >= len(message):
                raise Anomaly("dns_truncated")
            target = int.from_bytes(message[position : position + 2], "big") & POINTER_OFFSET_MASK
            if target >= run_start:
                raise Anomaly("dns_bad_pointer")
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise Anomaly("dns_too_many_pointers")
            if end < 0:
                end = position + 2
            position = run_start = target
            continue
        if length > MAX_LABEL_LENGTH:
            raise Anomaly("dns_bad_label_type")
        wire_length += 1 + length
        if wire_length > MAX_NAME_WIRE_LENGTH:
            raise Anomaly("dns_name_too_long")
        label_end = position + 1 + length
        if label_end > len(message):
            raise Anomaly("dns_truncated")
        labels.append(escape_label(message[position + 1 : label_end]))
        position = label_end


def escape_label(raw: bytes) -> str:
    """Presentation form of one label: `\\.` and `\\\\` for dot and backslash, `\\DDD` outside 0x21-0x7e."""
    out = []
    for byte in raw:
        if byte == 0x2E:
            out.append("\\.")
        elif byte == 0x5C:
            out.append("\\\\")
        elif 0x21 <= byte <= 0x7E:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


def presentation_name(labels: list[str]) -> str:
    """Labels joined with dots, no trailing dot; the root is `.`."""
    return ".".join(labels) if labels else "."


def partial_name(message: bytes) -> str | None:
    """The labels of the first question that are whole in `message` (a DNS message cut anywhere), escaped as in
    events; None without one whole label. A pointer ends the walk: a question name rarely has one."""
    labels: list[str] = []
    position = HEADER_LENGTH
    while position < len(message) and len(labels) < MAX_PARTIAL_LABELS:
        length = message[position]
        if length == 0 or length > MAX_LABEL_LENGTH or position + 1 + length > len(message):
            break
        labels.append(escape_label(message[position + 1 : position + 1 + length]))
        position += 1 + length
    return ".".join(labels) if labels else None


def stream_partial_name(pending: bytes) -> str | None:
    """partial_name of the message a TCP stream's pending bytes start (after its 2-byte length prefix)."""
    return partial_name(pending[2:]) if len(pending) > 2 else None
