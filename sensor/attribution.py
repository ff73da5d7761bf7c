"""Resolver attribution: link a resolver's upstream queries to the client queries that caused them.

On a mirror behind the resolver, a suspicious name shows up twice: the client asks the resolver, then the
resolver asks the internet. An edge IDS sees only the second, with the resolver's address. Each upstream query
that hits is linked to every client query, in a window before it, that went to that resolver and asked the
same name or a name below it (QNAME minimisation and DS lookups ask parent names).

Only hits are joined (hits are few, so this is plain Python and works across capture workers): a client query
for a name below an upstream hit's name hits the same rule. A query is a resolver's when its source is a
configured resolver address, a learned one (where client queries that hit were sent, and sources of iterative
queries), or when it is iterative itself (RD clear: stub clients ask with RD set, resolvers asking authoritative
servers do not). Client queries that went to the same resolver (same address, or one of the addresses given as
one resolver) are preferred; when there are none (a resolver asking upstream from another address than the
one its clients use, unless configured), clients are linked by name and time alone, and the event says so.

CNAME hits (decision 0161): a resolver that follows a CNAME from a good name to a suspicious one asks upstream for
the suspicious name, which no client asked. The resolver side (its upstream query that hit, the chain in its
upstream response) is remembered by name in a small bounded table; when the resolver answers a client with a
chain through one of those names (itself a CNAME hit), that event names the client and the resolver-side hits.
"""

from __future__ import annotations

import socket
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from sensor.loop import client_hit_window
from sensor.records import DnsMessage

if TYPE_CHECKING:  # a hit from the runner (sensor/messages.py) has the same fields as the loop's tuple
    from sensor.messages import DnsRecord

DEFAULT_WINDOW = 5.0  # seconds: a resolver's upstream queries follow the client's within ms; retries take seconds
MAX_RECENT_CLIENT_HITS = 100_000  # bound on remembered client queries, whatever the window holds
MAX_LEARNED_RESOLVERS = 4_096  # bound on learned resolver addresses (least recently seen go first)
MAX_UPSTREAM_NAMES = 4_096  # bound on names of resolver-side hits kept for CNAME chains (hits are few)
MAX_UPSTREAM_PER_NAME = 8  # resolver-side hits kept per name (the most recent)


LEARN_REFRESH_US = 1_000_000  # a learned resolver's place in the LRU order is refreshed at most once a second
RD = 0x0100  # header flag: recursion desired


class ClientQuery(NamedTuple):
    """A client query that hit (a tuple: one is made per client hit; its address is made text only when a
    resolver's query links it, which few do)."""

    address: bytes
    port: int
    time_us: int
    name: str
    transport: int

    @property
    def ip(self) -> str:
        return _text(self.address)


# A remembered client query: time (us), bucket, resolver asked, client address, port, name, transport
_Entry = tuple[int, str, bytes, bytes, int, str, int]


class UpstreamHit(NamedTuple):
    """A resolver-side hit remembered for CNAME chains: the name, the resolver, when."""

    name: str
    resolver: bytes
    time_us: int


@dataclass(frozen=True, slots=True)
class Attribution:
    """How the clients were found (`resolver_address`: they asked this resolver; `name_and_time`: the same
    name or one below it, in the window, asked of any resolver) and who they are. `role` is `client` for a CNAME
    hit on a response to a client: `clients` is that client, `upstream` the resolver-side hits it explains."""

    match: str
    clients: list[ClientQuery]
    role: str = "resolver"
    upstream: tuple[UpstreamHit, ...] = ()


def _text(address: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(address) == 4 else socket.AF_INET6, address)


class ResolverAttribution:
    """Feed hits in packet-time order; `link()` says, for an upstream query, which client queries caused it."""

    learn_refresh_us = LEARN_REFRESH_US  # read by the compiled client-hit window (ext/attribution.pxi)

    def __init__(self, resolvers: list[str] | tuple[str, ...] = (), window: float = DEFAULT_WINDOW,
                 learn: bool = True, max_recent: int = MAX_RECENT_CLIENT_HITS,
                 max_learned: int = MAX_LEARNED_RESOLVERS, max_upstream: int = MAX_UPSTREAM_NAMES) -> None:
        # Each item is one resolver: one address, or several comma-separated (client side, upstream side, v6).
        self.group_of: dict[bytes, int] = {}
        for group, item in enumerate(resolvers):
            for address in item.split(","):
                address = address.strip()
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                self.group_of[socket.inet_pton(family, address)] = group
        self.window_us = int(window * 1_000_000)
        self.learn = learn
        self.max_recent = max_recent
        self.max_learned = max_learned
        self.learned: OrderedDict[bytes, int] = OrderedDict()  # address -> when last seen (us), least recent first
        # Client queries in time order, each also filed under its bucket (its last two labels, the registered
        # domain's usual depth): a resolver's query for a name looks in that name's bucket only, where every name
        # at or below it is. Only a query for a TLD or the root (one label) goes through the whole window. An
        # entry is a plain tuple, the same object in both queues (see _Entry); a ClientQuery is made only for the
        # few a resolver's query links.
        self.recent: deque[_Entry] = deque()
        self.by_bucket: dict[str, deque[_Entry]] = {}
        # Resolver-side hits by name, least recently hit first (CNAME chains, decision 0161)
        self.max_upstream = max_upstream
        self.upstream: OrderedDict[str, list[UpstreamHit]] = OrderedDict()
        self.upstream_evicted = 0
        self.cname_linked = 0
        self.evicted = 0  # client queries dropped from `recent` at max_recent, before their window ended
        self.learned_evicted = 0  # learned resolver addresses forgotten at max_learned
        self.linked = 0
        # What the hit paths call: link() with its common case, a client's query, compiled (ext/attribution.pxi,
        # over these same tables: they are emptied and refilled, never replaced), else link() itself
        hits = client_hit_window(self)
        self.linker: Callable[[DnsMessage | DnsRecord], Attribution | None] = (
            hits.link if hits is not None else self.link)

    def is_resolver_query(self, msg: DnsMessage | DnsRecord) -> bool:
        """A configured or learned resolver's query, or any iterative one (RD clear): stub clients ask with RD."""
        return msg.src_ip in self.group_of or msg.src_ip in self.learned or not msg.flags & RD

    def link(self, msg: DnsMessage | DnsRecord) -> Attribution | None:
        """None for a client query (remembered); for a resolver's query, the client queries that caused it."""
        now = msg.ts_sec * 1_000_000 + msg.ts_usec
        recent = self.recent
        if recent and recent[0][0] < now - self.window_us:
            self._expire(now)
        if msg.cname is not None:
            return self._cname(msg, now)
        src = msg.src_ip
        if self.is_resolver_query(msg):
            self._learn(src, now)
            self._remember_upstream(msg.qname.lower(), src, now)
            found = self._find(msg.qname.lower())
            if not found:
                return Attribution("name_and_time", [])
            self.linked += 1
            same = [query for resolver, query in found if self._same_resolver(resolver, src)]
            if same:
                return Attribution("resolver_address", same)
            return Attribution("name_and_time", [query for _, query in found])
        name = msg.qname.lower()
        bucket = _bucket(name)
        dst = msg.dst_ip
        entry = (now, bucket, dst, src, msg.src_port, name, msg.transport)
        queue = self.by_bucket.get(bucket)
        if queue is None:
            self.by_bucket[bucket] = deque((entry,))
        else:
            queue.append(entry)
        recent.append(entry)
        if len(recent) > self.max_recent:
            self._forget()
            self.evicted += 1
        seen = self.learned.get(dst)  # the resolvers clients ask are few: most hits find theirs seen just now
        if seen is None or now - seen > LEARN_REFRESH_US:
            self._learn(dst, now)
        return None

    def _cname(self, msg: DnsMessage | DnsRecord, now: int) -> Attribution | None:
        """A CNAME hit (a response): to a resolver, its chain is remembered; to a client, the client is named with
        the resolver-side hits on the chain's names (the answering resolver's preferred)."""
        assert msg.cname is not None
        _, records = msg.cname
        names = list(dict.fromkeys([records[0][0].lower(), *(target.lower() for _, _, target in records)]))
        to_resolver = msg.dst_ip in self.group_of or msg.dst_ip in self.learned or not msg.flags & RD
        horizon = now - self.window_us
        found = [hit for name in names for hit in self.upstream.get(name, ())
                 if hit.resolver != msg.dst_ip and hit.time_us >= horizon]
        for name in names:  # the receiver now holds the chain: a forwarder's answer to its client links to it
            self._remember_upstream(name, msg.dst_ip, now)
        if to_resolver:
            return None
        self._learn(msg.src_ip, now)
        client = ClientQuery(msg.dst_ip, msg.dst_port, now, msg.qname.lower(), msg.transport)
        same = tuple(hit for hit in found if self._same_resolver(hit.resolver, msg.src_ip))
        if found:
            self.cname_linked += 1
        if same:
            return Attribution("resolver_address", [client], "client", same)
        return Attribution("name_and_time", [client], "client", tuple(found))

    def _remember_upstream(self, name: str, resolver: bytes, now: int) -> None:
        """File a resolver-side hit; names whose last hit left the window go first (least recently hit first)."""
        upstream = self.upstream
        horizon = now - self.window_us
        while upstream:
            oldest, kept = next(iter(upstream.items()))
            if kept[-1].time_us >= horizon:
                break
            del upstream[oldest]
        hits = upstream.get(name)
        if hits is None:
            hits = self.upstream[name] = []
            if len(self.upstream) > self.max_upstream:
                self.upstream.popitem(last=False)
                self.upstream_evicted += 1
        else:
            self.upstream.move_to_end(name)
            hits[:] = [hit for hit in hits if hit.resolver != resolver]
        hits.append(UpstreamHit(name, resolver, now))
        del hits[:-MAX_UPSTREAM_PER_NAME]

    def counters(self) -> dict[str, int]:
        """Sizes and evictions of the bounded tables (docs/limits.md)."""
        return {"attribution_recent": len(self.recent), "attribution_evicted": self.evicted,
                "attribution_learned": len(self.learned), "attribution_learned_evicted": self.learned_evicted,
                "attribution_linked": self.linked, "attribution_upstream": len(self.upstream),
                "attribution_upstream_evicted": self.upstream_evicted, "attribution_cname_linked": self.cname_linked}

    def _same_resolver(self, a: bytes, b: bytes) -> bool:
        if a == b:
            return True
        group = self.group_of.get(a)
        return group is not None and group == self.group_of.get(b)

    def _learn(self, address: bytes, now: int) -> None:
        if not self.learn or address in self.group_of:
            return
        self.learned[address] = now
        self.learned.move_to_end(address)
        if len(self.learned) > self.max_learned:
            self.learned.popitem(last=False)
            self.learned_evicted += 1

    def _expire(self, now: int) -> None:
        horizon = now - self.window_us
        recent = self.recent
        while recent and recent[0][0] < horizon:
            self._forget()

    def _forget(self) -> None:
        """Drop the oldest client query: it is also the oldest of its bucket."""
        bucket = self.recent.popleft()[1]
        queue = self.by_bucket[bucket]
        queue.popleft()
        if not queue:
            del self.by_bucket[bucket]

    def _find(self, name: str) -> list[tuple[bytes, ClientQuery]]:
        """The remembered client queries for `name` or a name below it, in time order."""
        entries: Iterable[_Entry]
        if name == ".":
            return [_client(entry) for entry in self.recent]
        below = "." + name
        if "." in name:
            entries = self.by_bucket.get(_bucket(name), ())
        else:  # a TLD: its names are in many buckets
            entries = self.recent
        return [_client(entry) for entry in entries if entry[5] == name or entry[5].endswith(below)]

    def remembered(self) -> list[ClientQuery]:
        """The client queries in the window, oldest first (tests and debugging)."""
        return [_client(entry)[1] for entry in self.recent]


def _client(entry: _Entry) -> tuple[bytes, ClientQuery]:
    """(resolver, query) of a remembered entry."""
    return entry[2], ClientQuery(entry[3], entry[4], entry[0], entry[5], entry[6])


def _bucket(name: str) -> str:
    """The last two labels of a name (the name itself when it has fewer)."""
    dot = name.rfind(".")
    if dot <= 0:
        return name
    second = name.rfind(".", 0, dot)
    return name if second < 0 else name[second + 1:]
