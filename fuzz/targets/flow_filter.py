"""nfdump filter expressions (sensor/flows/filter.py): only FilterError may come out of compiling one, and a
compiled filter must obey the logic it claims on a fixed set of flow records: `not (F)` selects exactly the
records F does not, `(F) and (F)` and `(F) or (F)` select what F does.

Input: the expression as UTF-8 text (invalid bytes replaced).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sensor.flows.filter import MAX_FILTER_LENGTH, FilterError, compile_filter
from sensor.flows.record import make_records

INSTRUMENT = ("sensor.flows.filter",)

# A few records that tell the filter's fields apart: both families, the transports, ICMP, a VLAN, sizes.
RECORDS = make_records([
    {"src": "192.168.0.101", "dst": "192.168.0.1", "src_port": 50000, "dst_port": 53, "proto": 17,
     "packets": 1, "bytes": 70, "start_us": 0, "end_us": 0},
    {"src": "192.168.70.2", "dst": "8.8.8.8", "src_port": 53, "dst_port": 53, "proto": 17, "vlan": 10,
     "packets": 40, "bytes": 4_000, "start_us": 1_000_000, "end_us": 3_500_000},
    {"src": "10.0.0.5", "dst": "192.168.2.4", "src_port": 40000, "dst_port": 443, "proto": 6, "tcp_flags": 0x12,
     "packets": 12, "bytes": 9_000, "start_us": 0, "end_us": 60_000_000},
    {"src": "192.168.1.2", "dst": "192.168.2.7", "src_port": 0, "dst_port": 0x0800, "proto": 1,
     "packets": 3, "bytes": 252, "start_us": 5, "end_us": 9},
    {"src": "2001:db8::1", "dst": "2001:db8:1::53", "src_port": 5353, "dst_port": 53, "proto": 17,
     "packets": 2, "bytes": 200, "start_us": 0, "end_us": 1_000},
    {"src": "198.51.100.9", "dst": "192.168.0.50", "src_port": 0, "dst_port": 0, "proto": 50,
     "packets": 100, "bytes": 150_000, "start_us": 0, "end_us": 1_800_000_000},
])

SEEDS = (
    "dst port 53",
    "dst port 53 and not dst ip 192.168.0.1 and src net 192.168.0.0/16 and not dst net 8.8.0.0/16",
    "src ip 192.168.0.101 or src ip 192.168.70.2",
    "dst ip 192.168.2.4 and dst port < 10000 and not proto icmp",
    "src and dst net 192.168/16",
    "net 2001:db8::/32 and (proto udp or proto 50)",
    "packets > 10 and bytes >= 1k or duration > 1000",
    "port in [53 443] and not flags S",
    "src net 192.168.2.0 255.255.255.0",
    "vlan 10 or ipv6",
)


def fuzz_one(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        flow_filter = compile_filter(text)
    except FilterError:
        return
    mask = flow_filter.mask(RECORDS)
    assert mask.dtype == bool and mask.shape == (len(RECORDS),), (text, mask)
    if not text.strip() or "#" in text:  # an empty filter passes all; a comment would swallow the wrapping
        return
    try:
        negated = compile_filter(f"not ({text})").mask(RECORDS)
        both = compile_filter(f"({text}) and ({text})").mask(RECORDS)
        either = compile_filter(f"({text}) or ({text})").mask(RECORDS)
    except FilterError as err:
        if len(text) > MAX_FILTER_LENGTH - 32 or "nest" in err.reason:  # the wrapping crossed a limit
            return
        raise AssertionError(f"{text!r} compiles, but not when wrapped: {err}") from err
    assert np.array_equal(negated, ~mask), f"not ({text!r}) does not select the complement"
    assert np.array_equal(both, mask), text
    assert np.array_equal(either, mask), text


def seeds() -> Iterator[bytes]:
    for expression in SEEDS:
        yield expression.encode()
