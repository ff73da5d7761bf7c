"""The flow record: one numpy structured dtype shared by the fast path, the reference builder, store and outputs.

Addresses are 128 bits in two big-endian halves (IPv4 as ::ffff:a.b.c.d), so one column pair holds both
families and a filter is two integer comparisons. Everything here is vectorized: no Python object per flow
except where a caller asks for dicts.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable

import numpy as np

FLOW_DTYPE = np.dtype([
    ("start_us", "<i8"), ("end_us", "<i8"),  # packet time, microseconds since the epoch
    ("src_hi", "<u8"), ("src_lo", "<u8"),  # 128-bit source address, big-endian halves; IPv4 as ::ffff:a.b.c.d
    ("dst_hi", "<u8"), ("dst_lo", "<u8"),
    ("src_port", "<u2"), ("dst_port", "<u2"),  # ICMP/ICMPv6: src_port 0, dst_port = type*256 + code (as SiLK)
    ("proto", "u1"), ("ip_version", "u1"), ("tcp_flags", "u1"),  # tcp_flags: OR of all packets' flags
    ("end_reason", "u1"),  # END_REASONS
    ("direction", "u1"),  # DIRECTIONS
    ("vlan", "<i4"),  # -1 untagged
    ("packets", "<u8"), ("bytes", "<u8"),  # bytes = sum of IP total lengths
])
FLOW_FIELDS: tuple[str, ...] = FLOW_DTYPE.names or ()  # the field names, in order

# Why a flow record was emitted (IPFIX flowEndReason 136 uses 1..5 in the same order).
END_IDLE, END_ACTIVE, END_END, END_FORCED, END_EVICTED = 1, 2, 3, 4, 5
END_REASONS = {END_IDLE: "idle", END_ACTIVE: "active", END_END: "end", END_FORCED: "forced", END_EVICTED: "evicted"}
# Direction from configured internal networks (names as ECS network.direction).
DIR_UNKNOWN, DIR_IN, DIR_OUT, DIR_INTERNAL, DIR_EXTERNAL = 0, 1, 2, 3, 4
DIRECTIONS = {DIR_UNKNOWN: "unknown", DIR_IN: "inbound", DIR_OUT: "outbound", DIR_INTERNAL: "internal",
              DIR_EXTERNAL: "external"}
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah", 58: "ipv6-icmp", 132: "sctp"}
ICMP_PROTOCOLS = (1, 58)
TCP_FLAG_LETTERS = "FSRPAUEC"  # bit 0 (FIN) to bit 7 (CWR), the order SiLK prints them

_V4_MAPPED_HI = 0
_V4_MAPPED_LO = 0xFFFF << 32
_LOW64 = (1 << 64) - 1


def empty(n: int = 0) -> np.ndarray:
    """n zeroed flow records (vlan -1: untagged)."""
    arr = np.zeros(n, dtype=FLOW_DTYPE)
    arr["vlan"] = -1
    return arr


def address_halves(address: str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, int]:
    """One address (text, 4 or 16 packed bytes, or ipaddress object) as (hi, lo); IPv4 mapped to ::ffff:0:0/96."""
    if isinstance(address, bytes):
        address = ipaddress.ip_address(address)
    elif isinstance(address, str):
        address = ipaddress.ip_address(address)
    if address.version == 4:
        return _V4_MAPPED_HI, _V4_MAPPED_LO | int(address)
    value = int(address)
    return value >> 64, value & _LOW64


def halves_address(hi: int, lo: int, ip_version: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """(hi, lo) back to an ipaddress object of the flow's family."""
    if ip_version == 4:
        return ipaddress.IPv4Address(int(lo) & 0xFFFFFFFF)
    return ipaddress.IPv6Address((int(hi) << 64) | int(lo))


def network_halves(cidr: str | ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int, int, int]:
    """A network as (net_hi, net_lo, mask_hi, mask_lo) in the 128-bit space (IPv4 inside ::ffff:0:0/96)."""
    net = ipaddress.ip_network(cidr, strict=False) if not isinstance(cidr, ipaddress._BaseNetwork) else cidr
    if net.version == 4:
        prefix = 96 + net.prefixlen
        value = (0xFFFF << 32) | int(net.network_address)
    else:
        prefix = net.prefixlen
        value = int(net.network_address)
    mask = ((1 << 128) - 1) ^ ((1 << (128 - prefix)) - 1)
    return value >> 64, value & _LOW64, mask >> 64, mask & _LOW64


def in_networks(hi: np.ndarray, lo: np.ndarray, networks: Iterable) -> np.ndarray:
    """Boolean array: which (hi, lo) addresses fall in any of the networks."""
    found = np.zeros(len(hi), dtype=bool)
    for net in networks:
        net_hi, net_lo, mask_hi, mask_lo = network_halves(net)
        found |= ((hi & np.uint64(mask_hi)) == np.uint64(net_hi)) & ((lo & np.uint64(mask_lo)) == np.uint64(net_lo))
    return found


def classify_direction(arr: np.ndarray, internal_networks: Iterable) -> np.ndarray:
    """Set arr["direction"] in place from the internal networks (all 0, unknown, when there are none)."""
    networks = list(internal_networks)
    if not networks:
        arr["direction"] = DIR_UNKNOWN
        return arr
    src_in = in_networks(arr["src_hi"], arr["src_lo"], networks)
    dst_in = in_networks(arr["dst_hi"], arr["dst_lo"], networks)
    direction = np.full(len(arr), DIR_EXTERNAL, dtype=np.uint8)
    direction[~src_in & dst_in] = DIR_IN
    direction[src_in & ~dst_in] = DIR_OUT
    direction[src_in & dst_in] = DIR_INTERNAL
    arr["direction"] = direction
    return arr


def _format_ipv4(lo: np.ndarray) -> np.ndarray:
    v4 = (lo & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    parts = [((v4 >> np.uint32(shift)) & np.uint32(0xFF)).astype("U3") for shift in (24, 16, 8, 0)]
    out = parts[0]
    for part in parts[1:]:
        out = np.char.add(np.char.add(out, "."), part)
    return out


def format_addresses(hi: np.ndarray, lo: np.ndarray, ip_version: np.ndarray) -> np.ndarray:
    """Addresses as text (an object array of str), vectorized: IPv4 by arithmetic, IPv6 once per distinct value."""
    n = len(hi)
    out = np.empty(n, dtype=object)
    if n == 0:
        return out
    v4 = np.asarray(ip_version) == 4
    if v4.any():
        # Distinct addresses are few next to flows: format each once, then spread by index.
        uniq, inverse = np.unique(lo[v4], return_inverse=True)
        out[v4] = _format_ipv4(uniq).astype(object)[inverse]
    v6 = ~v4
    if v6.any():
        pairs = np.empty(int(v6.sum()), dtype=[("hi", "<u8"), ("lo", "<u8")])
        pairs["hi"], pairs["lo"] = hi[v6], lo[v6]
        uniq, inverse = np.unique(pairs, return_inverse=True)
        text = np.array([str(ipaddress.IPv6Address((int(h) << 64) | int(lo_))) for h, lo_ in uniq], dtype=object)
        out[v6] = text[inverse]
    return out


def tcp_flags_text(flags: int) -> str:
    """TCP flags as letters in SiLK's order (F S R P A U E C), only those set; "" for none."""
    return "".join(letter for bit, letter in enumerate(TCP_FLAG_LETTERS) if flags & (1 << bit))


def iso_time(us: int) -> str:
    """Microseconds since the epoch as RFC 3339 UTC."""
    sec, usec = divmod(int(us), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{usec:06d}Z"


def flow_dicts(arr: np.ndarray) -> list[dict]:
    """Records as flat JSON-able dicts, keys named as in the filter language (srcip, dstip, srcport...)."""
    src = format_addresses(arr["src_hi"], arr["src_lo"], arr["ip_version"])
    dst = format_addresses(arr["dst_hi"], arr["dst_lo"], arr["ip_version"])
    rows = []
    for i, rec in enumerate(arr.tolist()):
        (start, end, _sh, _sl, _dh, _dl, sport, dport, proto, version, flags, reason, direction, vlan, packets,
         nbytes) = rec
        rows.append({
            "start": iso_time(start), "end": iso_time(end), "srcip": src[i], "dstip": dst[i],
            "srcport": sport, "dstport": dport, "proto": proto, "ip_version": version,
            "tcp_flags": tcp_flags_text(flags), "end_reason": END_REASONS.get(reason, str(reason)),
            "direction": DIRECTIONS.get(direction, str(direction)), "vlan": None if vlan < 0 else vlan,
            "packets": packets, "bytes": nbytes,
        })
    return rows


def make_records(rows: Iterable[dict]) -> np.ndarray:
    """Records from dicts with addresses as text (tests and tools): keys as FLOW_DTYPE plus "src"/"dst"."""
    rows = list(rows)
    arr = empty(len(rows))
    for i, row in enumerate(rows):
        src_hi, src_lo = address_halves(row["src"])
        dst_hi, dst_lo = address_halves(row["dst"])
        version = ipaddress.ip_address(row["src"]).version
        arr[i]["src_hi"], arr[i]["src_lo"], arr[i]["dst_hi"], arr[i]["dst_lo"] = src_hi, src_lo, dst_hi, dst_lo
        arr[i]["ip_version"] = version
        for name in FLOW_FIELDS:
            if name in row:
                arr[i][name] = row[name]
    return arr
