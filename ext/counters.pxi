# Counter slots, in the order of sensor.records.COUNTERS (a test checks they agree).
cdef enum:
    C_packets = 0
    C_bytes = 1
    C_tunneled = 2
    C_unsupported_linktype = 3
    C_truncated_link = 4
    C_not_ip = 5
    C_truncated_ip = 6
    C_bad_ip_header = 7
    C_ip_length_exceeds_capture = 8
    C_ip_fragment = 9
    C_ip_fragment_not_first = 10
    C_bad_ipv6_extension = 11
    C_not_udp_tcp = 12
    C_truncated_transport = 13
    C_bad_udp_length = 14
    C_bad_tcp_header = 15
    C_not_dns_port = 16
    C_tcp_no_payload = 17
    C_bad_tunnel = 18
    C_tunnel_too_deep = 19
    C_bad_ip_checksum = 20
    C_bad_udp_checksum = 21
    C_bad_tcp_checksum = 22
    C_tunnel_untrusted = 23
    C_ipv6_fragment_incomplete_chain = 24
    C_dns_queries = 25
    C_dns_responses = 26
    C_dns_too_short = 27
    C_dns_no_question = 28
    C_dns_bad_label_type = 29
    C_dns_bad_pointer = 30
    C_dns_too_many_pointers = 31
    C_dns_name_too_long = 32
    C_dns_truncated = 33
    C_dns_extra_questions = 34
    C_dns_bad_edns = 35
    C_allowed = 36
    C_hits = 37
    C_tcp_gap = 38
    C_tcp_retransmission = 39
    C_tcp_stream_evicted = 40
    C_tcp_stream_expired = 41
    C_tcp_out_of_order = 42
    C_tcp_ooo_dropped = 43
    C_tcp_overlap = 44
    C_tcp_overlap_conflict = 45
    C_tcp_syn_data_ignored = 46
    C_tcp_syn_ignored = 47
    C_tcp_rst_ignored = 48
    C_tcp_urgent_dropped = 49
    C_tcp_evicted_mid_message = 50
    C_flows_created = 51
    C_flows_evicted = 52
    C_dns_query_expired = 53
    C_dns_query_evicted = 54
    C_dns_query_retransmission = 55
    C_dns_response_without_query = 56
    C_ip_reassembled = 57
    C_ip_fragment_expired = 58
    C_ip_fragment_evicted = 59
    C_ip_fragment_overlap = 60
    C_ip_reassembly_too_big = 61
    C_ip_fragment_duplicate = 62
    C_tcp_buffer_evicted = 63
    C_checksums_auto_off = 64
    C_dns_cname_hits = 65
    C_dns_bad_answers = 66
    C_tcp_ooo_evicted = 67
    N_COUNTERS = 68

COUNTER_NAMES = (
    "packets",
    "bytes",
    "tunneled",
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
    "bad_ip_checksum",
    "bad_udp_checksum",
    "bad_tcp_checksum",
    "tunnel_untrusted",
    "ipv6_fragment_incomplete_chain",
    "dns_queries",
    "dns_responses",
    "dns_too_short",
    "dns_no_question",
    "dns_bad_label_type",
    "dns_bad_pointer",
    "dns_too_many_pointers",
    "dns_name_too_long",
    "dns_truncated",
    "dns_extra_questions",
    "dns_bad_edns",
    "allowed",
    "hits",
    "tcp_gap",
    "tcp_retransmission",
    "tcp_stream_evicted",
    "tcp_stream_expired",
    "tcp_out_of_order",
    "tcp_ooo_dropped",
    "tcp_overlap",
    "tcp_overlap_conflict",
    "tcp_syn_data_ignored",
    "tcp_syn_ignored",
    "tcp_rst_ignored",
    "tcp_urgent_dropped",
    "tcp_evicted_mid_message",
    "flows_created",
    "flows_evicted",
    "dns_query_expired",
    "dns_query_evicted",
    "dns_query_retransmission",
    "dns_response_without_query",
    "ip_reassembled",
    "ip_fragment_expired",
    "ip_fragment_evicted",
    "ip_fragment_overlap",
    "ip_reassembly_too_big",
    "ip_fragment_duplicate",
    "tcp_buffer_evicted",
    "checksums_auto_off",
    "dns_cname_hits",
    "dns_bad_answers",
    "tcp_ooo_evicted",
)
