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
    cdef bint owned        # False when entries and keys lie in a compiled rule-set file's mapping
    cdef object source     # that mapping's memoryview: keeps it open while the loop reads it
    cdef uint64_t keys_len

    def __cinit__(self, dict table=None):
        self.owned = True
        self.source = None
        if table is None:  # SuffixSet.mapped() fills it
            self.entries = NULL
            self.keys = NULL
            self.count = 0
            self.mask = 0
            self.label_counts[0] = 0
            self.label_counts[1] = 0
            self.keys_len = 0
            return
        self._build(table)

    cdef _build(self, dict table):
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
        self.keys_len = blob_len
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
        if self.owned:
            free(self.entries)
            free(self.keys)

    @staticmethod
    def mapped(buffer, Py_ssize_t entries_off, uint64_t capacity, Py_ssize_t keys_off, uint64_t keys_len,
               Py_ssize_t count, uint64_t labels_low, uint64_t labels_high, int64_t rules):
        """A SuffixSet reading a compiled rule-set file in place (sensor/rules/compiled.py): no copy, no parse.

        Checks every entry first (keys inside the key area, rule indices below `rules`, at least one free slot
        so that a probe ends): a file that passed its checksum but lies about its layout is refused, never read
        out of bounds. ValueError says what does not fit."""
        cdef const uint8_t[::1] view = buffer
        cdef SuffixSet self = SuffixSet.__new__(SuffixSet)
        cdef SuffixEntry* entries
        cdef uint64_t i, used = 0
        cdef bint bad = False
        cdef SuffixEntry* e
        if sizeof(SuffixEntry) != 24:
            raise ValueError("this build's table entry is not 24 bytes")
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError("table capacity is not a power of two")
        if entries_off < 0 or keys_off < 0 or entries_off % 8 \
                or <uint64_t>entries_off + capacity * 24 > <uint64_t>view.shape[0] \
                or <uint64_t>keys_off + keys_len > <uint64_t>view.shape[0]:
            raise ValueError("table or key area outside the file")
        entries = <SuffixEntry*>&view[entries_off]
        with nogil:
            for i in range(capacity):
                e = &entries[i]
                if not e.used:
                    continue
                used += 1
                if <uint64_t>e.key_off + e.key_len > keys_len or e.self_rule >= rules or e.below_rule >= rules \
                        or e.self_rule < -1 or e.below_rule < -1 or e.key_len > 255:
                    bad = True
                    break
        # The label-count bitmap (which suffix lengths to probe) is taken as the file says: the reference loop's
        # MappedTable honours the same bitmap, so both decide alike (recomputing it here reads every key at random:
        # 0.1-0.4 s at a million rules).
        if bad or used != <uint64_t>count or used >= capacity:
            raise ValueError("table entries do not fit the key area, the rule count or the capacity")
        self.entries = entries
        self.keys = <uint8_t*>&view[keys_off] if keys_len else <uint8_t*>&view[0]
        self.keys_len = keys_len
        self.mask = capacity - 1
        self.owned = False
        self.source = buffer
        self.count = count
        self.label_counts[0] = labels_low
        self.label_counts[1] = labels_high
        return self

    def dump(self):
        """(entries, keys, capacity, labels_low, labels_high): this table's bytes as a compiled file holds them."""
        cdef Py_ssize_t capacity = self.mask + 1 if self.entries != NULL else 0
        return (PyBytes_FromStringAndSize(<char*>self.entries, capacity * sizeof(SuffixEntry)),
                PyBytes_FromStringAndSize(<char*>self.keys, self.keys_len), capacity,
                self.label_counts[0], self.label_counts[1])

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
