# Suffix-hash rule set: one open-addressing table keyed by a hash of each rule's name, hashed
# right to left so that the loop hashes every suffix of a query name in one backward pass.
# Included by loop.pyx. Keys are compared byte for byte after a hash hit, so a hash collision
# can never produce a wrong match.

cdef uint64_t FNV_OFFSET = 0xcbf29ce484222325ULL  # FNV-1a 64: cheap per byte, good spread on short keys
cdef uint64_t FNV_PRIME = 0x100000001b3ULL

ctypedef struct SuffixEntry:
    uint64_t hash
    int32_t self_rule      # rule covering exactly this name, -1 if none
    int32_t below_rule     # rule covering names strictly below it, -1 if none
    uint32_t key_off       # where the lowercase key lies in the key blob
    uint16_t key_len       # at most 253 (24-byte entries: a million rules' table stays near 48 MB)
    uint8_t used


cdef inline uint8_t ascii_lower(uint8_t c) nogil:
    if c >= 65 and c <= 90:
        return c + 32
    return c


cdef inline uint64_t hash_step(uint64_t h, uint8_t c) nogil:
    return (h ^ ascii_lower(c)) * FNV_PRIME


cdef class SuffixSet:
    """Rule suffixes of a RuleSet's table (suffix -> [self rule, below rule]) in C memory."""

    cdef SuffixEntry* entries
    cdef uint64_t mask
    cdef uint8_t* keys
    cdef Py_ssize_t count
    # Which label counts (0-127) some key has: a suffix of another length cannot be in the table, so the loop
    # skips its probe. With a million rules the probes are cache misses; most suffixes have no rule of their size.
    cdef uint64_t label_counts[2]

    def __cinit__(self, dict table):
        cdef Py_ssize_t capacity = 16
        cdef Py_ssize_t blob_len = 0
        cdef bytes key
        cdef uint64_t h
        cdef Py_ssize_t i, k, n, labels
        cdef const uint8_t* kp
        self.count = len(table)
        self.label_counts[0] = 0
        self.label_counts[1] = 0
        while capacity < 2 * self.count:  # load factor at most 1/2 keeps probe runs short
            capacity *= 2
        self.mask = capacity - 1
        self.entries = <SuffixEntry*>calloc(capacity, sizeof(SuffixEntry))
        # Two passes over the table, one key at a time: a list of a million encoded keys would double the peak.
        for name in table:
            blob_len += len(name)  # ASCII: one byte a character
        self.keys = <uint8_t*>malloc(blob_len + 1)
        if self.entries == NULL or self.keys == NULL:
            raise MemoryError()
        blob_len = 0
        for name, slots in table.items():
            key = name.encode("ascii")
            n = len(key)
            labels = key.count(b".") + 1 if n else 0  # the root's key is empty: 0 labels
            self.label_counts[(labels >> 6) & 1] |= (<uint64_t>1) << (labels & 63)
            kp = key
            memcpy(self.keys + blob_len, kp, n)
            h = FNV_OFFSET
            for k in range(n - 1, -1, -1):
                h = hash_step(h, kp[k])
            i = h & self.mask
            while self.entries[i].used:
                i = (i + 1) & self.mask
            self.entries[i].used = 1
            self.entries[i].hash = h
            if isinstance(slots, int):  # RuleSet.table packs both in one int (sensor.rules.model.pack_slots)
                self.entries[i].self_rule = <int32_t>((slots & 0xFFFFFFFF) - 1)
                self.entries[i].below_rule = <int32_t>((slots >> 32) - 1)
            else:
                self.entries[i].self_rule = slots[0]
                self.entries[i].below_rule = slots[1]
            self.entries[i].key_off = blob_len
            self.entries[i].key_len = n
            blob_len += n

    def __dealloc__(self):
        free(self.entries)
        free(self.keys)

    def __len__(self):
        return self.count

    cdef inline int32_t find(self, uint64_t h, const uint8_t* name, uint32_t n, bint below) noexcept nogil:
        """The rule for this suffix (already hashed as `h`), or -1."""
        cdef uint64_t i = h & self.mask
        cdef SuffixEntry* e
        cdef uint32_t k
        while True:
            e = &self.entries[i]
            if not e.used:
                return -1
            if e.hash == h and e.key_len == n:
                k = 0
                while k < n and ascii_lower(name[k]) == self.keys[e.key_off + k]:
                    k += 1
                if k == n:
                    return e.below_rule if below else e.self_rule
            i = (i + 1) & self.mask

    cdef int32_t match(self, const uint8_t* name, uint32_t name_len,
                       const uint16_t* label_starts, int nlabels) noexcept nogil:
        """Most specific rule covering the name (presentation form, labels starting at label_starts)."""
        cdef uint64_t h = FNV_OFFSET
        cdef int32_t best = -1, rule
        cdef uint32_t j = name_len
        cdef int i
        if self.count == 0:
            return -1
        if self.label_counts[0] & 1:
            best = self.find(h, name, 0, nlabels > 0)  # the root: '.' covers every name
        i = nlabels - 1
        while i >= 0:
            while j > label_starts[i]:
                j -= 1
                h = hash_step(h, name[j])
            if self.has_label_count(nlabels - i):
                rule = self.find(h, name + j, name_len - j, i > 0)
                if rule >= 0:
                    best = rule
            i -= 1
        return best

    cdef inline bint has_label_count(self, int n) noexcept nogil:
        return (self.label_counts[(n >> 6) & 1] >> (n & 63)) & 1
