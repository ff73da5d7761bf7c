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
        self.watchers: dict[int, tuple[AsyncSniffer, dict]] = {}  # client port -> its sniffer, what it saw

    def send(self, packet: Packet) -> None:
        if TCP in packet and packet[TCP].flags & 0x01:
            # A client closing as a real one does: the server's response is acknowledged first (the resolver
            # keeps resending it and never closes while it is not), then the FIN, acknowledging it too.
            sport = packet[TCP].sport
            self.server_end = self._watch(sport)
            end = self._wait(lambda: self.server_end["data_end"] is not None)
            if end:
                ack = self.server_end["data_end"]
                self._raw_send(self.tcp(sport, packet[TCP].seq, ack, "A"))
                packet[TCP].ack = ack
                del packet[TCP].chksum
        self._raw_send(packet)

    def _raw_send(self, packet: Packet) -> None:
        (self.socket6 if IPv6 in packet else self.socket4).send(packet)

    def _watch(self, sport: int) -> dict:
        """What the server sends to `sport`, as it comes: the end of its data (seq + length) and its FIN's number."""
        seen: dict = {"data_end": None, "fin_end": None}

        def note(p: Packet) -> None:
            if TCP not in p or p[TCP].sport != 53 or p[TCP].dport != sport:
                return
            length = len(bytes(p[TCP].payload))
            if length:
                seen["data_end"] = max(seen["data_end"] or 0, p[TCP].seq + length)
            if p[TCP].flags & 0x01:
                seen["fin_end"] = p[TCP].seq + length + 1  # the FIN's number follows the segment's data

        if sport not in self.watchers:
            self.watchers[sport] = (AsyncSniffer(iface=self.iface, prn=note, store=False), seen)
            self.watchers[sport][0].start()
            time.sleep(0.3)  # the sniffer's socket is open
        return self.watchers[sport][1]

    @staticmethod
    def _wait(done, timeout: float = 3.0) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def handshake(self, sport: int, isn: int, syn_payload: bytes = b"") -> int:
        syn = self.tcp(sport, isn, 0, "S")
        reply = sr1(syn / Raw(syn_payload) if syn_payload else syn, iface=self.iface, timeout=3, verbose=False)
        if reply is None or TCP not in reply:
            raise SystemExit(f"no SYN-ACK from {self.resolver}:53")
        server = reply[TCP].seq
        self.send(self.tcp(sport, isn + 1, server + 1, "A"))
        return server + 1


    def finish(self, sport: int, seq: int) -> None:
        """The server's FIN acknowledged: the connection is closed on both sides, its ports free again."""
        seen = self._watch(sport)
        if not self._wait(lambda: seen["fin_end"] is not None):
            raise SystemExit(f"no FIN from {self.resolver}:53")
        self._raw_send(self.tcp(sport, seq, seen["fin_end"], "A"))
        sniffer, _ = self.watchers.pop(sport)
        sniffer.stop()


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
