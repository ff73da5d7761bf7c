# Counter slots, in the order of sensor.records.COUNTERS (a test checks they agree).
cdef enum:
    C_packets = 0
    C_bytes = 1
    C_unsupported_linktype = 2
    C_truncated_link = 3
    C_not_ip = 4
    C_truncated_ip = 5
    C_bad_ip_header = 6
    C_ip_length_exceeds_capture = 7
    C_ip_fragment = 8
    C_ip_fragment_not_first = 9
    C_bad_ipv6_extension = 10
    C_not_udp_tcp = 11
    C_truncated_transport = 12
    C_bad_udp_length = 13
    C_bad_tcp_header = 14
    C_not_dns_port = 15
    C_tcp_no_payload = 16
    C_dns_queries = 17
    C_dns_responses = 18
    C_dns_too_short = 19
    C_dns_no_question = 20
    C_dns_bad_label_type = 21
    C_dns_bad_pointer = 22
    C_dns_too_many_pointers = 23
    C_dns_name_too_long = 24
    C_dns_truncated = 25
    C_dns_extra_questions = 26
    C_hits = 27
    C_tcp_gap = 28
    C_tcp_retransmission = 29
    C_tcp_stream_evicted = 30
    C_tcp_stream_expired = 31
    N_COUNTERS = 32

COUNTER_NAMES = (
    "packets",
    "bytes",
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
    "hits",
    "tcp_gap",
    "tcp_retransmission",
    "tcp_stream_evicted",
    "tcp_stream_expired",
)
