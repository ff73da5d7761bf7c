"""Where events go: JSON lines files and the ZeroMQ publisher."""

from __future__ import annotations

from urllib.parse import urlsplit

from sensor.errors import StartupError

# Loopback: the event stream is not for the network unless the operator says so. Here, not in publisher.py, so
# that the command line can show it without importing ZeroMQ.
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"
ENDPOINT_SCHEMES = ("tcp", "ipc", "inproc", "pgm", "epgm", "vmci", "ws", "wss")


def check_endpoint(endpoint: str, option: str = "--publish") -> None:
    """StartupError unless `endpoint` looks like a ZeroMQ endpoint (scheme://address)."""
    if "://" not in endpoint or urlsplit(endpoint).scheme not in ENDPOINT_SCHEMES or not endpoint.split("://", 1)[1]:
        raise StartupError(f"{option}: {endpoint!r} is not a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH or "
                           "inproc://NAME)")
