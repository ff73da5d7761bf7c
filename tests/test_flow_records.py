"""Flow records: expected records of the flow captures, fast path == reference everywhere, the bounded table."""

from __future__ import annotations

import glob
import ipaddress
import json
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from conftest import PCAPS, PEERS
from sensor.flows.build import flows_from_captures
from sensor.flows.record import (
    DIRECTIONS,
    END_EVICTED,
    END_REASONS,
    FLOW_DTYPE,
    address_halves,
    classify_direction,
    flow_dicts,
    format_addresses,
    make_records,
)
from sensor.flows.settings import FlowSettings
from sensor.loop import compiled, make_flow_table, make_loop

FLOW_PCAPS = PCAPS / "flows"
MODES = [pytest.param(True, id="reference"), pytest.param(False, id="fast")]


def all_captures() -> list[Path]:
    found = []
    for folder in (PCAPS, FLOW_PCAPS, PEERS):
        for pattern in ("*.pcap", "*.pcapng"):
            found += [Path(p) for p in glob.glob(str(folder / pattern))]
    return sorted(found)


def comparable(row: dict) -> tuple:
    return tuple(row[k] for k in ("src", "dst", "proto", "src_port", "dst_port", "vlan", "start_us", "end_us",
                                  "packets", "bytes", "tcp_flags", "end_reason", "direction"))


def as_rows(arr: np.ndarray) -> list[tuple]:
    src = format_addresses(arr["src_hi"], arr["src_lo"], arr["ip_version"])
    dst = format_addresses(arr["dst_hi"], arr["dst_lo"], arr["ip_version"])
    return sorted(comparable({
        "src": src[i], "dst": dst[i], "proto": int(r["proto"]), "src_port": int(r["src_port"]),
        "dst_port": int(r["dst_port"]), "vlan": None if r["vlan"] < 0 else int(r["vlan"]),
        "start_us": int(r["start_us"]), "end_us": int(r["end_us"]), "packets": int(r["packets"]),
        "bytes": int(r["bytes"]), "tcp_flags": int(r["tcp_flags"]), "end_reason": END_REASONS[int(r["end_reason"])],
        "direction": DIRECTIONS[int(r["direction"])]}) for i, r in enumerate(arr))


@pytest.mark.parametrize("pure", MODES)
@pytest.mark.parametrize("capture", sorted(FLOW_PCAPS.glob("*.pcap")), ids=lambda p: p.name)
def test_flow_capture_gives_the_expected_records(capture: Path, pure: bool) -> None:
    """Idle and active timeouts, FIN/RST ends, ICMP type/code, VLANs, IPv6, fragments: as the generator wrote
    them from the packets it built (pcaps/make_flow_pcaps.py)."""
    expected = json.loads(capture.with_name(capture.name + ".flows.json").read_text())
    got = flows_from_captures([str(capture)], internal=expected["internal"], pure=pure)
    assert as_rows(got) == sorted(comparable(row) for row in expected["flows"])


def test_generator_reproduces_the_flow_captures(tmp_path: Path) -> None:
    from pcaps.make_flow_pcaps import make_all

    for path in make_all(tmp_path):
        assert path.read_bytes() == (FLOW_PCAPS / path.name).read_bytes(), f"{path.name} differs"


def test_compiled_flow_table_is_the_one_used() -> None:
    if compiled is None:
        pytest.skip("sensor._loop not built")
    assert type(make_flow_table(FlowSettings(), pure=False)).__module__ == "sensor._loop"


# Default settings, then settings small enough that idle, active and eviction all happen inside the shipped
# captures (their packets are a millisecond or so apart).
SETTINGS = [(15.0, 1800.0, 262_144), (0.0015, 0.004, 3)]


@pytest.mark.skipif(compiled is None, reason="sensor._loop not built")
@pytest.mark.parametrize("idle, active, max_flows", SETTINGS)
@pytest.mark.parametrize("capture", all_captures(), ids=lambda p: p.name)
def test_fast_path_flows_equal_reference(capture: Path, idle: float, active: float, max_flows: int) -> None:
    args = {"idle_timeout": idle, "active_timeout": active, "max_flows": max_flows, "internal": ["10.0.0.0/8"]}
    fast = flows_from_captures([str(capture)], pure=False, **args)
    reference = flows_from_captures([str(capture)], pure=True, **args)
    assert fast.dtype == reference.dtype == FLOW_DTYPE
    assert fast.tolist() == reference.tolist()  # same records in the same order


# ------------------------------------------------------------------ generated packets

def random_frame(rng: random.Random) -> bytes:
    """An Ethernet frame from a small key space (so flows repeat), sometimes tagged, fragmented, cut short."""
    v4 = rng.random() < 0.7
    hosts4, hosts6 = ["10.0.0.1", "10.0.0.2", "192.0.2.9"], ["2001:db8::1", "2001:db8::2"]
    if v4:
        ip = IP(src=rng.choice(hosts4), dst=rng.choice(hosts4))
        if rng.random() < 0.1:
            ip.flags, ip.frag = rng.choice([("MF", 0), (0, 185), ("MF", 10)])
    else:
        ip = IPv6(src=rng.choice(hosts6), dst=rng.choice(hosts6))
        if rng.random() < 0.1:
            ip = ip / IPv6ExtHdrHopByHop()
        if rng.random() < 0.1:
            ip = ip / IPv6ExtHdrFragment(offset=rng.choice([0, 0, 5]), m=rng.choice([0, 1]))
    kind = rng.random()
    if kind < 0.4:
        layer = TCP(sport=rng.choice([1000, 1001, 53]), dport=rng.choice([53, 80]),
                    flags=rng.choice(["S", "SA", "A", "PA", "FA", "R"]))
    elif kind < 0.8:
        layer = UDP(sport=rng.choice([1000, 1001]), dport=rng.choice([53, 123]))
    elif kind < 0.9:
        layer = ICMP(type=rng.choice([0, 8, 3]), code=rng.choice([0, 1])) if v4 else ICMPv6EchoRequest()
    else:
        layer = Raw(b"\x00" * rng.randrange(0, 6))  # an odd protocol number below
        ip = ip.copy()
        if v4:
            ip.proto = rng.choice([47, 50, 132])
        else:
            ip.lastlayer().nh = rng.choice([50, 132])
    packet = ip / layer / Raw(b"d" * rng.randrange(0, 40))
    link = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # fixed MACs: scapy would resolve them
    if rng.random() < 0.2:
        link = link / Dot1Q(vlan=rng.choice([5, 6]))
    frame = bytes(link / packet)
    if rng.random() < 0.05:
        frame = frame[: rng.randrange(10, len(frame))]  # cut short: the header checks decide
    return frame


def run_generated(pure: bool, frames: list[bytes], times: list[int], settings: FlowSettings):
    table = make_flow_table(settings, pure=pure)
    loop = make_loop(1, (53,), {}, pure=pure, flows=table)
    data, meta, offset = b"", [], 0
    for frame, when in zip(frames, times, strict=True):
        meta.append(struct.pack("=IIII", when // 1_000_000, when % 1_000_000, offset, len(frame)))
        offset += len(frame)
    data = b"".join(frames)
    loop.run_batch(data, b"".join(meta), 1)
    during = table.take()
    size = table.count
    table.flush()
    return during, size, table.take(), loop.counters()


@pytest.mark.skipif(compiled is None, reason="sensor._loop not built")
@pytest.mark.parametrize("seed", range(6))
def test_fast_path_flows_equal_reference_on_generated_packets(seed: int) -> None:
    rng = random.Random(seed)
    frames = [random_frame(rng) for _ in range(1500)]
    times, now = [], 1_700_000_000_000_000
    for _ in frames:
        now += rng.choice([0, 10, 1000, 200_000, 2_000_000, -500])  # bursts, gaps and a clock going back
        times.append(now)
    settings = FlowSettings(idle_timeout=1.0, active_timeout=3.0, max_flows=rng.choice([4, 16, 1000]))
    fast = run_generated(False, frames, times, settings)
    reference = run_generated(True, frames, times, settings)
    assert fast[0].tolist() == reference[0].tolist()
    assert fast[1] == reference[1]
    assert fast[2].tolist() == reference[2].tolist()
    assert fast[3] == {**reference[3], "tcp_streams": fast[3]["tcp_streams"]}
    assert len(fast[0]) + len(fast[2]) > 50


# ------------------------------------------------------------------ the bounded table

def udp_flood(count: int) -> list[bytes]:
    """`count` packets, each a new flow (unique source port and address)."""
    link = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    return [bytes(link / IP(src=str(ipaddress.IPv4Address(0x0A000000 + i // 60000)), dst="192.0.2.1")
                  / UDP(sport=1024 + i % 60000, dport=53)) for i in range(count)]


@pytest.mark.parametrize("pure", MODES)
def test_flood_of_unique_flows_stays_at_the_limit(pure: bool) -> None:
    """A scan or spoofed flood: 5,000 new keys into a 1,000-flow table. The table never holds more than 1,000;
    each flow beyond evicts the least recently updated one, counted and reported with reason `evicted`."""
    limit, count = 1000, 5000
    frames = udp_flood(count)
    settings = FlowSettings(idle_timeout=3600, active_timeout=3600, max_flows=limit)
    during, size, flushed, counters = run_generated(pure, frames, [1_700_000_000_000_000 + i for i in
                                                                   range(count)], settings)
    assert size == limit
    assert counters["flows_created"] == count
    assert counters["flows_evicted"] == count - limit
    assert len(during) == count - limit and (during["end_reason"] == END_EVICTED).all()
    # the oldest went first: the evicted are exactly the first 4,000 keys, the survivors the last 1,000
    assert during["src_port"].tolist() == [1024 + i % 60000 for i in range(count - limit)]
    assert sorted(flushed["src_port"].tolist()) == sorted(1024 + i % 60000 for i in range(count - limit, count))
    assert int(during["packets"].sum() + flushed["packets"].sum()) == count


@pytest.mark.skipif(compiled is None, reason="sensor._loop not built")
def test_queued_packets_settle_after_a_batch_that_raised_and_with_the_loop() -> None:
    """The compiled table queues packets a few deep (decision 0196): a batch that raises part-way still has
    its earlier packets in the table, counted by the loop that saw them, also once that loop is gone."""
    frames = udp_flood(6)
    settings = FlowSettings(idle_timeout=3600, active_timeout=3600, max_flows=100)
    table = make_flow_table(settings)
    loop = make_loop(1, (53,), {}, flows=table)
    meta = [struct.pack("=IIII", 1_700_000_000, i, i * len(frames[0]), len(frames[0])) for i in range(5)]
    meta.append(struct.pack("=IIII", 1_700_000_000, 9, 10**6, 10))  # points past the data
    with pytest.raises(ValueError):
        loop.run_batch(b"".join(frames[:5]), b"".join(meta), 1)
    assert table.count == 5 and loop.counters()["flows_created"] == 5
    other = make_loop(1, (53,), {}, flows=table)  # a second loop on the same table (the next capture file)
    other.run_batch(frames[5], struct.pack("=IIII", 1_700_000_001, 0, 0, len(frames[5])), 7)
    assert other.counters()["flows_created"] == 1 and len(table) == 6
    del loop, other
    table.flush()
    assert len(table.take()) == 6


# ------------------------------------------------------------------ record helpers

def test_addresses_round_trip_through_halves() -> None:
    for text in ("192.0.2.1", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::1", "::ffff:192.0.2.1"):
        hi, lo = address_halves(text)
        version = ipaddress.ip_address(text).version
        assert format_addresses(np.array([hi], np.uint64), np.array([lo], np.uint64),
                                np.array([version], np.uint8))[0] == str(ipaddress.ip_address(text))
    assert address_halves("192.0.2.1") == (0, 0xFFFF_C000_0201)


def test_direction_from_internal_networks() -> None:
    arr = make_records([
        {"src": "10.1.0.5", "dst": "192.0.2.1"}, {"src": "192.0.2.1", "dst": "10.1.0.5"},
        {"src": "10.1.0.5", "dst": "10.2.0.5"}, {"src": "192.0.2.1", "dst": "198.51.100.1"},
        {"src": "2001:db8:1::5", "dst": "2001:db8:2::5"},
    ])
    classify_direction(arr, ["10.0.0.0/8", "2001:db8:1::/48"])
    assert [DIRECTIONS[d] for d in arr["direction"]] == ["outbound", "inbound", "internal", "external", "outbound"]
    classify_direction(arr, [])
    assert (arr["direction"] == 0).all()


def test_flow_dicts_name_fields_as_the_filter_language() -> None:
    arr = make_records([{"src": "10.1.0.5", "dst": "192.0.2.1", "src_port": 5, "dst_port": 53, "proto": 17,
                         "packets": 2, "bytes": 120, "tcp_flags": 0x12, "end_reason": 1, "vlan": 7}])
    row = flow_dicts(arr)[0]
    assert row["srcip"] == "10.1.0.5" and row["dstip"] == "192.0.2.1" and row["dstport"] == 53
    assert row["tcp_flags"] == "SA" and row["end_reason"] == "idle" and row["vlan"] == 7
    json.dumps(row)
