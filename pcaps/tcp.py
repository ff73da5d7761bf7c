"""Captures of DNS over TCP: the 2-byte length framing, segments split and joined, gaps, retransmissions."""

from __future__ import annotations

from pcaps.craft import (
    CLIENT4,
    CLIENT4_B,
    CLIENT_MAC,
    DLT_EN10MB,
    RESOLVER4,
    RESOLVER_MAC,
    Timeline,
    answer,
    ether,
    query,
    tcp_framed,
    tcp_seg,
)

CLIENT_ISN = 1000
SERVER_ISN = 5000


class Direction:
    """One side of a connection: sends segments with the right sequence numbers so the capture stays consistent."""

    def __init__(self, t: Timeline, src: str, sport: int, dst: str, dport: int, isn: int, to_client: bool) -> None:
        self.t, self.src, self.sport, self.dst, self.dport = t, src, sport, dst, dport
        self.seq = isn
        self.ack = 0
        self.macs = (RESOLVER_MAC, CLIENT_MAC) if to_client else (CLIENT_MAC, RESOLVER_MAC)

    def send(self, payload: bytes = b"", flags: str = "PA", seq: int | None = None) -> int:
        """One segment at `seq` (default: the next byte); returns its frame number."""
        at = self.seq if seq is None else seq
        segment = tcp_seg(self.src, self.sport, self.dst, self.dport, at, self.ack, flags, payload)
        frame = self.t.add(ether(*self.macs) / segment)
        if seq is None:
            self.seq += len(payload) + (1 if "S" in flags or "F" in flags else 0)
        return frame


def tcp_framing() -> tuple[int, Timeline]:
    """One connection with a handshake: every in-order way a message can be laid over segments."""
    t = Timeline(2000)
    client = Direction(t, CLIENT4, 41000, RESOLVER4, 53, CLIENT_ISN, to_client=False)
    server = Direction(t, RESOLVER4, 53, CLIENT4, 41000, SERVER_ISN, to_client=True)
    client.send(flags="S")  # 1 SYN
    server.ack = client.seq
    server.send(flags="SA")  # 2 SYN-ACK
    client.ack = server.seq
    client.send(flags="A")  # 3 ACK

    q1 = query("one.evil.example", dns_id=0x2001)
    q2 = query("www.example.org", dns_id=0x2002)
    q3 = query("two.evil.example", 28, dns_id=0x2003)
    client.send(tcp_framed(q1, q2, q3))  # 4 three messages in one segment: hits q1, q3

    q4 = tcp_framed(query("three.badcdn.test", dns_id=0x2004))
    client.send(q4[:12])  # 5 split over three segments
    client.send(q4[12:22])  # 6
    client.send(q4[22:])  # 7 hit q4 (the frame that completes it)

    q5 = tcp_framed(query("four.evil.example", dns_id=0x2005))
    client.send(q5[:20])  # 8 split over two segments
    retransmitted_seq = client.seq
    client.send(q5[20:])  # 9 hit q5

    q6 = query("five.zip", dns_id=0x2006)
    client.send(tcp_framed(q6)[:2])  # 10 the length prefix alone
    client.send(q6)  # 11 hit q6

    client.send(q5[20:], seq=retransmitted_seq)  # 12 retransmission of frame 9: no second hit

    q7 = tcp_framed(query("six.evil.example", dns_id=0x2007))
    q8 = tcp_framed(query("seven.evil.example", dns_id=0x2008))
    client.send(q7 + q8[:5])  # 13 hit q7; q8 starts in the same segment
    client.send(q8[5:])  # 14 hit q8

    server.ack = client.seq
    server.send(flags="A")  # 15 ACK only
    server.send(tcp_framed(answer("one.evil.example", "192.0.2.66", dns_id=0x2001),
                           answer("two.evil.example", "192.0.2.66", 28, dns_id=0x2003)))  # 16 two responses
    client.ack = server.seq
    client.send(flags="FA")  # 17 FIN
    server.ack = client.seq
    server.send(flags="FA")  # 18 FIN
    client.ack = server.seq
    client.send(flags="A")  # 19 last ACK
    return DLT_EN10MB, t


def tcp_gap() -> tuple[int, Timeline]:
    """A connection seen mid-stream (no handshake): a lost segment, its late arrival, a zero length prefix."""
    t = Timeline(2100)
    client = Direction(t, CLIENT4_B, 41001, RESOLVER4, 53, 20000, to_client=False)
    client.ack = 9000
    lost = tcp_framed(query("lost.evil.example", dns_id=0x2101))
    client.send(lost[:20])  # 1 first part of a message: starts the stream
    late_seq = client.seq
    client.seq += len(lost) - 20  # the segment with the rest of it is not seen (yet)
    client.send(tcp_framed(query("after-gap.evil.example", dns_id=0x2102)))  # 2 tcp_gap; hit: starts afresh
    client.send(lost[20:], seq=late_seq)  # 3 the missing segment, late: wholly before, a retransmission
    client.send(b"\x00\x00")  # 4 a zero length prefix: dns_too_short
    client.send(tcp_framed(query("zero-after.evil.example", dns_id=0x2103)))  # 5 hit
    client.send(flags="RA")  # 6 RST
    return DLT_EN10MB, t
