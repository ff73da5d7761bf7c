"""IPFIX (RFC 7011) export over UDP: two templates (IPv4, IPv6) of standard information elements.

Records are encoded a batch at a time through a big-endian numpy dtype laid out as the template says, so no
Python object is made per flow. Messages stay under one Ethernet MTU (UDP must not fragment, RFC 7011 10.3.3);
templates go out first and again every TEMPLATE_REFRESH seconds, since a UDP collector that restarts has no
other way to learn them (RFC 7011 8.4).
"""

from __future__ import annotations

import socket
import struct
import time

import numpy as np

from sensor.errors import StartupError
from sensor.flows.record import ICMP_PROTOCOLS

IPFIX_VERSION = 10
DEFAULT_PORT = 4739  # IANA's port for IPFIX
MAX_MESSAGE = 1400  # bytes: an IPv6 + UDP header more still fits a 1500-byte MTU
TEMPLATE_REFRESH = 60.0  # seconds between template resends over UDP
MESSAGE_HEADER = struct.Struct("!HHIII")  # version, length, export time, sequence number, observation domain
SET_HEADER = struct.Struct("!HH")  # set id, length
TEMPLATE_SET_ID = 2
TEMPLATE_IPV4 = 256
TEMPLATE_IPV6 = 257

# (information element, IANA name, length) in record order; the address pair is the only difference.
_COMMON_HEAD = [
    (152, "flowStartMilliseconds", 8),
    (153, "flowEndMilliseconds", 8),
]
_COMMON_TAIL = [
    (7, "sourceTransportPort", 2),
    (11, "destinationTransportPort", 2),
    (4, "protocolIdentifier", 1),
    (6, "tcpControlBits", 2),
    (58, "vlanId", 2),
    (136, "flowEndReason", 1),
    (2, "packetDeltaCount", 8),
    (1, "octetDeltaCount", 8),
]
TEMPLATES = {
    TEMPLATE_IPV4: _COMMON_HEAD + [(8, "sourceIPv4Address", 4), (12, "destinationIPv4Address", 4)]
    + _COMMON_TAIL + [(32, "icmpTypeCodeIPv4", 2)],
    TEMPLATE_IPV6: _COMMON_HEAD + [(27, "sourceIPv6Address", 16), (28, "destinationIPv6Address", 16)]
    + _COMMON_TAIL + [(139, "icmpTypeCodeIPv6", 2)],
}
_WIRE_TYPES = {1: "u1", 2: ">u2", 4: ">u4", 8: ">u8", 16: "V16"}


def _wire_dtype(template_id: int) -> np.dtype:
    return np.dtype([(name, _WIRE_TYPES[length]) for _, name, length in TEMPLATES[template_id]])


WIRE = {tid: _wire_dtype(tid) for tid in TEMPLATES}


def template_set() -> bytes:
    """The template set announcing both templates."""
    body = b""
    for tid, fields in TEMPLATES.items():
        body += struct.pack("!HH", tid, len(fields))
        body += b"".join(struct.pack("!HH", ie, length) for ie, _, length in fields)
    return SET_HEADER.pack(TEMPLATE_SET_ID, SET_HEADER.size + len(body)) + body


def encode_records(arr: np.ndarray, template_id: int) -> np.ndarray:
    """Flow records of one family as wire-format data records (one row of the template's dtype each)."""
    out = np.zeros(len(arr), WIRE[template_id])
    out["flowStartMilliseconds"] = arr["start_us"] // 1000
    out["flowEndMilliseconds"] = arr["end_us"] // 1000
    if template_id == TEMPLATE_IPV4:
        out["sourceIPv4Address"] = arr["src_lo"] & np.uint64(0xFFFFFFFF)
        out["destinationIPv4Address"] = arr["dst_lo"] & np.uint64(0xFFFFFFFF)
        icmp_field = "icmpTypeCodeIPv4"
    else:
        for prefix, hi, lo in (("source", "src_hi", "src_lo"), ("destination", "dst_hi", "dst_lo")):
            halves = np.empty((len(arr), 2), ">u8")
            halves[:, 0], halves[:, 1] = arr[hi], arr[lo]
            out[f"{prefix}IPv6Address"] = halves.view("V16").reshape(-1)
        icmp_field = "icmpTypeCodeIPv6"
    icmp = np.isin(arr["proto"], ICMP_PROTOCOLS)
    out["sourceTransportPort"] = arr["src_port"]
    out["destinationTransportPort"] = arr["dst_port"]
    out[icmp_field] = np.where(icmp, arr["dst_port"], 0)
    out["protocolIdentifier"] = arr["proto"]
    out["tcpControlBits"] = arr["tcp_flags"]
    out["vlanId"] = np.where(arr["vlan"] < 0, 0, arr["vlan"])
    out["flowEndReason"] = arr["end_reason"]
    out["packetDeltaCount"] = arr["packets"]
    out["octetDeltaCount"] = arr["bytes"]
    return out


def parse_endpoint(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT, or HOST alone (port 4739)."""
    host, port_text = text, str(DEFAULT_PORT)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise StartupError(f"--ipfix {text}: the port must be a number from 1 to 65535") from None
    return host, port


class IpfixExporter:
    """Sends flow records to one collector over UDP; send errors are counted, never raised into the loop."""

    def __init__(self, endpoint: str, observation_domain: int = 1, max_message: int = MAX_MESSAGE,
                 template_refresh: float = TEMPLATE_REFRESH) -> None:
        host, port = parse_endpoint(endpoint)
        try:
            family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except socket.gaierror as err:
            raise StartupError(f"--ipfix {endpoint}: cannot resolve {host}: {err.strerror}") from None
        self.address = address
        self.sock = socket.socket(family, kind, proto)
        self.domain = observation_domain
        self.max_message = max_message
        self.template_refresh = template_refresh
        self.sequence = 0  # data records sent so far (RFC 7011 3.1), modulo 2**32
        self.messages = 0
        self.records = 0
        self.send_errors = 0
        self._templates_sent = -float("inf")

    def export(self, arr: np.ndarray) -> None:
        """Send the records: templates first when due, then MTU-sized messages of one data set each."""
        now = time.monotonic()
        if now - self._templates_sent >= self.template_refresh:
            self._send(template_set(), 0)
            self._templates_sent = now
        for template_id, rows in ((TEMPLATE_IPV4, arr[arr["ip_version"] == 4]),
                                  (TEMPLATE_IPV6, arr[arr["ip_version"] != 4])):
            if not len(rows):
                continue
            wire = encode_records(rows, template_id)
            per_message = (self.max_message - MESSAGE_HEADER.size - SET_HEADER.size) // wire.itemsize
            for start in range(0, len(wire), per_message):
                chunk = wire[start : start + per_message]
                body = chunk.tobytes()
                self._send(SET_HEADER.pack(template_id, SET_HEADER.size + len(body)) + body, len(chunk))

    def _send(self, sets: bytes, records: int) -> None:
        header = MESSAGE_HEADER.pack(IPFIX_VERSION, MESSAGE_HEADER.size + len(sets), int(time.time()),
                                     self.sequence, self.domain)
        try:
            self.sock.sendto(header + sets, self.address)
        except OSError:
            self.send_errors += 1  # a collector away or a full buffer must not stop the sensor
            return
        self.messages += 1
        self.records += records
        self.sequence = (self.sequence + records) % (1 << 32)

    def close(self) -> None:
        self.sock.close()
