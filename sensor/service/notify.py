"""sd_notify(3) by hand: one datagram on the unix socket systemd names in NOTIFY_SOCKET (no systemd library).

READY=1 once the capture is open, WATCHDOG=1 at half the interval systemd set in WATCHDOG_USEC, STATUS= with the
counters, RELOADING=1/READY=1 around a SIGHUP reload, STOPPING=1 when asked to stop. Outside systemd (no
NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._socket: socket.socket | None = None
        if address:
            if address.startswith("@"):  # an abstract socket
                address = "\0" + address[1:]
            self._address = address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval = _watchdog_interval(env)
        self._next_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *assignments: str) -> None:
        """One notification, e.g. send("READY=1", "STATUS=capturing"); a lost one is logged, never fatal."""
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(assignments).encode("utf-8", "replace"), self._address)
        except OSError as err:
            log.warning("sd_notify to %r failed: %s", self._address, err.strerror)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")
        self._next_ping = 0.0

    def tick(self, now: float | None = None) -> None:
        """Called from the capture loop's tick: a watchdog ping when half the interval has passed."""
        if self.watchdog_interval is None or self._socket is None:
            return
        now = time.monotonic() if now is None else now
        if now >= self._next_ping:
            self.send("WATCHDOG=1")
            self._next_ping = now + self.watchdog_interval / 2

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval(env) -> float | None:
    """Seconds systemd waits between pings (WATCHDOG_USEC), if they are meant for this process (WATCHDOG_PID)."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000
