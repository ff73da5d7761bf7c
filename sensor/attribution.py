"""Resolver attribution: link a resolver's upstream queries to the client queries that caused them.

On a mirror behind the resolver, a suspicious name shows up twice: the client asks the resolver, then the
resolver asks the internet. An edge IDS sees only the second, with the resolver's address. Each upstream query
that hits is linked to every client query, in a window before it, that went to that resolver and asked the
same name or a name below it (QNAME minimisation and DS lookups ask parent names). A dual-stack resolver
may take a query on one address family and go upstream on the other, so client queries to an address of the
other family count too.

Only hits are joined (hits are few, so this is plain Python and works across capture workers): a client query
for a name below an upstream hit's name hits the same rule. Resolvers are the configured addresses plus, when
learning is on, every address a client query that hit was sent to.
"""

from __future__ import annotations

import socket
from collections import OrderedDict, deque
from dataclasses import dataclass

from sensor.records import DnsMessage

DEFAULT_WINDOW = 5.0  # seconds: a resolver's upstream queries follow the client's within ms; retries take seconds
MAX_RECENT_CLIENT_HITS = 100_000  # bound on remembered client queries, whatever the window holds
MAX_LEARNED_RESOLVERS = 4_096  # bound on learned resolver addresses (least recently seen go first)


@dataclass(frozen=True, slots=True)
class ClientQuery:
    ip: str
    port: int
    time_us: int
    name: str
    transport: int


def _text(address: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(address) == 4 else socket.AF_INET6, address)


class ResolverAttribution:
    """Feed hits in packet-time order; `link()` says, for an upstream query, which client queries caused it."""

    def __init__(self, resolvers: list[str] | tuple[str, ...] = (), window: float = DEFAULT_WINDOW,
                 learn: bool = True, max_recent: int = MAX_RECENT_CLIENT_HITS,
                 max_learned: int = MAX_LEARNED_RESOLVERS) -> None:
        self.configured = {socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in resolvers}
        self.window_us = int(window * 1_000_000)
        self.learn = learn
        self.max_recent = max_recent
        self.max_learned = max_learned
        self.learned: OrderedDict[bytes, None] = OrderedDict()
        self.recent: deque[tuple[int, bytes, ClientQuery]] = deque()  # (time, resolver address, query)
        self.evicted = 0
        self.linked = 0

    def is_resolver(self, address: bytes) -> bool:
        return address in self.configured or address in self.learned

    def link(self, msg: DnsMessage) -> list[ClientQuery] | None:
        """None for a client query (remembered); for a resolver's query, the client queries that caused it."""
        now = msg.ts_sec * 1_000_000 + msg.ts_usec
        self._expire(now)
        if self.is_resolver(msg.src_ip):
            name = msg.qname.lower()
            below = "." + name if name != "." else ""
            # Same resolver address, or any address of the other family: a dual-stack resolver takes a
            # client's query on IPv6 and may ask upstream over IPv4 (and the other way round).
            own, family = msg.src_ip, len(msg.src_ip)
            clients = [
                query for _, resolver, query in self.recent
                if (resolver == own or len(resolver) != family)
                and (query.name == name or query.name.endswith(below))
            ]
            self.linked += bool(clients)
            return clients
        self.recent.append((now, msg.dst_ip, ClientQuery(_text(msg.src_ip), msg.src_port, now,
                                                         msg.qname.lower(), msg.transport)))
        if len(self.recent) > self.max_recent:
            self.recent.popleft()
            self.evicted += 1
        if self.learn:
            self.learned[msg.dst_ip] = None
            self.learned.move_to_end(msg.dst_ip)
            if len(self.learned) > self.max_learned:
                self.learned.popitem(last=False)
        return None

    def _expire(self, now: int) -> None:
        horizon = now - self.window_us
        recent = self.recent
        while recent and recent[0][0] < horizon:
            recent.popleft()
