"""Write the flow captures and their expected flow records: `python -m pcaps.make_flow_pcaps [DIR]`.

Default DIR: pcaps/flows/ (a folder of its own: these captures are about flows, not DNS hits). Each capture is
built packet by packet here, and the flows it must give are written down beside the packets that make them,
from what scapy put on the wire (IP lengths, times), never from the sensor: `<capture>.flows.json`.
Deterministic: fixed times and addresses, so a second run writes byte-identical files.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from pcaps.craft import EPOCH, Frame, write_pcap

HERE = Path(__file__).resolve().parent / "flows"
DLT_EN10MB = 1
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
# with --internal 10.0.0.0/8 and 2001:db8:1::/48, the directions the records must carry
INTERNAL = ["10.0.0.0/8", "2001:db8:1::/48"]
TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}


class Capture:
    """Frames and the flows they must make, written side by side."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.flows: list[dict] = []

    def send(self, seconds: float | str, packet) -> int:
        """Append a frame at EPOCH + seconds; returns the IP length the flow must count."""
        frame = Ether(src=MAC_A, dst=MAC_B) / packet
        self.frames.append(Frame(bytes(frame), Decimal(EPOCH) + Decimal(str(seconds))))
        ip = frame.getlayer(IP) or frame.getlayer(IPv6)
        return len(bytes(ip)) if ip is not None else 0

    def expect(self, src: str, dst: str, proto: int, sport: int, dport: int, times: list, lengths: list[int],
               reason: str, direction: str, flags: int = 0, vlan: int | None = None) -> None:
        self.flows.append({
            "src": src, "dst": dst, "proto": proto, "src_port": sport, "dst_port": dport, "vlan": vlan,
            "start_us": _us(min(times)), "end_us": _us(max(times)), "packets": len(times), "bytes": sum(lengths),
            "tcp_flags": flags, "end_reason": reason, "direction": direction,
        })


def _us(seconds) -> int:
    return int((Decimal(EPOCH) + Decimal(str(seconds))) * 1_000_000)


def flow_timeouts() -> Capture:
    """Default timeouts (idle 15 s, active 1800 s): idle, active, TCP FIN/RST ends, ICMP, VLANs, IPv6,
    fragments, non-IP. Frames in time order."""
    c = Capture()
    dns_a = ("10.1.0.5", "192.0.2.53", 40000, 53)

    def udp_a(t):
        return c.send(t, IP(src=dns_a[0], dst=dns_a[1]) / UDP(sport=dns_a[2], dport=dns_a[3]) / Raw(b"q" * 30))

    times_a = [0, 1, 2]
    lengths_a = [udp_a(t) for t in times_a]
    # TCP, both directions; FIN ends one, RST the other (unidirectional flows)
    client, server = ("10.1.0.5", 50000), ("203.0.113.80", 443)
    fwd, rev = [], []

    def tcp(t, src, dst, flags, payload=b""):
        packet = IP(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1], flags=flags, window=1000)
        return c.send(t, packet / Raw(payload) if payload else packet)

    fwd.append(("3.0", tcp("3.0", client, server, "S")))
    rev.append(("3.1", tcp("3.1", server, client, "SA")))
    fwd.append(("3.2", tcp("3.2", client, server, "A")))
    fwd.append(("3.3", tcp("3.3", client, server, "PA", b"x" * 100)))
    rev.append(("3.4", tcp("3.4", server, client, "PA", b"y" * 200)))
    fwd.append(("4.0", tcp("4.0", client, server, "FA")))
    rev.append(("4.1", tcp("4.1", server, client, "R")))
    c.expect(*client[:1], server[0], 6, client[1], server[1], [t for t, _ in fwd], [n for _, n in fwd], "end",
             "outbound", flags=TCP_FLAGS["S"] | TCP_FLAGS["A"] | TCP_FLAGS["P"] | TCP_FLAGS["F"])
    c.expect(server[0], client[0], 6, server[1], client[1], [t for t, _ in rev], [n for _, n in rev], "end",
             "inbound", flags=TCP_FLAGS["S"] | TCP_FLAGS["A"] | TCP_FLAGS["P"] | TCP_FLAGS["R"])
    # ICMP echo: type 8 code 0 is destination port 8*256; the reply, type 0, port 0
    n_req = c.send("5.0", IP(src="10.1.0.5", dst="192.0.2.1") / ICMP(type=8, code=0, id=7, seq=1) / Raw(b"p" * 56))
    n_rep = c.send("5.1", IP(src="192.0.2.1", dst="10.1.0.5") / ICMP(type=0, code=0, id=7, seq=1) / Raw(b"p" * 56))
    # one 5-tuple on two VLANs: two flows
    n_v10 = c.send("6.0", Dot1Q(vlan=10) / IP(src="10.2.0.7", dst="192.0.2.53") / UDP(sport=41000, dport=53)
                   / Raw(b"v" * 20))
    n_v20 = c.send("6.1", Dot1Q(vlan=20) / IP(src="10.2.0.7", dst="192.0.2.53") / UDP(sport=41000, dport=53)
                   / Raw(b"v" * 20))
    # IPv6, both ends internal
    v6 = [c.send(t, IPv6(src="2001:db8:1::7", dst="2001:db8:1::53") / UDP(sport=42000, dport=53) / Raw(b"6" * 40))
          for t in ("7.0", "7.5")]
    # a 3000-byte UDP datagram in three fragments: one flow, no ports (no reassembly)
    datagram = IP(src="10.1.0.9", dst="192.0.2.99", id=0x4242) / UDP(sport=43000, dport=9999) / Raw(b"f" * 3000)
    frags = [c.send(t, part) for t, part in zip(("8.0", "8.001", "8.002"), fragment(datagram, fragsize=1480),
                                                strict=True)]
    assert len(frags) == 3
    c.send("9.0", ARP(psrc="10.1.0.5", pdst="10.1.0.1"))  # not IP: no flow
    # 38 s after its last packet, flow A's key comes back: the first flow ended idle, this is a new one; this
    # packet also sends every flow quiet for over 15 s (all of the above) out as idle
    late_a = udp_a(40)
    c.expect(*dns_a[:2], 17, *dns_a[2:], times_a, lengths_a, "idle", "outbound")
    c.expect("10.1.0.5", "192.0.2.1", 1, 0, 8 * 256, ["5.0"], [n_req], "idle", "outbound")
    c.expect("192.0.2.1", "10.1.0.5", 1, 0, 0, ["5.1"], [n_rep], "idle", "inbound")
    c.expect("10.2.0.7", "192.0.2.53", 17, 41000, 53, ["6.0"], [n_v10], "idle", "outbound", vlan=10)
    c.expect("10.2.0.7", "192.0.2.53", 17, 41000, 53, ["6.1"], [n_v20], "idle", "outbound", vlan=20)
    c.expect("2001:db8:1::7", "2001:db8:1::53", 17, 42000, 53, ["7.0", "7.5"], v6, "idle", "internal")
    c.expect("10.1.0.9", "192.0.2.99", 17, 0, 0, ["8.0", "8.001", "8.002"], frags, "idle", "outbound")
    # a long NTP-like flow every 10 s (never idle) from 100 s to 2000 s: the packet at 1910 s is 1810 s after
    # the first, past the 1800 s active timeout: the first record stops at 1900 s, a second starts at 1910 s
    long_times = list(range(100, 2001, 10))
    long_lengths = [c.send(t, IP(src="10.1.0.20", dst="198.51.100.7") / UDP(sport=44000, dport=123)
                           / Raw(b"n" * 48)) for t in long_times]
    c.expect("10.1.0.5", "192.0.2.53", 17, 40000, 53, [40], [late_a], "idle", "outbound")  # ended by t=100
    first = [t for t in long_times if t <= 1900]
    c.expect("10.1.0.20", "198.51.100.7", 17, 44000, 123, first, long_lengths[: len(first)], "active", "outbound")
    c.expect("10.1.0.20", "198.51.100.7", 17, 44000, 123, long_times[len(first):], long_lengths[len(first):],
             "forced", "outbound")  # still open at the end of the capture: flushed
    return c


CAPTURES = {"flow-timeouts.pcap": flow_timeouts}


def make_all(directory: Path = HERE) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in CAPTURES.items():
        capture = build()
        path = directory / name
        write_pcap(path, DLT_EN10MB, capture.frames)
        expected = {"internal": INTERNAL, "flows": capture.flows}
        path.with_name(name + ".flows.json").write_text(json.dumps(expected, indent=1) + "\n")
        written += [path, path.with_name(name + ".flows.json")]
    return written


if __name__ == "__main__":
    for written in make_all(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(written)
