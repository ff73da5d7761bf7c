"""A publisher that sends events as fast as it can until killed: `python flooder.py ENDPOINT`.

Prints `ready` once bound. Stands in for a busy sensor upstream of a relay.
"""

from __future__ import annotations

import sys

import zmq


def main() -> int:
    context = zmq.Context()
    sock = context.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 10_000)
    sock.bind(sys.argv[1])
    print("ready", flush=True)
    body = b'{"event":{"kind":"alert"},"dns":{"question":{"name":"' + b"x" * 200 + b'"}}}'
    while True:
        try:
            sock.send_multipart((b"dns.hit", body), zmq.NOBLOCK)
        except zmq.Again:
            pass
        if sock.poll(0, zmq.POLLIN):  # subscriptions from the relay
            sock.recv()


if __name__ == "__main__":
    sys.exit(main())
