# The query-log store's write path (docs/querylog.md, decision 0180): the writer appends the loop's packed
# entries (correlate.pxi, EntryHeader) to a segment file as they come, undecoded; this walk gives, for each
# entry, the lookup keys of its name and of its A/AAAA answers, and says which entries a decoder's caps may cut.
# At a segment's close its keys are sorted once (`querylog_sort_keys`). Included by loop.pyx; the reference
# twins are in sensor/querylog/segment.py (segment_keys_reference, sort_keys_reference), tested equal.

cdef enum:
    KEY_SUFFIX = 0               # the key of a name above the entry's own (two labels at least)
    KEY_NAME = 1                 # the key of the entry's own name
    KEY_ADDRESS = 2              # the key of an A or AAAA answer's address
    MAX_KEY_LABELS = 256
    SUFFIX_LABELS = 3            # names above an entry's own get keys down to this many labels: a lookup below
                                 # a deeper name uses its last three labels' key and keeps the names below it

# FNV-1a 64: FNV_OFFSET and FNV_PRIME of suffixset.pxi


cdef packed struct KeyRecord:
    uint64_t key                 # FNV-1a 64 (little-endian on disk: the store's files are of this machine)
    uint32_t offset              # the entry's offset in the segment's entries file
    uint32_t kind                # KEY_SUFFIX, KEY_NAME, KEY_ADDRESS


cdef inline uint64_t fnv_byte(uint64_t h, uint8_t b) noexcept nogil:
    return (h ^ b) * FNV_PRIME


cdef class _KeyBuffer:
    cdef KeyRecord* data
    cdef Py_ssize_t count, capacity

    def __cinit__(self):
        self.capacity = 4096
        self.count = 0
        self.data = <KeyRecord*>malloc(self.capacity * sizeof(KeyRecord))
        if self.data == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.data)

    cdef int add(self, uint64_t key, uint32_t offset, uint32_t kind) except -1:
        cdef KeyRecord* grown
        if self.count == self.capacity:
            grown = <KeyRecord*>realloc(self.data, 2 * self.capacity * sizeof(KeyRecord))
            if grown == NULL:
                raise MemoryError()
            self.data = grown
            self.capacity *= 2
        self.data[self.count].key = key
        self.data[self.count].offset = offset
        self.data[self.count].kind = kind
        self.count += 1
        return 0


cdef int name_keys(const uint8_t* name, Py_ssize_t n, uint32_t offset, _KeyBuffer out) except -1:
    """The keys of a presentation-form name: its reversed lowercase labels each followed by '.', hashed; one
    key per name of two or three labels that it ends with (KEY_SUFFIX), and its own (KEY_NAME)."""
    cdef uint16_t starts[MAX_KEY_LABELS]
    cdef uint16_t ends[MAX_KEY_LABELS]
    cdef int nlabels = 0, k
    cdef Py_ssize_t i = 0, start = 0
    cdef uint64_t h = FNV_OFFSET
    cdef uint8_t c
    if n == 1 and name[0] == 46:  # the root
        n = 0
    while n > 0 and name[n - 1] == 46 and (n < 2 or name[n - 2] != 92):  # a trailing unescaped dot
        n -= 1
    while n > 0 and name[0] == 46:
        name += 1
        n -= 1
    if n > 0:
        while i < n:
            c = name[i]
            if c == 92 and i + 1 < n:
                i += 2
                continue
            if c == 46:
                if nlabels < MAX_KEY_LABELS:
                    starts[nlabels] = <uint16_t>start
                    ends[nlabels] = <uint16_t>i
                    nlabels += 1
                start = i + 1
            i += 1
        if nlabels < MAX_KEY_LABELS:
            starts[nlabels] = <uint16_t>start
            ends[nlabels] = <uint16_t>n
            nlabels += 1
    for k in range(nlabels - 1, -1, -1):
        for i in range(starts[k], ends[k]):
            c = name[i]
            if 65 <= c <= 90:
                c += 32
            h = fnv_byte(h, c)
        h = fnv_byte(h, 46)
        if k == 0:
            out.add(h, offset, KEY_NAME)
        elif 2 <= nlabels - k <= SUFFIX_LABELS:
            out.add(h, offset, KEY_SUFFIX)
    if nlabels == 0:
        out.add(h, offset, KEY_NAME)
    return 0


cdef uint64_t address_key(const uint8_t* a, int n) noexcept nogil:
    cdef uint64_t h = fnv_byte(FNV_OFFSET, 64)  # '@': a name's key never starts a label with it here (kind differs too)
    cdef int k
    for k in range(n):
        h = fnv_byte(h, a[k])
    return h


cdef int name_bound(const uint8_t* msg, uint32_t n, uint32_t pos, uint32_t* end) noexcept nogil:
    """At least the length of a name's presentation text (4 characters a byte: `\\DDD`; a dot a label), and
    the offset after it in `end`; -1 when it cannot be walked (as lenient as decode_name: a pointer must go
    back before the current run of labels, at most MAX_POINTER_HOPS of them)."""
    cdef uint32_t run_start = pos, ptr
    cdef int hops = 0, text = 0
    cdef bint jumped = False
    cdef uint8_t c
    while True:
        if pos >= n:
            return -1
        c = msg[pos]
        if c == 0:
            if not jumped:
                end[0] = pos + 1
            return text if text else 1
        if (c & 0xC0) == 0xC0:
            if pos + 1 >= n:
                return -1
            ptr = ((c & 0x3F) << 8) | msg[pos + 1]
            if ptr >= run_start:
                return -1
            hops += 1
            if hops > MAX_POINTER_HOPS:
                return -1
            if not jumped:
                end[0] = pos + 2
                jumped = True
            pos = ptr
            run_start = ptr
            continue
        if c & 0xC0 or pos + 1 + c > n:
            return -1
        text += 4 * c + 1
        pos += 1 + c


cdef int rdata_text_bound(const uint8_t* msg, uint32_t n, uint16_t rrtype, uint32_t start,
                          uint32_t end) noexcept nogil:
    """At least the length of the text the decoder gives this record's data (querylog_decode.pxi)."""
    cdef uint32_t length = end - start, after = 0
    cdef int bound
    if rrtype == RR_A and length == 4:
        return 15
    if rrtype == RR_AAAA and length == 16:
        return 45  # IPv4-mapped forms included
    if rrtype == RR_NS or rrtype == RR_CNAME or rrtype == RR_PTR:
        bound = name_bound(msg, n, start, &after)
        if bound >= 0 and after == end:
            return bound
    elif rrtype == RR_MX and length >= 3:
        bound = name_bound(msg, n, start + 2, &after)
        if bound >= 0 and after == end:
            return 6 + bound
    elif rrtype == RR_TXT and length > 0:
        return 6 * length  # every byte escaped, quotes and spaces
    return 2 * length + 12


cdef bint answers_walk(const uint8_t* msg, uint32_t n, uint32_t offset, int cap, Py_ssize_t max_bytes,
                       _KeyBuffer out) except -1:
    """The address keys of the answers; True when the caps may cut this entry's answers (an upper bound of the
    text, so the writer decodes only those entries to count exactly)."""
    cdef uint32_t pos = 12, start, end, k, after = 0
    cdef uint16_t qdcount = rd16(msg + 4), ancount = rd16(msg + 6), rrtype
    cdef Py_ssize_t text = 0
    cdef int bound
    cdef bint maybe_cut = cap >= 0 and ancount > cap
    for k in range(qdcount):
        if name_bound(msg, n, pos, &after) < 0:
            return maybe_cut
        pos = after + 4
    for k in range(ancount):
        bound = name_bound(msg, n, pos, &after)
        if bound < 0:
            break
        text += bound
        pos = after
        if pos + 10 > n:
            break
        rrtype = rd16(msg + pos)
        start = pos + 10
        end = start + rd16(msg + pos + 8)
        if end > n:
            break
        if rrtype == RR_A and end - start == 4:
            out.add(address_key(msg + start, 4), offset, KEY_ADDRESS)
        elif rrtype == RR_AAAA and end - start == 16:
            out.add(address_key(msg + start, 16), offset, KEY_ADDRESS)
        if max_bytes >= 0 and not maybe_cut:
            text += rdata_text_bound(msg, n, rrtype, start, end)
            if text > max_bytes:
                maybe_cut = True
        pos = end
    return maybe_cut


def querylog_segment_keys(const uint8_t[::1] data, Py_ssize_t start, Py_ssize_t max_entries, Py_ssize_t max_bytes,
                          Py_ssize_t base, int max_answers=-1, Py_ssize_t max_answer_bytes=-1,
                          int response_only_answers=-1):
    """Walk the packed entries of `data` from `start`: at most `max_entries` and `max_bytes` (at least one
    entry). Returns (end, entries, first ts us, last ts us, keys, suspects): `keys` the KeyRecords of the
    entries (offsets from `base` at `start`), `suspects` the packed entries the caps may cut."""
    cdef Py_ssize_t size = data.shape[0], pos = start, count = 0
    cdef const uint8_t* p = &data[0] if size else NULL
    cdef EntryHeader hd
    cdef const uint8_t* msg
    cdef _KeyBuffer out = _KeyBuffer()
    cdef int64_t ts, first = INT64_MAX, last = -INT64_MAX
    cdef uint32_t offset
    cdef int cap
    cdef bytearray suspects = bytearray()
    while pos + <Py_ssize_t>sizeof(EntryHeader) <= size and count < max_entries:
        memcpy(&hd, p + pos, sizeof(EntryHeader))
        if hd.record_len < sizeof(EntryHeader) or pos + hd.record_len > size or \
                hd.record_len < sizeof(EntryHeader) + hd.name_len + hd.message_len:
            raise ValueError("packed query log is cut off or corrupt")
        if count and pos + hd.record_len - start > max_bytes:
            break
        offset = <uint32_t>(base + pos - start)
        ts = <int64_t>hd.ts_sec * 1000000 + hd.ts_usec
        if ts < first:
            first = ts
        if ts > last:
            last = ts
        name_keys(p + pos + sizeof(EntryHeader), hd.name_len, offset, out)
        if hd.message_len >= 12:
            msg = p + pos + sizeof(EntryHeader) + hd.name_len
            cap = max_answers
            if hd.status == STATUS_RESPONSE_ONLY and response_only_answers >= 0 and (cap < 0 or response_only_answers < cap):
                cap = response_only_answers
            if answers_walk(msg, hd.message_len, offset, cap, max_answer_bytes, out):
                suspects += PyBytes_FromStringAndSize(<const char*>(p + pos), hd.record_len)
        pos += hd.record_len
        count += 1
    if count == 0:
        if pos != size:
            raise ValueError("packed query log is cut off or corrupt")
        first = last = 0
    return (pos, count, first, last, PyBytes_FromStringAndSize(<const char*>out.data, out.count * sizeof(KeyRecord)),
            bytes(suspects))


def querylog_sort_keys(bytes keys):
    """KeyRecords sorted by key, offsets ascending within a key: one stable pass on the key's top 16 bits into
    buckets (the keys are hashes: a dozen records a bucket for a full segment), then an insertion sort of each."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(keys) // sizeof(KeyRecord), k, j, lo, hi
    cdef KeyRecord* a = <KeyRecord*>PyBytes_AS_STRING(keys)
    cdef KeyRecord* b
    cdef KeyRecord item
    cdef Py_ssize_t* starts = <Py_ssize_t*>calloc(65537, sizeof(Py_ssize_t))
    cdef Py_ssize_t total, c
    cdef int d
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n * sizeof(KeyRecord))
    b = <KeyRecord*>PyBytes_AS_STRING(out)
    if starts == NULL:
        raise MemoryError()
    try:
        for k in range(n):
            starts[(a[k].key >> 48) + 1] += 1
        for d in range(65536):
            starts[d + 1] += starts[d]
        for k in range(n):
            d = a[k].key >> 48
            b[starts[d]] = a[k]
            starts[d] += 1
        lo = 0
        for d in range(65536):  # starts[d] is now where bucket d ends
            hi = starts[d]
            for k in range(lo + 1, hi):
                item = b[k]
                j = k - 1
                while j >= lo and b[j].key > item.key:
                    b[j + 1] = b[j]
                    j -= 1
                b[j + 1] = item
            lo = hi
        return out
    finally:
        free(starts)
