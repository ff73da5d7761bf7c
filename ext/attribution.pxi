# A client's hit remembered for resolver attribution, in C (included by loop.pyx).
#
# The twin is ResolverAttribution.link() in sensor/attribution.py: this does its common case, a client's query
# that hit, on the same tables (the window's deque, the buckets, the learned resolvers: the owner's objects,
# shared, not copied) and hands every other record to link() itself. What it saves is the interpreter's work
# per hit. The window's expiry is written here too (its twin: ResolverAttribution._expire); the bound at
# max_recent and the learned resolvers' LRU are the owner's methods, called from here.

from collections import deque as _deque


cdef class ClientHitWindow:
    """`link(msg)`: ResolverAttribution.link()'s result for any record, the client-query case done here."""

    cdef object owner, recent, learned
    cdef dict group_of, by_bucket
    cdef int64_t window_us, learn_refresh_us
    cdef Py_ssize_t max_recent

    def __cinit__(self, owner):
        self.owner = owner
        self.recent = owner.recent
        self.learned = owner.learned
        self.group_of = owner.group_of
        self.by_bucket = owner.by_bucket
        self.window_us = owner.window_us
        self.max_recent = owner.max_recent
        self.learn_refresh_us = owner.learn_refresh_us

    cdef int expire(self, int64_t horizon) except -1:
        """ResolverAttribution._expire(): the entries older than the window go, from both queues."""
        cdef object recent = self.recent
        cdef dict by_bucket = self.by_bucket
        while recent and <int64_t>recent[0][0] < horizon:
            bucket = recent.popleft()[1]
            queue = by_bucket[bucket]
            queue.popleft()
            if not queue:
                del by_bucket[bucket]
        return 0

    def link(self, msg):
        cdef tuple f = tuple(msg) if isinstance(msg, tuple) else astuple(msg)
        cdef int64_t now
        cdef str name, bucket
        cdef Py_ssize_t dot, second, k, n
        cdef const char* text
        if len(f) < 22 or f[21] is not None:  # a CNAME hit
            return self.owner.link(msg)
        src = f[4]
        if src in self.group_of or src in self.learned or not (<int>f[10] & 0x0100):  # a resolver's query
            return self.owner.link(msg)
        name = f[12].lower()
        if not PyUnicode_IS_ASCII(name):
            return self.owner.link(msg)
        now = <int64_t>f[1] * 1_000_000 + <int64_t>f[2]
        recent = self.recent
        if recent and recent[0][0] < now - self.window_us:
            self.expire(now - self.window_us)
        # the bucket: the name's last two labels (sensor/attribution.py _bucket)
        text = <const char*>PyUnicode_DATA(name)
        n = PyUnicode_GET_LENGTH(name)
        dot = -1
        second = -1
        k = n - 1
        while k >= 0:
            if text[k] == 46:  # "."
                if dot < 0:
                    dot = k
                else:
                    second = k
                    break
            k -= 1
        bucket = name if dot <= 0 or second < 0 else name[second + 1:]
        dst = f[5]
        entry = (now, bucket, dst, src, f[7], name, f[6])
        queue = self.by_bucket.get(bucket)
        if queue is None:
            self.by_bucket[bucket] = _deque((entry,))
        else:
            queue.append(entry)
        recent.append(entry)
        if len(recent) > self.max_recent:
            self.owner._forget()
            self.owner.evicted += 1
        seen = self.learned.get(dst)
        if seen is None or now - <int64_t>seen > self.learn_refresh_us:
            self.owner._learn(dst, now)
        return None
