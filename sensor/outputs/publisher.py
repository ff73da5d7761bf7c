"""ZeroMQ publisher: multipart [topic, json] on an XPUB socket.

XPUB rather than PUB for two reasons: with ZMQ_XPUB_NODROP a full queue is reported (EAGAIN) instead of
silently discarded, so drops can be counted; and subscriptions arrive as messages, so replay can wait for its
subscribers before the first packet.
"""

from __future__ import annotations

import logging
import time

import zmq

from sensor.errors import StartupError
from sensor.outputs import DEFAULT_ENDPOINT

log = logging.getLogger(__name__)

SEND_HWM = 100_000  # events queued per subscriber before drops (live) or waiting (replay)
CLOSE_LINGER_MS = 5_000  # on close, give queued events this long to reach subscribers


class Publisher:
    """Binds `endpoint`. `blocking` (replay) waits for a slow subscriber; otherwise drops and counts."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, blocking: bool = False, hwm: int = SEND_HWM,
                 curve=None) -> None:
        """`curve`: a CurveServer (sensor/outputs/curve.py) to encrypt and authenticate subscribers."""
        self.endpoint = endpoint
        self.curve = curve
        self.blocking = blocking
        self.sent = 0
        self.dropped = 0
        self.subscriptions = 0
        self._context: zmq.Context = zmq.Context.instance()
        self._socket = self._context.socket(zmq.XPUB)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        self._socket.setsockopt(zmq.XPUB_VERBOSER, 1)  # every subscribe and unsubscribe, one per subscriber
        self._socket.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        if curve is not None:
            curve.apply(self._socket, self._context, endpoint)
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as err:
            if curve is not None:
                curve.close(self._socket)
            self._socket.close(linger=0)
            raise StartupError(f"{endpoint}: cannot bind the event publisher: {err.strerror}") from None
        self._flags = 0 if blocking else zmq.NOBLOCK

    def _read_subscriptions(self, timeout_ms: int) -> None:
        if self._socket.poll(timeout_ms, zmq.POLLIN):
            while True:
                try:
                    frame = self._socket.recv(zmq.NOBLOCK)
                except zmq.Again:
                    return
                if frame[:1] == b"\x01":
                    self.subscriptions += 1
                elif frame[:1] == b"\x00":
                    self.subscriptions -= 1

    def wait_for_subscribers(self, count: int, timeout: float) -> None:
        """Wait until `count` subscriptions have arrived; StartupError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.subscriptions < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StartupError(
                    f"{self.endpoint}: {self.subscriptions} of {count} subscribers joined within {timeout:g} s"
                )
            self._read_subscriptions(int(min(left, 0.1) * 1000) + 1)
        log.info("%d subscribers joined %s", self.subscriptions, self.endpoint)

    def write(self, topic: str, line: str) -> None:
        try:
            self._socket.send_multipart((topic.encode("ascii"), line.encode("ascii")), self._flags)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

    def state_counters(self) -> dict[str, int]:
        """For the statistics and --summary-json: what went out, and what a full queue made it drop."""
        return {"publisher_sent": self.sent, "publisher_drops": self.dropped}

    def close(self) -> None:
        if self.curve is not None:
            self.curve.close(self._socket)
        self._socket.close()
