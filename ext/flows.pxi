# The flow table: unidirectional flows of every frame's first IP header, in a fixed array of slots with a
# chained hash index and a least-recently-updated list. The reference (the spec, rule by rule) is
# sensor/flows/reference.py; docs/flows.md says why each rule is what it is.

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
    uint16_t sport, dport
    uint8_t proto, version, flags
    int32_t vlan
    int64_t start, end
    uint64_t packets, bytes
    int32_t prev, next           # least-recently-updated list: head is the oldest
    int32_t chain                # next slot in the same hash bucket (or the free list), -1 at the end
    uint32_t bucket


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
    cdef int32_t* buckets        # slot index + 1, 0 when empty (so calloc is an empty index)
    cdef uint32_t bucket_mask
    cdef int32_t capacity, used, free_head, lru_head, lru_tail
    cdef int64_t idle_us, active_us
    cdef FlowRecord* out
    cdef Py_ssize_t out_len, out_cap
    cdef object dtype            # sensor.flows.record.FLOW_DTYPE, handed in (ext/ imports nothing from sensor/)

    def __cinit__(self, dtype, double idle_timeout=15.0, double active_timeout=1800.0, long max_flows=262144):
        cdef uint32_t nb = 16
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
        self.buckets = <int32_t*>calloc(nb, sizeof(int32_t))
        self.out_cap = 1024
        self.out = <FlowRecord*>malloc(self.out_cap * sizeof(FlowRecord))
        if self.slots == NULL or self.buckets == NULL or self.out == NULL:
            raise MemoryError()
        self.bucket_mask = nb - 1
        self.idle_us = <int64_t>(idle_timeout * 1000000)
        self.active_us = <int64_t>(active_timeout * 1000000)
        self.used = 0
        self.lru_head = -1
        self.lru_tail = -1
        self.out_len = 0
        # every slot on the free list, in order
        for i in range(max_flows):
            self.slots[i].chain = i + 1 if i + 1 < max_flows else -1
        self.free_head = 0

    def __dealloc__(self):
        free(self.slots)
        free(self.buckets)
        free(self.out)

    @property
    def count(self):
        return self.used

    def __len__(self):
        return self.used

    def expire_idle(self, int64_t now_us):
        """Idle flows out at `now_us` (live capture calls it when no packet came to do it)."""
        self.expire_idle_at(now_us)

    cdef int expire_idle_at(self, int64_t now) except -1:
        # least recently updated first, until one is not idle
        while self.lru_head >= 0 and now - self.slots[self.lru_head].end > self.idle_us:
            self.expire(self.lru_head, END_IDLE)
        return 0

    def flush(self):
        """Every flow out, oldest first, reason forced (end of a replay, or stop)."""
        while self.lru_head >= 0:
            self.expire(self.lru_head, END_FORCED)

    def take(self):
        """The records emitted since the last take, as a FLOW_DTYPE numpy array (a copy)."""
        import numpy  # here, not at module level: a run without flows never loads numpy (50-200 ms of start-up)

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
        cdef FlowSlot* f = &self.slots[s]
        if f.prev >= 0:
            self.slots[f.prev].next = f.next
        else:
            self.lru_head = f.next
        if f.next >= 0:
            self.slots[f.next].prev = f.prev
        else:
            self.lru_tail = f.prev

    cdef inline void lru_append(self, int32_t s) noexcept:
        cdef FlowSlot* f = &self.slots[s]
        f.prev = self.lru_tail
        f.next = -1
        if self.lru_tail >= 0:
            self.slots[self.lru_tail].next = s
        else:
            self.lru_head = s
        self.lru_tail = s

    cdef int expire(self, int32_t s, uint8_t reason) except -1:
        """Emit slot s and give it back: out of its bucket chain, the LRU list, onto the free list."""
        cdef FlowSlot* f = &self.slots[s]
        cdef int32_t* link = &self.buckets[f.bucket]
        self.emit(f, reason)
        while link[0] != s + 1:
            link = &self.slots[link[0] - 1].chain
        link[0] = f.chain
        self.lru_unlink(s)
        f.chain = self.free_head
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
        cdef int32_t s, link
        cdef FlowSlot* f
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
        self.expire_idle_at(now)
        h = mix64(src_hi ^ mix64(src_lo ^ mix64(dst_hi ^ mix64(dst_lo ^ (
            (<uint64_t>sport << 48) | (<uint64_t>dport << 32) | (<uint64_t>proto << 24)
            | (<uint64_t>version << 16) | (<uint64_t><uint32_t>(vlan + 1)))))))
        link = self.buckets[h & self.bucket_mask]
        s = -1
        while link:
            f = &self.slots[link - 1]
            if (f.src_lo == src_lo and f.dst_lo == dst_lo and f.sport == sport and f.dport == dport
                    and f.src_hi == src_hi and f.dst_hi == dst_hi and f.proto == proto
                    and f.version == version and f.vlan == vlan):
                s = link - 1
                break
            link = f.chain
        if s >= 0 and now - self.slots[s].start > self.active_us:
            self.expire(s, END_ACTIVE)
            s = -1
        if s < 0:
            if self.used >= self.capacity:
                self.expire(self.lru_head, END_EVICTED)
                counters[C_flows_evicted] += 1
            s = self.free_head
            f = &self.slots[s]
            self.free_head = f.chain
            f.bucket = h & self.bucket_mask
            f.chain = self.buckets[f.bucket]
            self.buckets[f.bucket] = s + 1
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
