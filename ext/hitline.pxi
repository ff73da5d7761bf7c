# The per-hit JSON line, written in C from the fragments sensor/hitline.py keeps (included by loop.pyx).
#
# The twin is HitLines.line() in sensor/hitline.py, and both must write the same bytes (tests/test_hitline.py):
# this writer reads the same caches (HitLines' dicts, shared, not copied) and asks HitLines on a miss (an
# address, MAC or second, a question shape, a name that needs escaping), so what a line holds is decided there.
# What it does itself is what a hit costs every time: the lookups, the numbers as text, the Community ID's input
# and base64, one copy of each run into a buffer kept between hits; and a new name's fragments when the name
# needs no escaping (decision 0206). A run that is not ASCII (never the case for the schema's encoder, which
# escapes) or a transport it does not know sends the hit to the twin.

import hashlib
from msgspec.structs import astuple


cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object)
    void* PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)

cdef object _SHA1 = hashlib.sha1
cdef const char* B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


cdef class HitLineWriter:
    """HitLines.line() in C: `line(msg, parts, origin)` for a record of sensor/messages.py's DnsRecord."""

    cdef object lines
    cdef dict names, addresses, macs, seconds
    cdef str ecs
    cdef char* buf
    cdef Py_ssize_t cap, n
    cdef bint failed
    cdef dict shapes
    cdef object domain_parts
    cdef Py_ssize_t max_names

    def __cinit__(self, lines):
        self.lines = lines
        self.names = lines._names
        self.addresses = lines._addresses
        self.macs = lines._macs
        self.seconds = lines._seconds
        self.ecs = lines._ecs
        self.shapes = lines._shapes
        self.max_names = lines.max_names
        self.domain_parts = lines.domain_parts  # (handed over: ext/ imports nothing from sensor/)
        self.cap = 4096
        self.buf = <char*>malloc(self.cap)
        if self.buf == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.buf)

    cdef int grow(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self.cap
        cdef char* bigger
        while cap < self.n + need:
            cap *= 2
        bigger = <char*>realloc(self.buf, cap)
        if bigger == NULL:
            raise MemoryError()
        self.buf = bigger
        self.cap = cap
        return 0

    cdef inline int raw(self, const char* s, Py_ssize_t k) except -1:
        if self.n + k > self.cap:
            self.grow(k)
        memcpy(self.buf + self.n, s, k)
        self.n += k
        return 0

    cdef tuple new_name(self, tuple key, parts):
        """HitLines._new_name() for a name that needs no escaping (printable ASCII, no quote or backslash: then
        none of its parts does either); any other name is left to it."""
        cdef str name = key[0]
        cdef const char* text
        cdef Py_ssize_t k, n
        cdef tuple texts, fragments
        cdef str question, lower_text
        if not PyUnicode_IS_ASCII(name):
            return self.lines._new_name(key, parts)
        text = <const char*>PyUnicode_DATA(name)
        n = PyUnicode_GET_LENGTH(name)
        for k in range(n):
            if text[k] < 32 or text[k] > 126 or text[k] == 34 or text[k] == 92:
                return self.lines._new_name(key, parts)
        shape_key = key[1:]
        shape = self.shapes.get(shape_key)
        if shape is None or shape.parts is not parts:
            shape = self.lines._new_shape(shape_key, parts)
        lower = name.lower()
        registered, subdomain, tld = self.domain_parts(lower)
        self.n = 0
        self.failed = False
        self.lit(b'"')
        self.text(name)
        self.lit(b'"')
        self.text(shape.type_class)
        if registered is not None:
            self.lit(b',"registered_domain":"')
            self.text(registered)
            self.lit(b'"')
        if subdomain is not None:
            self.lit(b',"subdomain":"')
            self.text(subdomain)
            self.lit(b'"')
        if tld is not None:
            self.lit(b',"top_level_domain":"')
            self.text(tld)
            self.lit(b'"')
        if self.failed:  # (never: the parts are pieces of the name, the shape's texts ASCII)
            return self.lines._new_name(key, parts)
        question = PyUnicode_DecodeASCII(self.buf, self.n, NULL)
        lower_text = '"' + lower + '"'
        texts = (shape.event, shape.question, question, shape.rule_threat, lower_text, shape.detail,
                 shape.detail_end)
        if len(self.names) >= self.max_names:
            self.names.clear()
        fragments = (parts, texts)
        self.names[key] = fragments
        return fragments

    cdef inline int lit(self, bytes s) except -1:
        return self.raw(PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s))

    cdef inline int text(self, str s) except -1:
        """An ASCII str's characters (one byte each); anything else marks the line for the twin."""
        if not PyUnicode_IS_ASCII(s):
            self.failed = True
            return 0
        return self.raw(<const char*>PyUnicode_DATA(s), PyUnicode_GET_LENGTH(s))

    cdef int number(self, int64_t value, int width) except -1:
        """A non-negative integer in decimal, zero-padded to `width` digits."""
        cdef char digits[24]
        cdef int k = 24
        if value < 0:
            self.failed = True
            return 0
        while True:
            k -= 1
            digits[k] = <char>(48 + value % 10)
            value //= 10
            width -= 1
            if value == 0 and width <= 0:
                break
        return self.raw(digits + k, 24 - k)

    cdef int community(self, const uint8_t* src, const uint8_t* dst, int alen, int proto, int sport,
                       int dport) except -1:
        """Community ID v1's hash, base64 (sensor/community_id.py): seed 0, the lower (address, port) end first."""
        cdef uint8_t flow[40]
        cdef const uint8_t* a = src
        cdef const uint8_t* b = dst
        cdef int pa = sport, pb = dport, order = memcmp(src, dst, alen)
        cdef const uint8_t* h
        cdef char out[28]
        cdef int i, k = 0
        cdef uint32_t v
        if order > 0 or (order == 0 and sport > dport):
            a = dst
            b = src
            pa = dport
            pb = sport
        flow[0] = 0
        flow[1] = 0
        memcpy(flow + 2, a, alen)
        memcpy(flow + 2 + alen, b, alen)
        i = 2 + 2 * alen
        flow[i] = proto
        flow[i + 1] = 0
        flow[i + 2] = pa >> 8
        flow[i + 3] = pa & 0xFF
        flow[i + 4] = pb >> 8
        flow[i + 5] = pb & 0xFF
        digest = _SHA1(PyBytes_FromStringAndSize(<const char*>flow, i + 6)).digest()
        h = <const uint8_t*>PyBytes_AS_STRING(digest)
        for i in range(0, 18, 3):
            v = (<uint32_t>h[i] << 16) | (<uint32_t>h[i + 1] << 8) | h[i + 2]
            out[k] = B64[v >> 18]
            out[k + 1] = B64[(v >> 12) & 63]
            out[k + 2] = B64[(v >> 6) & 63]
            out[k + 3] = B64[v & 63]
            k += 4
        v = (<uint32_t>h[18] << 16) | (<uint32_t>h[19] << 8)
        out[24] = B64[v >> 18]
        out[25] = B64[(v >> 12) & 63]
        out[26] = B64[(v >> 6) & 63]
        out[27] = 61  # "="
        return self.raw(out, 28)

    def line(self, msg, parts, tuple origin):
        """The hit's JSON line, or None where the twin returns None (a tunnelled or ECS-subnet query, a CNAME hit)."""
        cdef bytes src_ip, dst_ip
        cdef str src, dst, observer, capture
        cdef tuple texts, f
        cdef int transport, sport, dport, alen
        # the record's fields at once, in DnsRecord's order (a DnsMessage is a tuple of them already)
        f = tuple(msg) if isinstance(msg, tuple) else astuple(msg)
        if len(f) < 22:
            return self.lines.line(msg, parts, origin)
        if f[16] is not None or f[17] is not None or f[21] is not None:  # tunnel, client_subnet, cname
            return None
        key = (f[12], f[13], f[14], f[10], f[11], f[15])  # qname, qtype, qclass, flags, qdcount, rule
        fragments = self.names.get(key)
        if fragments is None or (<tuple>fragments)[0] is not parts:
            fragments = self.new_name(key, parts)
        texts = (<tuple>fragments)[1]
        src_ip = f[4]
        dst_ip = f[5]
        transport = f[6]
        alen = len(src_ip)
        if (alen != 4 and alen != 16) or len(dst_ip) != alen or (transport != 17 and transport != 6):
            return self.lines.line(msg, parts, origin)
        src = self.addresses.get(src_ip) or self.lines._new_address(src_ip)
        dst = self.addresses.get(dst_ip) or self.lines._new_address(dst_ip)
        sport = f[7]
        dport = f[8]
        sec = f[1]
        second = self.seconds.get(sec) or self.lines._new_second(sec)
        src_mac = f[18]
        vlan_id = f[3]
        observer, capture = origin
        self.n = 0
        self.failed = False
        self.lit(b'{"@timestamp":"')
        self.text(second)
        self.lit(b".")
        self.number(f[2], 6)
        self.lit(b"Z")
        self.text(self.ecs)
        self.text(texts[0])
        self.lit(b',"source":{"ip":"')
        self.text(src)
        self.lit(b'","port":')
        self.number(sport, 1)
        if src_mac is not None:
            self.text(self.macs.get(src_mac) or self.lines._new_mac(src_mac))
        self.lit(b'},"destination":{"ip":"')
        self.text(dst)
        self.lit(b'","port":')
        self.number(dport, 1)
        self.lit(b'},"related":{"ip":["')
        self.text(src)
        if src != dst:
            self.lit(b'","')
            self.text(dst)
        if transport == 17:
            self.lit(b'"]},"network":{"transport":"udp","protocol":"dns","type":"ipv')
        else:
            self.lit(b'"]},"network":{"transport":"tcp","protocol":"dns","type":"ipv')
        self.lit(b"4" if alen == 4 else b"6")
        if transport == 17:
            self.lit(b'","iana_number":"17","community_id":"1:')
        else:
            self.lit(b'","iana_number":"6","community_id":"1:')
        self.community(<const uint8_t*>PyBytes_AS_STRING(src_ip), <const uint8_t*>PyBytes_AS_STRING(dst_ip),
                       alen, transport, sport, dport)
        self.lit(b'"')
        if vlan_id is not None:
            self.lit(b',"vlan":{"id":"')
            self.number(vlan_id, 1)
            self.lit(b'"}')
        self.lit(b'},"dns":{"type":"query","id":"')
        self.number(f[9], 1)
        self.text(texts[1])
        self.text(texts[2])
        self.text(texts[3])
        self.text(texts[4])
        self.lit(b',"field":"dns.question.name","type":"indicator_match_rule"}}]},"observer":')
        self.text(observer)
        self.text(texts[5])
        self.text(texts[4])
        self.text(texts[6])
        if transport == 6:
            if f[20]:
                self.lit(b',"tcp":{"handshake":true}')
            else:
                self.lit(b',"tcp":{"handshake":false}')
        if capture:
            self.text(capture)
            self.number(f[0], 1)
            self.lit(b"}")
        self.lit(b"}}")
        if self.failed:
            return self.lines.line(msg, parts, origin)
        return PyUnicode_DecodeASCII(self.buf, self.n, NULL)
