"""Every peer capture (../shared/pcaps/peers/, real traffic from other monitors' test suites) against tshark.

Each capture is replayed through the sensor's loop (the compiled one, as `replay` uses it) with every message
emitted; each query tshark decodes on a configured DNS port (its `.tsv`, and `.decode-as.tsv` for ports tshark does
not map by default) must come out with the same frame, client address, client port, name (tshark's wire form,
dig style) and type. Where tshark itself is wrong, the row is listed in docs/peers-differences.md and in
TSHARK_WRONG below, with the reason; nothing else may differ. The replay must also not fail: no crash, no
exception, only the documented cut-off end.
"""

from __future__ import annotations

import csv
import ipaddress
import socket
from pathlib import Path

import pytest

from conftest import PEERS
from sensor.capture.files import CaptureFile
from sensor.errors import CaptureCutOff
from sensor.loop import make_loop
from sensor.records import DnsMessage

# The DNS ports the peers' captures use: 53, mDNS 5353, LLMNR 5355, and the test ports 1053 and 8053.
PORTS = (53, 5353, 5355, 1053, 8053)
# (capture, frame) -> (the counter the sensor adds to instead, why tshark's row is wrong); each one is argued with
# its bytes in docs/peers-differences.md.
TSHARK_WRONG: dict[tuple[str, str], tuple[str, str]] = {
    ("sv-dns-forward-pointer.pcap", "1"):
        ("dns_bad_pointer", "question 1's name is a pointer forwards (RFC 1035 4.1.4: to a prior name)"),
    ("sv-dns-truncated-rname-poc2.pcap", "6"):
        ("dns_name_too_long", "a name of 7,762 characters (RFC 1035 2.3.4: 255 bytes at most)"),
}


def captures() -> list[Path]:
    return sorted(p for p in PEERS.glob("*.pcap*") if p.suffix in (".pcap", ".pcapng"))


def tshark_queries(capture: Path) -> set[tuple]:
    """(frame, client address, client port, name, type) of every first question of a query tshark decodes on
    one of PORTS, from the capture's TSVs."""
    rows = set()
    for tsv in (Path(f"{capture}.tsv"), Path(f"{capture}.decode-as.tsv")):
        if not tsv.exists():
            continue
        with open(tsv, newline="", encoding="utf-8") as handle:
            lines = [line for line in handle if not line.startswith("# ")]
        for row in csv.DictReader(lines, delimiter="\t"):
            if row["qr"] != "query" or row["q_index"] != "0":
                continue  # the sensor reports a message's first question (docs/decoding.md)
            if int(row["src_port"]) not in PORTS and int(row["dst_port"]) not in PORTS:
                continue
            name = row["qname_wire"]
            name = name[:-1] if name.endswith(".") and name != "." else name
            rows.add((int(row["frame"]), str(ipaddress.ip_address(row["src_ip"])), int(row["src_port"]), name,
                      int(row["qtype"])))
    return rows


def sensor_queries(capture: Path) -> tuple[set[tuple], dict[str, int]]:
    """The same five fields of every query the sensor decodes, and its counters."""
    file = CaptureFile(str(capture))
    # tshark checks no checksums, and many peer captures were taken on hosts with checksum offload (or on
    # loopback) and are too short for --checksums auto to notice: compared with checksums off.
    loop = make_loop(file.linktype, PORTS, {}, emit_all=True, checksums=0)
    records = []
    try:
        for batch in file.batches():
            records += loop.run_batch(batch.data, batch.meta, batch.first_frame)
    except CaptureCutOff:
        pass
    found = set()
    for r in map(DnsMessage._make, records):
        if r.is_response:
            continue
        family = socket.AF_INET if len(r.src_ip) == 4 else socket.AF_INET6
        found.add((r.frame, socket.inet_ntop(family, r.src_ip), r.src_port, r.qname, r.qtype))
    return found, loop.counters()


def test_there_are_peer_captures() -> None:
    assert len(captures()) >= 30, f"expected the peers' captures in {PEERS}"


@pytest.mark.parametrize("capture", captures(), ids=lambda p: p.name)
def test_every_query_tshark_decodes_is_decoded(capture: Path) -> None:
    expected = {row for row in tshark_queries(capture) if (capture.name, str(row[0])) not in TSHARK_WRONG}
    found, counters = sensor_queries(capture)
    missing = sorted(expected - found)
    assert not missing, f"{capture.name}: tshark decodes, the sensor does not: {missing[:5]}; counters {counters}"
    assert counters["packets"] > 0


@pytest.mark.parametrize("capture", captures(), ids=lambda p: p.name)
def test_no_query_tshark_does_not_decode(capture: Path) -> None:
    """The other way: a query the sensor reports that tshark does not is a difference too, unless listed."""
    expected = tshark_queries(capture)
    found, _ = sensor_queries(capture)
    extra = sorted(row for row in found - expected if (capture.name, str(row[0])) not in TSHARK_WRONG)
    assert not extra, f"{capture.name}: the sensor decodes, tshark does not: {extra[:5]}"


@pytest.mark.parametrize("capture, frame", sorted(TSHARK_WRONG))
def test_each_listed_difference_is_real_and_counted(capture: str, frame: str) -> None:
    """A listed difference must still exist (else it goes from the list) and the sensor must count its reason."""
    counter, _ = TSHARK_WRONG[(capture, frame)]
    path = PEERS / capture
    found, counters = sensor_queries(path)
    listed = [row for row in tshark_queries(path) if str(row[0]) == frame]
    assert listed and not [row for row in found if str(row[0]) == frame]
    assert counters[counter] >= 1
