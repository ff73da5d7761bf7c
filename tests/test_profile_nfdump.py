"""The profile against the report's own commands, run in nfdump (Debian's nfdump package: SiLK is not packaged).

The flows of pcaps/report-network.pcap go over IPFIX to a real nfcapd; each report step is then one nfdump
statistics query (`-s srcip/packets`, the rwstats of the report) over the file nfcapd wrote, and its bins must
be the profile's tables.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import PCAPS
from sensor.flows.build import flows_from_captures
from sensor.flows.ipfix import IpfixExporter
from sensor.flows.profile import profile

pytestmark = pytest.mark.skipif(not (shutil.which("nfcapd") and shutil.which("nfdump")),
                                reason="needs nfcapd and nfdump (Debian package nfdump; make system-deps)")

NET = "203.0.113.0/24"
OUT = f"src net {NET} and not dst net {NET}"  # the report's --type=out
MAIL = "proto tcp and (port 25 or port 110 or port 143 or port 465 or port 587 or port 993 or port 995)"
VPN = ("(proto 47 or proto 50 or proto 51 or (proto udp and (port 500 or port 4500 or port 1701)) "
       "or (proto tcp and port 1723))")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """(records, nfcapd file): the capture's flows as nfcapd wrote them at SIGTERM."""
    records = flows_from_captures([str(PCAPS / "report-network.pcap")], internal=[NET])
    directory = tmp_path_factory.mktemp("nfcapd")
    port = _free_udp_port()
    collector = subprocess.Popen(["nfcapd", "-w", str(directory), "-b", "127.0.0.1", "-p", str(port), "-t", "3600"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 10
        while not _port_taken(port):
            assert collector.poll() is None, collector.stdout.read()
            assert time.monotonic() < deadline, "nfcapd did not bind its port"
            time.sleep(0.05)
        exporter = IpfixExporter(f"127.0.0.1:{port}")
        for start in range(0, len(records), 200):  # paced: loopback UDP drops what a busy collector cannot take
            exporter.export(records[start:start + 200])
            time.sleep(0.01)
        exporter.close()
        assert exporter.send_errors == 0
        time.sleep(0.5)
    finally:
        collector.send_signal(signal.SIGTERM)
        log = collector.communicate(timeout=20)[0]
    files = [name for name in os.listdir(directory) if name.startswith("nfcapd.") and "current" not in name]
    assert len(files) == 1, (files, log)
    path = str(directory / files[0])
    assert sum(bins(path, "srcip", "any", 0).values()) == int(records["packets"].sum()), f"nfcapd lost flows: {log}"
    return records, path


def bins(path: str, field: str, expression: str, top: int) -> dict[str, int]:
    """nfdump -s FIELD/packets: address -> packets, in nfdump's order (top 0: every bin)."""
    done = subprocess.run(["nfdump", "-r", path, "-q", "-n", str(top), "-s", f"{field}/packets", "-o", "csv",
                           expression], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(done.stdout.splitlines()))
    header = next(i for i, row in enumerate(rows) if row[:1] == ["ts"])
    out = {}
    for row in rows[header + 1:]:
        if len(row) < 8 or not row[0][:1].isdigit():
            break  # the summary after the bins
        out[row[4]] = int(row[7])
    return out


def over_threshold(table: dict[str, int], percent: float = 1.0) -> dict[str, int]:
    total = sum(table.values())
    return {ip: n for ip, n in table.items() if n * 100 >= percent * total}


def test_step1_top_destinations(collected) -> None:
    records, path = collected
    theirs = bins(path, "dstip", f"{OUT} and proto udp and dst port 53", 10)
    ours = profile(records, [NET]).top_destinations
    assert [(t.ip, t.packets) for t in ours] == list(theirs.items())


def test_steps2_to_5_servers_clients_recursive_iterative(collected) -> None:
    records, path = collected
    servers = over_threshold(bins(path, "srcip", f"{OUT} and proto udp and src port 53", 0))
    clients = over_threshold(bins(path, "srcip", f"{OUT} and proto udp and dst port 53", 0))
    ours = profile(records, [NET])
    assert {t.ip: t.packets for t in ours.dns_servers} == servers
    assert {t.ip: t.packets for t in ours.dns_clients} == clients
    assert set(ours.recursive) == set(servers) & set(clients)  # rwsettool --intersect
    assert set(ours.iterative) == set(servers) - set(clients)  # rwsettool --difference
    assert set(ours.recursive) == {"203.0.113.51", "203.0.113.52"} and ours.iterative == ("203.0.113.50",)


def test_vpn_and_mail_assets(collected) -> None:
    records, path = collected
    ours = profile(records, [NET])
    assert {a.ip: a.packets for a in ours.vpn} == bins(path, "srcip", f"{OUT} and {VPN}", 0)
    assert {a.ip: a.packets for a in ours.mail} == bins(path, "srcip", f"{OUT} and {MAIL}", 0)


def test_port_53_to_53(collected) -> None:
    records, path = collected
    theirs = bins(path, "srcip", f"(src net {NET} or dst net {NET}) and src port 53 and dst port 53", 0)
    found = [a for a in profile(records, [NET]).anomalies if a.kind == "port_53_to_53"]
    assert [(a.ip, a.peer, a.packets) for a in found] == [("203.0.113.52", "198.51.100.53", sum(theirs.values()))]
