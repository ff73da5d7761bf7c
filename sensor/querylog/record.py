"""The query-log entry: one client query with its correlated response, as both loops emit it.

Answer data text forms (`answers[i][3]`), the same from the fast path and the reference decoder:

- A, AAAA: the address as `ipaddress` prints it (`192.0.2.1`, `2001:db8::1`).
- CNAME, NS, PTR: the target name in the loop's presentation form (as `DnsMessage.qname`: lower case kept as
  sent, no trailing dot, `\\DDD` escapes for bytes outside printable ASCII and for `.` and `\\` in labels;
  the root is `.`).
- MX: `"<preference> <exchange name>"`, e.g. `10 mail.example.com`.
- TXT: each character-string in double quotes, separated by one space, `"` and `\\` escaped with a
  backslash and bytes outside printable ASCII as `\\DDD` (RFC 1035 5.1), e.g. `"v=spf1 -all" "x"`.
- Every other type, and a record of a known type whose data is malformed: RFC 3597 generic form
  `\\# <length> <hex>` (lower-case hex; `\\# 0` for empty data).

Owner names of answers are in the same presentation form as `qname`.
"""

from __future__ import annotations

from typing import NamedTuple

STATUS_ANSWERED = 0  # a query and its response were both seen
STATUS_UNANSWERED = 1  # a query expired or was flushed without a response
STATUS_RESPONSE_ONLY = 2  # a response whose query was never seen (or had already expired)
STATUS_NAMES = {
    STATUS_ANSWERED: "answered",
    STATUS_UNANSWERED: "unanswered",
    STATUS_RESPONSE_ONLY: "response_only",
}


class QueryLogEntry(NamedTuple):
    """One query and what answered it (see the module docstring for the text form of answer data)."""

    ts_sec: int  # the query's capture time (the response's when no query was seen)
    ts_usec: int
    vlan_id: int | None
    client_ip: bytes  # 4 or 16 bytes
    server_ip: bytes
    client_port: int
    server_port: int
    transport: int  # 17 UDP, 6 TCP
    dns_id: int
    qname: str  # presentation form, as DnsMessage.qname
    qtype: int
    qclass: int
    status: int  # STATUS_ANSWERED, STATUS_UNANSWERED or STATUS_RESPONSE_ONLY
    rcode: int  # the 4-bit header rcode (EDNS extended bits not added); -1 when unanswered
    response_flags: int  # the response's 16-bit flags word (QR, AA, TC, RD, RA...); 0 when unanswered
    latency_us: int  # response time minus query time in microseconds; -1 unless answered
    answers: tuple  # ((owner_name, rrtype, ttl, data), ...) of the answer section
    frame: int  # frame number of the query (of the response when response-only)
    tunnel: str | None = None
    retransmissions: int = 0  # identical queries seen again before the answer
    answers_dropped: int = 0  # answers not kept by the store's per-entry caps (the response's count minus those kept)

    @property
    def truncated(self) -> bool:
        return bool(self.response_flags & 0x0200)

    @property
    def answered(self) -> bool:
        return self.status == STATUS_ANSWERED
