"""A Prometheus endpoint (text exposition format 0.0.4) on a local address, served by a thread of the parent.

It reads the same snapshot `sensor.stats` publishes (StatsBoard.snapshot), at scrape time; the capture loop never
waits for it. Off unless `--metrics` is given; the default address is loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable

from sensor.errors import StartupError
from sensor.records import FRAME_REASONS, MESSAGE_REASONS

log = logging.getLogger(__name__)

DEFAULT_METRICS = "127.0.0.1:9156"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name, type, help, snapshot key (counters of the loop and of the capture handles)
SIMPLE = (
    ("truesource_packets_total", "counter", "Frames the loop read.", "packets"),
    ("truesource_bytes_total", "counter", "Bytes of the frames the loop read.", "bytes"),
    ("truesource_dns_queries_total", "counter", "DNS queries decoded.", "dns_queries"),
    ("truesource_dns_responses_total", "counter", "DNS responses decoded.", "dns_responses"),
    ("truesource_hits_total", "counter", "Queries that matched a rule.", "hits"),
    ("truesource_captured_total", "counter", "Frames the capture filter passed (kernel count).", "received"),
    ("truesource_publisher_sent_total", "counter", "Events the ZeroMQ publisher sent.", "publisher_sent"),
    ("truesource_publisher_undelivered_total", "counter",
     "Events the publisher sent while no subscription matched their topic (nobody received them).",
     "publisher_undelivered"),
)


def parse_address(text: str) -> tuple[str, int]:
    """`ADDR:PORT` (`[v6]:PORT` for IPv6) to (host, port); argparse type and config check alike."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not ADDR:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    return host, int(port)


def metrics_address(text: str) -> str:
    parse_address(text)
    return text


metrics_address.description = "an address ADDR:PORT"  # type: ignore[attr-defined]  # what config errors say is valid


def render(snapshot: dict) -> str:
    """The snapshot as Prometheus text."""
    total = snapshot["total"]
    lines: list[str] = []

    def family(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value}")

    for name, kind, text, key in SIMPLE:
        family(name, kind, text, [("", total.get(key, 0))])
    family("truesource_drops_total", "counter", "Frames or events lost, by cause.", [
        ('{cause="kernel"}', total.get("kernel_drops", 0)),
        ('{cause="interface"}', total.get("interface_drops", 0)),
        ('{cause="publisher"}', total.get("publisher_drops", 0)),
        ('{cause="out"}', total.get("out_drops", 0)),
    ])
    family("truesource_undecoded_total", "counter", "Frames and DNS messages the loop could not decode, by reason.",
           [(f'{{reason="{reason}"}}', total.get(reason, 0)) for reason in FRAME_REASONS + MESSAGE_REASONS])
    rules = snapshot["rules"]
    family("truesource_rules_loaded", "gauge", "Rules in the rule set in use.", [("", rules["loaded"])])
    family("truesource_reloads_total", "counter", "Rule reloads, by outcome.", [
        ('{outcome="success"}', rules["reloads"]), ('{outcome="failure"}', rules["reload_failures"])])
    family("truesource_last_packet_timestamp_seconds", "gauge",
           "Wall-clock time the sensor last saw a packet (0: none yet).", [("", snapshot["last_packet"] or 0)])
    family("truesource_uptime_seconds", "gauge", "Seconds since the sensor started.", [("", snapshot["uptime"])])
    return "\n".join(lines) + "\n"


class MetricsServer:
    """GET /metrics answered from `snapshot()` by a daemon thread."""

    def __init__(self, address: str, snapshot: Callable[[], dict]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # only when metrics are served

        host, port = parse_address(address)
        if not ipaddress.ip_address(host).is_loopback:
            log.warning("metrics endpoint on a non-loopback address %s: anyone who reaches it reads the counters",
                        address, extra={"fields": {"event": "metrics_exposed", "address": address}})

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = render(snapshot()).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # one line per scrape would be per-request noise
                pass

        server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer
        if ":" in host:
            import socket

            server_class = type("V6Server", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        try:
            self._server = server_class((host, port), Handler)
        except OSError as err:
            raise StartupError(f"--metrics {address}: cannot listen: {err.strerror}") from None
        self._server.daemon_threads = True
        self.address = address
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s/metrics", address)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
