"""DNS messages on UDP (names, compression pointers, label types, EDNS): fast path == reference.

Input: the DNS message itself. It travels in two frames, over IPv4 and over IPv6, from a client to port 53,
with every message emitted (so the Client Subnet walk runs on queries).
"""

from __future__ import annotations

from collections.abc import Iterator

from fuzz.common import DLT_RAW, PROTO_UDP, differential, dns_payloads, ip_packet, udp_datagram

INSTRUMENT = ("sensor.decode",)


def fuzz_one(data: bytes) -> None:
    datagram = udp_datagram(data)
    differential(DLT_RAW, (53,), [ip_packet(PROTO_UDP, datagram), ip_packet(PROTO_UDP, datagram, v6=True)])


def seeds() -> Iterator[bytes]:
    seen = set()
    for payload in dns_payloads():
        if payload not in seen:
            seen.add(payload)
            yield payload
