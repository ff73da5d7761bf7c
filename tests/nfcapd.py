"""A real nfcapd (Debian's nfdump package) on a free loopback UDP port, for the tests and benchmarks that hand
flow records to the peer collector and read them back with nfdump."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

BIND_TIMEOUT = 10.0  # seconds for nfcapd to bind its port
DRAIN_TIMEOUT = 60.0  # seconds for nfcapd to read the datagrams already queued on its socket
IPFIX_CHUNK = 200  # records per export call, then IPFIX_PAUSE: loopback UDP drops what a busy collector cannot take
IPFIX_PAUSE = 0.01


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_receive_queue(port: int) -> int:
    """Bytes waiting on the 127.0.0.1 UDP socket bound to `port`, not yet read by its owner (/proc/net/udp)."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == local:
                return int(fields[4].split(":")[1], 16)
    raise RuntimeError(f"no UDP socket on 127.0.0.1:{port}")


def udp_port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@dataclass
class Collector:
    directory: str
    port: int
    log: str = ""
    files: list[str] = field(default_factory=list)  # the finished nfcapd files, after the block

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def nfcapd(directory: str, rotate_seconds: int = 3600) -> Iterator[Collector]:
    """nfcapd writing into `directory` while the block runs; stopped with SIGTERM after it, which closes its
    file. `rotate_seconds` above the block's length keeps everything in one file."""
    os.makedirs(directory, exist_ok=True)
    collector = Collector(str(directory), free_udp_port())
    process = subprocess.Popen(["nfcapd", "-w", collector.directory, "-b", "127.0.0.1", "-p", str(collector.port),
                                "-t", str(rotate_seconds)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        deadline = time.monotonic() + BIND_TIMEOUT
        while not udp_port_taken(collector.port):
            if process.poll() is not None:
                raise RuntimeError(f"nfcapd exited: {process.stdout.read()}")
            if time.monotonic() > deadline:
                raise RuntimeError("nfcapd did not bind its port")
            time.sleep(0.05)  # poll interval
        yield collector
        # loopback UDP is queued on nfcapd's socket (or dropped) before sendto returns: once nfcapd has read its
        # queue it holds every datagram sent, and SIGTERM writes them to its file
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while udp_receive_queue(collector.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nfcapd left datagrams unread for {DRAIN_TIMEOUT} s")
            time.sleep(0.05)  # poll interval
    finally:
        process.send_signal(signal.SIGTERM)
        collector.log = process.communicate(timeout=60)[0]
    collector.files = sorted(os.path.join(collector.directory, name) for name in os.listdir(collector.directory)
                             if name.startswith("nfcapd.") and "current" not in name)


def export_to_nfcapd(records, directory: str, chunk: int = IPFIX_CHUNK, pause: float = IPFIX_PAUSE) -> Collector:
    """FLOW_DTYPE records over IPFIX (sensor/flows/ipfix.py) to a real nfcapd; the collector with its files."""
    from sensor.flows.ipfix import IpfixExporter

    with nfcapd(directory) as collector:
        exporter = IpfixExporter(collector.endpoint)
        for start in range(0, len(records), chunk):
            exporter.export(records[start:start + chunk])
            time.sleep(pause)  # deliberate pacing of the sender (see IPFIX_PAUSE), not a wait
        exporter.close()
        if exporter.send_errors:
            raise RuntimeError(f"IPFIX export: {exporter.send_errors} send errors")
    return collector
