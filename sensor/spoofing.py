"""Hit fields for spoofing checks (docs/events.md): source.mac, truesource.tunnel {path, outer} and
truesource.tcp.handshake, from the record's appended fields. Imports nothing from sensor/: sensor/events.py uses
it, and sensor/anomalies.py (which encodes through sensor/events.py) must not be imported by it (no import circle).
"""

from __future__ import annotations

import socket
from typing import Any


def ip_text(address: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(address) == 4 else socket.AF_INET6, address)


def mac_text(mac: bytes) -> str:
    """ECS form: upper-case hex pairs joined by hyphens."""
    return "-".join(f"{b:02X}" for b in mac)


def spoofing_fields(msg: Any) -> tuple[dict, dict]:
    """(extra `source` fields, extra `truesource` fields) of a hit from the record's appended fields: the client's
    MAC, the tunnel's path and outer addresses, and whether the TCP handshake was seen."""
    source: dict = {}
    extra: dict = {}
    if msg.src_mac is not None:
        source["mac"] = mac_text(msg.src_mac)
    if msg.tunnel is not None:
        tunnel: dict = {"path": msg.tunnel}
        if msg.tunnel_outer is not None:
            outer_src, outer_dst = msg.tunnel_outer
            tunnel["outer"] = {"source": {"ip": ip_text(outer_src)}, "destination": {"ip": ip_text(outer_dst)}}
        extra["tunnel"] = tunnel
    if msg.transport == 6:
        extra["tcp"] = {"handshake": bool(msg.tcp_handshake)}
    return source, extra
