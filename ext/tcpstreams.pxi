# Bounded table of DNS-over-TCP stream directions, reassembled as Linux does, then the 2-byte length framing
# (docs/decoding.md, "TCP reassembly"). Fixed slots, chained hash buckets, and an LRU list so that eviction is
# O(1) under a flood. Included by loop.pyx; the reference is sensor/decode/tcpstream.py (the policy's comments
# live there). FastLoop.tcp_segment drives it.

cdef enum:
    STREAM_KEY_LEN = 40          # vlan+1 (2), ip version (1), pad (1), src (16), dst (16), sport (2), dport (2)
    MAX_TCP_MESSAGE = 65537      # the 2-byte prefix says at most 65,535, plus the prefix itself
    OOO_WINDOW = 65536           # this far past the next expected byte is a capture gap, not a reordering
    OOO_SEGMENTS = 64            # waiting segments per stream
    OOO_STREAM_BYTES = 131072    # waiting bytes per stream
    OOO_TOTAL_BYTES = 8388608    # waiting bytes, all streams: max_ooo_bytes without a memory budget
    OOO_SEGMENT_COST = 64        # what a waiting segment costs beside its bytes: its entry and the allocator's
    MIN_OOO_BYTES = 262144       # room for one stream's whole queue (OOO_STREAM_BYTES and 64 entries) twice over
    MIN_TCP_BYTES = 262144       # room for one stream's largest partial message grown by a large segment

ctypedef struct OooSegment:
    uint32_t seq
    uint32_t length
    uint8_t* data

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
    OooSegment* ooo              # waiting segments by sequence number, NULL when none
    int32_t nooo
    int32_t ooo_cap
    uint32_t ooo_bytes
    uint32_t urg_seq
    uint32_t fin_seq
    uint32_t acked               # the highest acknowledgement the peer sent
    uint8_t urg_valid
    uint8_t fin_valid
    uint8_t acked_valid
    uint8_t has_data
    uint8_t syn
    uint8_t synack
    uint8_t in_use


cdef inline int32_t seq_diff(uint32_t a, uint32_t b) noexcept nogil:
    """a - b in TCP sequence arithmetic (RFC 9293 3.4)."""
    return <int32_t>(a - b)


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
    # Out-of-order bytes (decision 0171): `ooo_total` is what the waiting segments cost (their bytes and
    # OOO_SEGMENT_COST each), at most `max_ooo_bytes`; past it the least recently used other streams lose their
    # waiting segments (C_tcp_ooo_evicted).
    cdef readonly uint64_t ooo_total
    cdef uint64_t max_ooo_bytes
    # Bytes accounting (issue 14, the memory budget): `buffered` is what the partial messages hold (allocated),
    # at most `max_bytes`; past it the least recently used streams lose their partial message, each counted in
    # C_tcp_buffer_evicted of `counters` (the loop's array, set by the loop).
    cdef readonly uint64_t buffered
    cdef uint64_t max_bytes
    cdef uint64_t* counters

    def __cinit__(self, int capacity, double idle_timeout, long long max_bytes=-1, long long max_ooo_bytes=-1):
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
        if max_ooo_bytes < 0:
            max_ooo_bytes = OOO_TOTAL_BYTES
        if max_ooo_bytes < MIN_OOO_BYTES:
            raise ValueError(f"max_ooo_bytes must be at least {MIN_OOO_BYTES}")
        self.max_ooo_bytes = max_ooo_bytes
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
        self.ooo_total = 0

    def __dealloc__(self):
        cdef int32_t i
        if self.slots != NULL:
            for i in range(self.capacity):
                self.reset(i)
                free(self.slots[i].ooo)
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

    cdef void drop_ooo(self, int32_t i) noexcept nogil:
        cdef Stream* s = &self.slots[i]
        cdef int32_t k
        for k in range(s.nooo):
            free(s.ooo[k].data)
        self.ooo_total -= s.ooo_bytes + <uint64_t>s.nooo * OOO_SEGMENT_COST
        s.nooo = 0
        s.ooo_bytes = 0

    cdef void reset(self, int32_t i) noexcept nogil:
        """Forget the partial message, the waiting segments, the urgent byte and a waiting FIN."""
        self.drop_partial(i)
        self.drop_ooo(i)
        self.slots[i].urg_valid = 0
        self.slots[i].fin_valid = 0
        self.slots[i].acked_valid = 0

    cdef void remove(self, int32_t i) noexcept nogil:
        cdef Stream* s = &self.slots[i]
        cdef int32_t* link = &self.buckets[s.key_hash & self.bucket_mask]
        while link[0] != i:
            link = &self.slots[link[0]].bucket_next
        link[0] = s.bucket_next
        self.lru_unlink(i)
        self.reset(i)
        s.in_use = 0
        s.bucket_next = self.free_head
        self.free_head = i
        self.count -= 1

    cdef int32_t create(self, const uint8_t* key, uint64_t h, int64_t now_us) noexcept nogil:
        """A new stream for `key`; the caller made room (FastLoop.new_stream evicts and reports)."""
        cdef int32_t i
        cdef Stream* s
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
        s.nooo = 0
        s.ooo_bytes = 0
        s.expected_seq = 0
        s.urg_valid = 0
        s.fin_valid = 0
        s.acked_valid = 0
        s.has_data = 0
        s.syn = 0
        s.synack = 0
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
        if n == 0:
            return 0
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
        freed. The streams stay (their waiting segments too); their next in-order bytes are taken as they come."""
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

    cdef void ooo_make_room(self, int32_t keep, uint64_t excess) noexcept nogil:
        """Drop the waiting segments of the least recently used streams (not `keep`) until `excess` is freed."""
        cdef int32_t j = self.lru_tail
        cdef uint64_t freed
        while j != -1 and excess > 0:
            if j != keep and self.slots[j].nooo:
                freed = self.slots[j].ooo_bytes + <uint64_t>self.slots[j].nooo * OOO_SEGMENT_COST
                self.drop_ooo(j)
                if self.counters != NULL:
                    self.counters[C_tcp_ooo_evicted] += 1
                excess = excess - freed if freed < excess else 0
            j = self.slots[j].lru_prev

    cdef int deliver(self, int32_t i, const uint8_t* data, uint32_t n, uint64_t* counters) noexcept nogil:
        """In-order bytes at expected_seq into the partial message, less the urgent byte; -1 out of memory."""
        cdef Stream* s = &self.slots[i]
        cdef int32_t at
        if s.urg_valid:
            at = seq_diff(s.urg_seq, s.expected_seq)
            if at >= 0 and <uint32_t>at < n:
                s.urg_valid = 0
                counters[C_tcp_urgent_dropped] += 1
                s.expected_seq += n
                if self.append(i, data, at) < 0 or self.append(i, data + at + 1, n - at - 1) < 0:
                    return -1
                return 0
        s.expected_seq += n
        return self.append(i, data, n)

    cdef int conflicts(self, int32_t i, const uint8_t* old, uint32_t n, uint32_t behind) noexcept nogil:
        """1 when `old` (ending `behind` bytes before the next expected one) differs from the partial message's
        copy of those bytes; 0 when equal or no longer held."""
        cdef Stream* s = &self.slots[i]
        cdef int64_t end = <int64_t>s.buf_len - behind + n
        cdef int64_t begin = end - n
        if begin < 0 or end > s.buf_len or n == 0:
            return 0
        return memcmp(s.buf + begin, old, n) != 0

    cdef int queue(self, int32_t i, int32_t start, const uint8_t* data, uint32_t n,
                   uint64_t* counters) noexcept nogil:
        """Linux's tcp_data_queue_ofo, positions relative to expected_seq. Returns 1 on an overlap conflict,
        -1 out of memory, else 0."""
        cdef Stream* s = &self.slots[i]
        cdef int64_t end = <int64_t>start + n, sk, ek, low, high
        cdef int conflict = 0, overlap = 0, ncovered = 0
        cdef uint64_t freed = 0, cost, released
        cdef int32_t k, w
        cdef OooSegment* grown
        for k in range(s.nooo):
            sk = seq_diff(s.ooo[k].seq, s.expected_seq)
            ek = sk + s.ooo[k].length
            low = sk if sk > start else start
            high = ek if ek < end else end
            if low < high:
                overlap = 1
                if memcmp(s.ooo[k].data + (low - sk), data + (low - start), high - low) != 0:
                    conflict = 1
            if sk <= start and end <= ek:
                counters[C_tcp_overlap] += 1   # all its bytes are queued already: the first copy stays
                return conflict
            if start <= sk and ek <= end:
                ncovered += 1
                freed += s.ooo[k].length
        if s.nooo - ncovered >= OOO_SEGMENTS or s.ooo_bytes - freed + n > OOO_STREAM_BYTES:
            counters[C_tcp_ooo_dropped] += 1
            return 0
        cost = n + OOO_SEGMENT_COST
        released = freed + <uint64_t>ncovered * OOO_SEGMENT_COST
        if self.ooo_total - released + cost > self.max_ooo_bytes:
            # The memory budget: other streams' waiting segments go, least recently used first (a flood of
            # reordered junk does not keep a later segment out). One stream's queue always fits (MIN_OOO_BYTES).
            self.ooo_make_room(i, self.ooo_total - released + cost - self.max_ooo_bytes)
        if overlap:
            counters[C_tcp_overlap] += 1
        # Remove the covered ones, then insert in order of position (no two start at the same place).
        w = 0
        for k in range(s.nooo):
            sk = seq_diff(s.ooo[k].seq, s.expected_seq)
            ek = sk + s.ooo[k].length
            if start <= sk and ek <= end:
                free(s.ooo[k].data)
            else:
                s.ooo[w] = s.ooo[k]
                w += 1
        s.nooo = w
        if s.nooo == s.ooo_cap:
            grown = <OooSegment*>realloc(s.ooo, (s.ooo_cap + 8) * sizeof(OooSegment))
            if grown == NULL:
                return -1
            s.ooo = grown
            s.ooo_cap += 8
        k = s.nooo
        while k > 0 and seq_diff(s.ooo[k - 1].seq, s.expected_seq) > start:
            s.ooo[k] = s.ooo[k - 1]
            k -= 1
        s.ooo[k].seq = s.expected_seq + <uint32_t>start
        s.ooo[k].length = n
        s.ooo[k].data = <uint8_t*>malloc(n)
        if s.ooo[k].data == NULL:
            memmove(&s.ooo[k], &s.ooo[k + 1], (s.nooo - k) * sizeof(OooSegment))
            return -1
        memcpy(s.ooo[k].data, data, n)
        s.nooo += 1
        s.ooo_bytes += n - freed
        self.ooo_total += cost
        self.ooo_total -= released
        counters[C_tcp_out_of_order] += 1
        return conflict

    cdef int drain(self, int32_t i, uint64_t* counters) noexcept nogil:
        """Linux's tcp_ofo_queue: waiting segments reached by expected_seq, the earlier bytes winning. Returns 1
        on an overlap conflict, -1 out of memory, else 0."""
        cdef Stream* s = &self.slots[i]
        cdef OooSegment seg
        cdef int32_t start
        cdef int conflict = 0, failed = 0
        while s.nooo > 0:
            seg = s.ooo[0]
            start = seq_diff(seg.seq, s.expected_seq)
            if start > 0:
                break
            memmove(&s.ooo[0], &s.ooo[1], (s.nooo - 1) * sizeof(OooSegment))
            s.nooo -= 1
            s.ooo_bytes -= seg.length
            self.ooo_total -= seg.length + OOO_SEGMENT_COST
            if <int64_t>start + seg.length > 0:
                if start < 0:
                    if self.conflicts(i, seg.data, -start, -start):
                        conflict = 1
                    failed = self.deliver(i, seg.data - start, seg.length + start, counters)
                else:
                    failed = self.deliver(i, seg.data, seg.length, counters)
            free(seg.data)
            if failed:
                return -1
        return conflict


cdef bint has_fast_open_cookie(const uint8_t* p, uint32_t n) noexcept nogil:
    """A TCP Fast Open option with a cookie (RFC 7413 4.1.1; kind 34, or 254 with magic 0xF989)."""
    cdef uint32_t pos = 0, length
    while pos < n:
        if p[pos] == 0:
            return False
        if p[pos] == 1:
            pos += 1
            continue
        if pos + 1 >= n or p[pos + 1] < 2 or pos + p[pos + 1] > n:
            return False
        length = p[pos + 1]
        if p[pos] == 34 and length > 2:
            return True
        if p[pos] == 254 and length > 4 and p[pos + 2] == 0xF9 and p[pos + 3] == 0x89:
            return True
        pos += length
    return False
