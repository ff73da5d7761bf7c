"""Send one crafted form (pcaps/attacks/forms.py) to a real resolver from inside a lab namespace, and say which of
its blocked names the resolver answered: `python -m pcaps.attacks.live FORM IFACE RESOLVER4 RESOLVER6 CLIENT4
CLIENT6` prints a JSON list of the question names of every DNS response seen.

The client addresses are not the namespace's own (the test gives the resolver a static neighbour entry for them),
so the kernel neither answers the resolver's SYN-ACK with a RST nor takes its responses: scapy plays the client's
TCP by hand, with the resolver's real ISN read off the wire.
"""

from __future__ import annotations

import json
import sys
import time

from dnslib import DNSRecord
from scapy.config import conf
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet, Raw
from scapy.sendrecv import AsyncSniffer, sr1

from pcaps.attacks.forms import FORMS, Conversation

ANSWER_WAIT = 2.0  # seconds after the last frame for the resolver's response


class LiveConversation(Conversation):
    def __init__(self, iface: str, resolver: str, resolver6: str, client: str, client6: str) -> None:
        self.iface, self.resolver, self.resolver6 = iface, resolver, resolver6
        self.client, self.client6 = client, client6
        self.mirror = self.stranger = client
        self.socket4 = conf.L3socket(iface=iface)
        self.socket6 = conf.L3socket6(iface=iface)

    def send(self, packet: Packet) -> None:
        if TCP in packet and packet[TCP].flags & 0x01:  # the server's FIN follows at once: listen first
            sport = packet[TCP].sport
            self.fin_sniffer = AsyncSniffer(iface=self.iface, count=1, lfilter=lambda p: TCP in p
                                            and p[TCP].sport == 53 and p[TCP].dport == sport and p[TCP].flags & 0x01)
            self.fin_sniffer.start()
            time.sleep(0.3)
        (self.socket6 if IPv6 in packet else self.socket4).send(packet)

    def handshake(self, sport: int, isn: int, syn_payload: bytes = b"") -> int:
        syn = self.tcp(sport, isn, 0, "S")
        reply = sr1(syn / Raw(syn_payload) if syn_payload else syn, iface=self.iface, timeout=3, verbose=False)
        if reply is None or TCP not in reply:
            raise SystemExit(f"no SYN-ACK from {self.resolver}:53")
        server = reply[TCP].seq
        self.send(self.tcp(sport, isn + 1, server + 1, "A"))
        return server + 1


    def finish(self, sport: int, seq: int) -> None:
        self.fin_sniffer.join(timeout=3)
        if self.fin_sniffer.running:
            self.fin_sniffer.stop()
        packets = self.fin_sniffer.results or []
        if not packets:
            raise SystemExit(f"no FIN from {self.resolver}:53")
        self.send(self.tcp(sport, seq, packets[0][TCP].seq + 1, "A"))


def answered_names(packets: list[Packet]) -> list[str]:
    names = []
    for packet in packets:
        payload = bytes(packet[UDP].payload) if UDP in packet else bytes(packet[TCP].payload)[2:] if TCP in packet \
            else b""
        try:
            record = DNSRecord.parse(payload)
        except Exception:  # noqa: BLE001 - anything that is not a whole DNS message is not an answer
            continue
        if record.header.qr and record.questions:
            names.append(str(record.questions[0].qname).rstrip("."))
    return sorted(set(names))


def main() -> int:
    form, iface, resolver, resolver6, client, client6 = sys.argv[1:7]
    conversation = LiveConversation(iface, resolver, resolver6, client, client6)
    sniffer = AsyncSniffer(iface=iface, filter="src port 53", store=True)
    sniffer.start()
    time.sleep(0.3)  # the sniffer's socket is open
    FORMS[form](conversation)
    time.sleep(ANSWER_WAIT)
    sniffer.stop()
    print(json.dumps(answered_names(sniffer.results or [])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
