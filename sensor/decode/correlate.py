"""Query-response correlation for the query log: the reference twin of ext/correlate.pxi.

A query waits in a bounded table keyed by VLAN, addresses, ports, transport, DNS id, qtype and the name
compared case-insensitively (ASCII only, RFC 4343). Its response finishes it (answered); a response with no
waiting query is logged alone (response_only); a query still waiting after the timeout, or pushed out when the
table is full, is logged unanswered. Ages are packet times, so a replay ages queries as the capture did.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from sensor.decode.answers import response_fields
from sensor.querylog.record import STATUS_ANSWERED, STATUS_RESPONSE_ONLY, STATUS_UNANSWERED, QueryLogEntry

# Packetbeat's transaction_timeout; a stub resolver has given up by then (docs/decisions/0050).
QUERY_TIMEOUT = 10.0
# A resolver answering in milliseconds keeps a few thousand queries in flight; 65,536 is headroom for
# tens of thousands of queries a second with slow upstreams, at about 100 bytes each (docs/decisions/0050).
MAX_PENDING_QUERIES = 65_536
MICROSECONDS = 1_000_000
QR_RESPONSE = 0x8000


class Pending(NamedTuple):
    ts_sec: int
    ts_usec: int
    t_us: int
    frame: int
    qname: str  # as the query sent it
    qclass: int
    tunnel: str | None


class Correlator:
    """Pairs queries with responses; finished entries collect in order until taken."""

    def __init__(self, counters: dict[str, int], capacity: int = MAX_PENDING_QUERIES,
                 timeout: float = QUERY_TIMEOUT) -> None:
        if capacity < 1:
            raise ValueError("max_pending_queries must be at least 1")
        if not timeout > 0:
            raise ValueError("query_timeout must be positive")
        self._counters = counters
        self._capacity = capacity
        self._timeout_us = int(timeout * MICROSECONDS)
        self._pending: OrderedDict[tuple, Pending] = OrderedDict()  # oldest first
        self._retransmissions: dict[tuple, int] = {}
        self._finished: list[QueryLogEntry] = []

    def __len__(self) -> int:
        return len(self._pending)

    def take(self) -> list[QueryLogEntry]:
        finished, self._finished = self._finished, []
        return finished

    def flush(self) -> None:
        """Every pending query leaves as unanswered."""
        while self._pending:
            self._finish_unanswered(next(iter(self._pending)))

    def message(self, message: bytes, when: tuple[int, int, int], flow, flags: int, qname: str, qtype: int,
                qclass: int) -> None:
        """One decoded DNS message (`when` is frame, seconds, microseconds; `flow` the reference loop's Flow)."""
        frame, sec, usec = when
        now_us = sec * MICROSECONDS + usec
        response = bool(flags & QR_RESPONSE)
        if response:
            client, server, cport, sport = flow.dst_ip, flow.src_ip, flow.dst_port, flow.src_port
        else:
            client, server, cport, sport = flow.src_ip, flow.dst_ip, flow.src_port, flow.dst_port
        dns_id = int.from_bytes(message[:2], "big")
        key = (flow.vlan_id, len(client), flow.transport, client, server, cport, sport, dns_id, qtype,
               qname.encode("ascii").lower())
        self._expire(now_us)
        if response:
            waiting = self._pending.pop(key, None)
            resp_flags, rcode, answers = response_fields(message)
            if waiting is None:
                self._counters["dns_response_without_query"] += 1
                self._finished.append(QueryLogEntry(
                    sec, usec, flow.vlan_id, client, server, cport, sport, flow.transport, dns_id, qname, qtype,
                    qclass, STATUS_RESPONSE_ONLY, rcode, resp_flags, -1, answers, frame, flow.tunnel, 0,
                ))
                return
            self._finished.append(QueryLogEntry(
                waiting.ts_sec, waiting.ts_usec, flow.vlan_id, client, server, cport, sport, flow.transport,
                dns_id, waiting.qname, qtype, waiting.qclass, STATUS_ANSWERED, rcode, resp_flags,
                now_us - waiting.t_us, answers, waiting.frame, waiting.tunnel, self._retransmissions.pop(key),
            ))
            return
        if key in self._pending:
            self._counters["dns_query_retransmission"] += 1
            self._retransmissions[key] += 1
            return
        if len(self._pending) >= self._capacity:
            self._counters["dns_query_evicted"] += 1
            self._finish_unanswered(next(iter(self._pending)))
        self._pending[key] = Pending(sec, usec, now_us, frame, qname, qclass, flow.tunnel)
        self._retransmissions[key] = 0

    def _expire(self, now_us: int) -> None:
        while self._pending:
            oldest = next(iter(self._pending))
            if now_us - self._pending[oldest].t_us <= self._timeout_us:
                return
            self._counters["dns_query_expired"] += 1
            self._finish_unanswered(oldest)

    def _finish_unanswered(self, key: tuple) -> None:
        waiting = self._pending.pop(key)
        vlan_id, _, transport, client, server, cport, sport, dns_id, qtype, _ = key
        self._finished.append(QueryLogEntry(
            waiting.ts_sec, waiting.ts_usec, vlan_id, client, server, cport, sport, transport, dns_id,
            waiting.qname, qtype, waiting.qclass, STATUS_UNANSWERED, -1, 0, -1, (), waiting.frame, waiting.tunnel,
            self._retransmissions.pop(key),
        ))
