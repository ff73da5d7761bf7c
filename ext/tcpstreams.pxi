# Bounded table of DNS-over-TCP stream directions, for the 2-byte length framing (docs/decoding.md,
# "TCP framing"). Fixed slots, chained hash buckets, and an LRU list so that eviction is O(1) under a flood.
# Included by loop.pyx.

cdef enum:
    STREAM_KEY_LEN = 40          # vlan+1 (2), ip version (1), pad (1), src (16), dst (16), sport (2), dport (2)
    MAX_TCP_MESSAGE = 65537      # the 2-byte prefix says at most 65,535, plus the prefix itself
    MIN_TCP_BYTES = 262144       # room for one stream's largest partial message grown by a large segment

ctypedef struct Stream:
    uint8_t key[STREAM_KEY_LEN]
    uint64_t key_hash
    int32_t bucket_next          # next slot in the same hash bucket, -1 ends
    int32_t lru_prev, lru_next   # towards the most / least recently used, -1 ends
    uint32_t expected_seq
    int64_t last_us              # packet time of the last touch, microseconds
    uint8_t* buf                 # partial message, NULL when none
    uint32_t buf_len
    uint32_t buf_cap
    uint8_t in_use


cdef class StreamTable:
    """At most `capacity` streams; the least recently touched one goes first when a slot is needed."""

    cdef Stream* slots
    cdef int32_t* buckets
    cdef uint32_t bucket_mask
    cdef int32_t capacity
    cdef int32_t count
    cdef int32_t free_head       # free slots chained through bucket_next
    cdef int32_t lru_head, lru_tail
    cdef int64_t idle_us
    # Bytes accounting (issue 14, the memory budget): `buffered` is what the partial messages hold (allocated),
    # at most `max_bytes`; past it the least recently used streams lose their partial message, each counted in
    # C_tcp_buffer_evicted of `counters` (the loop's array, set by the loop).
    cdef readonly uint64_t buffered
    cdef uint64_t max_bytes
    cdef uint64_t* counters

    def __cinit__(self, int capacity, double idle_timeout, long long max_bytes=-1):
        cdef int32_t i
        cdef uint32_t nb = 16
        if capacity < 1:
            raise ValueError("max_tcp_streams must be at least 1")
        while nb < <uint32_t>capacity * 2:
            nb *= 2
        self.capacity = capacity
        if max_bytes < 0:
            max_bytes = max(<long long>capacity * MAX_TCP_MESSAGE, MIN_TCP_BYTES)  # the framing's limit only
        if max_bytes < MIN_TCP_BYTES:
            raise ValueError(f"max_tcp_bytes must be at least {MIN_TCP_BYTES}")
        self.max_bytes = max_bytes
        self.buffered = 0
        self.counters = NULL
        self.idle_us = <int64_t>(idle_timeout * 1000000)
        self.slots = <Stream*>calloc(capacity, sizeof(Stream))
        self.buckets = <int32_t*>malloc(nb * sizeof(int32_t))
        if self.slots == NULL or self.buckets == NULL:
            raise MemoryError()
        self.bucket_mask = nb - 1
        for i in range(nb):
            self.buckets[i] = -1
        for i in range(capacity):
            self.slots[i].bucket_next = i + 1 if i + 1 < capacity else -1
        self.free_head = 0
        self.lru_head = -1
        self.lru_tail = -1
        self.count = 0

    def __dealloc__(self):
        cdef int32_t i
        if self.slots != NULL:
            for i in range(self.capacity):
                free(self.slots[i].buf)
        free(self.slots)
        free(self.buckets)

    cdef inline bint is_idle(self, Stream* s, int64_t now_us) noexcept nogil:
        return now_us - s.last_us > self.idle_us

    cdef int32_t find(self, const uint8_t* key, uint64_t h) noexcept nogil:
        cdef int32_t i = self.buckets[h & self.bucket_mask]
        while i != -1:
            if self.slots[i].key_hash == h and memcmp(self.slots[i].key, key, STREAM_KEY_LEN) == 0:
                return i
            i = self.slots[i].bucket_next
        return -1

    cdef void lru_unlink(self, int32_t i) noexcept nogil:
        cdef Stream* s = &self.slots[i]
        if s.lru_prev != -1:
            self.slots[s.lru_prev].lru_next = s.lru_next
        else:
            self.lru_head = s.lru_next
        if s.lru_next != -1:
            self.slots[s.lru_next].lru_prev = s.lru_prev
        else:
            self.lru_tail = s.lru_prev

    cdef void touch(self, int32_t i, int64_t now_us) noexcept nogil:
        """Mark the stream most recently used."""
        cdef Stream* s = &self.slots[i]
        s.last_us = now_us
        if self.lru_head == i:
            return
        self.lru_unlink(i)
        s.lru_prev = -1
        s.lru_next = self.lru_head
        if self.lru_head != -1:
            self.slots[self.lru_head].lru_prev = i
        self.lru_head = i
        if self.lru_tail == -1:
            self.lru_tail = i

    cdef void drop_partial(self, int32_t i) noexcept nogil:
        self.buffered -= self.slots[i].buf_cap
        free(self.slots[i].buf)
        self.slots[i].buf = NULL
        self.slots[i].buf_len = 0
        self.slots[i].buf_cap = 0

    cdef void remove(self, int32_t i) noexcept nogil:
        cdef Stream* s = &self.slots[i]
        cdef int32_t* link = &self.buckets[s.key_hash & self.bucket_mask]
        while link[0] != i:
            link = &self.slots[link[0]].bucket_next
        link[0] = s.bucket_next
        self.lru_unlink(i)
        self.drop_partial(i)
        s.in_use = 0
        s.bucket_next = self.free_head
        self.free_head = i
        self.count -= 1

    cdef int32_t create(self, const uint8_t* key, uint64_t h, int64_t now_us, uint64_t* counters) noexcept nogil:
        """A new stream for `key`, evicting the least recently used one if the table is full."""
        cdef int32_t i
        cdef Stream* s
        if self.free_head == -1:
            i = self.lru_tail
            if self.is_idle(&self.slots[i], now_us):
                counters[C_tcp_stream_expired] += 1
            else:
                counters[C_tcp_stream_evicted] += 1
            self.remove(i)
        i = self.free_head
        s = &self.slots[i]
        self.free_head = s.bucket_next
        memcpy(s.key, key, STREAM_KEY_LEN)
        s.key_hash = h
        s.bucket_next = self.buckets[h & self.bucket_mask]
        self.buckets[h & self.bucket_mask] = i
        s.in_use = 1
        s.buf = NULL
        s.buf_len = 0
        s.buf_cap = 0
        s.expected_seq = 0
        # Link at the tail first so that touch() can move it to the head through the one path.
        s.lru_next = -1
        s.lru_prev = self.lru_tail
        if self.lru_tail != -1:
            self.slots[self.lru_tail].lru_next = i
        self.lru_tail = i
        if self.lru_head == -1:
            self.lru_head = i
        self.count += 1
        self.touch(i, now_us)
        return i

    cdef int append(self, int32_t i, const uint8_t* data, uint32_t n) noexcept nogil:
        """Add bytes to the partial message; -1 if memory ran out (the partial is dropped)."""
        cdef Stream* s = &self.slots[i]
        cdef uint32_t need = s.buf_len + n
        cdef uint8_t* grown
        if need > s.buf_cap:
            if self.buffered - s.buf_cap + need > self.max_bytes:
                self.make_room(i, self.buffered - s.buf_cap + need - self.max_bytes)
            grown = <uint8_t*>realloc(s.buf, need)
            if grown == NULL:
                self.drop_partial(i)
                return -1
            self.buffered += need - s.buf_cap
            s.buf = grown
            s.buf_cap = need
        memcpy(s.buf + s.buf_len, data, n)
        s.buf_len = need
        return 0

    cdef void make_room(self, int32_t keep, uint64_t excess) noexcept nogil:
        """Drop the partial messages of the least recently used streams (not `keep`) until `excess` bytes are
        freed. The streams stay; as after an eviction, a stream's next segment is taken as the start of a message."""
        cdef int32_t j = self.lru_tail
        cdef uint64_t freed
        while j != -1 and excess > 0:
            if j != keep and self.slots[j].buf != NULL:
                freed = self.slots[j].buf_cap
                self.drop_partial(j)
                if self.counters != NULL:
                    self.counters[C_tcp_buffer_evicted] += 1
                excess = excess - freed if freed < excess else 0
            j = self.slots[j].lru_prev
