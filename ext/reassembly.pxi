# IP fragment reassembly, IPv4 (RFC 791) and IPv6 (RFC 8200 4.5), bounded, as Linux does it (docs/decoding.md,
# "IP fragments"). Included by loop.pyx; the reference is sensor/decode/reassembly.py.
#
# A datagram in progress holds its fragments' bytes at their offsets and the list of ranges received. As in
# Linux's inet_frag_queue_insert: a fragment wholly inside data held is dropped and the queue kept (the first
# copy wins); any other overlap, two different ends, or a datagram too big drops the queue, and a later
# fragment with the same identification starts a new one (a resend of the whole datagram is accepted).

cdef enum:
    FRAG_KEY_LEN = 40            # vlan+1 (2), ip version (1), IPv4 protocol (1), src (16), dst (16), id (4)
    MAX_DATAGRAM = 65535         # the most an IPv4 total length or an IPv6 payload length can announce
    MAX_FRAGMENTS = 64           # a 64 KiB datagram in 1280-byte IPv6 fragments needs 52; more is a flood

ctypedef struct Datagram:
    uint8_t key[FRAG_KEY_LEN]
    uint64_t key_hash
    int32_t bucket_next
    int32_t older, newer         # creation order: the oldest expires or is evicted first
    int64_t first_us             # packet time of the first fragment seen
    uint8_t* buf
    uint32_t buf_cap
    uint32_t held                # bytes of fragment data held
    int32_t total                # the datagram's length, known from the last fragment; -1 before
    int32_t protocol             # IPv6: the first fragment's next header; -1 before it arrives
    uint32_t starts[MAX_FRAGMENTS]
    uint32_t ends[MAX_FRAGMENTS]
    int nranges

ctypedef struct Reassembled:
    uint8_t* buf                 # the whole datagram's payload, owned by the caller (free it)
    uint32_t length
    int protocol
    uint8_t src[16]
    uint8_t dst[16]
    bint overlap                 # set (with 0 returned) when the fragment overlapped: an anomaly to report


cdef class FragmentTable:
    """At most `capacity` datagrams in progress and `max_bytes` of buffers; oldest out first. What counts is each
    datagram's buffer as allocated (buf_cap: a fragment at a high offset allocates up to it), not the bytes held
    (decision 0172)."""

    cdef Datagram* slots
    cdef int32_t* buckets
    cdef uint32_t bucket_mask
    cdef int32_t capacity
    cdef int32_t count
    cdef int32_t free_head
    cdef int32_t oldest, newest
    cdef int64_t timeout_us
    cdef uint64_t max_bytes
    cdef readonly uint64_t bytes_held    # the datagrams' buffers, as allocated

    def __cinit__(self, int capacity, long long max_bytes, double timeout):
        cdef int32_t i
        cdef uint32_t nb = 16
        if capacity < 1:
            raise ValueError("max_fragmented_datagrams must be at least 1")
        if max_bytes < MAX_DATAGRAM:
            raise ValueError(f"max_fragment_bytes must be at least {MAX_DATAGRAM}")
        if not timeout > 0:
            raise ValueError("fragment_timeout must be positive")
        while nb < <uint32_t>capacity * 2:
            nb *= 2
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.timeout_us = <int64_t>(timeout * 1000000)
        self.slots = <Datagram*>calloc(capacity, sizeof(Datagram))
        self.buckets = <int32_t*>malloc(nb * sizeof(int32_t))
        if self.slots == NULL or self.buckets == NULL:
            raise MemoryError()
        self.bucket_mask = nb - 1
        for i in range(nb):
            self.buckets[i] = -1
        for i in range(capacity):
            self.slots[i].bucket_next = i + 1 if i + 1 < capacity else -1
        self.free_head = 0
        self.oldest = -1
        self.newest = -1
        self.count = 0
        self.bytes_held = 0

    def __dealloc__(self):
        cdef int32_t i
        if self.slots != NULL:
            for i in range(self.capacity):
                free(self.slots[i].buf)
        free(self.slots)
        free(self.buckets)

    cdef int32_t find(self, const uint8_t* key, uint64_t h) noexcept nogil:
        cdef int32_t i = self.buckets[h & self.bucket_mask]
        while i != -1:
            if self.slots[i].key_hash == h and memcmp(self.slots[i].key, key, FRAG_KEY_LEN) == 0:
                return i
            i = self.slots[i].bucket_next
        return -1

    cdef void drop_data(self, int32_t i) noexcept nogil:
        cdef Datagram* d = &self.slots[i]
        free(d.buf)
        d.buf = NULL
        self.bytes_held -= d.buf_cap
        d.buf_cap = 0
        d.held = 0

    cdef void remove(self, int32_t i) noexcept nogil:
        cdef Datagram* d = &self.slots[i]
        cdef int32_t* link = &self.buckets[d.key_hash & self.bucket_mask]
        while link[0] != i:
            link = &self.slots[link[0]].bucket_next
        link[0] = d.bucket_next
        if d.older != -1:
            self.slots[d.older].newer = d.newer
        else:
            self.oldest = d.newer
        if d.newer != -1:
            self.slots[d.newer].older = d.older
        else:
            self.newest = d.older
        self.drop_data(i)
        d.bucket_next = self.free_head
        self.free_head = i
        self.count -= 1

    cdef int32_t create(self, const uint8_t* key, uint64_t h, int64_t now_us) noexcept nogil:
        cdef int32_t i = self.free_head
        cdef Datagram* d = &self.slots[i]
        self.free_head = d.bucket_next
        memcpy(d.key, key, FRAG_KEY_LEN)
        d.key_hash = h
        d.bucket_next = self.buckets[h & self.bucket_mask]
        self.buckets[h & self.bucket_mask] = i
        d.first_us = now_us
        d.buf = NULL
        d.buf_cap = 0
        d.held = 0
        d.total = -1
        d.protocol = -1
        d.nranges = 0
        d.newer = -1
        d.older = self.newest
        if self.newest != -1:
            self.slots[self.newest].newer = i
        self.newest = i
        if self.oldest == -1:
            self.oldest = i
        self.count += 1
        return i

    cdef int add(self, const uint8_t* key, int64_t now_us, uint32_t offset, bint more, int protocol,
                 const uint8_t* data, uint32_t n, uint64_t* counters, Reassembled* out) except -1:
        """Take one fragment; return 1 with `out` filled when it completes its datagram, else 0 (with
        out.overlap set when it overlapped data held: an anomaly)."""
        cdef uint64_t h = FNV_OFFSET
        cdef int k
        cdef int32_t i, j
        cdef Datagram* d
        cdef uint32_t end = offset + n, cap, covered = 0, inside = 0, lo, hi
        cdef uint8_t* grown
        out.overlap = False
        for k in range(FRAG_KEY_LEN):
            h = (h ^ key[k]) * FNV_PRIME
        while self.oldest != -1 and now_us - self.slots[self.oldest].first_us > self.timeout_us:
            counters[C_ip_fragment_expired] += 1
            self.remove(self.oldest)
        i = self.find(key, h)
        if i < 0:
            if self.free_head == -1:
                counters[C_ip_fragment_evicted] += 1
                self.remove(self.oldest)
            i = self.create(key, h, now_us)
        d = &self.slots[i]
        if end > MAX_DATAGRAM or (d.nranges == MAX_FRAGMENTS):
            counters[C_ip_reassembly_too_big] += 1
            self.remove(i)
            return 0
        if (not more and ((d.total >= 0 and d.total != <int32_t>end) or (d.nranges and self.max_end(d) > end))) \
                or (more and d.total >= 0 and <int32_t>end > d.total):
            counters[C_ip_fragment_overlap] += 1   # two different ends: the same trick as an overlap
            out.overlap = True
            self.remove(i)
            return 0
        for k in range(d.nranges):
            lo = offset if offset > d.starts[k] else d.starts[k]
            hi = end if end < d.ends[k] else d.ends[k]
            if lo < hi:
                inside += hi - lo
        if n and inside == n:
            counters[C_ip_fragment_duplicate] += 1   # wholly inside data held: dropped, the first copy wins
            out.overlap = memcmp(d.buf + offset, data, n) != 0
            return 0
        if inside:
            counters[C_ip_fragment_overlap] += 1
            out.overlap = True
            self.remove(i)
            return 0
        if end > d.buf_cap:
            cap = d.buf_cap if d.buf_cap else 2048
            while cap < end:
                cap *= 2
            if cap > MAX_DATAGRAM:
                cap = MAX_DATAGRAM
            # Room in the table's byte budget for the grown buffer: the oldest other datagrams go first. There
            # always are enough, since one buffer is at most MAX_DATAGRAM bytes and max_bytes is at least that.
            while self.bytes_held - d.buf_cap + cap > self.max_bytes:
                j = self.oldest if self.oldest != i else self.slots[i].newer
                counters[C_ip_fragment_evicted] += 1
                self.remove(j)
            grown = <uint8_t*>realloc(d.buf, cap)
            if grown == NULL:
                raise MemoryError()
            self.bytes_held += cap - d.buf_cap
            d.buf = grown
            d.buf_cap = cap
        memcpy(d.buf + offset, data, n)
        d.starts[d.nranges] = offset
        d.ends[d.nranges] = end
        d.nranges += 1
        d.held += n
        if offset == 0:
            d.protocol = protocol
        if not more:
            d.total = end
        if d.total < 0:
            return 0
        for k in range(d.nranges):
            covered += d.ends[k] - d.starts[k]
        if covered != <uint32_t>d.total:
            return 0
        counters[C_ip_reassembled] += 1
        out.buf = d.buf
        out.length = d.total
        out.protocol = d.protocol
        memcpy(out.src, d.key + 4, 16)
        memcpy(out.dst, d.key + 20, 16)
        d.buf = NULL             # handed to the caller (remove() still takes its buf_cap off bytes_held)
        self.remove(i)
        return 1

    cdef uint32_t max_end(self, Datagram* d) noexcept nogil:
        cdef uint32_t m = 0
        cdef int k
        for k in range(d.nranges):
            if d.ends[k] > m:
                m = d.ends[k]
        return m
