# CNAME hits (docs/decoding.md, "CNAME hits", decision 0160): a response whose answer section aliases a name to
# one a rule matches. Included by loop.pyx; the reference is sensor/decode/cnames.py.
#
# The walk reads each answer's owner name only to find its end (no text is written) and decodes a CNAME's target
# only: a response without CNAMEs costs a few byte reads per answer. The chain becomes Python objects only for a
# hit, in a second walk.

cdef enum:
    TYPE_CNAME = 5
    MAX_CNAME_HOPS = 16          # resolvers give up after 8-16 (unbound: 11, BIND: 16); more is a crafted chain

cdef DecodedName cname_target    # scratch for a target: the loop's own `name` still holds the question


cdef inline int64_t name_end(const uint8_t* msg, uint32_t n, uint32_t pos) noexcept nogil:
    """Where the name at `pos` ends, or -1 when decode_name would refuse it (the same checks, in the same order,
    with no text written)."""
    # The usual owner, a pointer to the question's name (offset 12): always valid once the question decoded (its
    # own pointers can only land in the header: at most 6 hops, so 7 with this one), and no walk is needed.
    if pos + 1 < n and msg[pos] == 0xC0 and msg[pos + 1] == 12:
        return pos + 2
    return name_walk_end(msg, n, pos)


cdef int64_t name_walk_end(const uint8_t* msg, uint32_t n, uint32_t pos) noexcept nogil:
    cdef uint32_t run_start = pos, wire_len = 0, ptr
    cdef int64_t end = -1
    cdef int hops = 0
    cdef uint8_t c
    while True:
        if pos >= n:
            return -1
        c = msg[pos]
        if c == 0:
            return pos + 1 if end < 0 else end
        if (c & 0xC0) == 0xC0:
            if pos + 1 >= n:
                return -1
            ptr = ((c & 0x3F) << 8) | msg[pos + 1]
            if ptr >= run_start:
                return -1
            hops += 1
            if hops > MAX_POINTER_HOPS:
                return -1
            if end < 0:
                end = pos + 2
            pos = ptr
            run_start = ptr
            continue
        if c & 0xC0:
            return -1
        wire_len += c + 1
        if wire_len + 1 > MAX_NAME_WIRE:
            return -1
        if pos + 1 + c > n:
            return -1
        pos += 1 + c


cdef int32_t cname_rule(SuffixSet rules, object patterns, bytes allow, DecodedName* name) except -2:
    """The rule a CNAME target hits: as a query's name is matched, an allow rule giving none."""
    cdef int32_t rule = rules.match(name.text, name.text_len, name.label_starts, name.nlabels)
    if rule < 0 and patterns is not None:
        rule = patterns(lowered_name(name))
    if rule >= 0 and rule < len(allow) and allow[rule]:
        return -1
    return rule


cdef int32_t cname_scan(const uint8_t* msg, uint32_t n, uint32_t pos, SuffixSet rules, object patterns,
                        bytes allow, uint64_t* counters, int* matched, DecodedName* question) except -2:
    """The rule of the first CNAME target a rule matches, or -1; `matched` gets that hop's index. `pos`: just
    after the first question. None when the question's own name hits: its query was the hit."""
    cdef uint16_t qdcount = rd16(msg + 4), ancount = rd16(msg + 6), rdlen
    cdef uint32_t k, start
    cdef int64_t end
    cdef int hops = 0
    cdef int32_t rule = -1
    matched[0] = -1
    if ancount == 0:
        return -1
    for k in range(1, qdcount):
        end = name_end(msg, n, pos)
        if end < 0 or end + 4 > n:
            counters[C_dns_bad_answers] += 1
            return rule
        pos = <uint32_t>end + 4
    for k in range(ancount):
        end = name_end(msg, n, pos)
        if end < 0 or end + 10 > n:
            counters[C_dns_bad_answers] += 1
            break
        start = <uint32_t>end + 10
        rdlen = rd16(msg + end + 8)
        if start + rdlen > n:
            counters[C_dns_bad_answers] += 1
            break
        pos = start + rdlen
        if rd16(msg + end) != TYPE_CNAME:
            continue
        if hops == MAX_CNAME_HOPS:
            break
        if decode_name(msg, n, start, &cname_target) or cname_target.end != pos:
            counters[C_dns_bad_answers] += 1
            break
        hops += 1
        if matched[0] < 0:
            rule = cname_rule(rules, patterns, allow, &cname_target)
            if rule >= 0:
                matched[0] = hops - 1
    if matched[0] < 0 or cname_rule(rules, patterns, allow, question) >= 0:
        matched[0] = -1
        return -1
    counters[C_dns_cname_hits] += 1
    return rule


cdef object cname_chain(const uint8_t* msg, uint32_t n, uint32_t pos, int matched):
    """A hit's chain for its record: (matched hop, ((owner, TTL, target), ...)); the walk of cname_scan again,
    which found every part of it well formed up to the last CNAME it read (only a hit pays for this)."""
    cdef uint16_t qdcount = rd16(msg + 4), ancount = rd16(msg + 6), rdlen
    cdef uint32_t k, start, owner
    cdef int64_t end
    cdef list records = []
    for k in range(1, qdcount):
        pos = <uint32_t>name_end(msg, n, pos) + 4
    for k in range(ancount):
        owner = pos
        end = name_end(msg, n, pos)
        if end < 0 or end + 10 > n:
            break
        start = <uint32_t>end + 10
        rdlen = rd16(msg + end + 8)
        if start + rdlen > n:
            break
        pos = start + rdlen
        if rd16(msg + end) != TYPE_CNAME:
            continue
        if len(records) == MAX_CNAME_HOPS or decode_name(msg, n, start, &cname_target) or cname_target.end != pos:
            break
        target = PyUnicode_DecodeASCII(<const char*>cname_target.text, cname_target.text_len, NULL)
        decode_name(msg, n, owner, &cname_target)   # well formed: name_end accepted it
        records.append((PyUnicode_DecodeASCII(<const char*>cname_target.text, cname_target.text_len, NULL),
                        rd32(msg + end + 4), target))
    return (matched, tuple(records))
