"""The reference subscriber (`truesource tail`): prints each event's JSON on its own line."""

from __future__ import annotations

import sys

import zmq

from sensor.errors import StartupError


def tail(endpoint: str, topics: list[str], count: int = 0, idle_exit: float = 0, with_topic: bool = False,
         server_key: str | None = None, client_key: str | None = None) -> int:
    """`server_key`, `client_key`: CURVE (the publisher's public key file, this subscriber's key pair file)."""
    context: zmq.Context = zmq.Context.instance()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    if server_key or client_key:
        if not (server_key and client_key):
            socket.close()
            raise StartupError("CURVE needs both --curve-server-key and --curve-client-key")
        from sensor.outputs.curve import secure_client

        secure_client(socket, server_key, client_key)
    try:
        socket.connect(endpoint)
    except zmq.ZMQError as err:
        raise StartupError(f"{endpoint}: cannot connect: {err.strerror}") from None
    for topic in topics:
        socket.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
    received = 0
    timeout_ms = int(idle_exit * 1000) if idle_exit > 0 else -1
    try:
        while not count or received < count:
            if not socket.poll(timeout_ms):
                break
            topic, payload = socket.recv_multipart()[:2]
            line = payload.decode("utf-8", "replace")
            if with_topic:
                line = topic.decode("ascii", "replace") + " " + line
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            received += 1
    finally:
        socket.close()
    return 0
