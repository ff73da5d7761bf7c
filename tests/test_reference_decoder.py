"""The pure-Python reference decoder (sensor/decode/) against docs/decoding.md, with packets crafted by scapy.

Each limit has a test named after the attack it stops. DNS messages come from dnslib, or are written byte
by byte where the point is a malformed name.
"""

from __future__ import annotations

import struct

import pytest
from dnslib import QTYPE, DNSRecord
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

from sensor.decode import ReferenceLoop
from sensor.decode.anomaly import Anomaly
from sensor.decode.dnsmsg import MAX_NAME_WIRE_LENGTH, MAX_POINTER_HOPS, escape_label, read_name
from sensor.decode.link import MAX_VLAN_TAGS
from sensor.records import COUNTERS, TABLE_GAUGES, DnsMessage

try:
    from sensor._loop import FastLoop
except ImportError:  # not built yet: the reference alone is tested here, test_differential.py says why
    FastLoop = None

DLT_NULL, DLT_EN10MB, DLT_RAW, DLT_LOOP, DLT_LINUX_SLL, DLT_LINUX_SLL2 = 0, 1, 101, 108, 113, 276
CLIENT4, SERVER4 = "192.0.2.10", "198.51.100.53"
CLIENT6, SERVER6 = "2001:db8::10", "2001:db8::53"
TABLE = {"evil.com": [0, 0], "under.net": [-1, 1], "xyz": [2, 2]}


# ---- helpers -------------------------------------------------------------------------------------------


def query(name: str = "www.example.com", qtype: str = "A", qid: int = 0x1234) -> bytes:
    """A standard query from dnslib."""
    record = DNSRecord.question(name, qtype)
    record.header.id = qid
    return record.pack()


def response(name: str = "www.example.com") -> bytes:
    record = DNSRecord.question(name)
    record.header.id = 0x1234
    return record.reply().pack()


def raw_message(name_wire: bytes, qdcount: int = 1, tail: bytes = b"\x00\x01\x00\x01", flags: int = 0x0100) -> bytes:
    """A message written by hand: header, then the question name bytes as given, then type and class."""
    return struct.pack("!HHHHHH", 0x1234, flags, qdcount, 0, 0, 0) + name_wire + tail


def wire_name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def udp4(payload: bytes, sport: int = 40000, dport: int = 53) -> Packet:
    return IP(src=CLIENT4, dst=SERVER4) / UDP(sport=sport, dport=dport) / Raw(payload)


def eth(packet: Packet) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / packet)


def run(
    frames: list[bytes | tuple[bytes, int]],
    linktype: int = DLT_EN10MB,
    ports: tuple[int, ...] = (53,),
    table: dict[str, list[int]] | None = None,
    emit_all: bool = True,
    **limits: float,
) -> tuple[list[DnsMessage], dict[str, int]]:
    """Frames (bytes, or (bytes, seconds)) through one ReferenceLoop: records and the non-zero counters."""
    table = TABLE if table is None else table
    limits.setdefault("checksums", 0)  # layer tests: many frames are built by hand (tests/test_attacks.py: checksums)
    loop = ReferenceLoop(linktype, ports, table, emit_all, **limits)
    records = []
    for number, item in enumerate(frames, 1):
        data, seconds = item if isinstance(item, tuple) else (item, 1_700_000_000)
        records += loop.run_frame(number, seconds, 250, data)
    if FastLoop is not None:
        # Every crafted case is also a differential case: the fast path must agree frame for frame.
        fast = FastLoop(linktype, ports, table, emit_all, **limits)
        fast_records = []
        for number, item in enumerate(frames, 1):
            data, seconds = item if isinstance(item, tuple) else (item, 1_700_000_000)
            fast_records += fast.run_batch(data, struct.pack("=IIII", seconds, 250, 0, len(data)), number)
        assert [tuple(r) for r in fast_records] == [tuple(r) for r in records]
        assert fast.counters() == loop.counters()
    counters = {name: value for name, value in loop.counters().items() if value}
    return records, counters


def reasons(counters: dict[str, int]) -> dict[str, int]:
    """The counters without packets and bytes, which every frame adds to."""
    return {name: value for name, value in counters.items() if name not in ("packets", "bytes")}


def one_name(name_wire: bytes, tail: bytes = b"\x00\x01\x00\x01") -> tuple[list[DnsMessage], dict[str, int]]:
    """Run a single hand-written question name over UDP/IPv4/Ethernet."""
    records, counters = run([eth(udp4(raw_message(name_wire, tail=tail)))])
    return records, reasons(counters)


# ---- records and counters ------------------------------------------------------------------------------


def test_udp_query_record_fields() -> None:
    records, counters = run([eth(udp4(query("WWW.Evil.COM", "AAAA", qid=0xBEEF)))], table=TABLE)
    assert records == [
        DnsMessage(
            frame=1, ts_sec=1_700_000_000, ts_usec=250, vlan_id=None,
            src_ip=bytes([192, 0, 2, 10]), dst_ip=bytes([198, 51, 100, 53]), transport=17,
            src_port=40000, dst_port=53, dns_id=0xBEEF, flags=0x0100, qdcount=1,
            qname="WWW.Evil.COM", qtype=QTYPE.AAAA, qclass=1, rule=0, src_mac=b"\x02\x00\x00\x00\x00\x01",
        )
    ]
    frame_length = len(eth(udp4(query("WWW.Evil.COM", "AAAA"))))
    assert counters == {"packets": 1, "bytes": frame_length, "dns_queries": 1, "hits": 1}


def test_counters_name_every_counter_and_tcp_streams() -> None:
    loop = ReferenceLoop(DLT_EN10MB, (53,), {}, True)
    assert set(loop.counters()) == set(COUNTERS) | set(TABLE_GAUGES)
    assert all(value == 0 for value in loop.counters().values())


def test_responses_never_match() -> None:
    records, counters = run([eth(udp4(response("www.evil.com"), sport=53, dport=40000))])
    assert [(r.qname, r.rule, r.is_response) for r in records] == [("www.evil.com", -1, True)]
    assert reasons(counters) == {"dns_responses": 1}


def test_emit_all_false_returns_only_hits_but_counts_everything() -> None:
    frames = [eth(udp4(query("a.evil.com"))), eth(udp4(query("benign.org"))), eth(udp4(response("a.evil.com")))]
    records, counters = run(frames, emit_all=False)
    assert [(r.frame, r.qname, r.rule) for r in records] == [(1, "a.evil.com", 0)]
    assert reasons(counters) == {"dns_queries": 2, "dns_responses": 1, "hits": 1}


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("evil.com", 0),  # the name itself
        ("a.b.EVIL.com", 0),  # below it, any case
        ("notevil.com", -1),  # suffixes only at label boundaries
        ("under.net", -1),  # *.under.net: only names below
        ("x.under.net", 1),
        ("anything.xyz", 2),  # a whole TLD
        ("xyz", 2),
    ],
)
def test_matching_uses_suffixes_at_label_boundaries(name: str, rule: int) -> None:
    records, _ = run([eth(udp4(query(name)))])
    assert records[0].rule == rule


def test_most_specific_rule_wins_and_root_rule_covers_every_name() -> None:
    table = {"": [5, 5], "com": [6, 6], "evil.com": [7, 7]}
    frames = [eth(udp4(query(name))) for name in ("a.evil.com", "b.com", "c.org")] + [eth(udp4(raw_message(b"\0")))]
    records, _ = run(frames, table=table)
    assert [(r.qname, r.rule) for r in records] == [("a.evil.com", 7), ("b.com", 6), ("c.org", 5), (".", 5)]


def test_run_batch_reads_pcapy_meta_and_numbers_frames() -> None:
    frames = [eth(udp4(query(f"n{i}.example.com"))) for i in range(3)]
    data = b"garbage" + b"".join(frames)
    meta, offset = b"", len(b"garbage")
    for i, frame in enumerate(frames):
        meta += struct.pack("=IIII", 100 + i, 7 * i, offset, len(frame))
        offset += len(frame)
    records = ReferenceLoop(DLT_EN10MB, (53,), {}, True).run_batch(data, meta, 41)
    assert [(r.frame, r.ts_sec, r.ts_usec, r.qname) for r in records] == [
        (41, 100, 0, "n0.example.com"), (42, 101, 7, "n1.example.com"), (43, 102, 14, "n2.example.com"),
    ]


def test_ports_outside_range_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        ReferenceLoop(DLT_EN10MB, (0,), {}, True)


# ---- link types and VLAN tags --------------------------------------------------------------------------


def test_linux_sll() -> None:
    records, _ = run([bytes(CookedLinux(proto=0x0800) / udp4(query()))], linktype=DLT_LINUX_SLL)
    assert [r.qname for r in records] == ["www.example.com"]


def test_linux_sll_with_vlan_tag() -> None:
    frame = bytes(CookedLinux(proto=0x8100) / Dot1Q(vlan=33) / udp4(query()))
    records, _ = run([frame], linktype=DLT_LINUX_SLL)
    assert [(r.qname, r.vlan_id) for r in records] == [("www.example.com", 33)]


def test_linux_sll2() -> None:
    frame = bytes(CookedLinuxV2(proto=0x86DD) / IPv6(src=CLIENT6, dst=SERVER6) / UDP(sport=5, dport=53) / query())
    records, _ = run([frame], linktype=DLT_LINUX_SLL2)
    assert [(r.src_ip.hex(), r.qname) for r in records] == [("20010db8" + "0" * 22 + "10", "www.example.com")]


def test_linux_sll2_with_vlan_tag() -> None:
    frame = bytes(CookedLinuxV2(proto=0x8100) / Dot1Q(vlan=7) / udp4(query()))
    records, _ = run([frame], linktype=DLT_LINUX_SLL2)
    assert [r.vlan_id for r in records] == [7]


@pytest.mark.parametrize("linktype", [12, 14, 101])
def test_raw_ip_versions_from_first_nibble(linktype: int) -> None:
    frames = [bytes(udp4(query("four.example"))), bytes(IPv6() / UDP(dport=53) / query("six.example")), b"\x50" * 40]
    records, counters = run(frames, linktype=linktype)
    assert [r.qname for r in records] == ["four.example", "six.example"]
    assert counters["not_ip"] == 1


@pytest.mark.parametrize(
    ("header", "version"),
    [
        (struct.pack("<I", 2), 4),
        (struct.pack(">I", 2), 4),
        (struct.pack("<I", 24), 6),
        (struct.pack("<I", 28), 6),
        (struct.pack(">I", 30), 6),
    ],
)
def test_null_family_in_either_byte_order(header: bytes, version: int) -> None:
    packet = udp4(query()) if version == 4 else IPv6() / UDP(dport=53) / query()
    records, _ = run([header + bytes(packet)], linktype=DLT_NULL)
    assert len(records) == 1 and len(records[0].src_ip) == (4 if version == 4 else 16)


def test_loop_family_is_network_order_only() -> None:
    frames = [struct.pack(">I", 2) + bytes(udp4(query())), struct.pack("<I", 2) + bytes(udp4(query()))]
    records, counters = run(frames, linktype=DLT_LOOP)
    assert len(records) == 1
    assert reasons(counters) == {"dns_queries": 1, "not_ip": 1}


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [(DLT_EN10MB, b"\x00" * 13), (DLT_LINUX_SLL, b"\x00" * 15), (DLT_LINUX_SLL2, b"\x00" * 19),
     (DLT_NULL, b"\x02\x00\x00"), (DLT_LOOP, b"")],
)
def test_truncated_link_header(linktype: int, frame: bytes) -> None:
    _, counters = run([frame], linktype=linktype)
    assert reasons(counters) == {"truncated_link": 1}


def test_raw_empty_frame_is_truncated_ip() -> None:
    _, counters = run([b""], linktype=DLT_RAW)
    assert reasons(counters) == {"truncated_ip": 1}


def test_unsupported_linktype_counts_every_frame() -> None:
    _, counters = run([eth(udp4(query()))] * 3, linktype=105)
    assert counters["packets"] == 3 and reasons(counters) == {"unsupported_linktype": 3}


def test_not_ip() -> None:
    _, counters = run([bytes(Ether() / ARP())])
    assert reasons(counters) == {"not_ip": 1}


def test_vlan_outer_id_is_reported_for_every_tag_type() -> None:
    frames = [
        bytes(Ether() / Dot1Q(vlan=10) / udp4(query())),
        bytes(Ether() / Dot1AD(vlan=100) / Dot1Q(vlan=200) / udp4(query())),
        bytes(Ether(type=0x9100) / Dot1Q(vlan=300) / Dot1Q(vlan=400) / udp4(query())),
        bytes(Ether() / Dot1Q(vlan=4095, prio=7) / IPv6() / UDP(dport=53) / query()),
    ]
    records, _ = run(frames)
    assert [r.vlan_id for r in records] == [10, 100, 300, 4095]


def test_vlan_tag_flood() -> None:
    """Eight stacked tags are followed; a ninth is not, so the frame is not IP."""

    def tagged(count: int) -> bytes:
        layers = Ether()
        for i in range(count):
            layers = layers / Dot1Q(vlan=i + 1)
        return bytes(layers / udp4(query()))

    records, counters = run([tagged(MAX_VLAN_TAGS), tagged(MAX_VLAN_TAGS + 1)])
    assert [r.vlan_id for r in records] == [1]
    assert reasons(counters) == {"dns_queries": 1, "not_ip": 1}


def test_vlan_tag_cut_off() -> None:
    _, counters = run([bytes(Ether() / Dot1Q(vlan=5))[:16]])
    assert reasons(counters) == {"truncated_link": 1}


# ---- IPv4 ----------------------------------------------------------------------------------------------


def test_ipv4_options_are_skipped() -> None:
    packet = IP(src=CLIENT4, dst=SERVER4, options=b"\x94\x04\x00\x00") / UDP(dport=53) / query()
    assert bytes(packet)[0] == 0x46
    records, _ = run([eth(packet)])
    assert [r.qname for r in records] == ["www.example.com"]


def test_ethernet_padding_is_not_payload() -> None:
    """Bytes after the IP total length (Ethernet padding) are not read as DNS."""
    message = query("pad.example")
    records, counters = run([eth(udp4(message)) + b"\xc0\x0c" * 20])
    assert [r.qname for r in records] == ["pad.example"]
    assert reasons(counters) == {"dns_queries": 1}


def ipv4_with(**fields: int) -> bytes:
    packet = IP(bytes(udp4(query())))
    for name, value in fields.items():
        setattr(packet, name, value)
    del packet.chksum
    return bytes(packet)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda p: p[:19], "truncated_ip"),
        (lambda p: b"\x65" + p[1:], "bad_ip_header"),  # version 6 under ethertype IPv4
        (lambda p: b"\x44" + p[1:], "bad_ip_header"),  # IHL 4
        (lambda p: b"\x4f" + p[1:40], "truncated_ip"),  # IHL 15: 60 bytes, 40 captured
        (lambda p: p[:2] + struct.pack("!H", 19) + p[4:], "bad_ip_header"),  # total length < IHL*4
        (lambda p: p[:2] + struct.pack("!H", len(p) + 1) + p[4:], "ip_length_exceeds_capture"),
    ],
)
def test_ipv4_header_checks(mangle, reason: str) -> None:
    _, counters = run([eth(Raw(b""))[:12] + b"\x08\x00" + mangle(bytes(udp4(query())))])
    assert reasons(counters) == {reason: 1}


def test_ipv4_fragments_are_held_for_reassembly() -> None:
    """Fragments that do not complete a datagram are held, not decoded. The second starts at byte 24, inside the
    first (which carries the whole UDP datagram): an overlap, which abandons the datagram; the third is absorbed
    by it (tests/test_reassembly.py has more)."""
    frames = [eth(Raw(ipv4_with(flags=1))), eth(Raw(ipv4_with(frag=3))), eth(Raw(ipv4_with(flags=1, frag=3)))]
    frames = [f[:12] + b"\x08\x00" + f[14:] for f in frames]
    _, counters = run(frames)
    assert reasons(counters) == {"ip_fragment": 1, "ip_fragment_not_first": 2, "ip_fragment_overlap": 1,
                                 "fragmented_datagrams": 1, "fragment_bytes": 2048}  # the abandoned datagram, kept
    # to absorb the rest, with its buffer as allocated (2 KiB)


def test_not_udp_tcp() -> None:
    _, counters = run([eth(IP() / ICMP())])
    assert reasons(counters) == {"not_udp_tcp": 1}


# ---- IPv6 ----------------------------------------------------------------------------------------------


def test_ipv6_extension_headers_are_skipped() -> None:
    chain = IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=[SERVER6]) / IPv6ExtHdrDestOpt()
    frames = [
        eth(IPv6(src=CLIENT6, dst=SERVER6) / chain / UDP(dport=53) / query("ext.example")),
        eth(IPv6() / IPv6ExtHdrFragment(offset=0, m=0, id=9) / UDP(dport=53) / query("atomic.example")),
    ]
    records, counters = run(frames)
    assert [r.qname for r in records] == ["ext.example", "atomic.example"]
    assert reasons(counters) == {"dns_queries": 2}


def test_ipv6_fragments_are_held_for_reassembly() -> None:
    frames = [
        eth(IPv6() / IPv6ExtHdrFragment(offset=0, m=1) / UDP(dport=53) / query()),
        eth(IPv6() / IPv6ExtHdrFragment(offset=8, m=0) / Raw(b"x" * 16)),
        eth(IPv6() / IPv6ExtHdrFragment(offset=8, m=1) / Raw(b"x" * 16)),
    ]
    _, counters = run(frames)
    # One identification: one datagram, still incomplete; the third lies inside the second (Linux drops it).
    assert reasons(counters) == {"ip_fragment": 1, "ip_fragment_not_first": 2, "ip_fragment_duplicate": 1,
                                 "fragmented_datagrams": 1, "fragment_bytes": 2048}


def test_ipv6_extension_header_chain_flood() -> None:
    """Linux walks extension headers to the end of the payload: nine, or a hundred, reach UDP (the walk is bounded
    by the payload, each header being 8 bytes or more)."""

    def chained(count: int) -> bytes:
        packet = IPv6()
        for _ in range(count):
            packet = packet / IPv6ExtHdrDestOpt()
        return eth(packet / UDP(dport=53) / query())

    records, counters = run([chained(8), chained(9), chained(100)])
    assert len(records) == 3
    assert reasons(counters) == {"dns_queries": 3}


def test_ipv6_extension_header_running_past_payload() -> None:
    packet = bytearray(bytes(IPv6() / IPv6ExtHdrDestOpt() / UDP(dport=53) / query()))
    packet[41] = 200  # the option header now claims 1608 bytes
    short = bytes(IPv6(nh=60, plen=1) / Raw(b"\x11"))  # not even room for next header and length
    _, counters = run([eth(Raw(bytes(packet)))[:12] + b"\x86\xdd" + bytes(packet),
                       eth(Raw(short))[:12] + b"\x86\xdd" + short])
    assert reasons(counters) == {"bad_ipv6_extension": 2}


def test_ipv6_length_checks() -> None:
    good = bytes(IPv6() / UDP(dport=53) / query())
    jumbo = good[:4] + b"\x00\x00" + good[6:]
    frames = [good[:39], b"\x45" + good[1:], jumbo, good[:4] + struct.pack("!H", len(good) - 39) + good[6:]]
    _, counters = run([b"\x02" * 12 + b"\x86\xdd" + f for f in frames])
    assert reasons(counters) == {"truncated_ip": 1, "bad_ip_header": 2, "ip_length_exceeds_capture": 1}


# ---- UDP -----------------------------------------------------------------------------------------------


def test_udp_length_hides_compression_loop() -> None:
    """zlip: the UDP length says 8 bytes; a pointer loop lies beyond it and must never be read."""
    loop_payload = raw_message(b"\xc0\x0c")
    packet = bytearray(bytes(udp4(loop_payload)))
    packet[24:26] = struct.pack("!H", 8)
    _, counters = run([eth(Raw(bytes(packet)))[:12] + b"\x08\x00" + bytes(packet)])
    assert reasons(counters) == {"dns_too_short": 1}


def test_udp_length_checks() -> None:
    def with_length(length: int) -> bytes:
        packet = bytearray(bytes(udp4(query())))
        packet[24:26] = struct.pack("!H", length)
        return b"\x02" * 12 + b"\x08\x00" + bytes(packet)

    ip_header = bytes(udp4(b""))[:20]
    short = ip_header[:2] + struct.pack("!H", 27) + ip_header[4:] + b"\x00\x35\x00\x35\x00\x08\x00"
    _, counters = run([with_length(7), with_length(2000), b"\x02" * 12 + b"\x08\x00" + short])
    assert reasons(counters) == {"bad_udp_length": 2, "truncated_transport": 1}


def test_dns_ports_are_configurable_and_either_direction_counts() -> None:
    frames = [eth(udp4(query("a.example"), sport=5353, dport=5353)), eth(udp4(query("b.example"), dport=53)),
              eth(udp4(query("c.example"), sport=5353, dport=9))]
    records, counters = run(frames, ports=(5353,))
    assert [r.qname for r in records] == ["a.example", "c.example"]
    assert counters["not_dns_port"] == 1


def test_port_filter_comes_before_length_checks() -> None:
    """Traffic on other ports is not_dns_port whatever its lengths (docs/decoding.md, UDP and TCP)."""
    packet = bytearray(bytes(udp4(b"junk", dport=80)))
    packet[24:26] = struct.pack("!H", 3)
    tcp = bytearray(bytes(IP() / TCP(dport=80)))
    tcp[32] = 0x30  # data offset 3
    _, counters = run([b"\x02" * 12 + b"\x08\x00" + bytes(p) for p in (packet, tcp)])
    assert reasons(counters) == {"not_dns_port": 2}


# ---- TCP -----------------------------------------------------------------------------------------------


def framed(*messages: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


def tcp4(seq: int, payload: bytes = b"", flags: str = "PA", sport: int = 40000, dport: int = 53) -> bytes:
    return eth(IP(src=CLIENT4, dst=SERVER4) / TCP(sport=sport, dport=dport, seq=seq, flags=flags) / Raw(payload))


def test_tcp_handshake_then_query() -> None:
    frames = [tcp4(999, flags="S"), tcp4(1000, framed(query("tcp.example")))]
    records, counters = run(frames)
    assert [(r.frame, r.transport, r.qname) for r in records] == [(2, 6, "tcp.example")]
    assert reasons(counters) == {"tcp_no_payload": 1, "dns_queries": 1, "tcp_streams": 1}


def test_tcp_several_messages_in_one_segment() -> None:
    payload = framed(*(query(f"m{i}.example") for i in range(5)))
    records, _ = run([tcp4(1, payload)])
    assert [r.qname for r in records] == [f"m{i}.example" for i in range(5)]


def test_tcp_message_split_over_segments_is_joined() -> None:
    """The record carries the frame that completed the message; the length prefix may come alone."""
    payload = framed(query("split.example"), query("second.example"))
    cuts = [0, 1, 2, 9, len(payload) - 3, len(payload)]
    frames = [tcp4(500 + a, payload[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    records, counters = run(frames)
    assert [(r.frame, r.qname) for r in records] == [(4, "split.example"), (5, "second.example")]
    assert "tcp_gap" not in counters


def test_tcp_hole_holds_what_follows() -> None:
    """Bytes missing before a segment: it waits out of order, as in Linux (the resolver cannot read past a hole)."""
    first, second = framed(query("lost.example")), framed(query("after.example"))
    frames = [tcp4(100, first[:10]), tcp4(100 + len(first) + 5, second)]
    records, counters = run(frames)
    assert records == []
    assert counters["tcp_out_of_order"] == 1 and "tcp_gap" not in counters


def test_tcp_jump_past_the_window_is_a_capture_gap() -> None:
    first, second = framed(query("lost.example")), framed(query("after.example"))
    frames = [tcp4(100, first[:10]), tcp4(100 + 10 + 65_536, second)]
    records, counters = run(frames)
    assert [r.qname for r in records] == ["after.example"]
    assert counters["tcp_gap"] == 1


def test_tcp_reordering_is_reassembled() -> None:
    payload = framed(query("order.example"))
    frames = [tcp4(10, payload[:2]), tcp4(22, payload[12:]), tcp4(12, payload[2:12])]
    records, counters = run(frames)
    assert [(r.frame, r.qname) for r in records] == [(3, "order.example")]
    assert counters["tcp_out_of_order"] == 1 and "tcp_gap" not in counters


def test_tcp_retransmission_is_skipped() -> None:
    payload = framed(query("once.example"))
    frames = [tcp4(7, payload), tcp4(7, payload), tcp4(7, payload[:5])]
    records, counters = run(frames)
    assert [r.qname for r in records] == ["once.example"]
    assert counters["tcp_retransmission"] == 2


def test_tcp_sequence_numbers_wrap() -> None:
    payload = framed(query("wrap.example"))
    seq = 2**32 - 10
    frames = [tcp4(seq, payload[:10]), tcp4(0, payload[10:])]
    records, counters = run(frames)
    assert [r.qname for r in records] == ["wrap.example"]
    assert "tcp_gap" not in counters


@pytest.mark.parametrize("flags", ["FA", "R"])
def test_fin_or_rst_drops_the_direction(flags: str) -> None:
    payload = framed(query("closed.example"))
    frames = [tcp4(1, payload[:10]), tcp4(11, flags=flags), tcp4(11, payload[10:])]
    records, counters = run(frames)
    assert records == []
    # No gap: the last segment opened a new stream, read from a message boundary.
    assert (counters["tcp_no_payload"], counters.get("tcp_gap"), counters["tcp_streams"]) == (1, None, 1)


def test_fin_with_payload_decodes_then_drops() -> None:
    records, counters = run([tcp4(1, framed(query("last.example")), flags="FPA")])
    assert [r.qname for r in records] == ["last.example"]
    assert "tcp_streams" not in counters


def test_zero_length_prefix_is_too_short() -> None:
    records, counters = run([tcp4(1, b"\x00\x00" + framed(query("next.example")))])
    assert [r.qname for r in records] == ["next.example"]
    assert counters["dns_too_short"] == 1


def test_tcp_idle_stream_expires() -> None:
    payload = framed(query("slow.example"))
    frames = [(tcp4(1, payload[:10]), 1000), (tcp4(11, payload[10:]), 1000 + 31)]
    records, counters = run(frames, tcp_idle_timeout=30)
    assert records == []  # the second half starts a new stream, read as a message boundary
    assert (counters["tcp_stream_expired"], counters.get("tcp_gap"), counters["tcp_streams"]) == (1, None, 1)


def test_tcp_idle_timeout_is_strictly_longer() -> None:
    payload = framed(query("patient.example"))
    frames = [(tcp4(1, payload[:10]), 1000), (tcp4(11, payload[10:]), 1000 + 30)]
    records, counters = run(frames, tcp_idle_timeout=30)
    assert [r.qname for r in records] == ["patient.example"]


def test_tcp_stream_table_flood_evicts_least_recently_used() -> None:
    """More streams than slots: the least recently used goes, counted evicted (or expired when idle)."""
    payload = framed(query("flood.example"))
    frames = [
        (tcp4(1, payload[:10], sport=1001), 100),
        (tcp4(1, payload[:10], sport=1002), 100),
        (tcp4(11, payload[10:], sport=1001), 101),  # 1001 completes and becomes most recent
        (tcp4(1, payload[:10], sport=1003), 102),  # evicts 1002
        (tcp4(11, payload[10:], sport=1002), 103),  # gone: starts afresh mid-message, evicts 1001
        (tcp4(1, payload[:10], sport=1004), 200),  # evicts 1003, idle 98 s: expired
    ]
    records, counters = run(frames, max_tcp_streams=2, tcp_idle_timeout=30)
    assert [(r.frame, r.src_port) for r in records] == [(3, 1001)]
    assert counters["tcp_stream_evicted"] == 2 and counters["tcp_stream_expired"] == 1
    assert counters["tcp_streams"] == 2


def test_pure_ack_does_not_keep_stream_alive() -> None:
    payload = framed(query("acked.example"))
    frames = [(tcp4(1, payload[:10]), 0), (tcp4(11, flags="A"), 20), (tcp4(11, payload[10:]), 40)]
    records, counters = run(frames, tcp_idle_timeout=30)
    assert records == []
    assert counters["tcp_stream_expired"] == 1


def test_syn_restarts_a_stream_without_data() -> None:
    payload = framed(query("restart.example"))
    frames = [tcp4(999, flags="S"), tcp4(5000, flags="S"), tcp4(5001, payload)]
    records, counters = run(frames)
    assert [r.frame for r in records] == [3]
    assert "tcp_gap" not in counters


def test_syn_inside_a_stream_with_data_is_ignored() -> None:
    """RFC 5961 4.2: a SYN with a foreign sequence number cannot reset a message half sent."""
    payload = framed(query("restart.example"))
    frames = [tcp4(1, payload[:10]), tcp4(5000, flags="S"), tcp4(11, payload[10:])]
    records, counters = run(frames)
    assert [r.frame for r in records] == [3]
    assert counters["tcp_syn_ignored"] == 1


def test_tcp_header_checks() -> None:
    bad_offset = bytearray(bytes(IP() / TCP(dport=53)))
    bad_offset[32] = 0x40
    long_offset = bytearray(bytes(IP() / TCP(dport=53)))
    long_offset[32] = 0xF0
    frames = [b"\x02" * 12 + b"\x08\x00" + p for p in (bytes(bad_offset), bytes(long_offset))]
    frames.append(b"\x02" * 12 + b"\x08\x00" + bytes(IP(proto=6) / Raw(b"\x00\x35" * 9 + b"\x00")))
    _, counters = run(frames)
    assert reasons(counters) == {"bad_tcp_header": 2, "truncated_transport": 1}


def test_vlan_is_part_of_the_stream_key() -> None:
    payload = framed(query("vlan.example"))
    frames = [
        bytes(Ether() / Dot1Q(vlan=1) / IP(src=CLIENT4, dst=SERVER4) / TCP(sport=9, dport=53, seq=1) / payload[:10]),
        bytes(Ether() / Dot1Q(vlan=2) / IP(src=CLIENT4, dst=SERVER4) / TCP(sport=9, dport=53, seq=11) / payload[10:]),
    ]
    records, counters = run(frames)
    assert records == [] and counters["tcp_streams"] == 2


# ---- DNS header and question ---------------------------------------------------------------------------


def test_message_too_short() -> None:
    _, counters = run([eth(udp4(b"\x12\x34" * 5 + b"\x00")), eth(udp4(b""))])
    assert reasons(counters) == {"dns_too_short": 2}


def test_header_alone_is_truncated() -> None:
    _, counters = one_name(b"", tail=b"")
    assert counters == {"dns_truncated": 1}


def test_no_question() -> None:
    records, counters = run([eth(udp4(raw_message(wire_name(b"a"), qdcount=0)))])
    assert records == [] and reasons(counters) == {"dns_no_question": 1}


def test_extra_questions_decode_first_only() -> None:
    message = raw_message(wire_name(b"first", b"example"), qdcount=3) + wire_name(b"second") + b"\0\1\0\1"
    records, counters = run([eth(udp4(message))])
    assert [(r.qname, r.qdcount) for r in records] == [("first.example", 3)]
    assert reasons(counters) == {"dns_queries": 1, "dns_extra_questions": 1}


def test_question_without_type_and_class_is_truncated() -> None:
    _, counters = one_name(wire_name(b"a"), tail=b"\x00\x01\x00")
    assert counters == {"dns_truncated": 1}


def test_flags_and_opcode_are_kept_as_sent() -> None:
    records, _ = run([eth(udp4(raw_message(wire_name(b"op"), flags=0x7FFF)))])
    assert (records[0].flags, records[0].opcode, records[0].rule) == (0x7FFF, 15, -1)


# ---- DNS name limits (attacks) -------------------------------------------------------------------------


def header_with(tail6: bytes, qdcount: int = 1) -> bytes:
    """A query header whose last six bytes (the answer, authority and additional counts) are `tail6`.

    A question starts at offset 12, so a strictly backward pointer in it can only land in the header.
    """
    return struct.pack("!HHH", 0x1234, 0x0100, qdcount) + tail6


def test_backward_pointer_into_header_is_followed() -> None:
    message = header_with(b"\x01x\x00\x00\x00\x00") + b"\x01a\xc0\x06" + b"\x00\x01\x00\x01"
    records, counters = run([eth(udp4(message))])
    assert [r.qname for r in records] == ["a.x"]
    assert reasons(counters) == {"dns_queries": 1}


def test_forward_pointer() -> None:
    _, counters = one_name(b"\xc0\x20" + b"\x00" * 30)
    assert counters == {"dns_bad_pointer": 1}


def test_pointer_to_itself() -> None:
    _, counters = one_name(b"\xc0\x0c")
    assert counters == {"dns_bad_pointer": 1}


def test_pointer_back_into_its_own_run() -> None:
    """`a` then a pointer to the `a`: backwards in the message, but not before the run started (a loop)."""
    _, counters = one_name(b"\x01a\xc0\x0c")
    assert counters == {"dns_bad_pointer": 1}


def test_pointer_loop() -> None:
    """12 -> 10 is backwards; 10 -> 12 is not before the run that started at 10, so the loop is cut."""
    message = header_with(b"\x00\x00\x00\x00\xc0\x0c") + b"\xc0\x0a" + b"\x00\x01\x00\x01"
    records, counters = run([eth(udp4(message))])
    assert records == [] and reasons(counters) == {"dns_bad_pointer": 1}


def pointer_chain(hops: int) -> tuple[bytes, int]:
    """A message holding a root byte at 12 and `hops` pointers after it, each to the one before."""
    message = bytearray(header_with(b"\x00" * 6) + b"\x00")
    target = 12
    for _ in range(hops):
        position = len(message)
        message += struct.pack("!H", 0xC000 | target)
        target = position
    return bytes(message), target


def test_too_many_pointers() -> None:
    """A chain of strictly backward pointers costs a step each: at most MAX_POINTER_HOPS are followed.

    The first question cannot reach the limit (from offset 12 only the 12 header bytes lie behind it, room
    for six hops), so the walker is driven directly, as it will be for names later in a message.
    """
    message, start = pointer_chain(MAX_POINTER_HOPS)
    assert read_name(message, start) == ([], start + 2)
    message, start = pointer_chain(MAX_POINTER_HOPS + 1)
    with pytest.raises(Anomaly) as caught:
        read_name(message, start)
    assert caught.value.reason == "dns_too_many_pointers"


def test_name_over_255_bytes() -> None:
    label = b"a" * 63
    exactly = wire_name(label, label, label, b"b" * 61)  # 64*3 + 62 + 1 = 255
    assert len(exactly) == MAX_NAME_WIRE_LENGTH
    records, counters = one_name(exactly)
    assert len(records) == 1 and counters == {"dns_queries": 1}
    _, counters = one_name(wire_name(label, label, label, b"b" * 62))
    assert counters == {"dns_name_too_long": 1}


def test_name_over_255_bytes_through_pointers() -> None:
    """Compression cannot smuggle a long name: the limit counts the expanded name."""
    label = b"a" * 63
    name = wire_name(label, label, label, b"b" * 61)[:-1]  # 254 bytes without the final zero
    direct = header_with(b"\x00" * 6) + name + b"\x00" + b"\x00\x01\x00\x01"
    through_header = header_with(b"\x01x\x00\x00\x00\x00") + name + b"\xc0\x06" + b"\x00\x01\x00\x01"
    records, counters = run([eth(udp4(direct)), eth(udp4(through_header))])
    assert len(records) == 1
    assert reasons(counters) == {"dns_queries": 1, "dns_name_too_long": 1}


def test_name_longer_than_255_beats_truncation() -> None:
    """The length limit is checked before the label is looked for in the message (as the fast path does)."""
    label = b"a" * 63
    message = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + wire_name(label, label, label)[:-1] + b"\x3f"
    _, counters = run([eth(udp4(message))])
    assert reasons(counters) == {"dns_name_too_long": 1}


@pytest.mark.parametrize("length_byte", [0x40, 0x41, 0x7F, 0x80, 0xBF])
def test_extended_label_type(length_byte: int) -> None:
    _, counters = one_name(bytes([length_byte]) + b"x" * 70)
    assert counters == {"dns_bad_label_type": 1}


def test_label_past_end_of_message() -> None:
    _, counters = one_name(b"\x05ab", tail=b"")
    assert counters == {"dns_truncated": 1}


def test_pointer_cut_in_half() -> None:
    _, counters = one_name(b"\x01a\xc0", tail=b"")
    assert counters == {"dns_truncated": 1}


def test_name_without_end() -> None:
    _, counters = one_name(b"\x01a\x01b", tail=b"")
    assert counters == {"dns_truncated": 1}


# ---- presentation form ---------------------------------------------------------------------------------


def test_root_name_is_a_dot() -> None:
    records, _ = one_name(b"\x00")
    assert records[0].qname == "."


def test_escaping_in_labels() -> None:
    name = wire_name(b"a.b", b"back\\slash", b"sp ace", b"\x00\x7f\xff", b"MiXeD", b"~!")
    records, _ = one_name(name)
    assert records[0].qname == r"a\.b.back\\slash.sp\032ace.\000\127\255.MiXeD.~!"


def test_escape_label_covers_every_byte() -> None:
    escaped = escape_label(bytes(range(256)))
    printable = 0x7E - 0x21 + 1
    assert escaped.count("\\") == (256 - printable) + 1 + 2  # \DDD, then \. and \\ (two backslashes)
    assert all(0x21 <= ord(c) <= 0x7E for c in escaped)


def test_matching_lowercases_presentation_form_only() -> None:
    """An escaped dot is part of a label, so `evil\\.com` is one label and does not match evil.com."""
    records, _ = one_name(wire_name(b"evil.com"))
    assert (records[0].qname, records[0].rule) == (r"evil\.com", -1)
    records, _ = one_name(wire_name(b"X", b"EVIL", b"COM"))
    assert records[0].rule == 0


def test_batch_meta_past_its_data_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="past its data"):
        ReferenceLoop(DLT_EN10MB, (53,), {}, True).run_batch(b"\x00" * 10, struct.pack("=IIII", 0, 0, 4, 7), 1)
