# DNS question-name decoder (RFC 1035 4.1.4) into presentation form, with the limits of docs/decoding.md.
# Included by loop.pyx. Written by hand because it runs for every DNS message; the reference is
# sensor/decode/dnsmsg.py.

cdef enum:
    MAX_NAME_WIRE = 255     # RFC 1035 2.3.4: a name is at most 255 bytes on the wire
    MAX_POINTER_HOPS = 16   # a real name needs a few; a chain of hundreds is a CPU-burning attack
    MAX_LABELS = 128        # 255 wire bytes hold at most 127 one-byte labels
    NAME_TEXT_MAX = 1100    # 255 bytes escaped as \DDD (4 chars each) plus dots

ctypedef struct DecodedName:
    uint8_t text[NAME_TEXT_MAX]
    uint32_t text_len
    uint16_t label_starts[MAX_LABELS]
    int nlabels
    uint32_t end             # offset just after the name in the message


cdef int decode_name(const uint8_t* msg, uint32_t msg_len, uint32_t pos, DecodedName* out) noexcept nogil:
    """Decode the name at `pos`; return 0 or the counter index of the reason it is bad."""
    cdef uint32_t run_start = pos      # pointers must land strictly before the current run of labels
    cdef uint32_t wire_len = 0
    cdef int hops = 0
    cdef bint jumped = False
    cdef uint8_t c, b
    cdef uint32_t ptr, k
    cdef uint8_t* t = out.text
    cdef uint32_t o = 0
    out.nlabels = 0
    while True:
        if pos >= msg_len:
            return C_dns_truncated
        c = msg[pos]
        if c == 0:
            if not jumped:
                out.end = pos + 1
            break
        if (c & 0xC0) == 0xC0:
            if pos + 1 >= msg_len:
                return C_dns_truncated
            ptr = ((c & 0x3F) << 8) | msg[pos + 1]
            if ptr >= run_start:
                return C_dns_bad_pointer
            hops += 1
            if hops > MAX_POINTER_HOPS:
                return C_dns_too_many_pointers
            if not jumped:
                out.end = pos + 2
                jumped = True
            pos = ptr
            run_start = ptr
            continue
        if c & 0xC0:
            return C_dns_bad_label_type
        wire_len += c + 1
        if wire_len + 1 > MAX_NAME_WIRE:
            return C_dns_name_too_long
        if pos + 1 + c > msg_len:
            return C_dns_truncated
        if out.nlabels > 0:
            t[o] = 46  # '.'
            o += 1
        out.label_starts[out.nlabels] = o
        out.nlabels += 1
        for k in range(pos + 1, pos + 1 + c):
            b = msg[k]
            if b == 46 or b == 92:  # '.' and '\' inside a label
                t[o] = 92
                t[o + 1] = b
                o += 2
            elif b < 0x21 or b > 0x7E:
                t[o] = 92
                t[o + 1] = 48 + b // 100
                t[o + 2] = 48 + (b // 10) % 10
                t[o + 3] = 48 + b % 10
                o += 4
            else:
                t[o] = b
                o += 1
        pos += 1 + c
    if out.nlabels == 0:
        t[0] = 46  # the root is written '.'
        o = 1
    out.text_len = o
    return 0
