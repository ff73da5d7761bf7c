"""A subscriber that connects, subscribes and disconnects in a loop: `python flapper.py ENDPOINT CYCLES`.

As the issue's flapping subscriber: each cycle connects, subscribes, waits a millisecond and closes, without
waiting for the connection to complete, so cycles overlap as a misbehaving client's would. Prints the cycles done.
"""

from __future__ import annotations

import sys

import zmq

CONTEXT_CYCLES = 200  # closed sockets are reaped by the context's thread later; a fresh context every 200
#                       cycles (term() waits for the reaping) keeps them under ZeroMQ's 1,023 sockets


def main() -> int:
    endpoint, cycles = sys.argv[1], int(sys.argv[2])
    context = zmq.Context()
    for cycle in range(cycles):
        if cycle and cycle % CONTEXT_CYCLES == 0:
            context.term()
            context = zmq.Context()
        sock = context.socket(zmq.SUB)
        sock.connect(endpoint)
        sock.subscribe(b"")
        sock.poll(1)
        sock.close(linger=0)
    context.term()
    print(cycles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
