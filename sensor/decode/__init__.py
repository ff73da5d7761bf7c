"""The pure-Python reference decoder: the readable spec of docs/decoding.md and the fast path's test oracle.

Layer by layer: `link` (link types, VLAN tags), `ip` (IPv4, IPv6 and its extension headers), `transport`
(UDP and TCP headers), `tcpstream` (per-direction TCP state and DNS's 2-byte framing), `dnsmsg` (DNS header,
first question, name limits and escaping), `loop` (`ReferenceLoop`, the twin of `sensor._loop.FastLoop`).
Slow on purpose: it favours plain code over speed.
"""

from sensor.decode.loop import ReferenceLoop

__all__ = ["ReferenceLoop"]
