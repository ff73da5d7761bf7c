"""The seed report's sample network (CMU/SEI-2012-TR-006, sections 5.3-5.5) as a capture: report-network.pcap.

`python -m pcaps.make_report_network [DIR]` writes it (pcaps/make_pcaps.py writes it with the others).
`truesource profile pcaps/report-network.pcap --internal 203.0.113.0/24` must find the report's answers;
tests/test_profile.py holds it to the tables below, which follow from this design, not from a run.

Internal network 203.0.113.0/24 (the report's). External hosts in 192.0.2.0/24 and 198.51.100.0/24.
Every conversation has both halves; only the outbound half (internal source, external destination) is
counted by the report's `--type=out` commands, so every count below is of OUTBOUND packets.

DNS queries out (UDP to port 53; 1000 packets, each answered by one inbound packet):
  client          198.51.100.1  192.0.2.1  198.51.100.2  gtld G1..G7          other          total   share
  .33 (gateway)   300           38         -             -                    -              338     33.8 %
  .51 (ns1)       -             40         20            37 35 32 31 30 29 28 -              282     28.2 %
  .52 (ns2)       -             40         16            29 27 26 25 24 23 23 198.51.100.53:1 234     23.4 %
  .222 (imail)    -             -          74            -                    -               74      7.4 %
  .220 (proxy)    27            38         -             -                    -               65      6.5 %
  .140            -             -          -             -                    198.51.100.99:3  3      0.3 %
  .141            -             -          -             -                    198.51.100.99:2  2      0.2 %
  .142            1             1          -             -                    -                2      0.2 %
  G1..G7 = 192.0.2.31..37 ("gtld servers"). The one .52 packet to 198.51.100.53 goes from port 53 to port 53
  (an old server-to-server query) and is answered from 53 to 53.
  Top destinations: 198.51.100.1 328 (32.8 %), 192.0.2.1 157 (15.7), 198.51.100.2 110 (11.0), then
  192.0.2.31..37 with 66 62 58 56 54 52 51; cumulative after ten 99.4 %; 198.51.100.99 (5) and
  198.51.100.53 (1) are 11th and 12th.

DNS answers out (UDP from port 53; 500 packets, each after one inbound query from an external client):
  .50 (ns) 250 = 50.0 %, .51 150 = 30.0 %, .52 96 = 19.2 % (95 answers and the 53-to-53 query),
  .77 4 = 0.8 % (answers 192.0.2.150 twice and 198.51.100.150 twice): under 1 %, so not a server.
DNS over TCP (4 streams, 3 packets each way: SYN or SYN-ACK, one message, FIN; not in the UDP shares):
  .51 asks 192.0.2.1 and .52 asks 198.51.100.2 over TCP; .51 answers 192.0.2.60 and .52 answers 192.0.2.61.
  So .51 and .52 use protocols 6 and 17 both as server and as client (report Table 15); .50 only 17.
Internal DNS (neither outbound nor counted in the tables above): 203.0.113.100 asks .51 20 times and
  asks 203.0.113.66 twice; each is answered. .66 is a DNS server nobody listed.

Expected profile (threshold 1 %):
  servers .50 .51 .52; clients .33 .51 .52 .222 .220; recursive .51 .52; iterative .50.
  Anomalies:
    port_53_to_53    .52 with 198.51.100.53: 2 packets (one each way), 100 % of the 53-to-53 packets.
    unlisted_server  .77: 4 packets, 2 peers; .66: 2 packets, 1 peer (203.0.113.100). Share of all packets
                     sent from port 53 by internal hosts to ports other than 53 (UDP and TCP, any
                     destination): 250 + 150 + 20 + 3 + 95 + 3 + 4 + 2 = 527.
    direct_query     .33 (338, peers 2, top 198.51.100.1), .222 (74, 1, 198.51.100.2),
                     .220 (65, 2, 192.0.2.1): clients that are not the local resolvers.
    low_volume       .140 (3, 1 peer 198.51.100.99), .141 (2, 198.51.100.99), .142 (2, 2 peers).

VPN (report Table 16; outbound, 200 packets; every packet answered by one inbound packet):
  .33   TCP 1723 (PPTP control, serving 198.51.100.70)   10   5 %
        GRE (47, PPTP data, to 198.51.100.70)            40  20 %
  .35   UDP 500 <-> 500 (IKE, with 192.0.2.80)           10   5 %
        UDP 1701 <-> 1701 (L2TP, with 198.51.100.71)     10   5 %
        UDP 4500 <-> 4500 (IKE NAT-T, with 192.0.2.80)   20  10 %
        ESP (50, to 192.0.2.80)                         100  50 %
        AH (51, to 192.0.2.81)                           10   5 %
  The report's vpn.set: .33 and .35.

Mail (report Table 13; TCP, outbound, 200 packets; each session's inbound half has as many packets):
  .195 (sulu)      serves 25: 16 (8 %), 465: 4 (2 %); sends to 25: 10 (5 %)
  .221 (omail)     serves 25: 20 (10 %), 993: 20 (10 %), 995: 10 (5 %); sends to 25: 10 (5 %)
  .222 (imail)     serves 25: 20 (10 %), 110: 10 (5 %), 143: 10 (5 %), 587: 20 (10 %); sends to 25: 10 (5 %)
  .231 (smtpfw)    serves 25: 20 (10 %); sends to 25: 20 (10 %)
  .221 and .222 also serve HTTP (port 80, 6 packets each way), the report's "plain-text email login": web
  traffic, which the mail table does not count.

What the DNS decoder makes of it (pcaps/expectations.toml): 3890 frames; 1525 DNS queries and 1525
responses (1000 + 499 + 22 UDP exchanges, 4 TCP); 16 TCP segments on port 53 without payload (4 per
stream); 524 packets on other ports (PPTP control 20, IKE/NAT-T/L2TP 80, mail 400, HTTP 24); 220 that are
neither UDP nor TCP (ESP, AH); 80 GRE version 1 (PPTP's enhanced GRE, not a mirror tunnel): bad_tunnel.
No name is in pcaps/pcaps.rules: no hits.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Packet, Raw

from pcaps.craft import DLT_EN10MB, Timeline, answer, ether, query, tcp_framed, write_pcap

HERE = Path(__file__).resolve().parent
NAME = "report-network.pcap"
INTERNAL = "203.0.113.0/24"


def inside(host: int) -> str:
    return f"203.0.113.{host}"


PUBLIC_RESOLVER, OTHER_RESOLVER, PROVIDER = "198.51.100.1", "192.0.2.1", "198.51.100.2"
GTLD = [f"192.0.2.{31 + i}" for i in range(7)]
OLD_SERVER = "198.51.100.53"  # answers 53 to 53
LONE_SERVER = "198.51.100.99"  # the one server the low-volume hosts ask

# client -> [(destination, packets)]: the "DNS queries out" table of the docstring.
QUERIES: dict[str, list[tuple[str, int]]] = {
    inside(33): [(PUBLIC_RESOLVER, 300), (OTHER_RESOLVER, 38)],
    inside(51): [(OTHER_RESOLVER, 40), (PROVIDER, 20), *zip(GTLD, (37, 35, 32, 31, 30, 29, 28), strict=True)],
    inside(52): [(OTHER_RESOLVER, 40), (PROVIDER, 16), *zip(GTLD, (29, 27, 26, 25, 24, 23, 23), strict=True)],
    inside(222): [(PROVIDER, 74)],
    inside(220): [(PUBLIC_RESOLVER, 27), (OTHER_RESOLVER, 38)],
    inside(140): [(LONE_SERVER, 3)],
    inside(141): [(LONE_SERVER, 2)],
    inside(142): [(PUBLIC_RESOLVER, 1), (OTHER_RESOLVER, 1)],
}
# server -> answers sent to external clients (the 53-to-53 query of .52 is apart).
ANSWERS = {inside(50): 250, inside(51): 150, inside(52): 95}
EXTERNAL_CLIENTS = [f"192.0.2.{100 + i}" for i in range(10)] + [f"198.51.100.{100 + i}" for i in range(10)]
UNLISTED_SERVER_CLIENTS = ["192.0.2.150", "198.51.100.150", "192.0.2.150", "198.51.100.150"]


class Network:
    """A Timeline plus ephemeral ports and DNS ids that never repeat: each conversation its own flow."""

    def __init__(self) -> None:
        self.timeline = Timeline(start=7200, step_usec=1000)
        self.port = 40000
        self.dns_id = 0

    def ephemeral(self) -> int:
        self.port += 1
        return self.port

    def add(self, src: str, dst: str, layer: Packet) -> None:
        self.timeline.add(ether() / IP(src=src, dst=dst, id=0x4242, ttl=64) / layer)

    def dns_exchange(self, client: str, server: str, client_port: int | None = None, server_port: int = 53) -> None:
        """One UDP query and its answer."""
        self.dns_id = (self.dns_id + 1) & 0xFFFF
        name = f"q{self.dns_id}.example.com"
        cport = client_port if client_port is not None else self.ephemeral()
        self.add(client, server, UDP(sport=cport, dport=server_port) / Raw(query(name, dns_id=self.dns_id)))
        self.add(server, client, UDP(sport=server_port, dport=cport) /
                 Raw(answer(name, "192.0.2.250", dns_id=self.dns_id)))

    def tcp_session(self, client: str, server: str, server_port: int, packets_each_way: int,
                    requests: list[bytes] | None = None, replies: list[bytes] | None = None) -> None:
        """A TCP session with exactly `packets_each_way` segments from each side: SYN and SYN-ACK, data back
        and forth, FIN-ACK from each side. `requests`/`replies` give the data (default: small filler)."""
        cport = self.ephemeral()
        middle = packets_each_way - 2
        requests = requests if requests is not None else [b"C" * 24] * middle
        replies = replies if replies is not None else [b"S" * 40] * middle
        cseq, sseq = 1000, 5000
        self.add(client, server, TCP(sport=cport, dport=server_port, flags="S", seq=cseq, window=64240))
        self.add(server, client, TCP(sport=server_port, dport=cport, flags="SA", seq=sseq, ack=cseq + 1,
                                     window=64240))
        cseq, sseq = cseq + 1, sseq + 1
        for request, reply in zip(requests, replies, strict=True):
            self.add(client, server, TCP(sport=cport, dport=server_port, flags="PA", seq=cseq, ack=sseq,
                                         window=64240) / Raw(request))
            cseq += len(request)
            self.add(server, client, TCP(sport=server_port, dport=cport, flags="PA", seq=sseq, ack=cseq,
                                         window=64240) / Raw(reply))
            sseq += len(reply)
        self.add(client, server, TCP(sport=cport, dport=server_port, flags="FA", seq=cseq, ack=sseq, window=64240))
        self.add(server, client, TCP(sport=server_port, dport=cport, flags="FA", seq=sseq, ack=cseq + 1,
                                     window=64240))

    def dns_over_tcp(self, client: str, server: str) -> None:
        self.dns_id = (self.dns_id + 1) & 0xFFFF
        name = f"big{self.dns_id}.example.com"
        self.tcp_session(client, server, 53, 3, [tcp_framed(query(name, dns_id=self.dns_id))],
                         [tcp_framed(answer(name, "192.0.2.251", dns_id=self.dns_id))])

    def both_ways(self, a: str, b: str, make_layer, count: int) -> None:
        """`count` packets from a to b, each followed by one from b to a."""
        for i in range(count):
            self.add(a, b, make_layer(i, outbound=True))
            self.add(b, a, make_layer(i, outbound=False))


def esp(spi: int):
    def make(i: int, outbound: bool) -> Packet:
        return Raw(struct.pack("!II", spi if outbound else spi + 1, i + 1) + b"\xe5" * 48)
    return make


def ah(spi: int):
    def make(i: int, outbound: bool) -> Packet:
        # next header 4 (IPv4 inside), length 4 (= 24 bytes - 8) / 4 - 2, reserved, SPI, sequence, 12-byte ICV
        return Raw(struct.pack("!BBHII", 4, 4, 0, spi if outbound else spi + 1, i + 1) + b"\xa4" * 12 + b"\x45" * 20)
    return make


def enhanced_gre(call_id: int):
    """PPTP's GRE version 1 (RFC 2637 4.1): key present (payload length, call id), sequence present."""
    def make(i: int, outbound: bool) -> Packet:
        payload = b"\xff\x03\x00\x21" + b"\x47" * 32  # PPP, IPv4 inside (encrypted in real life)
        return Raw(struct.pack("!HHHHI", 0x3001, 0x880B, len(payload), call_id if outbound else call_id + 1, i + 1)
                   + payload)
    return make


def udp_both(port: int):
    def make(i: int, outbound: bool) -> Packet:
        return UDP(sport=port, dport=port) / Raw(bytes([i & 0xFF]) * 36)
    return make


def report_network() -> tuple[int, Timeline]:
    """The whole network, conversation after conversation (link type, frames)."""
    net = Network()
    # DNS queries out, answered from outside.
    for client, destinations in QUERIES.items():
        for server, count in destinations:
            for _ in range(count):
                net.dns_exchange(client, server)
    net.dns_exchange(inside(52), OLD_SERVER, client_port=53)  # port 53 to port 53
    # DNS answers out, to external clients.
    for server, count in ANSWERS.items():
        for i in range(count):
            net.dns_exchange(EXTERNAL_CLIENTS[i % len(EXTERNAL_CLIENTS)], server)
    for client in UNLISTED_SERVER_CLIENTS:
        net.dns_exchange(client, inside(77))
    # DNS over TCP, each way.
    net.dns_over_tcp(inside(51), OTHER_RESOLVER)
    net.dns_over_tcp(inside(52), PROVIDER)
    net.dns_over_tcp("192.0.2.60", inside(51))
    net.dns_over_tcp("192.0.2.61", inside(52))
    # Internal DNS: a client of the local resolver, and of a server nobody listed.
    for _ in range(20):
        net.dns_exchange(inside(100), inside(51))
    for _ in range(2):
        net.dns_exchange(inside(100), inside(66))

    # VPN: .33 a PPTP server, .35 an IPsec/L2TP gateway.
    net.tcp_session("198.51.100.70", inside(33), 1723, 10)
    gre = enhanced_gre(0x0101)
    for i in range(40):
        net.timeline.add(ether() / IP(src=inside(33), dst="198.51.100.70", proto=47, id=0x4242, ttl=64) /
                         gre(i, True))
        net.timeline.add(ether() / IP(src="198.51.100.70", dst=inside(33), proto=47, id=0x4242, ttl=64) /
                         gre(i, False))
    net.both_ways(inside(35), "192.0.2.80", udp_both(500), 10)
    net.both_ways(inside(35), "198.51.100.71", udp_both(1701), 10)
    net.both_ways(inside(35), "192.0.2.80", udp_both(4500), 20)
    for proto, peer, count, make in ((50, "192.0.2.80", 100, esp(0x1000)), (51, "192.0.2.81", 10, ah(0x2000))):
        for i in range(count):
            net.timeline.add(ether() / IP(src=inside(35), dst=peer, proto=proto, id=0x4242, ttl=64) / make(i, True))
            net.timeline.add(ether() / IP(src=peer, dst=inside(35), proto=proto, id=0x4242, ttl=64) / make(i, False))

    # Mail: each server receives on its ports from external clients and sends to an external MTA on 25.
    mta_in, mta_out, mail_user = "198.51.100.25", "192.0.2.25", "198.51.100.140"
    serving = {
        inside(195): [(25, 16), (465, 4)],
        inside(221): [(25, 20), (993, 20), (995, 10)],
        inside(222): [(25, 20), (110, 10), (143, 10), (587, 20)],
        inside(231): [(25, 20)],
    }
    sending = {inside(195): 10, inside(221): 10, inside(222): 10, inside(231): 20}
    for server, services in serving.items():
        for port, packets in services:
            net.tcp_session(mta_in if port == 25 else mail_user, server, port, packets)
        net.tcp_session(server, mta_out, 25, sending[server])
    for server in (inside(221), inside(222)):
        net.tcp_session(mail_user, server, 80, 6)
    return DLT_EN10MB, net.timeline


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else HERE
    linktype, timeline = report_network()
    path = directory / NAME
    write_pcap(path, linktype, timeline.frames)
    print(f"{path.stat().st_size:7d}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
