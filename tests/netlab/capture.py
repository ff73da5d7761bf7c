"""tcpdump inside a lab namespace (started before the traffic, flushed after it), and its DNS read back."""

from __future__ import annotations

import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dnslib import QTYPE, DNSError, DNSRecord

if TYPE_CHECKING:
    from .lab import NetLab

DRAIN_TIMEOUT = 30.0  # seconds for tcpdump to write every packet the kernel handed it
SETTLED = 2.0  # seconds both counts stay the same: what is still missing then, libpcap dropped and never writes
STOP_TIMEOUT = 5


@contextmanager
def tcpdump(lab: NetLab, ns: str, iface: str, path: Path, bpf: str = "port 53") -> Iterator[Path]:
    """Record `iface` in namespace role `ns` to `path` (pcap); returns once tcpdump listens."""
    # -Z root: Debian's tcpdump would otherwise drop to its own user and fail to write in the lab's folder.
    # --immediate-mode: deliver each packet at once, so stopping loses nothing that already arrived.
    argv = ["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-Z", "root", "-s", "0", "-w", str(path), bpf]
    proc = lab.popen(ns, argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    banner = proc.stderr.readline()  # "listening on IFACE, ..." once the filter is set, or an error and EOF
    if "listening on" not in banner:
        proc.wait(STOP_TIMEOUT)
        raise RuntimeError(f"tcpdump did not start in {ns}/{iface}: {banner.strip()} {proc.stderr.read().strip()}")
    try:
        yield path
    finally:
        drained(proc)
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def drained(proc: subprocess.Popen) -> None:
    """Until tcpdump has written every packet its filter received: SIGUSR1 makes it report both counts on standard
    error ("N packets captured, M packets received by filter, ..."); equal on a veth (only on `lo`, which these
    labs do not record, would the kernel's count include outgoing copies libpcap skips). They were seen to stay 2
    apart for good once under load (34 of 36: packets the kernel's filter passed and libpcap discarded before
    handing them over); counts that stay the same for SETTLED seconds are taken as final: what the test reads
    back is then all tcpdump will ever write, and the test's own checks say what is missing."""
    report = re.compile(r"(\d+) packets captured, (\d+) packets received by filter")
    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    last = None
    last_change = time.monotonic()
    try:
        while time.monotonic() < deadline:
            proc.send_signal(signal.SIGUSR1)
            while time.monotonic() < deadline and selector.select(1.0):
                line = proc.stderr.readline()
                if not line:
                    raise RuntimeError("tcpdump exited before it was stopped")
                found = report.search(line)
                if found:
                    counts = (int(found.group(1)), int(found.group(2)))
                    if counts != last:
                        last, last_change = counts, time.monotonic()
                    break
            if last and (last[0] == last[1] or time.monotonic() - last_change >= SETTLED):
                return
            time.sleep(0.05)  # poll interval
        raise RuntimeError(f"tcpdump still writing after {DRAIN_TIMEOUT} s: (captured, received) {last}")
    finally:
        selector.close()


@dataclass(frozen=True)
class DnsPacket:
    """One DNS message seen on the wire, with the addresses and ports it travelled between."""

    src: str
    sport: int
    dst: str
    dport: int
    transport: str  # "udp" or "tcp"
    msg: DNSRecord

    @property
    def qname(self) -> str:
        """The question name, lowercase, without the trailing dot ("" for the root)."""
        return str(self.msg.q.qname).lower().rstrip(".")

    @property
    def qtype(self) -> str:
        return QTYPE.get(self.msg.q.qtype)

    @property
    def is_response(self) -> bool:
        return bool(self.msg.header.qr)


def read_dns(path: Path) -> list[DnsPacket]:
    """The DNS messages of a capture, in order. A TCP segment holding one whole message (as dig's and
    unbound's do here) is read after its 2-byte length; anything else is left out."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import rdpcap

    found = []
    for pkt in rdpcap(str(path)):
        ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
        l4 = pkt.getlayer(UDP) or pkt.getlayer(TCP)
        if ip is None or l4 is None:
            continue
        payload = bytes(l4.payload)
        transport = "udp" if isinstance(l4, UDP) else "tcp"
        if transport == "tcp":
            if len(payload) < 2 or int.from_bytes(payload[:2], "big") != len(payload) - 2:
                continue
            payload = payload[2:]
        try:
            msg = DNSRecord.parse(payload)
        except DNSError:
            continue
        if msg.questions:
            found.append(DnsPacket(ip.src, int(l4.sport), ip.dst, int(l4.dport), transport, msg))
    return found
