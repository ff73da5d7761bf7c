"""Write pcaps/attacks/<form>.pcap for every form of pcaps/attacks/forms.py: `python -m pcaps.attacks.make_attacks`.

Offline, the resolver's side of each handshake is made up (SYN-ACK with a fixed ISN); frames are Ethernet from the
client's MAC (tunnels: from the sender's), 1 ms apart.
"""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from pcaps.attacks.forms import FORMS, Conversation
from pcaps.craft import DLT_EN10MB, Timeline, write_pcap

HERE = Path(__file__).resolve().parent
CLIENT_MAC, RESOLVER_MAC, STRANGER_MAC = "02:00:00:00:00:10", "02:00:00:00:00:53", "02:00:00:00:00:66"
SERVER_ISN = 880000


class CaptureConversation(Conversation):
    client, resolver = "192.0.2.10", "198.51.100.53"
    client6, resolver6 = "2001:db8:1::10", "2001:db8:53::53"
    mirror, stranger = "203.0.113.1", "192.0.2.66"

    def __init__(self, start: int) -> None:
        self.timeline = Timeline(start)

    def send(self, packet: Packet) -> None:
        mac = STRANGER_MAC if IP in packet and packet[IP].src in (self.stranger, self.mirror) else CLIENT_MAC
        self.timeline.add(Ether(src=mac, dst=RESOLVER_MAC) / packet)

    def handshake(self, sport: int, isn: int, syn_payload: bytes = b"") -> int:
        syn = self.tcp(sport, isn, 0, "S")
        self.send(syn / Raw(syn_payload) if syn_payload else syn)
        reply = (IP(src=self.resolver, dst=self.client, ttl=64)
                 / TCP(sport=53, dport=sport, seq=SERVER_ISN, ack=isn + 1, flags="SA", window=65160))
        self.timeline.add(Ether(src=RESOLVER_MAC, dst=CLIENT_MAC) / reply)
        self.send(self.tcp(sport, isn + 1, SERVER_ISN + 1, "A"))
        return SERVER_ISN + 1

    def finish(self, sport: int, seq: int) -> None:
        fin = (IP(src=self.resolver, dst=self.client, ttl=64)
               / TCP(sport=53, dport=sport, seq=SERVER_ISN + 1, ack=seq, flags="FA", window=65160))
        self.timeline.add(Ether(src=RESOLVER_MAC, dst=CLIENT_MAC) / fin)
        self.send(self.tcp(sport, seq, SERVER_ISN + 2, "A"))


def main() -> None:
    for index, (name, form) in enumerate(FORMS.items()):
        conversation = CaptureConversation(5000 + 10 * index)
        form(conversation)
        write_pcap(HERE / f"{name}.pcap", DLT_EN10MB, conversation.timeline.frames)
        print(f"{name}.pcap: {len(conversation.timeline.frames)} frames")


if __name__ == "__main__":
    main()
