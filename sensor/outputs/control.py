"""The control channel: a ZeroMQ REP socket a running sensor answers on (`truesource control`).

Commands: `reload` (the same as SIGHUP: rebuild the rules, swap them between batches), `stats` (the current
totals as JSON), `ping`. The sensor polls it between batches, never blocking capture.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import zmq

from sensor.errors import StartupError

COMMANDS = ("reload", "stats", "ping")
REPLY_TIMEOUT_MS = 5_000  # how long `truesource control` waits for the sensor's answer


class ControlServer:
    def __init__(self, endpoint: str, handlers: dict[str, Callable[[], dict]]) -> None:
        self.endpoint = endpoint
        self.handlers = handlers
        self._socket: zmq.Socket = zmq.Context.instance().socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as err:
            self._socket.close()
            raise StartupError(f"--control {endpoint}: cannot bind: {err.strerror}") from None

    def serve_pending(self) -> None:
        """Answer every request already waiting; returns at once when there is none."""
        while True:
            try:
                command = self._socket.recv_string(zmq.NOBLOCK).strip()
            except zmq.Again:
                return
            handler = self.handlers.get(command)
            reply = handler() if handler else {"error": f"unknown command {command!r}; one of {', '.join(COMMANDS)}"}
            self._socket.send_string(json.dumps(reply))

    def close(self) -> None:
        self._socket.close()


def send_command(endpoint: str, command: str) -> dict:
    socket: zmq.Socket = zmq.Context.instance().socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    try:
        socket.send_string(command)
        if not socket.poll(REPLY_TIMEOUT_MS):
            raise StartupError(f"{endpoint}: no answer within {REPLY_TIMEOUT_MS / 1000:g} s (is the sensor running?)")
        return json.loads(socket.recv_string())
    finally:
        socket.close()
