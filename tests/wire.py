"""A wire for live-capture tests: two network namespaces joined by a veth pair, no route out.

Frames injected at the `sender` end (tcpreplay, sockets) arrive on `sensor_iface` in the `sensor`
namespace, where the test runs `truesource capture`. Needs root and iproute2; `available()` says why not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def available() -> str | None:
    """None when namespaces can be made here, else the reason."""
    if os.geteuid() != 0:
        return "live capture tests need root (network namespaces)"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return None


class Wire:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.sender = f"tsw-s-{tag}"
        self.sensor = f"tsw-r-{tag}"
        self.sender_iface = "wire0"
        self.sensor_iface = "mirror0"

    def __enter__(self) -> Wire:
        run = self._ip
        run("netns", "add", self.sender)
        run("netns", "add", self.sensor)
        try:
            for ns in (self.sender, self.sensor):  # no IPv6 autoconfiguration chatter on the wire
                subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                                "net.ipv6.conf.default.disable_ipv6=1"], check=True, capture_output=True)
            run("link", "add", self.sender_iface, "netns", self.sender, "type", "veth",
                "peer", "name", self.sensor_iface, "netns", self.sensor)
            for ns, iface, address in ((self.sender, self.sender_iface, "10.98.0.2/24"),
                                       (self.sensor, self.sensor_iface, "10.98.0.1/24")):
                run("-n", ns, "addr", "add", address, "dev", iface)
                run("-n", ns, "link", "set", iface, "up")
                run("-n", ns, "link", "set", "lo", "up")
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for ns in (self.sender, self.sensor):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    def sensor_command(self, *args: str) -> list[str]:
        """`truesource ARGS` inside the sensor namespace."""
        return ["ip", "netns", "exec", self.sensor, sys.executable, "-m", "sensor", *args]

    def start_capture(self, *args: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.sensor_command("capture", "-i", self.sensor_iface, *args), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)

    def replay(self, pcap: str, pps: int | None = None, mbps: float | None = None) -> subprocess.CompletedProcess:
        """tcpreplay a capture out of the sender end, at a packet rate or a bit rate."""
        rate = ["--pps", str(pps)] if pps else (["--mbps", str(mbps)] if mbps else ["--topspeed"])
        return subprocess.run(["ip", "netns", "exec", self.sender, "tcpreplay", "-q", "-i", self.sender_iface,
                               *rate, pcap], capture_output=True, text=True, timeout=600, check=True)

    def sender_exec(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.sender, *argv], capture_output=True, text=True,
                              timeout=120, **kwargs)
