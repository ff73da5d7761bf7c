# The flow table: unidirectional flows of every frame's first IP header, in a fixed array of slots with an
# open-addressing hash index and a least-recently-updated list. The reference (the spec, rule by rule) is
# sensor/flows/reference.py; docs/flows.md says why each rule is what it is. Decision 0193: the index is
# linear probing over 8-byte entries (a slot's 32-bit hash and its number), so a miss (most packets start a
# flow) reads one index line and no slot, and the list's links live in their own small arrays.

cdef enum:
    END_IDLE = 1
    END_ACTIVE = 2
    END_END = 3
    END_FORCED = 4
    END_EVICTED = 5
    FLOW_MAX_IPV6_EXT = 8        # as the decoder: a longer chain stops the walk, the flow gets no ports

# Byte for byte sensor.flows.record.FLOW_DTYPE (little-endian hosts: the dtype says "<").
cdef packed struct FlowRecord:
    int64_t start_us
    int64_t end_us
    uint64_t src_hi
    uint64_t src_lo
    uint64_t dst_hi
    uint64_t dst_lo
    uint16_t src_port
    uint16_t dst_port
    uint8_t proto
    uint8_t ip_version
    uint8_t tcp_flags
    uint8_t end_reason
    uint8_t direction
    int32_t vlan
    uint64_t packets
    uint64_t bytes

cdef struct FlowSlot:
    uint64_t src_hi, src_lo, dst_hi, dst_lo
    int64_t start, end
    uint64_t packets, bytes
    int32_t vlan
    uint32_t hash                # the key's hash, low 32 bits: its home in the index, and its index entry's tag
    uint16_t sport, dport
    uint8_t proto, version, flags

# A packet parsed and hashed, waiting for its turn (decision 0196): the index entry it will read is prefetched
# when it is queued, FLOW_PENDING packets ahead, so the misses of consecutive packets overlap.
cdef enum:
    FLOW_PENDING = 8             # a power of two

cdef struct FlowPacket:
    uint64_t src_hi, src_lo, dst_hi, dst_lo, hash
    int64_t now
    uint64_t* counters
    uint32_t length
    int32_t vlan
    uint16_t sport, dport
    uint8_t proto, version, flags

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define flow_prefetch(p) __builtin_prefetch((p), 1)
    #else
    #define flow_prefetch(p) ((void)(p))
    #endif
    """
    void flow_prefetch(const void* p) noexcept nogil


cdef inline uint64_t rd64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>rd32(p) << 32) | rd32(p + 4)


cdef inline uint64_t mix64(uint64_t h) noexcept nogil:
    # splitmix64's finalizer: every key bit reaches every bucket bit
    h ^= h >> 30
    h *= 0xBF58476D1CE4E5B9ULL
    h ^= h >> 27
    h *= 0x94D049BB133111EBULL
    h ^= h >> 31
    return h


cdef class FlowTable:
    """Flows keyed by addresses, ports, protocol, IP version and VLAN; see sensor/flows/reference.py."""

    cdef FlowSlot* slots
    cdef int32_t* lru_prev       # least-recently-updated list, by slot: head is the oldest, -1 at the ends
    cdef int32_t* lru_next       # (also the free list's links)
    cdef uint64_t* index         # hash << 32 | slot + 1; 0 when empty (so calloc is an empty index)
    cdef uint32_t index_mask
    cdef int32_t capacity, used, free_head, lru_head, lru_tail
    cdef int64_t idle_us, active_us
    cdef FlowRecord* out
    cdef Py_ssize_t out_len, out_cap
    cdef object dtype            # sensor.flows.record.FLOW_DTYPE, handed in (ext/ imports nothing from sensor/)
    cdef FlowPacket queue[FLOW_PENDING]
    cdef uint32_t queue_head, queue_len   # packets accounted but not yet applied, oldest at queue_head

    def __cinit__(self, dtype, double idle_timeout=15.0, double active_timeout=1800.0, long max_flows=262144):
        cdef uint32_t nb = 16         # index entries: a power of two, at least twice the slots (load <= 1/2)
        cdef int32_t i
        if max_flows < 1 or max_flows > 0x3FFFFFFF:
            raise ValueError(f"max flows must be from 1 to {0x3FFFFFFF}, not {max_flows}")
        if not idle_timeout > 0 or not active_timeout > 0:
            raise ValueError("flow timeouts must be above 0 seconds")
        if dtype.itemsize != sizeof(FlowRecord):
            raise ValueError(f"record dtype is {dtype.itemsize} bytes, the table writes {sizeof(FlowRecord)}")
        self.dtype = dtype
        self.capacity = max_flows
        while nb < <uint32_t>max_flows * 2:
            nb <<= 1
        self.slots = <FlowSlot*>calloc(max_flows, sizeof(FlowSlot))
        self.lru_prev = <int32_t*>calloc(max_flows, sizeof(int32_t))
        self.lru_next = <int32_t*>calloc(max_flows, sizeof(int32_t))
        self.index = <uint64_t*>calloc(nb, sizeof(uint64_t))
        self.out_cap = 1024
        self.out = <FlowRecord*>malloc(self.out_cap * sizeof(FlowRecord))
        if (self.slots == NULL or self.lru_prev == NULL or self.lru_next == NULL or self.index == NULL
                or self.out == NULL):
            raise MemoryError()
        self.index_mask = nb - 1
        self.idle_us = <int64_t>(idle_timeout * 1000000)
        self.active_us = <int64_t>(active_timeout * 1000000)
        self.used = 0
        self.lru_head = -1
        self.lru_tail = -1
        self.out_len = 0
        self.queue_head = 0
        self.queue_len = 0
        # every slot on the free list, in order
        for i in range(max_flows):
            self.lru_next[i] = i + 1 if i + 1 < max_flows else -1
        self.free_head = 0

    def __dealloc__(self):
        free(self.slots)
        free(self.lru_prev)
        free(self.lru_next)
        free(self.index)
        free(self.out)

    @property
    def count(self):
        self.settle()
        return self.used

    def __len__(self):
        self.settle()
        return self.used

    cdef int settle(self) except -1:
        """Every queued packet applied, in order: before anything looks at the table, and at the end of each
        batch (FastLoop.run_batch), so that no packet waits past the loop whose counters it updates."""
        while self.queue_len:
            self.apply(&self.queue[self.queue_head])
            self.queue_head = (self.queue_head + 1) & (FLOW_PENDING - 1)
            self.queue_len -= 1
        return 0

    def expire_idle(self, int64_t now_us):
        """Idle flows out at `now_us` (live capture calls it when no packet came to do it)."""
        self.settle()
        self.expire_idle_at(now_us)

    cdef int expire_idle_at(self, int64_t now) except -1:
        # least recently updated first, until one is not idle
        while self.lru_head >= 0 and now - self.slots[self.lru_head].end > self.idle_us:
            self.expire(self.lru_head, END_IDLE)
        return 0

    def flush(self):
        """Every flow out, oldest first, reason forced (end of a replay, or stop). The table is emptied at once
        (index cleared, free list rebuilt) rather than flow by flow."""
        cdef int32_t s
        cdef uint32_t i
        self.settle()
        s = self.lru_head
        while s >= 0:
            self.emit(&self.slots[s], END_FORCED)
            s = self.lru_next[s]
        memset(self.index, 0, (<size_t>self.index_mask + 1) * sizeof(uint64_t))
        for i in range(<uint32_t>self.capacity):
            self.lru_next[i] = <int32_t>i + 1 if <int32_t>i + 1 < self.capacity else -1
        self.free_head = 0
        self.lru_head = -1
        self.lru_tail = -1
        self.used = 0

    def take(self):
        """The records emitted since the last take, as a FLOW_DTYPE numpy array (a copy)."""
        import numpy  # here, not at module level: a run without flows never loads numpy (50-200 ms of start-up)

        self.settle()
        cdef Py_ssize_t size = self.out_len * sizeof(FlowRecord)
        result = numpy.empty(self.out_len, dtype=self.dtype)
        cdef uint8_t[::1] target = result.view(numpy.uint8)
        if size:
            memcpy(&target[0], self.out, size)  # one copy, into the array itself
        self.out_len = 0
        return result

    cdef int emit(self, FlowSlot* f, uint8_t reason) except -1:
        cdef FlowRecord* r
        cdef FlowRecord* grown
        if self.out_len == self.out_cap:
            grown = <FlowRecord*>realloc(self.out, self.out_cap * 2 * sizeof(FlowRecord))
            if grown == NULL:
                raise MemoryError()
            self.out = grown
            self.out_cap *= 2
        r = &self.out[self.out_len]
        self.out_len += 1
        r.start_us = f.start
        r.end_us = f.end
        r.src_hi = f.src_hi
        r.src_lo = f.src_lo
        r.dst_hi = f.dst_hi
        r.dst_lo = f.dst_lo
        r.src_port = f.sport
        r.dst_port = f.dport
        r.proto = f.proto
        r.ip_version = f.version
        r.tcp_flags = f.flags
        r.end_reason = reason
        r.direction = 0
        r.vlan = f.vlan
        r.packets = f.packets
        r.bytes = f.bytes
        return 0

    cdef inline void lru_unlink(self, int32_t s) noexcept:
        cdef int32_t prev = self.lru_prev[s], next = self.lru_next[s]
        if prev >= 0:
            self.lru_next[prev] = next
        else:
            self.lru_head = next
        if next >= 0:
            self.lru_prev[next] = prev
        else:
            self.lru_tail = prev

    cdef inline void lru_append(self, int32_t s) noexcept:
        self.lru_prev[s] = self.lru_tail
        self.lru_next[s] = -1
        if self.lru_tail >= 0:
            self.lru_next[self.lru_tail] = s
        else:
            self.lru_head = s
        self.lru_tail = s

    cdef inline void index_remove(self, int32_t s, uint32_t hash) noexcept:
        """Slot s out of the index: its entry found from its home, then the entries after it shifted back
        (linear probing without tombstones: every entry stays reachable from its home)."""
        cdef uint32_t mask = self.index_mask
        cdef uint32_t i = hash & mask, j, home
        cdef uint64_t entry
        while <int32_t>(self.index[i] & 0xFFFFFFFF) != s + 1:
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            entry = self.index[j]
            if entry == 0:
                break
            home = <uint32_t>(entry >> 32) & mask
            # entry at j may move to the hole at i unless its home lies cyclically in (i, j]
            if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
                self.index[i] = entry
                i = j
        self.index[i] = 0

    cdef int expire(self, int32_t s, uint8_t reason) except -1:
        """Emit slot s and give it back: out of the index, the LRU list, onto the free list."""
        cdef FlowSlot* f = &self.slots[s]
        self.emit(f, reason)
        self.index_remove(s, f.hash)
        self.lru_unlink(s)
        self.lru_next[s] = self.free_head
        self.free_head = s
        self.used -= 1
        return 0

    cdef int account(self, const uint8_t* p, uint32_t n, int version, int32_t vlan, int64_t now,
                     uint64_t* counters) except -1:
        """One IP packet (p at its IP header, n bytes captured from there) seen at `now` microseconds."""
        cdef uint32_t ihl, total, pos, end, hl
        cdef uint64_t src_hi, src_lo, dst_hi, dst_lo, h
        cdef uint8_t proto, nh, flags = 0
        cdef uint16_t sport = 0, dport = 0, word
        cdef bint fragment = 0
        cdef int count = 0
        cdef const uint8_t* t
        cdef uint32_t tlen
        cdef FlowPacket* q
        if version == 4:
            if n < 20 or p[0] >> 4 != 4:
                return 0
            ihl = (p[0] & 0x0F) * 4
            total = rd16(p + 2)
            if ihl < 20 or ihl > n or total < ihl or total > n:
                return 0
            proto = p[9]
            src_hi = 0
            src_lo = (<uint64_t>0xFFFF << 32) | rd32(p + 12)
            dst_hi = 0
            dst_lo = (<uint64_t>0xFFFF << 32) | rd32(p + 16)
            fragment = (rd16(p + 6) & 0x3FFF) != 0
            t = p + ihl
            tlen = total - ihl
            end = total
        else:
            if n < 40 or p[0] >> 4 != 6:
                return 0
            end = 40 + <uint32_t>rd16(p + 4)
            if end == 40 or end > n:
                return 0
            src_hi = rd64(p + 8)
            src_lo = rd64(p + 16)
            dst_hi = rd64(p + 24)
            dst_lo = rd64(p + 32)
            nh = p[6]
            pos = 40
            while nh == 0 or nh == 43 or nh == 60 or nh == 44:
                if count == FLOW_MAX_IPV6_EXT:
                    fragment = 1
                    break
                count += 1
                if nh == 44:
                    if pos + 8 > end:
                        fragment = 1
                        break
                    word = rd16(p + pos + 2)
                    nh = p[pos]
                    pos += 8
                    if word & 0xFFF9:
                        fragment = 1
                        break
                else:
                    if pos + 2 > end:
                        fragment = 1
                        break
                    hl = (<uint32_t>p[pos + 1] + 1) * 8
                    if pos + hl > end:
                        fragment = 1
                        break
                    nh = p[pos]
                    pos += hl
            proto = nh
            t = p + pos
            tlen = end - pos
        if not fragment:
            if (proto == 6 or proto == 17 or proto == 132) and tlen >= 4:
                sport = rd16(t)
                dport = rd16(t + 2)
                if proto == 6 and tlen >= 14:
                    flags = t[13]
            elif (proto == 1 or proto == 58) and tlen >= 2:
                dport = (<uint16_t>t[0] << 8) | t[1]
        h = mix64(src_hi ^ mix64(src_lo ^ mix64(dst_hi ^ mix64(dst_lo ^ (
            (<uint64_t>sport << 48) | (<uint64_t>dport << 32) | (<uint64_t>proto << 24)
            | (<uint64_t>version << 16) | (<uint64_t><uint32_t>(vlan + 1)))))))
        flow_prefetch(&self.index[<uint32_t>h & self.index_mask])
        if self.queue_len == FLOW_PENDING:  # the oldest packet's turn
            self.apply(&self.queue[self.queue_head])
            self.queue_head = (self.queue_head + 1) & (FLOW_PENDING - 1)
            self.queue_len -= 1
        q = &self.queue[(self.queue_head + self.queue_len) & (FLOW_PENDING - 1)]
        self.queue_len += 1
        q.src_hi = src_hi
        q.src_lo = src_lo
        q.dst_hi = dst_hi
        q.dst_lo = dst_lo
        q.hash = h
        q.now = now
        q.counters = counters
        q.length = end
        q.vlan = vlan
        q.sport = sport
        q.dport = dport
        q.proto = proto
        q.version = version
        q.flags = flags
        return 0

    cdef int apply(self, FlowPacket* q) except -1:
        """One queued packet into its flow (rules 2-6 of sensor/flows/reference.py)."""
        cdef uint64_t src_hi = q.src_hi, src_lo = q.src_lo, dst_hi = q.dst_hi, dst_lo = q.dst_lo
        cdef uint16_t sport = q.sport, dport = q.dport
        cdef uint8_t proto = q.proto, version = q.version, flags = q.flags
        cdef int32_t vlan = q.vlan
        cdef int64_t now = q.now
        cdef uint64_t* counters = q.counters
        cdef uint32_t end = q.length
        cdef int32_t s, nxt
        cdef uint32_t hash, mask, i
        cdef uint64_t entry
        cdef FlowSlot* f
        self.expire_idle_at(now)
        hash = <uint32_t>q.hash
        mask = self.index_mask
        i = hash & mask
        s = -1
        while True:
            entry = self.index[i]
            if entry == 0:
                break
            if <uint32_t>(entry >> 32) == hash:
                f = &self.slots[<int32_t>(entry & 0xFFFFFFFF) - 1]
                if (f.src_lo == src_lo and f.dst_lo == dst_lo and f.sport == sport and f.dport == dport
                        and f.src_hi == src_hi and f.dst_hi == dst_hi and f.proto == proto
                        and f.version == version and f.vlan == vlan):
                    s = <int32_t>(entry & 0xFFFFFFFF) - 1
                    break
            i = (i + 1) & mask
        if s >= 0 and now - self.slots[s].start > self.active_us:
            self.expire(s, END_ACTIVE)
            s = -1
        if s < 0:
            if self.used >= self.capacity:
                self.expire(self.lru_head, END_EVICTED)
                counters[C_flows_evicted] += 1
                # read ahead for the next evictions: the next victim's index entry (its slot was read ahead
                # at the last eviction), and the slot of the one after
                nxt = self.lru_head
                if nxt >= 0:
                    flow_prefetch(&self.index[self.slots[nxt].hash & mask])
                    nxt = self.lru_next[nxt]
                    if nxt >= 0:
                        flow_prefetch(&self.slots[nxt])
            s = self.free_head
            f = &self.slots[s]
            self.free_head = self.lru_next[s]
            # the first empty entry from the home (an expiry above may have emptied or shifted entries)
            i = hash & mask
            while self.index[i] != 0:
                i = (i + 1) & mask
            self.index[i] = (<uint64_t>hash << 32) | <uint32_t>(s + 1)
            f.hash = hash
            f.src_hi = src_hi
            f.src_lo = src_lo
            f.dst_hi = dst_hi
            f.dst_lo = dst_lo
            f.sport = sport
            f.dport = dport
            f.proto = proto
            f.version = version
            f.vlan = vlan
            f.start = now
            f.end = now
            f.packets = 0
            f.bytes = 0
            f.flags = 0
            self.lru_append(s)
            self.used += 1
            counters[C_flows_created] += 1
        else:
            f = &self.slots[s]
            if s != self.lru_tail:
                self.lru_unlink(s)
                self.lru_append(s)
        if now < f.start:
            f.start = now
        if now > f.end:
            f.end = now
        f.packets += 1
        f.bytes += end
        f.flags |= flags
        if proto == 6 and flags & 0x05:
            self.expire(s, END_END)
        return 0
