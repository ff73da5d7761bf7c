"""The decoded-message record both decoders emit (see docs/decoding.md)."""

from __future__ import annotations

from typing import NamedTuple


class DnsMessage(NamedTuple):
    """One decoded DNS message: the tuple the fast path and the reference decoder both produce."""

    frame: int
    ts_sec: int
    ts_usec: int
    vlan_id: int | None
    src_ip: bytes
    dst_ip: bytes
    transport: int
    src_port: int
    dst_port: int
    dns_id: int
    flags: int
    qdcount: int
    qname: str
    qtype: int
    qclass: int
    rule: int
    # Appended last, with defaults, so records written before tunnels and ECS existed still construct.
    tunnel: str | None = None  # tunnels outer to inner joined by "/" ("gre/vxlan"), None when not tunneled
    client_subnet: str | None = None  # EDNS Client Subnet of a query ("192.0.2.0/24"), None when absent
    # ---- issue 13: what lets a SIEM tell a forged source from a real one (docs/events.md) ----
    src_mac: bytes | None = None  # the innermost Ethernet (or SLL) sender's 6-byte address; None without one
    tunnel_outer: tuple[bytes, bytes] | None = None  # the outermost tunnel's (source, destination) addresses
    tcp_handshake: bool | None = None  # TCP: this direction's SYN and the peer's SYN-ACK were seen; UDP: None
    # A CNAME hit (a response; sensor/decode/cnames.py): (index of the hop whose target matched,
    # ((owner, TTL, target), ...) every CNAME record of the answer section in order); None otherwise.
    cname: tuple[int, tuple[tuple[str, int, str], ...]] | None = None

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


# Why a frame was not decoded, or a DNS message not read: one name each, in the order summaries print them.
FRAME_REASONS = (
    "unsupported_linktype",
    "truncated_link",
    "not_ip",
    "truncated_ip",
    "bad_ip_header",
    "ip_length_exceeds_capture",
    "ip_fragment",
    "ip_fragment_not_first",
    "bad_ipv6_extension",
    "not_udp_tcp",
    "truncated_transport",
    "bad_udp_length",
    "bad_tcp_header",
    "not_dns_port",
    "tcp_no_payload",
    "bad_tunnel",
    "tunnel_too_deep",
    # What the resolver's kernel drops (docs/decoding.md, "Checksums", "Tunnels", "IP fragments").
    "bad_ip_checksum",
    "bad_udp_checksum",
    "bad_tcp_checksum",
    "tunnel_untrusted",
    "ipv6_fragment_incomplete_chain",
)
MESSAGE_REASONS = (
    "dns_too_short",
    "dns_no_question",
    "dns_bad_label_type",
    "dns_bad_pointer",
    "dns_too_many_pointers",
    "dns_name_too_long",
    "dns_truncated",
)
TCP_EVENTS = (
    "tcp_gap",
    "tcp_retransmission",
    "tcp_stream_evicted",
    "tcp_stream_expired",
    # Linux's reassembly (docs/decoding.md, "TCP reassembly")
    "tcp_out_of_order",
    "tcp_ooo_dropped",
    "tcp_overlap",
    "tcp_overlap_conflict",
    "tcp_syn_data_ignored",
    "tcp_syn_ignored",
    "tcp_rst_ignored",
    "tcp_urgent_dropped",
    "tcp_evicted_mid_message",
)
FLOW_EVENTS = ("flows_created", "flows_evicted")  # with --flows: flows started; flows pushed out of a full table
# The query log's correlation (counted only when it is on; docs/querylog.md) and IP fragment reassembly.
QUERY_LOG_EVENTS = ("dns_query_expired", "dns_query_evicted", "dns_query_retransmission", "dns_response_without_query")
REASSEMBLY_EVENTS = (
    "ip_reassembled",
    "ip_fragment_expired",
    "ip_fragment_evicted",
    "ip_fragment_overlap",
    "ip_reassembly_too_big",
    "ip_fragment_duplicate",
)
# The memory budget (issue 14, sensor/budget.py): partial TCP messages dropped to keep the streams' bytes within
# max_tcp_bytes.
BUDGET_EVENTS = ("tcp_buffer_evicted",)
# Gauges beside the counters: how full each bounded table is now (loop.table_sizes(); docs/limits.md).
TABLE_GAUGES = ("tcp_streams", "fragmented_datagrams", "pending_queries", "tcp_buffered_bytes", "tcp_ooo_bytes",
                "fragment_bytes")
# Informational, beside the reasons: frames decapsulated at least once; emitted queries whose EDNS
# (OPT record or Client Subnet option) was malformed: the message is still decoded.
COUNTERS = (
    ("packets", "bytes", "tunneled")
    + FRAME_REASONS
    + ("dns_queries", "dns_responses")
    + MESSAGE_REASONS
    + ("dns_extra_questions", "dns_bad_edns", "allowed", "hits")
    + TCP_EVENTS
    + FLOW_EVENTS
    + QUERY_LOG_EVENTS
    + REASSEMBLY_EVENTS
    + BUDGET_EVENTS
    + ("checksums_auto_off",)  # 1 when --checksums auto turned verification off (docs/decoding.md)
    # CNAME hits (docs/decoding.md, "CNAME hits"): responses that hit through a CNAME target (also in `hits`);
    # responses whose answer section was cut short by a malformed part
    + ("dns_cname_hits", "dns_bad_answers")
    # The memory budget: a stream's out-of-order segments dropped to keep all streams' within max_ooo_bytes.
    + ("tcp_ooo_evicted",)
)
