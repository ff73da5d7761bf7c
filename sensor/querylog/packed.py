"""The fast path's packed form of finished query-log entries, and its bulk decoding into QueryLogEntry.

The loop appends each finished entry to one buffer (ext/correlate.pxi, `EntryHeader`), so no Python object
is made per packet; the buffer crosses to the consumer (and between processes) as one bytes object. Layout,
native byte order, no padding, one record after another:

    ENTRY_HEADER (below), then the query name (presentation text, ASCII), then the response message
    (the DNS bytes as captured; absent when unanswered).

`decode_entries_reference` is the pure-Python twin of the compiled decoder (ext/querylog_decode.pxi,
`decode_query_log`, about 0.7 us an entry; the selector sensor/loop.py picks one) and the readable spec, reading
the response's flags, rcode and answers with the same code as the reference loop (sensor/decode/answers.py);
tests check they agree.
"""

from __future__ import annotations

import struct

from sensor.decode.answers import response_fields
from sensor.querylog.record import STATUS_RESPONSE_ONLY, QueryLogEntry

# record length, status, ip version, transport, tunnel count, vlan (-1 none), seconds, microseconds, frame,
# latency (us, -1), retransmissions, client port, server port, DNS id, qtype, qclass, name length,
# client address (16, IPv4 in the first 4), server address, tunnel codes (4), response message length
ENTRY_HEADER = struct.Struct("=IBBBBiIIqqIHHHHHH16s16s4sI")
TUNNEL_NAMES = ("pppoe", "gre", "erspan1", "erspan2", "erspan3", "vxlan", "geneve")  # ext/tunnels.pxi order


def cap_answers(answers: tuple, ancount: int, max_answers: int, max_bytes: int) -> tuple[tuple, int]:
    """The answers an entry keeps under the caps (negative: none), and how many of the response's `ancount`
    it drops when a cap ends the walk (the reference of the compiled decoder's caps)."""
    text = 0
    for k, (owner, _, _, data) in enumerate(answers):
        if 0 <= max_answers <= k:
            return answers[:k], ancount - k
        text += len(owner) + len(data)
        if 0 <= max_bytes < text:
            return answers[:k], ancount - k
    if 0 <= max_answers <= len(answers) < ancount:  # the cap falls where the walk ended on its own
        return answers, ancount - len(answers)
    return answers, 0


def decode_entries_reference(data: bytes, caps: tuple[int, int, int] = (-1, -1, -1)) -> list[QueryLogEntry]:
    """Every entry packed in `data`, in order: the pure-Python reading of the layout."""
    max_answers, max_bytes, response_only_answers = caps
    entries = []
    position = 0
    unpack = ENTRY_HEADER.unpack_from
    header_size = ENTRY_HEADER.size
    while position < len(data):
        (length, status, version, transport, ntunnels, vlan, sec, usec, frame, latency, retransmissions,
         cport, sport, dns_id, qtype, qclass, name_len, client, server, tunnels, message_len) = unpack(data, position)
        name_start = position + header_size
        message_start = name_start + name_len
        qname = data[name_start:message_start].decode("ascii")
        dropped = 0
        if message_len >= 12:
            message = data[message_start : message_start + message_len]
            flags, rcode, answers = response_fields(message)
            cap = max_answers
            if status == STATUS_RESPONSE_ONLY and response_only_answers >= 0 and not 0 <= cap <= response_only_answers:
                cap = response_only_answers
            answers, dropped = cap_answers(answers, int.from_bytes(message[6:8], "big"), cap, max_bytes)
        else:
            flags, rcode, answers = 0, -1, ()
        alen = 4 if version == 4 else 16
        tunnel = "/".join(TUNNEL_NAMES[code] for code in tunnels[:ntunnels]) if ntunnels else None
        entries.append(QueryLogEntry(
            sec, usec, None if vlan < 0 else vlan, client[:alen], server[:alen], cport, sport, transport,
            dns_id, qname, qtype, qclass, status, rcode, flags, latency, answers, frame, tunnel, retransmissions,
            dropped,
        ))
        position += length
    return entries
