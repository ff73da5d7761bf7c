"""The profile against the report's own commands, run in nfdump (Debian's nfdump package: SiLK is not packaged).

The flows of pcaps/report-network.pcap go over IPFIX to a real nfcapd; each report step is then one nfdump
statistics query (`-s srcip/packets`, the rwstats of the report) over the file nfcapd wrote, and its bins must
be the profile's tables.
"""

from __future__ import annotations

import csv
import shutil
import subprocess

import pytest
from nfcapd import export_to_nfcapd

from conftest import PCAPS
from sensor.flows.build import flows_from_captures
from sensor.flows.profile import profile

pytestmark = pytest.mark.skipif(not (shutil.which("nfcapd") and shutil.which("nfdump")),
                                reason="needs nfcapd and nfdump (Debian package nfdump; make system-deps)")

NET = "203.0.113.0/24"
OUT = f"src net {NET} and not dst net {NET}"  # the report's --type=out
MAIL = "proto tcp and (port 25 or port 110 or port 143 or port 465 or port 587 or port 993 or port 995)"
VPN = ("(proto 47 or proto 50 or proto 51 or (proto udp and (port 500 or port 4500 or port 1701)) "
       "or (proto tcp and port 1723))")


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """(records, nfcapd file): the capture's flows as nfcapd wrote them at SIGTERM."""
    records = flows_from_captures([str(PCAPS / "report-network.pcap")], internal=[NET])
    collector = export_to_nfcapd(records, str(tmp_path_factory.mktemp("nfcapd")))
    assert len(collector.files) == 1, (collector.files, collector.log)
    path = collector.files[0]
    log = collector.log
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
