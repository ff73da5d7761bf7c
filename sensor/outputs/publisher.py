"""ZeroMQ publisher: multipart [topic, json] on an XPUB socket.

XPUB rather than PUB for two reasons: with ZMQ_XPUB_NODROP a full queue is reported (EAGAIN) instead of
silently discarded, so drops can be counted; and subscriptions arrive as messages, so replay can wait for its
subscribers before the first packet, and the publisher knows when an event reaches nobody.

Subscription messages are read all the time, not only at start-up: libzmq keeps every unread one (with its
connection's metadata) in an unbounded queue, so a subscriber that connects, subscribes and disconnects in a loop
grew a capture by tens of megabytes a minute. A thread reads them every READ_INTERVAL, taking turns with the
sender under a lock, so an idle loop (a quiet link, a replay blocked on a pipe) reads them too
(docs/decisions/0100-publisher-reads-subscriptions.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque

import zmq
from zmq.utils.monitor import recv_monitor_message

from sensor.errors import StartupError
from sensor.outputs import DEFAULT_ENDPOINT, check_endpoint

log = logging.getLogger(__name__)

SEND_HWM = 100_000  # events queued per subscriber before drops (live) or waiting (replay)
CLOSE_LINGER_MS = 5_000  # on close, give queued events this long to reach subscribers
READ_INTERVAL = 0.1  # seconds between the reader thread's visits to the subscription queue
MAX_PREFIXES = 10_000  # distinct topic prefixes tracked; past it every topic counts as subscribed (a subscriber
#                        sending endless distinct prefixes must not grow the publisher)
JOIN_GRACE = 1.0  # seconds a subscription read before its connection's accepted event waits to be matched
PEER_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED


class PeerCounter:
    """Distinct subscribers: accepted connections that sent at least one subscription.

    XPUB tells neither who subscribed (a subscription carries the peer's IP address, not its port) nor who left,
    so connections come from the socket monitor (accepted / disconnected, keyed by file descriptor)
    and each subscription is matched to the oldest connection that has not subscribed yet. A subscriber with
    several topics counts once. Thread-safe: with CURVE the monitor runs in the handshake monitor's thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[int] = deque()  # connected, no subscription yet
        self._joined: set[int] = set()
        self._unclaimed: deque[float] = deque(maxlen=1024)  # subscriptions read before their accepted event

    def event(self, kind: int, fd: int) -> None:
        with self._lock:
            if kind == zmq.EVENT_ACCEPTED:
                now = time.monotonic()
                while self._unclaimed and now - self._unclaimed[0] > JOIN_GRACE:
                    self._unclaimed.popleft()
                if self._unclaimed:
                    self._unclaimed.popleft()
                    self._joined.add(fd)
                else:
                    self._pending.append(fd)
            elif kind == zmq.EVENT_DISCONNECTED:
                self._joined.discard(fd)
                if fd in self._pending:
                    self._pending.remove(fd)

    def subscribed(self) -> None:
        with self._lock:
            if self._pending:
                self._joined.add(self._pending.popleft())
            else:  # another topic of a joined subscriber, or an accepted event not read yet
                self._unclaimed.append(time.monotonic())

    @property
    def count(self) -> int:
        return len(self._joined)


class Publisher:
    """Binds `endpoint`. `blocking` (replay) waits for a slow subscriber; otherwise drops and counts."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, blocking: bool = False, hwm: int = SEND_HWM,
                 curve=None) -> None:
        """`curve`: a CurveServer (sensor/outputs/curve.py) to encrypt and authenticate subscribers."""
        check_endpoint(endpoint)
        self.endpoint = endpoint
        self.curve = curve
        self.blocking = blocking
        self.sent = 0
        self.dropped = 0
        self.undelivered = 0  # sent while no subscription matched the topic: nobody received it
        self.subscriptions = 0
        self._prefixes: Counter[bytes] = Counter()
        self._matches: dict[str, bool] = {}
        self._lock = threading.Lock()  # the socket is used by the sender and the reader thread in turn
        self._closing = threading.Event()
        self._waited = False
        # inproc:// makes no connection events: there each subscription counts as a subscriber
        self.peers: PeerCounter | None = None if endpoint.startswith("inproc://") else PeerCounter()
        self._monitor: zmq.Socket | None = None
        self._context: zmq.Context = zmq.Context.instance()
        self._socket = self._context.socket(zmq.XPUB)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        self._socket.setsockopt(zmq.XPUB_VERBOSER, 1)  # every subscribe and unsubscribe, one per subscriber
        self._socket.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        if curve is not None:
            curve.apply(self._socket, self._context, endpoint, on_peer=self._peer_event)
        elif self.peers is not None:  # before bind: a subscriber started first connects the moment we bind
            self._monitor = self._socket.get_monitor_socket(PEER_EVENTS)
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as err:
            self._stop_counting_peers()
            if curve is not None:
                curve.close(self._socket)
            self._socket.close(linger=0)
            raise StartupError(f"{endpoint}: cannot bind the event publisher: {err.strerror}") from None
        self._flags = 0 if blocking else zmq.NOBLOCK
        self._reader = threading.Thread(target=self._read_in_background, name="xpub-subscriptions", daemon=True)
        self._reader.start()

    def _read_in_background(self) -> None:
        while not self._closing.wait(READ_INTERVAL):
            with self._lock:
                if self._closing.is_set():
                    return
                self.read_subscriptions()

    def _peer_event(self, kind: int, fd: int) -> None:
        peers = self.peers
        if peers is not None:
            peers.event(kind, fd)

    def _read_monitor(self) -> None:
        while self._monitor is not None and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            self._peer_event(event["event"], event["value"])

    def _stop_counting_peers(self) -> None:
        """Distinct subscribers matter only while waiting for them; then the monitor's queue must not grow."""
        self.peers = None
        self._waited = True
        if self._monitor is not None:
            try:
                self._socket.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(linger=0)
            self._monitor = None

    def read_subscriptions(self, timeout_ms: int = 0) -> None:
        """Take every subscription message queued now (waiting up to `timeout_ms` for the first)."""
        if not self._socket.poll(timeout_ms, zmq.POLLIN):
            return
        frames = []
        while True:
            try:
                frames.append(self._socket.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
        self._read_monitor()  # after the frames: every connection that sent them is queued by now
        for frame in frames:
            kind, prefix = frame[:1], frame[1:]
            if kind == b"\x01":
                self.subscriptions += 1
                if prefix in self._prefixes or len(self._prefixes) < MAX_PREFIXES:
                    self._prefixes[prefix] += 1
                if self.peers is not None:
                    self.peers.subscribed()
            elif kind == b"\x00":
                self.subscriptions -= 1
                if self._prefixes[prefix] > 1:
                    self._prefixes[prefix] -= 1
                else:
                    self._prefixes.pop(prefix, None)
            self._matches.clear()

    def wait_for_subscribers(self, count: int, timeout: float) -> None:
        """Wait until `count` distinct subscribers have joined; StartupError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        try:
            while self.subscribers < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StartupError(
                        f"{self.endpoint}: {self.subscribers} of {count} subscribers joined within {timeout:g} s"
                    )
                with self._lock:
                    self.read_subscriptions(int(min(left, 0.1) * 1000) + 1)
                    self._read_monitor()
            log.info("%d subscribers joined %s", self.subscribers, self.endpoint)
        finally:
            with self._lock:
                self._stop_counting_peers()
                self._waited = True

    @property
    def subscribers(self) -> int:
        return self.peers.count if self.peers is not None else self.subscriptions

    def _reaches_someone(self, topic: str) -> bool:
        known = self._matches.get(topic)
        if known is None:
            encoded = topic.encode("ascii")
            known = len(self._prefixes) >= MAX_PREFIXES or any(encoded.startswith(p) for p in self._prefixes)
            self._matches[topic] = known
        return known

    def write(self, topic: str, line: str) -> None:
        with self._lock:
            if not self._waited:
                self._stop_counting_peers()
            if not self._prefixes:  # nobody known: look again before calling it undelivered
                self.read_subscriptions()
            try:
                self._socket.send_multipart((topic.encode("ascii"), line.encode("ascii")), self._flags)
            except zmq.Again:
                self.dropped += 1
                return
            self.sent += 1
            if not self._reaches_someone(topic):
                self.undelivered += 1

    def state_counters(self) -> dict[str, int]:
        """For the statistics and --summary-json: what went out, what reached nobody, what a full queue dropped."""
        return {"publisher_sent": self.sent, "publisher_drops": self.dropped,
                "publisher_undelivered": self.undelivered}

    def summary(self) -> str:
        """One line for the run's summary: an event that reached no subscriber is not called delivered."""
        return (f"publisher {self.endpoint}: {self.sent:,} sent, {self.undelivered:,} undelivered (no subscriber), "
                f"{self.dropped:,} dropped (queue full)")

    def close(self, linger: int | None = None) -> None:
        """`linger`: milliseconds queued events may still take (default CLOSE_LINGER_MS)."""
        self._closing.set()
        with self._lock:
            self._stop_counting_peers()
        self._reader.join()
        if self.curve is not None:
            self.curve.close(self._socket)
        self._socket.close(linger)
