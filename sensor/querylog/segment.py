"""The query log's segment files (docs/querylog.md, decision 0180): what is stored is the loop's packed entries
as they came (sensor/querylog/packed.py), and beside them the entries' lookup keys.

A key is FNV-1a 64 over a name's reversed form (`reversed_name`: lowercase labels from the right, each followed
by a dot: `example.evil.login.`). Each entry has the key of its own name (KEY_NAME) and of the names of two
and three labels that it ends with (KEY_SUFFIX: `who-asked --subdomains`; below a deeper name the lookup
uses its last three labels' key and keeps the names below it), and one per A or AAAA answer address
(KEY_ADDRESS: `resolved-ip`). A key record is KEY_RECORD: (key, offset of the entry in the segment's entries
file, kind). The open segment's records are appended unsorted as the entries come; when the segment closes
they are sorted by key once (offsets ascending within a key), so a lookup is a binary search per segment.

`segment_keys_reference` and `sort_keys_reference` are the readable twins of the compiled
`querylog_segment_keys` and `querylog_sort_keys` (ext/querylog_index.pxi; sensor/loop.py selects, tests
check they agree). `pack_entries` turns decoded entries (the reference loop's, or --publish-queries') back
into the packed form, so that the store holds one form only.

This module is light on purpose: `who-asked` imports it (decision 0118).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

ENTRY_HEADER = struct.Struct("=IBBBBiIIqqIHHHHHH16s16s4sI")  # the same as sensor/querylog/packed.py
KEY_RECORD = struct.Struct("<QII")
KEY_SUFFIX, KEY_NAME, KEY_ADDRESS = 0, 1, 2
SUFFIX_LABELS = 3  # the deepest name above an entry's own with a key of its own
FNV_BASIS = 14695981039346656037
FNV_PRIME = 1099511628211
MASK = (1 << 64) - 1
STATUS_RESPONSE_ONLY = 2
TUNNEL_CODES = {name: code for code, name in enumerate(("pppoe", "gre", "erspan1", "erspan2", "erspan3", "vxlan",
                                                         "geneve"))}


def fnv(data: bytes, h: int = FNV_BASIS) -> int:
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


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
    its reversed form as a prefix."""
    if "\\" not in name:
        name = name.lower().strip(".")
        return ".".join(name.split(".")[::-1]) + "." if name else ""
    labels = split_labels(name.lower().rstrip(".") if not name.endswith("\\.") else name.lower())
    return ".".join(labels[::-1]) + "." if labels else ""


def name_key(name: str, labels: int | None = None) -> int:
    """The key under which the entries for `name` (and, as KEY_SUFFIX, those below it) are found; with
    `labels`, the key of its last so many labels."""
    rname = reversed_name(name)
    if labels is not None:
        rname = "".join(part + "." for part in split_labels(rname[:-1])[:labels]) if rname else ""
    return fnv(rname.encode("ascii", "surrogateescape"))


def address_key(raw: bytes) -> int:
    return fnv(raw, fnv(b"@"))


def name_keys_reference(name: str, offset: int, out: list) -> None:
    labels = split_labels(name.lower().strip(".") if "\\" not in name else
                          (name.lower().rstrip(".") if not name.endswith("\\.") else name.lower()))
    h = FNV_BASIS
    for k in range(len(labels) - 1, -1, -1):
        h = fnv(labels[k].encode("ascii") + b".", h)
        if k == 0:
            out.append((h, offset, KEY_NAME))
        elif 2 <= len(labels) - k <= SUFFIX_LABELS:
            out.append((h, offset, KEY_SUFFIX))
    if not labels:
        out.append((h, offset, KEY_NAME))


def name_bound(message: bytes, position: int) -> tuple[int, int]:
    """At least the length of the name's presentation text at `position` (4 characters a byte, a dot a label;
    1 for the root) and the offset after it; (-1, 0) when it cannot be walked (pointers as decode_name allows
    them: back before the current run of labels, at most 16)."""
    run_start = position
    hops = text = 0
    end = None
    n = len(message)
    while True:
        if position >= n:
            return -1, 0
        c = message[position]
        if c == 0:
            return (text or 1), (position + 1 if end is None else end)
        if c & 0xC0 == 0xC0:
            if position + 1 >= n:
                return -1, 0
            pointer = ((c & 0x3F) << 8) | message[position + 1]
            if pointer >= run_start:
                return -1, 0
            hops += 1
            if hops > 16:
                return -1, 0
            if end is None:
                end = position + 2
            position = run_start = pointer
            continue
        if c & 0xC0 or position + 1 + c > n:
            return -1, 0
        text += 4 * c + 1
        position += 1 + c


def _rdata_bound(message: bytes, rrtype: int, start: int, end: int) -> int:
    length = end - start
    if rrtype == 1 and length == 4:
        return 15
    if rrtype == 28 and length == 16:
        return 45
    if rrtype in (2, 5, 12) or rrtype == 15 and length >= 3:
        bound, after = name_bound(message, start + (2 if rrtype == 15 else 0))
        if bound >= 0 and after == end:
            return bound + (6 if rrtype == 15 else 0)
    elif rrtype == 16 and length > 0:
        return 6 * length
    return 2 * length + 12


def _answers_walk_reference(message: bytes, offset: int, cap: int, max_bytes: int, out: list) -> bool:
    qdcount, ancount = struct.unpack_from("!HH", message, 4)
    maybe_cut = 0 <= cap < ancount
    text = 0
    position = 12
    for _ in range(qdcount):
        bound, after = name_bound(message, position)
        if bound < 0:
            return maybe_cut
        position = after + 4
    for _ in range(ancount):
        bound, after = name_bound(message, position)
        if bound < 0:
            break
        text += bound
        position = after
        if position + 10 > len(message):
            break
        rrtype, _, _, rdlength = struct.unpack_from("!HHIH", message, position)
        start = position + 10
        end = start + rdlength
        if end > len(message):
            break
        if rrtype == 1 and rdlength == 4 or rrtype == 28 and rdlength == 16:
            out.append((address_key(message[start:end]), offset, KEY_ADDRESS))
        if max_bytes >= 0 and not maybe_cut:
            text += _rdata_bound(message, rrtype, start, end)
            if text > max_bytes:
                maybe_cut = True
        position = end
    return maybe_cut


def segment_keys_reference(data: bytes, start: int, max_entries: int, max_bytes: int, base: int,
                           max_answers: int = -1, max_answer_bytes: int = -1,
                           response_only_answers: int = -1) -> tuple[int, int, int, int, bytes, bytes]:
    """The twin of querylog_segment_keys: (end, entries, first ts us, last ts us, key records, suspects)."""
    data = bytes(data)
    position, count = start, 0
    first = last = None
    records: list = []
    suspects = bytearray()
    size = ENTRY_HEADER.size
    while position + size <= len(data) and count < max_entries:
        fields = ENTRY_HEADER.unpack_from(data, position)
        length, status, name_len, message_len = fields[0], fields[1], fields[16], fields[20]
        if length < size or position + length > len(data) or length < size + name_len + message_len:
            raise ValueError("packed query log is cut off or corrupt")
        if count and position + length - start > max_bytes:
            break
        offset = base + position - start
        ts = fields[6] * 1_000_000 + fields[7]
        first = ts if first is None else min(first, ts)
        last = ts if last is None else max(last, ts)
        name_keys_reference(data[position + size:position + size + name_len].decode("ascii"), offset, records)
        if message_len >= 12:
            message = data[position + size + name_len:position + size + name_len + message_len]
            cap = max_answers
            if status == STATUS_RESPONSE_ONLY and response_only_answers >= 0 and not 0 <= cap <= response_only_answers:
                cap = response_only_answers
            if _answers_walk_reference(message, offset, cap, max_answer_bytes, records):
                suspects += data[position:position + length]
        position += length
        count += 1
    if count == 0 and position != len(data):
        raise ValueError("packed query log is cut off or corrupt")
    keys = b"".join(KEY_RECORD.pack(*record) for record in records)
    return position, count, first or 0, last or 0, keys, bytes(suspects)


def sort_keys_reference(keys: bytes) -> bytes:
    records = sorted(KEY_RECORD.iter_unpack(keys), key=lambda record: record[0])  # stable: offsets stay ascending
    return b"".join(KEY_RECORD.pack(*record) for record in records)


def find_sorted(index, key: int) -> list[tuple[int, int]]:
    """(offset, kind) of every record of `key` in a sorted key buffer (a binary search)."""
    unpack = KEY_RECORD.unpack_from
    size = KEY_RECORD.size
    low, high = 0, len(index) // size
    while low < high:
        middle = (low + high) // 2
        if unpack(index, middle * size)[0] < key:
            low = middle + 1
        else:
            high = middle
    found = []
    while low * size < len(index):
        record_key, offset, kind = unpack(index, low * size)
        if record_key != key:
            break
        found.append((offset, kind))
        low += 1
    return found


def find_unsorted(keys: bytes, key: int) -> list[tuple[int, int]]:
    """The same in the open segment's unsorted records: a byte search for the key, kept where aligned."""
    needle = struct.pack("<Q", key)
    size = KEY_RECORD.size
    found = []
    position = keys.find(needle)
    while position >= 0:
        if position % size == 0:
            _, offset, kind = KEY_RECORD.unpack_from(keys, position)
            found.append((offset, kind))
            position = keys.find(needle, position + size)
        else:
            position = keys.find(needle, position + 1)
    return found


def entries_at(data, offsets: Iterable[int]) -> bytes:
    """The packed entries at `offsets` of a segment's entries (a buffer), concatenated in that order."""
    unpack = struct.Struct("=I").unpack_from
    parts = []
    for offset in offsets:
        parts.append(bytes(data[offset:offset + unpack(data, offset)[0]]))
    return b"".join(parts)


def walk_names(data) -> Iterable[tuple[int, str]]:
    """(offset, query name) of every packed entry of a buffer, without decoding the rest."""
    unpack = struct.Struct("=I").unpack_from
    name_length = struct.Struct("=H").unpack_from
    size = ENTRY_HEADER.size
    position = 0
    end = len(data)
    while position + size <= end:
        length = unpack(data, position)[0]
        if length < size or position + length > end:
            return
        n = name_length(data, position + 50)[0]
        yield position, bytes(data[position + size:position + size + n]).decode("ascii")
        position += length


# --- decoded entries back to the packed form ------------------------------------------------------------------

def _name_wire(text: str) -> bytes:
    if text in (".", ""):
        return b"\x00"
    out = bytearray()
    label = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            if text[i + 1:i + 4].isdigit() and len(text[i + 1:i + 4]) == 3:
                label.append(int(text[i + 1:i + 4]))
                i += 4
                continue
            label += text[i + 1].encode("latin-1")
            i += 2
            continue
        if c == ".":
            out.append(len(label))
            out += label
            label = bytearray()
        else:
            label += c.encode("latin-1")
        i += 1
    if label:
        out.append(len(label))
        out += label
    return bytes(out) + b"\x00"


def _txt_wire(text: str) -> bytes | None:
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == " ":
            i += 1
            continue
        if text[i] != '"':
            return None
        i += 1
        string = bytearray()
        while i < len(text) and text[i] != '"':
            if text[i] == "\\" and text[i + 1:i + 4].isdigit() and len(text[i + 1:i + 4]) == 3:
                string.append(int(text[i + 1:i + 4]))
                i += 4
            elif text[i] == "\\":
                string += text[i + 1].encode("latin-1")
                i += 2
            else:
                string += text[i].encode("latin-1")
                i += 1
        i += 1
        out.append(len(string))
        out += string
    return bytes(out)


def _rdata_wire(rrtype: int, text: str) -> bytes:
    if text.startswith("\\# "):
        parts = text.split()
        return bytes.fromhex(parts[2]) if len(parts) > 2 else b""
    if rrtype == 1:
        return socket.inet_pton(socket.AF_INET, text)
    if rrtype == 28:
        return socket.inet_pton(socket.AF_INET6, text)
    if rrtype in (2, 5, 12):
        return _name_wire(text)
    if rrtype == 15:
        preference, _, exchange = text.partition(" ")
        return int(preference).to_bytes(2, "big") + _name_wire(exchange)
    if rrtype == 16:
        wire = _txt_wire(text)
        if wire is not None:
            return wire
    return text.encode("utf-8")


def pack_entries(entries: Iterable) -> bytes:
    """Decoded QueryLogEntry records in the loop's packed form: the response is made again from the entry's
    flags and answers (so that decoding gives the same entry; an entry's `answers_dropped` past the record cap
    is kept as the response's answer count)."""
    out = []
    for e in entries:
        name = e.qname.encode("ascii", "surrogateescape")
        if e.rcode >= 0 or e.answers:
            ancount = len(e.answers) + (e.answers_dropped or 0)
            message = bytearray(struct.pack("!HHHHHH", e.dns_id, e.response_flags, 1, ancount, 0, 0))
            message += _name_wire(e.qname) + struct.pack("!HH", e.qtype, e.qclass)
            for owner, rrtype, ttl, data in e.answers:
                rdata = _rdata_wire(rrtype, data)
                message += _name_wire(owner) + struct.pack("!HHIH", rrtype, 1, ttl, len(rdata)) + rdata
        else:
            message = bytearray()
        tunnels = [TUNNEL_CODES[t] for t in e.tunnel.split("/")] if e.tunnel else []
        header = ENTRY_HEADER.pack(
            ENTRY_HEADER.size + len(name) + len(message), e.status, 4 if len(e.client_ip) == 4 else 6,
            e.transport, len(tunnels), -1 if e.vlan_id is None else e.vlan_id, e.ts_sec, e.ts_usec, e.frame,
            e.latency_us, e.retransmissions, e.client_port, e.server_port, e.dns_id, e.qtype, e.qclass, len(name),
            e.client_ip, e.server_ip, bytes(tunnels), len(message))
        out.append(header + name + bytes(message))
    return b"".join(out)
