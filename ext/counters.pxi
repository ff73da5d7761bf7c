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
    C_dns_queries = 20
    C_dns_responses = 21
    C_dns_too_short = 22
    C_dns_no_question = 23
    C_dns_bad_label_type = 24
    C_dns_bad_pointer = 25
    C_dns_too_many_pointers = 26
    C_dns_name_too_long = 27
    C_dns_truncated = 28
    C_dns_extra_questions = 29
    C_dns_bad_edns = 30
    C_allowed = 31
    C_hits = 32
    C_tcp_gap = 33
    C_tcp_retransmission = 34
    C_tcp_stream_evicted = 35
    C_tcp_stream_expired = 36
    C_flows_created = 37
    C_flows_evicted = 38
    C_dns_query_expired = 39
    C_dns_query_evicted = 40
    C_dns_query_retransmission = 41
    C_dns_response_without_query = 42
    C_ip_reassembled = 43
    C_ip_fragment_expired = 44
    C_ip_fragment_evicted = 45
    C_ip_fragment_overlap = 46
    C_ip_reassembly_too_big = 47
    C_tcp_buffer_evicted = 48
    N_COUNTERS = 49

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
    "tcp_buffer_evicted",
)
