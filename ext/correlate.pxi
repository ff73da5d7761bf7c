# Query-response correlation for the query log (docs/querylog.md, "Correlation"). Included by loop.pyx.
# The reference is sensor/decode/correlate.py.
#
# A pending query waits in a bounded table (fixed slots, chained hash buckets, a list in arrival order so the
# oldest query is the one that expires or is evicted first). A finished entry is not a Python object: its
# fixed fields, the query name and the response message bytes are appended to one growing buffer, in the
# layout of sensor/querylog/packed.py, and decoded in bulk outside the loop. The response's answer section
# is therefore parsed there, not here: the loop's cost per entry is one memcpy.

from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.bytes cimport _PyBytes_Resize

cdef enum:
    NAME_INLINE = 64             # most query names fit in the slot; longer ones get their own allocation
    PENDING_KEY_LEN = 44         # vlan+1 (2), ip version (1), transport (1), client (16), server (16),
                                 # client port (2), server port (2), DNS id (2), qtype (2)
    STATUS_ANSWERED = 0
    STATUS_UNANSWERED = 1
    STATUS_RESPONSE_ONLY = 2

ctypedef struct PendingQuery:
    uint8_t key[PENDING_KEY_LEN]
    uint64_t key_hash            # of the key (key_hash below)
    int32_t bucket_next
    int32_t older, newer         # arrival order: -1 ends
    uint32_t sec, usec
    int64_t t_us
    int64_t frame
    uint16_t qclass
    uint8_t tunnels[MAX_TUNNEL_DEPTH]
    uint8_t ntunnels
    uint8_t* name                # presentation text as the query sent it: `inline_name` or allocated
    uint16_t name_len
    uint8_t inline_name[NAME_INLINE]
    uint32_t retransmissions

cdef inline uint64_t key_hash(const uint8_t* key) noexcept nogil:
    """The key's six 8-byte words (the last two overlap) folded in pairs and multiplied independently, then
    mixed (the name is compared, not hashed: a DNS id and a port already spread queries; two names under one
    key and id are rare and only share a bucket). Independent multiplies: a serial chain was most of the cost."""
    cdef uint64_t w[6]
    cdef uint64_t h
    memcpy(w, key, 40)
    memcpy(&w[5], key + PENDING_KEY_LEN - 8, 8)
    h = ((w[0] ^ w[3]) * 0x9E3779B97F4A7C15ULL + (w[1] ^ w[4]) * 0xBF58476D1CE4E5B9ULL
         + (w[2] ^ w[5]) * 0x94D049BB133111EBULL)
    h ^= h >> 32
    h *= 0xD6E8FEB86659FD93ULL
    return h ^ (h >> 29)


cdef packed struct EntryHeader:
    # One finished entry in the buffer; sensor/querylog/packed.py ENTRY_HEADER must agree.
    uint32_t record_len          # header + name + message
    uint8_t status
    uint8_t ip_version
    uint8_t transport
    uint8_t ntunnels
    int32_t vlan                 # -1 untagged
    uint32_t ts_sec, ts_usec
    int64_t frame
    int64_t latency_us           # -1 unless answered
    uint32_t retransmissions
    uint16_t client_port, server_port, dns_id, qtype, qclass, name_len
    uint8_t client[16]
    uint8_t server[16]
    uint8_t tunnels[MAX_TUNNEL_DEPTH]
    uint32_t message_len         # the response message, 0 when unanswered


cdef class PendingTable:
    """At most `capacity` queries awaiting their response; the oldest expires or is evicted first."""

    cdef PendingQuery* slots
    cdef int32_t* buckets
    cdef uint32_t bucket_mask
    cdef int32_t capacity
    cdef int32_t count
    cdef int32_t free_head
    cdef int32_t oldest, newest
    cdef int64_t timeout_us
    cdef int64_t expires_us      # when the oldest query expires (kept here: its slot is rarely in cache)
    cdef PyObject* out_bytes     # finished entries, packed, in the bytes object take() hands out (owned; NULL
    cdef uint8_t* out            # before the first entry after a take): no copy at take (decision 0181)
    cdef size_t out_len, out_cap
    cdef size_t next_cap         # the size the next batch's buffer starts at: the last one's (bursts aside)

    def __cinit__(self, int capacity, double timeout):
        cdef int32_t i
        cdef uint32_t nb = 16
        if capacity < 1:
            raise ValueError("max_pending_queries must be at least 1")
        if not timeout > 0:
            raise ValueError("query_timeout must be positive")
        # A quarter as many buckets as slots: chains of four when full, but a bucket array that stays in cache
        # (its misses were most of the correlation's cost at 2 slots per bucket; bench/querylog_loop.py).
        while nb < <uint32_t>capacity // 4:
            nb *= 2
        self.capacity = capacity
        self.timeout_us = <int64_t>(timeout * 1000000)
        self.slots = <PendingQuery*>calloc(capacity, sizeof(PendingQuery))
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
        self.expires_us = INT64_MAX
        self.count = 0
        self.out_bytes = NULL
        self.out = NULL
        self.out_len = 0
        self.out_cap = 0
        self.next_cap = 65536

    def __dealloc__(self):
        cdef int32_t i
        if self.slots != NULL:
            for i in range(self.capacity):
                if self.slots[i].name != self.slots[i].inline_name:
                    free(self.slots[i].name)
        free(self.slots)
        free(self.buckets)
        Py_XDECREF(self.out_bytes)

    cdef int32_t find(self, const uint8_t* key, uint64_t h, const uint8_t* name, uint32_t name_len) noexcept nogil:
        cdef int32_t i = self.buckets[h & self.bucket_mask]
        cdef PendingQuery* q
        cdef uint32_t k
        while i != -1:
            q = &self.slots[i]
            if q.key_hash == h and q.name_len == name_len and memcmp(q.key, key, PENDING_KEY_LEN) == 0:
                if memcmp(q.name, name, name_len) == 0:
                    return i     # the usual case: the response echoes the name byte for byte
                k = 0
                while k < name_len and ascii_lower(q.name[k]) == ascii_lower(name[k]):
                    k += 1
                if k == name_len:
                    return i
            i = q.bucket_next
        return -1

    cdef void remove(self, int32_t i) noexcept nogil:
        cdef PendingQuery* q = &self.slots[i]
        cdef int32_t* link = &self.buckets[q.key_hash & self.bucket_mask]
        while link[0] != i:
            link = &self.slots[link[0]].bucket_next
        link[0] = q.bucket_next
        if q.older != -1:
            self.slots[q.older].newer = q.newer
        else:
            self.oldest = q.newer
            self.expires_us = self.slots[q.newer].t_us + self.timeout_us if q.newer != -1 else INT64_MAX
        if q.newer != -1:
            self.slots[q.newer].older = q.older
        else:
            self.newest = q.older
        if q.name != q.inline_name:
            free(q.name)
        q.name = NULL
        q.bucket_next = self.free_head
        self.free_head = i
        self.count -= 1

    cdef int32_t insert(self, const uint8_t* key, uint64_t h, const uint8_t* name, uint32_t name_len,
                        int64_t now_us) except -1:
        """A slot for a new query; the caller makes room first (the table is never full here)."""
        cdef int32_t i = self.free_head
        cdef PendingQuery* q = &self.slots[i]
        if name_len <= NAME_INLINE:
            q.name = q.inline_name
        else:
            q.name = <uint8_t*>malloc(name_len)
            if q.name == NULL:
                raise MemoryError()
        memcpy(q.name, name, name_len)
        q.name_len = name_len
        self.free_head = q.bucket_next
        memcpy(q.key, key, PENDING_KEY_LEN)
        q.key_hash = h
        q.bucket_next = self.buckets[h & self.bucket_mask]
        self.buckets[h & self.bucket_mask] = i
        q.retransmissions = 0
        q.t_us = now_us
        q.newer = -1
        q.older = self.newest
        if self.newest != -1:
            self.slots[self.newest].newer = i
        self.newest = i
        if self.oldest == -1:
            self.oldest = i
            self.expires_us = now_us + self.timeout_us
        self.count += 1
        return i

    cdef int reserve(self, size_t more) except -1:
        """Room for `more` bytes in the batch's bytes object: made at the first entry, grown by a copy."""
        cdef size_t cap = self.out_cap if self.out_cap else self.next_cap
        cdef object grown
        if self.out_len + more <= self.out_cap:
            return 0
        while cap < self.out_len + more:
            cap *= 2
        grown = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>cap)
        if self.out_len:
            memcpy(PyBytes_AS_STRING(grown), self.out, self.out_len)
        Py_INCREF(grown)
        Py_XDECREF(self.out_bytes)
        self.out_bytes = <PyObject*>grown
        self.out = <uint8_t*>PyBytes_AS_STRING(grown)
        self.out_cap = cap
        return 0

    cdef int emit(self, uint8_t status, const uint8_t* key, uint32_t sec, uint32_t usec, int64_t frame,
                  int64_t latency_us, uint32_t retransmissions, uint16_t qclass, const uint8_t* tunnels,
                  uint8_t ntunnels, const uint8_t* name, uint32_t name_len,
                  const uint8_t* msg, uint32_t msg_len) except -1:
        """Append one finished entry to the buffer; `key` gives the addresses, ports, DNS id and qtype."""
        cdef EntryHeader hd
        cdef size_t total = sizeof(EntryHeader) + name_len + msg_len
        self.reserve(total)
        memset(&hd, 0, sizeof(hd))
        hd.record_len = <uint32_t>total
        hd.status = status
        hd.ip_version = key[2]
        hd.transport = key[3]
        hd.ntunnels = ntunnels
        hd.vlan = ((<int32_t>key[0] << 8) | key[1]) - 1
        hd.ts_sec = sec
        hd.ts_usec = usec
        hd.frame = frame
        hd.latency_us = latency_us
        hd.retransmissions = retransmissions
        memcpy(hd.client, key + 4, 16)
        memcpy(hd.server, key + 20, 16)
        hd.client_port = rd16(key + 36)
        hd.server_port = rd16(key + 38)
        hd.dns_id = rd16(key + 40)
        hd.qtype = rd16(key + 42)
        hd.qclass = qclass
        hd.name_len = <uint16_t>name_len
        memcpy(hd.tunnels, tunnels, ntunnels)
        hd.message_len = msg_len
        memcpy(self.out + self.out_len, &hd, sizeof(hd))
        memcpy(self.out + self.out_len + sizeof(hd), name, name_len)
        if msg_len:
            memcpy(self.out + self.out_len + sizeof(hd) + name_len, msg, msg_len)
        self.out_len += total
        return 0

    cdef int finish_unanswered(self, int32_t i) except -1:
        cdef PendingQuery* q = &self.slots[i]
        self.emit(STATUS_UNANSWERED, q.key, q.sec, q.usec, q.frame, -1, q.retransmissions, q.qclass,
                  q.tunnels, q.ntunnels, q.name, q.name_len, NULL, 0)
        self.remove(i)
        return 0

    cdef int expire(self, int64_t now_us, uint64_t* counters) except -1:
        """Queries older than the timeout leave as unanswered, oldest first."""
        while now_us > self.expires_us:
            counters[C_dns_query_expired] += 1
            self.finish_unanswered(self.oldest)
        return 0

    cdef int flush(self) except -1:
        """Every pending query leaves as unanswered (end of a capture, or stop)."""
        while self.oldest != -1:
            self.finish_unanswered(self.oldest)
        return 0

    cdef bytes take(self):
        """The batch's entries: the bytes object they were written into, cut to length (no copy)."""
        cdef object data
        if self.out_len == 0:
            return b""
        # refcount 1 (owned here only): resized in place, or moved by realloc
        try:
            _PyBytes_Resize(&self.out_bytes, <Py_ssize_t>self.out_len)
        except MemoryError:  # the object is gone: so is the batch
            self.out_bytes = NULL
            self.out = NULL
            self.out_len = self.out_cap = 0
            raise
        data = <object>self.out_bytes
        Py_XDECREF(self.out_bytes)
        # a burst made it large: the next batch starts small again, as the buffer was given back before
        self.next_cap = self.out_cap if self.out_cap <= (1 << 24) else 65536
        self.out_bytes = NULL
        self.out = NULL
        self.out_len = 0
        self.out_cap = 0
        return data

    cdef int message(self, const uint8_t* msg, uint32_t n, uint16_t flags, DecodedName* name,
                     uint16_t qtype, uint16_t qclass, FrameInfo* fi, uint64_t* counters) except -1:
        """One decoded DNS message: a query waits for its response; a response finishes its query."""
        cdef uint8_t key[PENDING_KEY_LEN]
        cdef uint64_t h
        cdef int alen = 4 if fi.ip_version == 4 else 16
        cdef int64_t now_us = <int64_t>fi.sec * 1000000 + fi.usec
        cdef bint response = flags & 0x8000
        cdef const uint8_t* client = fi.dst if response else fi.src
        cdef const uint8_t* server = fi.src if response else fi.dst
        cdef uint16_t cport = fi.dport if response else fi.sport
        cdef uint16_t sport = fi.sport if response else fi.dport
        cdef int32_t i
        cdef PendingQuery* q
        memset(key, 0, PENDING_KEY_LEN)
        key[0] = (fi.vlan + 1) >> 8
        key[1] = (fi.vlan + 1) & 0xFF
        key[2] = fi.ip_version
        key[3] = fi.transport
        memcpy(key + 4, client, alen)
        memcpy(key + 20, server, alen)
        key[36] = cport >> 8
        key[37] = cport & 0xFF
        key[38] = sport >> 8
        key[39] = sport & 0xFF
        key[40] = msg[0]
        key[41] = msg[1]
        key[42] = qtype >> 8
        key[43] = qtype & 0xFF
        h = key_hash(key)
        self.expire(now_us, counters)
        i = self.find(key, h, name.text, name.text_len)
        if response:
            if i < 0:
                counters[C_dns_response_without_query] += 1
                self.emit(STATUS_RESPONSE_ONLY, key, fi.sec, fi.usec, fi.frame, -1, 0, qclass,
                          fi.tunnels, fi.ntunnels, name.text, name.text_len, msg, n)
                return 0
            q = &self.slots[i]
            self.emit(STATUS_ANSWERED, q.key, q.sec, q.usec, q.frame, now_us - q.t_us, q.retransmissions,
                      q.qclass, q.tunnels, q.ntunnels, q.name, q.name_len, msg, n)
            self.remove(i)
            return 0
        if i >= 0:
            counters[C_dns_query_retransmission] += 1
            self.slots[i].retransmissions += 1
            return 0
        if self.free_head == -1:
            counters[C_dns_query_evicted] += 1
            self.finish_unanswered(self.oldest)
        i = self.insert(key, h, name.text, name.text_len, now_us)
        q = &self.slots[i]
        q.sec = fi.sec
        q.usec = fi.usec
        q.frame = fi.frame
        q.qclass = qclass
        q.ntunnels = fi.ntunnels
        memcpy(q.tunnels, fi.tunnels, fi.ntunnels)
        return 0
