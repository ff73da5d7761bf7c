"""Write every sample capture: `python -m pcaps.make_pcaps [DIR]` (default: this folder).

Deterministic (fixed times, fixed addresses, fixed seed): a second run writes byte-identical files, which
tests/test_pcaps.py checks. What each capture covers is in pcaps/README.md; what the sensor must make of it,
in pcaps/expectations.toml.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from pcaps import cnames, demo, files, layers, names, regressions, tcp, tunnels
from pcaps.craft import Timeline, write_pcap
from pcaps.make_report_network import report_network

HERE = Path(__file__).resolve().parent

# name -> function returning (link type, frames): written as classic microsecond pcaps.
TIMELINES: dict[str, Callable[[], tuple[int, Timeline]]] = {
    "linktype-en10mb.pcap": layers.linktype_en10mb,
    "linktype-sll.pcap": layers.linktype_sll,
    "linktype-sll2.pcap": layers.linktype_sll2,
    "linktype-raw.pcap": layers.linktype_raw,
    "linktype-null.pcap": layers.linktype_null,
    "linktype-loop.pcap": layers.linktype_loop,
    "vlan.pcap": layers.vlan,
    "padding.pcap": layers.padding,
    "lengths.pcap": layers.lengths,
    "bad-headers.pcap": layers.bad_headers,
    "ipv4-options.pcap": layers.ipv4_options,
    "ipv4-fragments.pcap": layers.ipv4_fragments,
    "ipv6-extensions.pcap": layers.ipv6_extensions,
    "tcp-framing.pcap": tcp.tcp_framing,
    "tcp-gap.pcap": tcp.tcp_gap,
    "dns-names.pcap": names.dns_names,
    "dns-fields.pcap": names.dns_fields,
    "junk-port53.pcap": names.junk_port53,
    "non-dns.pcap": names.non_dns,
    "port-5353.pcap": names.port_5353,
    "demo-resolver.pcap": demo.demo_resolver,
    "tunnels.pcap": tunnels.tunnels,
    "tunnels-nested.pcap": tunnels.tunnels_nested,
    "edns-client-subnet.pcap": tunnels.edns_client_subnet,
    "report-network.pcap": report_network,  # truesource profile: the seed report's sample network
    "cname-chains.pcap": cnames.cname_chains,  # CNAME hits, attribution through the chain (decisions 0160-0161)
}

# name -> function writing the file itself (formats and damage a Timeline cannot express).
WRITERS: dict[str, Callable[[Path], None]] = {
    "cut-off.pcap": files.cut_off,
    "pcapng.pcapng": files.pcapng,
    "nanosecond.pcap": files.nanosecond,
    "regression-cut-off-after-2038.pcap": regressions.cut_off_after_2038,
}


def capture_names() -> list[str]:
    return sorted([*TIMELINES, *WRITERS])


def make_all(directory: Path) -> list[Path]:
    """Write every capture into `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in TIMELINES.items():
        linktype, timeline = build()
        write_pcap(directory / name, linktype, timeline.frames)
        written.append(directory / name)
    for name, write in WRITERS.items():
        write(directory / name)
        written.append(directory / name)
    return written


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else HERE
    for path in make_all(directory):
        print(f"{path.stat().st_size:7d}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
