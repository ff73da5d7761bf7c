"""CURVE on the event stream: the sensor (or relay) is a CURVE server with its own key pair and an allowlist of
subscriber public keys; subscribers are CURVE clients that know the server's public key.

Keys are zmq.auth's files (`truesource keys generate`): NAME.key holds the public key, NAME.key_secret both.
The allowlist is a directory of public key files, read again at every connection attempt, so adding or removing a
file takes effect for the next subscriber without a restart. Refusals are logged: an unknown key by the ZAP handler
here (with the peer address and key), a subscriber without CURVE by the socket monitor (handshake failure).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from sensor.errors import StartupError

log = logging.getLogger("truesource.curve")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # RFC 27: where libzmq asks for authentication in a context
ZAP_POLL_MS = 200  # how often the handler thread checks that it should stop
ZAP_DOMAIN = "truesource"
# A refused client reconnects every 100 ms (libzmq's default): one line per peer address this often, with a
# count of the refusals in between, keeps the log readable.
REFUSAL_LOG_EVERY = 60.0  # seconds


class RefusalLog:
    """Logs a refusal at once for a peer not seen lately, else counts it for the next line."""

    def __init__(self) -> None:
        self.total = 0
        self._last: dict[str, tuple[float, int]] = {}  # peer -> (when logged, refusals since)

    def refuse(self, peer: str, endpoint: str, detail: str) -> None:
        import time

        self.total += 1
        now = time.monotonic()
        when, since = self._last.get(peer, (float("-inf"), 0))
        if now - when < REFUSAL_LOG_EVERY:
            self._last[peer] = (when, since + 1)
            return
        if len(self._last) > 10_000:  # a scan from many addresses: forget the oldest rather than grow
            self._last.clear()
        self._last[peer] = (now, 0)
        more = f" ({since} more refusals since the last line)" if since else ""
        log.warning("refused subscriber %s on %s: %s%s", peer, endpoint, detail, more,
                    extra={"fields": {"event": "curve_refuse", "peer": peer, "refused_total": self.total}})


def generate(directory: str, name: str) -> tuple[str, str]:
    """A new key pair in `directory` (created 0700): NAME.key and NAME.key_secret (0600)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for suffix in (".key", ".key_secret"):
        if os.path.exists(os.path.join(directory, name + suffix)):
            raise StartupError(f"{os.path.join(directory, name + suffix)}: exists; not overwriting a key")
    public, secret = zmq.auth.create_certificates(directory, name)
    os.chmod(secret, 0o600)
    return public, secret


def load_secret(path: str) -> tuple[bytes, bytes]:
    """(public, secret) from a NAME.key_secret file."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as err:
        raise StartupError(f"{path}: not a CURVE key file: {err}") from None
    if secret is None:
        raise StartupError(f"{path}: holds no secret key (give the .key_secret file)")
    return public, secret


def load_public(path: str) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as err:
        raise StartupError(f"{path}: not a CURVE key file: {err}") from None
    return public


def allowed_keys(directory: str) -> set[bytes]:
    """The public keys (Z85) of every key file in the allowlist directory."""
    keys = set()
    for name in sorted(os.listdir(directory)):
        if name.endswith(".key"):
            try:
                keys.add(zmq.auth.load_certificate(os.path.join(directory, name))[0])
            except (OSError, ValueError) as err:
                log.warning("allowlist %s: %s skipped: %s", directory, name, err)
    return keys


class ZapHandler:
    """Answers libzmq's ZAP requests for one context: CURVE clients whose key is in the allowlist pass."""

    def __init__(self, context: zmq.Context, allow_dir: str, endpoint: str) -> None:
        if not os.path.isdir(allow_dir):
            raise StartupError(f"--curve-allow {allow_dir}: not a directory of subscriber public keys")
        self.allow_dir = allow_dir
        self.endpoint = endpoint
        self.refusals = RefusalLog()
        self._stop = threading.Event()
        self._socket = context.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self._socket.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as err:
            self._socket.close()
            raise StartupError(f"cannot start the CURVE authenticator: {err.strerror}") from None
        self._thread = threading.Thread(target=self._run, name="zap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._socket.poll(ZAP_POLL_MS):
                    request = self._socket.recv_multipart()
                    try:
                        reply = self._answer(request)
                    except Exception as err:  # a malformed request must not stop authentication: refuse it
                        log.error("ZAP request not understood (%s): refused", err)
                        reply = [b"1.0", request[1] if len(request) > 1 else b"", b"500", b"Internal error", b"", b""]
                    self._socket.send_multipart(reply)
        finally:
            self._socket.close()

    def _answer(self, request: list[bytes]) -> list[bytes]:
        version, request_id, _domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        peer = address.decode("ascii", "replace")
        if mechanism == b"CURVE" and credentials:
            key = z85.encode(credentials[0])
            try:
                allowed = key in allowed_keys(self.allow_dir)
            except OSError as err:
                log.error("allowlist %s unreadable: %s; refusing", self.allow_dir, err.strerror)
                allowed = False
            if allowed:
                log.info("subscriber %s accepted on %s", peer, self.endpoint,
                         extra={"fields": {"event": "curve_accept", "peer": peer, "key": key.decode()}})
                return [version, request_id, b"200", b"OK", key, b""]
            reason, detail = b"400", f"key {key.decode()} is not in the allowlist {self.allow_dir}"
        else:
            reason, detail = b"400", f"mechanism {mechanism.decode('ascii', 'replace')} is not CURVE"
        self.refusals.refuse(peer, self.endpoint, detail)
        return [version, request_id, reason, b"Unauthorized", b"", b""]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2 * ZAP_POLL_MS / 1000 + 1)


class HandshakeMonitor:
    """Logs handshakes that fail before ZAP is asked: a subscriber with no CURVE, or a wrong server key."""

    EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL

    def __init__(self, socket: zmq.Socket, endpoint: str, on_peer=None) -> None:
        """`on_peer(event, fd)`: also told of accepted connections and disconnections (one monitor a socket)."""
        self.endpoint = endpoint
        self.refusals = RefusalLog()
        self._socket = socket
        self._on_peer = on_peer
        peer_events = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED if on_peer else 0
        self._monitor = socket.get_monitor_socket(self.EVENTS | peer_events)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="handshake-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._monitor.poll(ZAP_POLL_MS):
                    continue
                event = recv_monitor_message(self._monitor)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    return
                if event["event"] in (zmq.EVENT_ACCEPTED, zmq.EVENT_DISCONNECTED):
                    self._on_peer(event["event"], event["value"])
                    continue
                if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:  # the value is an errno
                    # whichever side sees the mismatch first closes: the peer may hang up before we do
                    why = (f"the subscriber broke off ({os.strerror(event['value'])}): no CURVE, or not this "
                           "server's public key")
                elif event["value"] == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                    why = "no CURVE (or another security mechanism)"
                else:
                    why = f"protocol error {event['value']:#x}"
                # the monitor does not name the peer: one rate-limited line per kind of failure
                self.refusals.refuse(f"(handshake: {why})", self.endpoint, f"handshake failed: {why}")
        finally:
            self._monitor.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2 * ZAP_POLL_MS / 1000 + 1)


class CurveServer:
    """Makes a socket a CURVE server before it binds; keeps its authenticator and monitor until close()."""

    def __init__(self, secret_file: str, allow_dir: str) -> None:
        self.public, self.secret = load_secret(secret_file)
        self.allow_dir = allow_dir
        self._zap: ZapHandler | None = None
        self._monitor: HandshakeMonitor | None = None

    def apply(self, socket: zmq.Socket, context: zmq.Context, endpoint: str, on_peer=None) -> None:
        self._zap = ZapHandler(context, self.allow_dir, endpoint)
        socket.curve_server = True
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret
        socket.zap_domain = ZAP_DOMAIN.encode()
        self._monitor = HandshakeMonitor(socket, endpoint, on_peer)

    @property
    def refused(self) -> int:
        return sum(part.refusals.total for part in (self._zap, self._monitor) if part is not None)

    def close(self, socket: zmq.Socket) -> None:
        if self._monitor is not None:
            try:
                socket.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close()
        if self._zap is not None:
            self._zap.close()


def secure_client(socket: zmq.Socket, server_key: str, secret_file: str) -> None:
    """Make a connecting socket a CURVE client of the server whose public key file is `server_key`."""
    public, secret = load_secret(secret_file)
    socket.curve_serverkey = load_public(server_key)
    socket.curve_publickey = public
    socket.curve_secretkey = secret


def is_local(endpoint: str) -> bool:
    """ipc:// and inproc:// are local; tcp:// is when its host is a loopback address or `localhost`."""
    parts = urlsplit(endpoint)
    if parts.scheme in ("ipc", "inproc"):
        return True
    host = parts.netloc.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # `*`, an interface name, a host name: reachable from the network


def server_from_args(endpoint: str, secret_file: str | None, allow_dir: str | None,
                     allow_plaintext: bool) -> CurveServer | None:
    """The CURVE server for a bound endpoint as the options ask; refuses a plaintext non-local endpoint unless
    --allow-plaintext says so (and then warns)."""
    if bool(secret_file) != bool(allow_dir):
        raise StartupError("CURVE needs both --curve-secret-key (the server's key pair) and --curve-allow "
                           "(the directory of subscriber public keys)")
    if secret_file and allow_dir:
        return CurveServer(secret_file, allow_dir)
    if not is_local(endpoint):
        if not allow_plaintext:
            raise StartupError(f"{endpoint}: not a loopback endpoint and no CURVE: give --curve-secret-key and "
                               "--curve-allow, or --allow-plaintext to publish unencrypted to the network")
        log.warning("publishing UNENCRYPTED and unauthenticated on %s (--allow-plaintext)", endpoint,
                    extra={"fields": {"event": "plaintext_endpoint", "endpoint": endpoint}})
    return None




def run_keys(args) -> int:
    public, secret = generate(args.directory, args.name)
    print(f"public key: {public}\nkey pair:   {secret}")
    return 0
