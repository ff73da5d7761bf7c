"""A subscriber that connects, subscribes and disconnects in a loop: `python flapper.py ENDPOINT CYCLES`.

Each cycle waits until its connection is up (the monitor's handshake event), so every cycle really reaches the
publisher. Prints the cycles done.
"""

from __future__ import annotations

import sys

import zmq
from zmq.utils.monitor import recv_monitor_message

CONTEXT_CYCLES = 200  # closed sockets are reaped by the context's thread later; a fresh context every 200
#                       cycles (term() waits for the reaping) keeps them under ZeroMQ's 1,023 sockets


def main() -> int:
    endpoint, cycles = sys.argv[1], int(sys.argv[2])
    context = zmq.Context()
    done = 0
    for cycle in range(cycles):
        if cycle and cycle % CONTEXT_CYCLES == 0:
            context.term()
            context = zmq.Context()
        sock = context.socket(zmq.SUB)
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sock.connect(endpoint)
        sock.subscribe(b"")
        if monitor.poll(5000):
            recv_monitor_message(monitor)
            done += 1
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
    print(done)
    context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
