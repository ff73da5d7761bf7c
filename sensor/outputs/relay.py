"""`truesource relay`: several sensors' event streams into one endpoint for the SIEM, with ZeroMQ's own proxy.

An XSUB socket connects to every sensor's XPUB; an XPUB socket binds for the subscribers. zmq.proxy forwards
events downstream and subscriptions upstream, so a sensor only sends what somebody subscribed to. Both sides can
use CURVE: the relay is a CURVE client of each sensor (their public keys, its own key pair) and a CURVE server to
its subscribers (its key pair, an allowlist). Events already name their sensor (observer.hostname, observer.name).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

import zmq

from sensor.errors import StartupError
from sensor.outputs import check_endpoint
from sensor.outputs.curve import secure_client, server_from_args

log = logging.getLogger("truesource.relay")

RELAY_HWM = 100_000  # events queued per subscriber (and from each sensor) before the proxy drops
STOP_DEADLINE = 4.0  # seconds from SIGTERM to exit, whatever is still winding down (systemd and tests allow 5)


def _exit_now() -> None:
    """The last resort of a stop: a thread that does not end (or a context that cannot terminate) must not keep
    the relay running after SIGTERM."""
    log.error("relay: not stopped %g s after the signal; exiting without waiting", STOP_DEADLINE,
              extra={"fields": {"event": "relay_stop_forced"}})
    sys.stderr.flush()
    os._exit(1)


def run_relay(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # first: a signal during start-up still stops it cleanly
        signal.signal(signum, lambda *_: stop.set())
    check_endpoint(args.bind, "--bind")
    for endpoint in args.connect:
        check_endpoint(endpoint, "--connect")
    server_keys = args.curve_server_key or []
    if server_keys and len(server_keys) not in (1, len(args.connect)):
        raise StartupError(f"--curve-server-key: give one, or one per --connect ({len(args.connect)}), "
                           f"not {len(server_keys)}")
    if server_keys and not args.curve_client_key:
        raise StartupError("--curve-server-key needs --curve-client-key (the relay's key pair as a client)")
    curve = server_from_args(args.bind, args.curve_secret_key, args.curve_allow, args.allow_plaintext)
    context: zmq.Context = zmq.Context()  # its own, terminated at stop: no socket of another thread can hold it at exit
    upstream = context.socket(zmq.XSUB)
    downstream = context.socket(zmq.XPUB)
    for sock in (upstream, downstream):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, RELAY_HWM)
        sock.setsockopt(zmq.RCVHWM, RELAY_HWM)
    if curve is not None:
        curve.apply(downstream, context, args.bind)
    try:
        downstream.bind(args.bind)
    except zmq.ZMQError as err:
        raise StartupError(f"{args.bind}: cannot bind the relay: {err.strerror}") from None
    for index, endpoint in enumerate(args.connect):
        if server_keys:
            # libzmq takes the CURVE options in force at connect() time, so one socket can reach sensors with
            # different keys
            secure_client(upstream, server_keys[index if len(server_keys) > 1 else 0], args.curve_client_key)
        try:
            upstream.connect(endpoint)
        except zmq.ZMQError as err:
            raise StartupError(f"--connect {endpoint}: {err.strerror}") from None
    log.info("relaying %d sensor(s) to %s", len(args.connect), args.bind,
             extra={"fields": {"event": "relay_start", "sensors": len(args.connect)}})
    control_endpoint = f"inproc://relay-control-{id(upstream)}"
    control = context.socket(zmq.PAIR)
    control.bind(control_endpoint)
    steer = context.socket(zmq.PAIR)
    steer.connect(control_endpoint)

    def proxy() -> None:
        zmq.proxy_steerable(upstream, downstream, None, steer)

    thread = threading.Thread(target=proxy, name="relay-proxy", daemon=True)
    thread.start()
    try:
        while not stop.wait(0.2) and thread.is_alive():
            pass
    finally:
        watchdog = threading.Timer(STOP_DEADLINE, _exit_now)
        watchdog.daemon = True
        watchdog.start()
        try:
            control.send(b"TERMINATE", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        thread.join(STOP_DEADLINE)
        if thread.is_alive():  # closing sockets the proxy still uses would be worse than not closing them
            _exit_now()
        if curve is not None:
            curve.close(downstream)
        for sock in (control, steer, upstream, downstream):
            sock.close(linger=0)
        context.term()
        watchdog.cancel()
    log.info("relay stopped", extra={"fields": {"event": "relay_stop"}})
    return 0
