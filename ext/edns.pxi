# EDNS Client Subnet (RFC 7871) of an emitted query: walk to the first OPT record of the additional section
# and its first option 8 (docs/decoding.md, "EDNS Client Subnet"). Names on the way are only skipped, their
# pointers never followed, so the walk is linear in the message. Included by loop.pyx; the reference is
# sensor/decode/edns.py.

cdef enum:
    # A query holds one question and one or two additional records (OPT, TSIG); even an UPDATE rarely holds
    # dozens. The cap keeps the walk short when the counts claim 65,535 records; reaching it is dns_bad_edns.
    MAX_EDNS_WALK_RECORDS = 64
    # A query's OPT record carries a handful of options (cookie, padding, keepalive, ECS); the 17th one
    # before ECS is dns_bad_edns, for the same reason.
    MAX_EDNS_OPTIONS = 16
    TYPE_OPT = 41                # RFC 6891
    OPTION_ECS = 8               # RFC 7871

ctypedef struct Subnet:
    uint16_t family              # 1 IPv4, 2 IPv6
    uint8_t prefix               # source prefix length
    uint8_t addr[16]             # masked to the prefix, zero-padded


cdef int skip_name(const uint8_t* msg, uint32_t n, uint32_t* pos) noexcept nogil:
    """Move `pos` past one name (its zero byte, or its first pointer); -1 if it is malformed or cut off."""
    cdef uint32_t p = pos[0]
    cdef uint8_t c
    while True:
        if p >= n:
            return -1
        c = msg[p]
        if c == 0:
            pos[0] = p + 1
            return 0
        if (c & 0xC0) == 0xC0:
            if p + 2 > n:
                return -1
            pos[0] = p + 2
            return 0
        if c & 0xC0:
            return -1
        p += 1 + c


cdef int ecs_subnet(const uint8_t* o, uint32_t n, Subnet* out) noexcept nogil:
    """RFC 7871 6: family, source prefix, scope prefix, then exactly the address bytes the prefix needs."""
    cdef uint16_t family
    cdef uint32_t source, size
    if n < 4:
        return -1
    family = rd16(o)
    source = o[2]
    if family == 1:
        size = 4
    elif family == 2:
        size = 16
    else:
        return -1
    if source > size * 8 or n != 4 + (source + 7) // 8:
        return -1
    memset(out.addr, 0, 16)
    memcpy(out.addr, o + 4, n - 4)
    if source % 8:
        # Bits past the source prefix must be zero (RFC 7871 6): masked rather than refused.
        out.addr[source // 8] &= <uint8_t>(0xFF << (8 - source % 8))
    out.family = family
    out.prefix = source
    return 1


cdef int ecs_option(const uint8_t* r, uint32_t n, Subnet* out) noexcept nogil:
    """The first ECS option among an OPT record's options: 1 found, 0 none, -1 malformed."""
    cdef uint32_t pos = 0, seen = 0, code, length
    while pos < n:
        if seen == MAX_EDNS_OPTIONS:
            return -1
        seen += 1
        if pos + 4 > n:
            return -1
        code = rd16(r + pos)
        length = rd16(r + pos + 2)
        pos += 4
        if pos + length > n:
            return -1
        if code == OPTION_ECS:
            return ecs_subnet(r + pos, length, out)
        pos += length
    return 0


cdef int find_client_subnet(const uint8_t* msg, uint32_t n, uint32_t pos, Subnet* out) noexcept nogil:
    """From `pos`, just after the first question: 1 found (in `out`), 0 none, -1 malformed (dns_bad_edns)."""
    cdef uint32_t qd = rd16(msg + 4), an = rd16(msg + 6), ns = rd16(msg + 8), ar = rd16(msg + 10)
    cdef uint32_t i, start, rdata, walked = 0
    if ar == 0:
        return 0                 # the common case: nothing to walk
    for i in range(1, qd):
        if walked == MAX_EDNS_WALK_RECORDS:
            return -1
        walked += 1
        if skip_name(msg, n, &pos) < 0:
            return -1
        pos += 4
        if pos > n:
            return -1
    for i in range(an + ns + ar):
        if walked == MAX_EDNS_WALK_RECORDS:
            return -1
        walked += 1
        start = pos
        if skip_name(msg, n, &pos) < 0:
            return -1
        if pos + 10 > n:
            return -1
        rdata = pos + 10
        if rd16(msg + pos) == TYPE_OPT and i >= an + ns:
            pos = rdata + rd16(msg + pos + 8)
            if pos > n:
                return -1
            if msg[start] != 0:
                return -1        # RFC 6891 6.1.2: the OPT record's owner is the root
            return ecs_option(msg + rdata, pos - rdata, out)
        pos = rdata + rd16(msg + pos + 8)
        if pos > n:
            return -1
    return 0
