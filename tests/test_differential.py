"""The compiled fast path (sensor._loop.FastLoop) against the pure-Python reference (sensor/decode/).

Both must give identical records and counters (docs/decoding.md): over every capture we ship and every
peer capture, and over generated packets that are built valid and then mutated. A last test proves the
compiled module is the one the sensor uses.
"""

from __future__ import annotations

import glob
import os
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pcapy
import pytest
from dnslib import EDNS0, RR, DNSHeader, DNSLabel, DNSQuestion, DNSRecord, EDNSOption
from dnslib.label import DNSLabelError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.decode import ReferenceLoop
from sensor.records import DnsMessage

try:
    from sensor import _loop
except ImportError:
    _loop = None

ROOT = Path(__file__).resolve().parents[1]
PEER_DIR = ROOT.parent / "shared" / "pcaps" / "peers"
RULES = ROOT / "pcaps" / "pcaps.rules"
ALL_PORTS = (53, 5353, 5355, 1053, 8053)
INLINE_TABLE = {"com": [0, 0], "evil.com": [1, 1], "example": [-1, 2], "": [3, 3]}
ON_CI = os.environ.get("CI", "").lower() == "true"


def needs_fast_path() -> None:
    """Skip without the compiled module, except on CI, where a missing build is a failure."""
    if _loop is None:
        if ON_CI:
            pytest.fail("sensor._loop is not built; CI must test the compiled fast path")
        pytest.skip("sensor._loop is not built (python setup.py build_ext --inplace)")


def rule_table() -> dict[str, list[int]]:
    if RULES.exists():
        from sensor.rules.loader import load_rules

        return load_rules([str(RULES)]).table
    return INLINE_TABLE


def captures() -> list[Path]:
    found = []
    for folder in (ROOT / "pcaps", PEER_DIR):
        for pattern in ("*.pcap", "*.pcapng"):
            found += [Path(p) for p in glob.glob(str(folder / pattern))]
    return sorted(found)


def describe(reference: list[tuple], fast: list[tuple]) -> str:
    """The first disagreement between two record lists, field by field."""
    for index, (ours, theirs) in enumerate(zip(reference, fast, strict=False)):
        if tuple(ours) != tuple(theirs):
            fields = [
                f"{name}: reference={a!r} fast={b!r}"
                for name, a, b in zip(DnsMessage._fields, ours, theirs, strict=True)
                if a != b
            ]
            return f"record {index} (reference frame {ours[0]}): " + "; ".join(fields)
    return f"record counts differ: reference {len(reference)}, fast {len(fast)}"


def counter_diff(reference: dict[str, int], fast: dict[str, int]) -> dict[str, tuple[int | None, int | None]]:
    names = sorted(set(reference) | set(fast))
    return {k: (reference.get(k), fast.get(k)) for k in names if reference.get(k) != fast.get(k)}


def assert_same(reference_loop: ReferenceLoop, fast_loop, reference: list, fast: list, where: str) -> None:
    assert [tuple(r) for r in fast] == [tuple(r) for r in reference], f"{where}: {describe(reference, fast)}"
    anomalies = [tuple(a) for a in reference_loop.take_anomalies()]
    assert [tuple(a) for a in fast_loop.take_anomalies()] == anomalies, f"{where}: anomalies differ"
    diff = counter_diff(reference_loop.counters(), fast_loop.counters())
    assert not diff, f"{where}: counters (reference, fast): {diff}"


def batches(path: Path, size: int) -> Iterator[tuple[int, bytes, bytes]]:
    """(first frame, data, meta) as pcapy-ng's next_batch gives them; stops quietly where a file is cut off."""
    reader = pcapy.open_offline(str(path))
    frame = 1
    while True:
        try:
            data, meta = reader.next_batch(size)
        except pcapy.PcapError:
            return  # a cut-off capture: both paths have seen the same frames up to the cut
        if not meta:
            return
        yield frame, data, meta
        frame += len(meta) // 16


# ---- (1) every capture -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ports", [(53,), ALL_PORTS], ids=["port53", "all-ports"])
@pytest.mark.parametrize("capture", captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_capture_agrees(capture: Path, ports: tuple[int, ...]) -> None:
    needs_fast_path()
    try:
        linktype = pcapy.open_offline(str(capture)).datalink()
    except pcapy.PcapError as err:
        pytest.skip(f"libpcap cannot open it: {err}")  # a deliberately broken sample; the CLI tests cover it
    table = rule_table()
    for batch_size in (1, 7, 4096):
        reference_loop = ReferenceLoop(linktype, ports, table, True)
        fast_loop = _loop.FastLoop(linktype, ports, table, True)
        reference, fast = [], []
        for first, data, meta in batches(capture, batch_size):
            reference += reference_loop.run_batch(data, meta, first)
            fast += fast_loop.run_batch(data, meta, first)
        assert_same(reference_loop, fast_loop, reference, fast, f"{capture.name} batch {batch_size}")


def test_there_are_captures_to_compare() -> None:
    assert captures(), "no captures found in pcaps/ or ../shared/pcaps/peers/"


# ---- (2) generated packets ---------------------------------------------------------------------------------

DLT_NULL, DLT_EN10MB, DLT_RAW, DLT_LOOP, DLT_LINUX_SLL, DLT_LINUX_SLL2 = 0, 1, 101, 108, 113, 276
LINKTYPES = (DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_RAW, DLT_NULL, DLT_LOOP)
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
EXT_HEADERS = (0, 43, 60, 44)
# Small pools so that generated TCP segments share streams, and the small table below fills and evicts.
ADDRESSES4 = [bytes([10, 0, 0, i]) for i in (1, 2, 3)]
ADDRESSES6 = [bytes(15) + bytes([i]) for i in (1, 2, 3)]
CLIENT_PORTS = (1111, 2222, 53)
GENERATED_PORTS = (53, 5353)
# About 20 s; raise it for a longer hunt: DIFFERENTIAL_EXAMPLES=20000 pytest tests/test_differential.py
GENERATED_EXAMPLES = int(os.environ.get("DIFFERENTIAL_EXAMPLES", "1200"))
GENERATED_LIMITS = {"max_tcp_streams": 4, "tcp_idle_timeout": 10}
# Generated frames carry arbitrary checksums and tunnels from anywhere: "open" decodes them all (the decoders'
# reach), "strict" verifies checksums and trusts no mirror (the shadow paths: anomalies instead of records).
POLICIES = {"open": {"checksums": 0, "mirror_sources": ("any",)}, "strict": {"checksums": 1, "mirror_sources": ()}}
NAME_REACHED = (
    "dns_queries", "dns_responses", "dns_bad_label_type", "dns_bad_pointer", "dns_too_many_pointers",
    "dns_name_too_long", "dns_truncated",
)
# Rules for generated names: single letters are common labels there, upper case too.
GENERATED_TABLE = {"a": [0, 0], "b.a": [1, 1], "z": [-1, 2], "example": [3, 3]}
ODD_BYTES = b".\\ \x00\x7f\xff\xc0@AZaz09-_"

labels = st.sampled_from([b"a", b"B", b"z", b"example", b"EXAMPLE"]) | st.binary(min_size=1, max_size=63) | st.builds(
    bytes, st.lists(st.sampled_from(list(b"abcdefgXYZ0123-" + ODD_BYTES)), min_size=1, max_size=20)
)


@st.composite
def edns_options(draw) -> list[EDNSOption]:
    """EDNS options: ECS valid (address bytes as the prefix needs) or not (odd family, prefix, length), and
    other options before it."""
    options = [EDNSOption(draw(st.sampled_from([10, 12, 3])), draw(st.binary(max_size=12)))
               for _ in range(draw(st.sampled_from([0, 0, 1, 2, 17])))]
    family = draw(st.sampled_from([1, 2, 1, 2, 0, 3]))
    source = draw(st.integers(0, 32) | st.integers(0, 128) | st.integers(0, 255))
    size = (source + 7) // 8 + draw(st.sampled_from([0, 0, 0, 0, -1, 1]))
    address = draw(st.binary(min_size=max(size, 0), max_size=max(size, 0)))
    if draw(st.integers(0, 4)):
        options.append(EDNSOption(8, struct.pack("!HBB", family, source, draw(st.integers(0, 255))) + address))
    return options


@st.composite
def dns_messages(draw) -> bytes:
    """A DNS message from dnslib (random flags, name, type, sometimes extra questions); names longer than
    dnslib allows are written by hand after a dnslib header."""
    long_labels = st.lists(st.binary(min_size=50, max_size=63), min_size=4, max_size=5)  # near 255 bytes
    name = draw(long_labels if draw(st.integers(0, 9)) == 0 else st.lists(labels, max_size=6))
    qtype = draw(st.sampled_from([1, 28, 16, 255, 65, 12, 33, 6]) | st.integers(0, 65535))
    qclass = draw(st.sampled_from([1, 1, 1, 3, 255]) | st.integers(0, 65535))
    flags = draw(st.sampled_from([0x0100, 0x0000, 0x8180, 0x8183, 0x2800]) | st.integers(0, 0xFFFF))
    record = DNSRecord(DNSHeader(id=draw(st.integers(0, 0xFFFF)), bitmap=flags))
    record.add_question(DNSQuestion(DNSLabel([b"x"]), qtype, qclass))
    extra = draw(st.sampled_from([0, 0, 0, 0, 1, 2]))
    for index in range(extra):
        record.add_question(DNSQuestion(DNSLabel([b"extra", str(index).encode()]), 1, 1))
    if draw(st.integers(0, 2)) == 0:  # an OPT record, mostly with an ECS option, for the EDNS walk
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # records the walk must step over
            record.add_answer(*RR.fromZone("an.x. 1 IN TXT hello"))
        record.add_ar(EDNS0(udp_len=1232, opts=draw(edns_options())))
    try:
        record.questions[0] = DNSQuestion(DNSLabel(name), qtype, qclass)
        return record.pack()
    except DNSLabelError:  # over 253 characters: dnslib refuses to write it, the decoders must refuse to read it
        wire = b"".join(bytes([len(label)]) + label for label in name) + b"\x00"
        fixed = struct.pack("!HHHHHH", record.header.id, flags, 1 + extra, 0, 0, 0)
        return fixed + wire + struct.pack("!HH", qtype, qclass)


def link_header(
    linktype: int, tpids: list[int], tcis: list[int], version: int, byteorder: str, pppoe: bool = False
) -> bytes:
    """The link header for `linktype` (an unsupported one gets an Ethernet header), with VLAN tags where
    the link type carries them; with `pppoe`, it announces a PPPoE session (the caller adds its header)."""
    ethertype = 0x8864 if pppoe else 0x0800 if version == 4 else 0x86DD
    chain = tpids + [ethertype]
    tags = b"".join(struct.pack("!HH", tci, chain[i + 1]) for i, tci in enumerate(tcis))
    if linktype not in (DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_RAW, DLT_NULL, DLT_LOOP):
        return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01" + struct.pack("!H", chain[0]) + tags
    if linktype == DLT_LINUX_SLL:
        return struct.pack("!HHH8sH", 0, 1, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00", chain[0]) + tags
    if linktype == DLT_LINUX_SLL2:
        return struct.pack("!HHIHBB8s", chain[0], 0, 3, 1, 0, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00") + tags
    if linktype == DLT_RAW:
        return b""
    family = 2 if version == 4 else 30
    return family.to_bytes(4, "big" if linktype == DLT_LOOP else byteorder)


def ipv6_extensions(chain: list[int], last: int) -> tuple[int, bytes]:
    """Hop-by-hop, routing, destination options (8 or 16 bytes) and atomic fragment headers."""
    body = b""
    following = [*chain[1:], last]
    for kind, after in zip(chain, following, strict=False):  # `following` has one more when chain is empty
        if kind == 44:
            body += struct.pack("!BBHI", after, 0, 0, 7)
        else:
            units = 1 if kind == 60 else 0
            body += struct.pack("!BB", after, units) + b"\x00" * (6 + 8 * units)
    return (chain[0] if chain else last), body


TUNNEL_KINDS = ("gre_ip", "gre_eth", "erspan1", "erspan2", "erspan3", "vxlan", "geneve_eth", "geneve_ip")
OUTER4, OUTER6 = (bytes([172, 16, 0, 1]), bytes([172, 16, 0, 2])), (bytes(15) + b"\xf1", bytes(15) + b"\xf2")


@st.composite
def tunnel_plans(draw, linktype: int) -> tuple[list[tuple[str, int, int]], bool]:
    """Tunnels to wrap a unit's packets in, inner first: (kind, random bits for its options, outer IP version),
    up to one past MAX_TUNNEL_DEPTH; and whether a PPPoE session carries the outermost IP packet."""
    if draw(st.integers(0, 9)) < 6:
        return [], False
    depth = draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4, 5]))
    plan = [(draw(st.sampled_from(TUNNEL_KINDS)), draw(st.integers(0, 2**16 - 1)), draw(st.sampled_from([4, 6])))
            for _ in range(depth)]
    return plan, linktype in (DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2) and draw(st.integers(0, 3)) == 0


def ip_type(version: int) -> int:
    return 0x0800 if version == 4 else 0x86DD


def outer_ip(version: int, protocol: int, payload: bytes) -> bytes:
    if version == 4:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, protocol, 0, *OUTER4) + payload
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), protocol, 64, *OUTER6) + payload


def inner_ethernet(packet: bytes, version: int, bits: int) -> bytes:
    """An Ethernet frame around an IP packet, with 0-2 VLAN tags (ids from `bits`)."""
    tags = (bits & 3) % 3
    chain = [0x8100] * tags + [ip_type(version)]
    body = b"".join(struct.pack("!HH", (bits >> 2) + i, chain[i + 1]) for i in range(tags))
    return b"\x02\x00\x00\x00\x00\x12\x02\x00\x00\x00\x00\x11" + struct.pack("!H", chain[0]) + body + packet


def wrap(kind: str, bits: int, outer: int, packet: bytes, version: int) -> bytes:
    """One tunnel around an IP packet of `version`: the outer IP packet (of version `outer`)."""
    if kind in ("vxlan", "geneve_eth", "geneve_ip"):
        if kind == "vxlan":
            body = struct.pack("!BBHI", 0x08, 0, 0, 100 << 8) + inner_ethernet(packet, version, bits)
        else:
            words = bits & 3
            protocol = 0x6558 if kind == "geneve_eth" else ip_type(version)
            inner = inner_ethernet(packet, version, bits) if kind == "geneve_eth" else packet
            body = struct.pack("!BBHI", words, 0, protocol, 200 << 8) + bytes(4 * words) + inner
        return outer_ip(outer, 17, struct.pack("!HHHH", 49152, 4789 if kind == "vxlan" else 6081, 8 + len(body), 0)
                        + body)
    # GRE's optional checksum (C), key (K) and sequence number (S) fields, chosen by the low bits
    flags = (0x8000 if bits & 1 else 0) | (0x2000 if bits & 2 else 0) | (0x1000 if bits & 4 else 0)
    if kind == "erspan2":
        flags |= 0x1000
    elif kind == "erspan1":
        flags &= ~0x1000
    optional = b"\x00\x00\x00\x07" * bin(flags).count("1")
    if kind == "gre_ip":
        protocol, body = ip_type(version), packet
    elif kind == "gre_eth":
        protocol, body = 0x6558, inner_ethernet(packet, version, bits)
    elif kind == "erspan1":
        protocol, body = 0x88BE, inner_ethernet(packet, version, bits)
    elif kind == "erspan2":
        protocol, body = 0x88BE, struct.pack("!II", 0x10000001, 5) + inner_ethernet(packet, version, bits)
    else:
        platform = bits >> 15
        header = struct.pack("!IIHH", 0x20000006, 0x01020304, 0, platform) + bytes(8 * platform)
        protocol, body = 0x22EB, header + inner_ethernet(packet, version, bits)
    return outer_ip(outer, 47, struct.pack("!HH", flags, protocol) + optional + body)


def tunnelled(plan: list[tuple[str, int, int]], pppoe: bool, packet: bytes, version: int) -> tuple[bytes, int]:
    """The packet inside the planned tunnels (and PPPoE): the bytes after the link header and their IP version."""
    for kind, bits, outer in plan:
        packet, version = wrap(kind, bits, outer, packet, version), outer
    if pppoe:
        packet = struct.pack("!BBHHH", 0x11, 0, 0x11, len(packet) + 2, 0x0021 if version == 4 else 0x0057) + packet
    return packet, version


@st.composite
def units(draw, linktype: int) -> list[tuple[bytes, int]]:
    """One DNS message on the wire: its frames (one for UDP, one or more TCP segments), each with the offset
    where its DNS bytes start (for targeted mutations)."""
    message = draw(dns_messages())
    version = draw(st.sampled_from([4, 6]))
    tagged = linktype in (DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2)
    tag_count = draw(st.integers(0, 3)) if tagged and draw(st.booleans()) else 0
    tpids = [draw(st.sampled_from(VLAN_TPIDS)) for _ in range(tag_count)]
    tcis = [draw(st.integers(0, 0xFFFF)) for _ in range(tag_count)]
    byteorder = draw(st.sampled_from(["big", "little"]))
    plan, pppoe = draw(tunnel_plans(linktype))
    tcp = draw(st.integers(0, 2)) == 0
    client = draw(st.integers(0, 2))
    server = draw(st.integers(0, 2))
    sport, dport = draw(st.sampled_from(CLIENT_PORTS)), draw(st.sampled_from(GENERATED_PORTS))
    if draw(st.booleans()):
        sport, dport = dport, sport
    proto = 6 if tcp else 17
    if tcp:
        seq = draw(st.integers(0, 2**32 - 1) | st.integers(2**32 - 40, 2**32 - 1))
        stream = struct.pack("!H", len(message)) + message
        if draw(st.integers(0, 3)) == 0:  # a second message in the same stream
            stream += struct.pack("!H", len(message)) + message
        cuts = sorted(set(draw(st.lists(st.integers(1, len(stream) - 1), max_size=2))))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        segments = []
        if draw(st.booleans()):
            segments.append((seq - 1, 0x02, b""))  # SYN
        for piece in pieces:
            segments.append((seq, 0x18, piece))
            seq += len(piece)
        if draw(st.integers(0, 3)) == 0:
            segments.append((seq, draw(st.sampled_from([0x11, 0x04, 0x10])), b""))
        transports = [
            struct.pack("!HHIIBBHHH", sport, dport, s % 2**32, 1, 0x50, f, 1024, 0, 0) + data
            for s, f, data in segments
        ]
        dns_offset = 20 + 2  # past the TCP header and, in the first piece, the length prefix
    else:
        transports = [struct.pack("!HHHH", sport, dport, 8 + len(message), 0) + message]
        dns_offset = 8
    frames = []
    for transport in transports:
        if version == 4:
            options = b"\x01\x01\x01\x01" * draw(st.integers(0, 2))
            header = struct.pack(
                "!BBHHHBBH4s4s", 0x45 + len(options) // 4, 0, 20 + len(options) + len(transport), 1, 0x4000, 64,
                proto, 0, ADDRESSES4[client], ADDRESSES4[server],
            ) + options
        else:
            chain = draw(st.lists(st.sampled_from(EXT_HEADERS), max_size=3))
            nh, extensions = ipv6_extensions(chain, proto)
            header = struct.pack(
                "!IHBB16s16s", 0x60000000, len(extensions) + len(transport), nh, 64, ADDRESSES6[client],
                ADDRESSES6[server],
            ) + extensions
        packet, outer_version = tunnelled(plan, pppoe, header + transport, version)
        frame = link_header(linktype, tpids, tcis, outer_version, byteorder, pppoe) + packet
        frames.append((frame, len(frame) - len(transport) + dns_offset))
    return frames


MUTATIONS = ("flip", "flip_dns", "truncate", "insert", "delete", "pointer", "label_type", "length", "qdcount")


@st.composite
def mutated(draw, frame: bytes, dns_offset: int) -> bytes:
    kind = draw(st.sampled_from(MUTATIONS))
    data = bytearray(frame)
    anywhere = st.integers(0, max(len(data) - 1, 0))
    in_dns = st.integers(min(dns_offset, len(data) - 1), len(data) - 1)
    if kind == "flip":
        data[draw(anywhere)] ^= 1 << draw(st.integers(0, 7))
    elif kind == "flip_dns":
        data[draw(in_dns)] = draw(st.integers(0, 255))
    elif kind == "truncate":
        del data[draw(anywhere) :]
    elif kind == "insert":
        at = draw(anywhere)
        data[at:at] = draw(st.binary(min_size=1, max_size=8))
    elif kind == "delete":
        at = draw(anywhere)
        del data[at : at + draw(st.integers(1, 8))]
    elif kind in ("pointer", "label_type"):
        at = draw(in_dns)
        value = (0xC000 | draw(st.integers(0, 64))) if kind == "pointer" else draw(st.integers(0x4000, 0xBFFF))
        data[at : at + 2] = struct.pack("!H", value)
    elif kind == "qdcount":
        data[dns_offset + 4 : dns_offset + 6] = struct.pack("!H", draw(st.sampled_from([0, 0, 2, 0xFFFF])))
    else:  # a bogus 16-bit length somewhere in the headers (IP total/payload, UDP, TCP framing)
        at = draw(st.integers(0, max(dns_offset - 2, 0)))
        bogus = st.sampled_from([0, 1, 7, 8, 19, 20, 40, 0xFFFF]) | st.integers(0, 0xFFFF)
        data[at : at + 2] = struct.pack("!H", draw(bogus))
    return bytes(data)


@st.composite
def generated_captures(draw) -> tuple[int, list[tuple[int, int, bytes]], int]:
    """A link type, its frames with packet times, and how many DNS messages were generated."""
    # Now and then a link type neither path supports (DLT_IEEE802_11): every frame counts as such.
    linktype = draw(st.sampled_from(LINKTYPES * 3 + (105,)))
    frames = []
    messages = 0
    sec, usec = 1_700_000_000, 0
    for _ in range(draw(st.integers(1, 12))):
        messages += 1
        for frame, dns_offset in draw(units(linktype)):
            if draw(st.integers(0, 9)) < 3:  # 30% of frames are mutated; the rest stay valid
                frame = draw(mutated(frame, dns_offset))
            sec += draw(st.sampled_from([0, 0, 0, 1, 2, 11]))
            usec = draw(st.integers(0, 999_999))
            frames.append((sec, usec, frame))
    return linktype, frames, messages


def as_batch(frames: list[tuple[int, int, bytes]]) -> tuple[bytes, bytes]:
    data, meta = b"", b""
    for sec, usec, frame in frames:
        meta += struct.pack("=IIII", sec, usec, len(data), len(frame))
        data += frame
    return data, meta


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_generated_packets_agree(policy: str) -> None:
    needs_fast_path()
    limits = {**GENERATED_LIMITS, **POLICIES[policy]}
    tally: Counter[str] = Counter()
    table = GENERATED_TABLE

    @settings(
        max_examples=GENERATED_EXAMPLES, deadline=None, database=None, derandomize=ON_CI,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(capture=generated_captures(), split=st.integers(1, 6))
    def check(capture, split: int) -> None:
        linktype, frames, messages = capture
        reference_loop = ReferenceLoop(linktype, GENERATED_PORTS, table, True, **limits)
        fast_loop = _loop.FastLoop(linktype, GENERATED_PORTS, table, True, **limits)
        reference, fast = [], []
        for start in range(0, len(frames), split):  # several batches: state must carry across them
            data, meta = as_batch(frames[start : start + split])
            reference += reference_loop.run_batch(data, meta, start + 1)
            fast += fast_loop.run_batch(data, meta, start + 1)
        assert_same(reference_loop, fast_loop, reference, fast, f"linktype {linktype}, frames {frames!r}")
        counters = reference_loop.counters()
        tally.update(counters)
        tally["messages"] += messages
        tally["reached"] += sum(counters[name] for name in NAME_REACHED)
        tally["with_client_subnet"] += sum(record.client_subnet is not None for record in reference)
        tally["tunnelled_records"] += sum(record.tunnel is not None for record in reference)

    check()
    share = tally["reached"] / tally["messages"]
    print(f"\n{tally['reached']} of {tally['messages']} generated DNS messages reached the question decoder "
          f"({share:.0%}); counters over all examples: {dict(sorted(tally.items()))}")
    if policy == "strict":
        assert tally["bad_ip_checksum"] + tally["bad_udp_checksum"] + tally["bad_tcp_checksum"] > 0
        assert tally["tunnel_untrusted"] > 0
        return
    assert share >= 0.5
    assert tally["with_client_subnet"] > 0 and tally["tunnelled_records"] > 0 and tally["tunnel_too_deep"] > 0


# ---- (3) the compiled module is the one in use --------------------------------------------------------------


def test_compiled_module_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    needs_fast_path()
    from sensor import loop as selector

    assert _loop.__file__.endswith(".so"), _loop.__file__
    monkeypatch.delenv("TRUESOURCE_PURE", raising=False)
    fast = selector.make_loop(DLT_EN10MB, (53,), {"com": [0, 0]}, True)
    assert isinstance(fast, _loop.FastLoop)
    monkeypatch.setenv("TRUESOURCE_PURE", "1")
    assert isinstance(selector.make_loop(DLT_EN10MB, (53,), {"com": [0, 0]}, True), ReferenceLoop)
    monkeypatch.delenv("TRUESOURCE_PURE")
    assert isinstance(selector.make_loop(DLT_EN10MB, (53,), {"com": [0, 0]}, True, pure=True), ReferenceLoop)


# ---- (4) checksums of every length, right and wrong ------------------------------------------------------------


def internet_sum(data: bytes) -> int:
    """RFC 1071, written out here (not sensor/decode/checksum.py), so the test is a third opinion."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def checksummed_packet(version: int, protocol: int, sport: int, payload: bytes, options: bytes = b"") -> bytes:
    """An IPv4 (with `options`) or IPv6 packet to port 53 with its header and transport checksums right."""
    src, dst = ((bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) if version == 4
                else (bytes(15) + b"\x01", bytes(15) + b"\x02"))
    if protocol == 17:
        segment = struct.pack("!HHHH", sport, 53, 8 + len(payload), 0) + payload
        at = 6
    else:
        segment = struct.pack("!HHIIBBHHH", sport, 53, 1000, 0, 5 << 4, 0x18, 65535, 0, 0) + payload
        at = 16
    length = len(segment)
    pseudo = src + dst + (struct.pack("!BBH", 0, protocol, length) if version == 4
                          else struct.pack("!I3xB", length, protocol))
    segment = segment[:at] + struct.pack("!H", internet_sum(pseudo + segment)) + segment[at + 2:]
    if version == 6:
        return struct.pack("!IHBB", 0x60000000, length, protocol, 64) + src + dst + segment
    ihl = (20 + len(options)) // 4
    header = struct.pack("!BBHHHBBH", 0x40 | ihl, 0, 4 * ihl + length, 1, 0, 64, protocol, 0) + src + dst + options
    header = header[:10] + struct.pack("!H", internet_sum(header)) + header[12:]
    return header + segment


def test_checksums_of_every_length_agree() -> None:
    """Every segment length from 8 bytes to a few hundred (each tail of the word-at-a-time sum), IPv4 with and
    without options and IPv6, UDP and TCP: right checksums decode, one flipped bit (in the header, the first, a
    middle and the last payload byte) shadows the frame, in both loops alike."""
    needs_fast_path()
    query = DNSRecord(DNSHeader(id=7), q=DNSQuestion("b.a", 1)).pack()
    frames, expected_records, sport = [], 0, 1024
    for version, options in ((4, b""), (4, b"\x01\x01\x01\x00"), (6, b"")):
        for protocol in (17, 6):
            for extra in [*range(0, 70), 127, 128, 129, 255, 256, 257, 1000, 1001]:
                message = query + bytes(range(extra % 251)) + b"\xa5" * (extra - extra % 251)
                payload = message if protocol == 17 else struct.pack("!H", len(message)) + message
                for flip in (None, "ip", 0, len(payload) // 2, len(payload) - 1):
                    if flip == "ip" and version == 6:
                        continue
                    sport += 1
                    packet = bytearray(checksummed_packet(version, protocol, sport, payload, options))
                    if flip == "ip":
                        packet[8] ^= 0x01  # the TTL
                    elif flip is not None:
                        packet[len(packet) - len(payload) + flip] ^= 0x10
                    frames.append(bytes(packet))
                    expected_records += flip is None
    data, meta = as_batch([(1, i, frame) for i, frame in enumerate(frames)])
    limits = {"checksums": 1, "mirror_sources": ()}
    reference_loop = ReferenceLoop(DLT_RAW, (53,), GENERATED_TABLE, True, **limits)
    fast_loop = _loop.FastLoop(DLT_RAW, (53,), GENERATED_TABLE, True, **limits)
    reference = reference_loop.run_batch(data, meta, 1)
    fast = fast_loop.run_batch(data, meta, 1)
    counters = reference_loop.counters()
    assert_same(reference_loop, fast_loop, reference, fast, "checksums of every length")
    assert len(reference) == expected_records
    bad = counters["bad_ip_checksum"] + counters["bad_udp_checksum"] + counters["bad_tcp_checksum"]
    assert bad == len(frames) - expected_records
