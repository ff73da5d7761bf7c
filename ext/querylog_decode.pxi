# Bulk decoding of the packed query-log buffer (correlate.pxi) into QueryLogEntry records, answers included.
# Included by loop.pyx. Runs outside the packet loop (when the entries are taken, possibly in another process);
# written in C because a Python decoder costs tens of microseconds an entry. The reference is
# sensor/querylog/packed.py with sensor/decode/answers.py; the text forms are documented in
# sensor/querylog/record.py.

cdef enum:
    RR_A = 1
    RR_NS = 2
    RR_CNAME = 5
    RR_PTR = 12
    RR_MX = 15
    RR_TXT = 16
    RR_AAAA = 28

import gc

IPV6_ADDRESS = ipaddress.IPv6Address
TUPLE_NEW = tuple.__new__
cdef const char* HEX_DIGITS = b"0123456789abcdef"


cdef str ipv4_str(const uint8_t* a):
    cdef char text[16]
    cdef int o = 0, k, v
    for k in range(4):
        v = a[k]
        if v >= 100:
            text[o] = 48 + v // 100
            o += 1
        if v >= 10:
            text[o] = 48 + (v // 10) % 10
            o += 1
        text[o] = 48 + v % 10
        o += 1
        if k < 3:
            text[o] = 46
            o += 1
    return PyUnicode_DecodeASCII(text, o, NULL)


cdef str ipv6_str(const uint8_t* a):
    """As Python's ipaddress prints it: hextets in lower-case hex, the first longest run of two or more zero
    hextets as `::` (RFC 5952). IPv4-mapped addresses, whose form changed across Python versions, are left
    to ipaddress itself."""
    cdef char text[48]
    cdef int o = 0, k, v, shift, best_start = -1, best_len = 0, start = -1, run = 0
    cdef bint started
    cdef uint16_t h[8]
    for k in range(8):
        h[k] = (a[2 * k] << 8) | a[2 * k + 1]
    if h[0] == 0 and h[1] == 0 and h[2] == 0 and h[3] == 0 and h[4] == 0 and h[5] == 0xFFFF:
        return str(IPV6_ADDRESS(PyBytes_FromStringAndSize(<const char*>a, 16)))
    for k in range(8):
        if h[k] == 0:
            run += 1
            if start == -1:
                start = k
            if run > best_len:
                best_len = run
                best_start = start
        else:
            run = 0
            start = -1
    if best_len < 2:
        best_start = -1
    k = 0
    while k < 8:
        if k == best_start:
            text[o] = 58
            text[o + 1] = 58
            o += 2
            k += best_len
            continue
        if k and k != best_start + best_len or (k and best_start == -1):
            text[o] = 58
            o += 1
        v = h[k]
        started = False
        for shift in range(12, -4, -4):
            if (v >> shift) & 15 or started or shift == 0:
                text[o] = HEX_DIGITS[(v >> shift) & 15]
                o += 1
                started = True
        k += 1
    return PyUnicode_DecodeASCII(text, o, NULL)


cdef str name_str(DecodedName* name):
    return PyUnicode_DecodeASCII(<const char*>name.text, name.text_len, NULL)


cdef str generic_rdata(const uint8_t* p, uint32_t n):
    """RFC 3597 3: `\\# length hex`."""
    cdef bytearray text
    cdef uint32_t k
    if n == 0:
        return "\\# 0"
    text = bytearray(n * 2)
    for k in range(n):
        text[2 * k] = HEX_DIGITS[p[k] >> 4]
        text[2 * k + 1] = HEX_DIGITS[p[k] & 15]
    return f"\\# {n} " + text.decode("ascii")


cdef object txt_rdata(const uint8_t* p, uint32_t n):
    """Each character-string quoted; None when the lengths do not fill the data exactly."""
    cdef bytearray text = bytearray()
    cdef uint32_t pos = 0, end, k
    cdef uint8_t b
    while pos < n:
        end = pos + 1 + p[pos]
        if end > n:
            return None
        if pos:
            text.append(32)
        text.append(34)
        for k in range(pos + 1, end):
            b = p[k]
            if b == 34 or b == 92:
                text.append(92)
                text.append(b)
            elif 0x20 <= b <= 0x7E:
                text.append(b)
            else:
                text += b"\\%03d" % b
        text.append(34)
        pos = end
    return text.decode("ascii")


cdef str rdata_str(const uint8_t* msg, uint32_t n, uint16_t rrtype, uint32_t start, uint32_t end,
                   DecodedName* scratch):
    cdef const uint8_t* p = msg + start
    cdef uint32_t length = end - start
    cdef object text
    if rrtype == RR_A and length == 4:
        return ipv4_str(p)
    if rrtype == RR_AAAA and length == 16:
        return ipv6_str(p)
    if rrtype == RR_NS or rrtype == RR_CNAME or rrtype == RR_PTR:
        if decode_name(msg, n, start, scratch) == 0 and scratch.end == end:
            return name_str(scratch)
    elif rrtype == RR_MX and length >= 3:
        if decode_name(msg, n, start + 2, scratch) == 0 and scratch.end == end:
            return f"{rd16(p)} " + name_str(scratch)
    elif rrtype == RR_TXT and length > 0:
        text = txt_rdata(p, length)
        if text is not None:
            return text
    return generic_rdata(p, length)


cdef tuple answer_section(const uint8_t* msg, uint32_t n, DecodedName* scratch, int max_answers,
                          Py_ssize_t max_bytes, int* dropped):
    """The answers of a response; a malformed section ends the walk, keeping the records read before it.
    At most `max_answers` records and `max_bytes` of owner and data text are kept (negative: no cap); when
    the cap ends the walk, `dropped` is the response's answer count minus those kept."""
    cdef uint32_t pos = 12, start, end
    cdef uint16_t qdcount = rd16(msg + 4), ancount = rd16(msg + 6), rrtype
    cdef uint32_t k, ttl
    cdef Py_ssize_t text_bytes = 0
    cdef str owner, data
    cdef list answers = []
    dropped[0] = 0
    for k in range(qdcount):
        if decode_name(msg, n, pos, scratch):
            return ()
        pos = scratch.end + 4
    for k in range(ancount):
        if max_answers >= 0 and <int>k >= max_answers:
            dropped[0] = ancount - k
            break
        if decode_name(msg, n, pos, scratch):
            break
        owner = name_str(scratch)
        pos = scratch.end
        if pos + 10 > n:
            break
        rrtype = rd16(msg + pos)
        ttl = rd32(msg + pos + 4)
        start = pos + 10
        end = start + rd16(msg + pos + 8)
        if end > n:
            break
        data = rdata_str(msg, n, rrtype, start, end, scratch)
        text_bytes += len(owner) + len(data)
        if max_bytes >= 0 and text_bytes > max_bytes:
            dropped[0] = ancount - k
            break
        answers.append((owner, rrtype, ttl, data))
        pos = end
    return tuple(answers)


def decode_query_log(bytes data, entry_type, int max_answers=-1, Py_ssize_t max_answer_bytes=-1,
                     int response_only_answers=-1):
    """Every entry packed in `data` (sensor/querylog/packed.py), as `entry_type` (QueryLogEntry) records.
    The caps (negative: none) bound what one entry keeps of its answers: `max_answers` records and
    `max_answer_bytes` of their text; `response_only_answers` records for a response with no query."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef bint collecting = gc.isenabled()
    # Hundreds of thousands of new tuples would start the cyclic collector again and again over objects
    # that cannot form cycles; it is paused for the decoding.
    gc.disable()
    try:
        return decode_entries_into(p, size, entry_type, max_answers, max_answer_bytes, response_only_answers)
    finally:
        if collecting:
            gc.enable()


cdef list decode_entries_into(const uint8_t* p, Py_ssize_t size, entry_type, int max_answers,
                              Py_ssize_t max_answer_bytes, int response_only_answers):
    cdef Py_ssize_t pos = 0
    cdef EntryHeader hd
    cdef const uint8_t* msg
    cdef DecodedName scratch
    cdef int alen, k, dropped = 0, cap
    cdef uint16_t flags
    cdef list entries = []
    cdef object tunnel, answers, rcode
    while pos + <Py_ssize_t>sizeof(EntryHeader) <= size:
        memcpy(&hd, p + pos, sizeof(EntryHeader))
        if hd.record_len < sizeof(EntryHeader) or pos + hd.record_len > size:
            raise ValueError("packed query log is cut off or corrupt")
        msg = p + pos + sizeof(EntryHeader) + hd.name_len
        if hd.message_len >= 12:
            flags = rd16(msg + 2)
            rcode = flags & 0xF
            cap = max_answers
            if hd.status == STATUS_RESPONSE_ONLY and response_only_answers >= 0 and (cap < 0 or response_only_answers < cap):
                cap = response_only_answers  # what anyone can send without a query
            answers = answer_section(msg, hd.message_len, &scratch, cap, max_answer_bytes, &dropped)
        else:
            dropped = 0
            flags = 0
            rcode = -1
            answers = ()
        tunnel = None
        if hd.ntunnels:
            tunnel = "/".join([TUNNEL_NAMES[hd.tunnels[k]] for k in range(hd.ntunnels)])
        alen = 4 if hd.ip_version == 4 else 16
        entries.append(TUPLE_NEW(entry_type, (
            hd.ts_sec, hd.ts_usec, None if hd.vlan < 0 else hd.vlan,
            PyBytes_FromStringAndSize(<const char*>hd.client, alen),
            PyBytes_FromStringAndSize(<const char*>hd.server, alen),
            hd.client_port, hd.server_port, hd.transport, hd.dns_id,
            PyUnicode_DecodeASCII(<const char*>(p + pos + sizeof(EntryHeader)), hd.name_len, NULL),
            hd.qtype, hd.qclass, hd.status, rcode, flags, hd.latency_us, answers, hd.frame, tunnel,
            hd.retransmissions, dropped,
        )))
        pos += hd.record_len
    if pos != size:
        raise ValueError("packed query log is cut off or corrupt")
    return entries
