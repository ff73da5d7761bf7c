# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The fast path: decode a batch of frames from pcapy-ng's next_batch, match DNS query names, return records.

No Python object is made for a frame unless it yields a record (a hit, or every DNS message when
emit_all is set). The contract, and the reference it must agree with, is docs/decoding.md and
sensor/decode/.
"""

cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t, INT64_MAX
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memcmp, memmove, memset
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_FromFormat

import ipaddress

include "counters.pxi"
include "suffixset.pxi"
include "dnsname.pxi"
include "tcpstreams.pxi"

cdef enum:
    DLT_NULL = 0
    DLT_EN10MB = 1
    DLT_RAW_A = 12
    DLT_RAW_B = 14
    DLT_RAW = 101
    DLT_LOOP = 108
    DLT_LINUX_SLL = 113
    DLT_LINUX_SLL2 = 276
    MAX_VLAN_TAGS = 8            # QinQ needs two; more is a parser-exhaustion trick, not a network
    ETH_IPV4 = 0x0800
    ETH_IPV6 = 0x86DD
    # --checksums (sensor/decode/checksum.py): the policy and auto's sample
    CHECKSUMS_OFF = 0
    CHECKSUMS_VERIFY = 1
    CHECKSUMS_AUTO = 2
    AUTO_SAMPLE = 1000
    AUTO_BAD_RATIO = 10
    # Why a frame is only looked at (FastLoop.shadow): the anomaly its would-be hits become
    SHADOW_NONE = 0
    SHADOW_BAD_CHECKSUM = 1
    SHADOW_TUNNEL_UNTRUSTED = 2
    MAX_MIRROR_SOURCES = 64

SHADOW_NAMES = (None, "bad_checksum_query", "tunnel_untrusted")
RESPONSE_SHADOW_NAMES = (None, "bad_checksum_response", "tunnel_untrusted")  # a response that would CNAME-hit
ANOMALY_OVERLAP_CONFLICT = "tcp_overlap_conflict"
ANOMALY_EVICTED = "stream_evicted_mid_message"
ANOMALY_FRAGMENT_OVERLAP = "fragment_overlap"

cdef inline uint16_t rd16(const uint8_t* p) noexcept nogil:
    return (p[0] << 8) | p[1]

cdef inline uint32_t rd32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline bint is_vlan_type(uint16_t t) noexcept nogil:
    return t == 0x8100 or t == 0x88A8 or t == 0x9100


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define TS_PREFETCH(p) __builtin_prefetch((const void*)(p), 0, 3)
    typedef unsigned __int128 ts_u128;
    #define TS_WIDE_TAIL (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    #else
    #define TS_PREFETCH(p) ((void)0)
    typedef unsigned long long ts_u128;
    #define TS_WIDE_TAIL 0
    #endif
    """
    void TS_PREFETCH(const void* p) noexcept nogil
    ctypedef unsigned long long ts_u128
    bint TS_WIDE_TAIL


cdef inline uint64_t words32(uint64_t q) noexcept nogil:
    """An 8-byte load as the sum of its two 32-bit halves (no carry out of 64 bits: see ones_sum)."""
    return <uint32_t>q + (q >> 32)


cdef inline uint64_t ones_sum(const uint8_t* p, uint32_t n, uint64_t acc) noexcept nogil:
    """RFC 1071 sum, unfolded, in the host's byte order (RFC 1071 2(B): the folded sum of byte-swapped words is
    the byte-swapped sum, and a valid checksum folds to 0xFFFF either way); an odd last byte is padded with zero
    after it, as the wire order pads it. 32-bit words are added into 64-bit sums with no end-around carry (2**16
    = 1 modulo 0xFFFF, so a 32-bit word sums as its two 16-bit halves; a datagram's 16,384 words of at most 2**32
    cannot carry out of 64 bits): 16 bytes a step into two independent sums. The last 0-15 bytes are read as the
    16 bytes that end the data, shifted down past the bytes already summed (no branch on the length; the bytes
    keep their places in the 16-bit words; zeros come in after them), when the data is 16 bytes or more on a
    little-endian host with 128-bit integers; else a step at a time."""
    cdef uint64_t a = 0, b = 0, q, r
    cdef uint32_t w, k
    cdef uint16_t h
    cdef uint8_t last[2]
    cdef ts_u128 v
    cdef bint wide = TS_WIDE_TAIL and n >= 16
    while n >= 16:
        memcpy(&q, p, 8)
        memcpy(&r, p + 8, 8)
        a += words32(q)
        b += words32(r)
        p += 16
        n -= 16
    if wide:
        memcpy(&q, p + n - 16, 8)
        memcpy(&r, p + n - 8, 8)
        v = ((<ts_u128>r << 64) | q) >> (((16 - n) * 8) & 127)
        v = v if n else 0
        a += words32(<uint64_t>v)
        b += words32(<uint64_t>(v >> 64))
    else:
        if n >= 8:
            memcpy(&q, p, 8)
            a += words32(q)
            p += 8
            n -= 8
        if n >= 4:
            memcpy(&w, p, 4)
            b += w
            p += 4
            n -= 4
        if n >= 2:
            memcpy(&h, p, 2)
            a += h
            p += 2
            n -= 2
        if n:
            last[0] = p[0]
            last[1] = 0
            memcpy(&h, last, 2)
            b += h
    a += b
    acc += a
    acc += acc < a
    return acc


cdef inline uint32_t fold(uint64_t acc) noexcept nogil:
    acc = ((acc << 32) >> 32) + (acc >> 32)   # the low 32 bits plus the high: Cython reads 0xFFFFFFFF as a Python int
    acc = ((acc << 32) >> 32) + (acc >> 32)
    acc = (acc & 0xFFFF) + (acc >> 16)
    acc = (acc & 0xFFFF) + (acc >> 16)
    return <uint32_t>acc


cdef inline bint ipv4_header_ok(const uint8_t* h, uint32_t ihl) noexcept nogil:
    """The IPv4 header sums to 0xFFFF; the usual 20 bytes as three loads, no loop."""
    cdef uint64_t q, r
    cdef uint32_t w
    if ihl != 20:
        return fold(ones_sum(h, ihl, 0)) == 0xFFFF
    memcpy(&q, h, 8)
    memcpy(&r, h + 8, 8)
    memcpy(&w, h + 16, 4)
    return fold(words32(q) + words32(r) + w) == 0xFFFF


cdef inline bint transport_ok(uint8_t proto, const uint8_t* src, const uint8_t* dst, int ip_version,
                              const uint8_t* p, uint32_t n) noexcept nogil:
    """UDP or TCP checksum over the pseudo-header; a UDP checksum of 0 is none over IPv4, refused over IPv6."""
    cdef uint64_t acc, q
    cdef uint32_t w, w2
    cdef uint8_t tail[8]         # the pseudo-header's length and protocol, in wire order
    if proto == 17 and p[6] == 0 and p[7] == 0:
        return ip_version == 4
    if ip_version == 4:
        memcpy(&w, src, 4)       # two loads: the addresses are apart in a reassembled datagram's FrameInfo
        memcpy(&w2, dst, 4)
        acc = <uint64_t>w + w2
    else:
        acc = ones_sum(src, 16, 0)
        acc = ones_sum(dst, 16, acc)
    tail[0] = n >> 24
    tail[1] = (n >> 16) & 0xFF
    tail[2] = (n >> 8) & 0xFF
    tail[3] = n & 0xFF
    tail[4] = 0
    tail[5] = 0
    tail[6] = 0
    tail[7] = proto
    memcpy(&q, tail, 8)          # (0, 0, len, len, 0, 0, 0, proto) sums as IPv4's (0, proto, len) too
    acc += words32(q)
    return fold(ones_sum(p, n, acc)) == 0xFFFF


cdef bint chain_complete(uint8_t nh, const uint8_t* p, uint32_t n) noexcept nogil:
    """A first IPv6 fragment holds its whole header chain and the upper-layer header (RFC 7112)."""
    cdef uint32_t pos = 0
    while nh == 0 or nh == 43 or nh == 60:
        if pos + 2 > n:
            return False
        nh, pos = p[pos], pos + (<uint32_t>p[pos + 1] + 1) * 8
    if nh == 44:
        return True
    if nh == 6:
        return pos + 20 <= n
    if nh == 17 or nh == 58:
        return pos + 8 <= n
    return pos + 1 <= n



cdef object stream_partial_name(bytes pending):
    """Twin of sensor/decode/dnsmsg.py stream_partial_name: the whole labels of the first question of the message
    a TCP stream's pending bytes start (after the 2-byte length prefix); None without one. Runs only on an
    anomaly, so plain Python speed is enough."""
    cdef Py_ssize_t position = 2 + 12, end = len(pending), length
    labels = []
    if end <= 2:
        return None
    while position < end and len(labels) < 127:
        length = pending[position]
        if length == 0 or length > 0x3F or position + 1 + length > end:
            break
        out = []
        for byte in pending[position + 1 : position + 1 + length]:
            if byte == 0x2E:
                out.append("\\.")
            elif byte == 0x5C:
                out.append("\\\\")
            elif 0x21 <= byte <= 0x7E:
                out.append(chr(byte))
            else:
                out.append(f"\\{byte:03d}")
        labels.append("".join(out))
        position += 1 + length
    return ".".join(labels) if labels else None

include "tunnels.pxi"
include "edns.pxi"
include "flows.pxi"

# Subnets print as Python's ipaddress prints them (the contract); made only for emitted records. IPv6 goes
# through ipaddress itself, whose zero compression and IPv4-mapped form are the reference.
NETWORKS = (None, ipaddress.IPv4Network, ipaddress.IPv6Network)


cdef object subnet_text(Subnet* sn):
    if sn.family == 1:
        # Dotted quad: the one form ipaddress prints, and ten times cheaper than building an IPv4Network.
        return PyUnicode_FromFormat("%u.%u.%u.%u/%u", <unsigned int>sn.addr[0], <unsigned int>sn.addr[1],
                                    <unsigned int>sn.addr[2], <unsigned int>sn.addr[3], <unsigned int>sn.prefix)
    return str(NETWORKS[2]((PyBytes_FromStringAndSize(<const char*>sn.addr, 16), sn.prefix)))


cdef struct FrameInfo:
    # Everything a record needs about the frame around one DNS message.
    int64_t frame
    uint32_t sec, usec
    int32_t vlan                 # -1 when untagged: the innermost Ethernet frame's outer tag
    uint8_t tunnels[MAX_TUNNEL_DEPTH]  # TUN_* codes, outer to inner
    int ntunnels
    int ip_version
    const uint8_t* src
    const uint8_t* dst
    int transport
    uint16_t sport, dport
    bint flow_seen               # the frame's first IP header went to the flow table
    const uint8_t* mac           # the innermost link sender's 6-byte address, NULL without one
    const uint8_t* outer_src     # the first mirror tunnel's outer addresses, NULL when not tunneled
    const uint8_t* outer_dst
    int outer_len
    int handshake                # TCP: 1 when this direction's SYN and the peer's SYN-ACK were seen; -1 UDP
    const uint8_t* ip4hdr        # an IPv4 header whose checksum is still to check (ip_header_bad), else NULL
    uint32_t ip4ihl
    const uint8_t* udp_deferred  # a UDP response's header whose checksums are checked only if it would hit
    uint32_t udp_len             # (the query log off: decision 0162), else NULL


include "correlate.pxi"
include "reassembly.pxi"
include "querylog_decode.pxi"
include "cnames.pxi"
include "querylog_index.pxi"
include "hitline.pxi"
include "attribution.pxi"
include "heap.pxi"


cdef str lowered_name(DecodedName* name):
    """The name in lowercase presentation form, for the pattern matcher (made only when it is consulted)."""
    cdef bytearray text = bytearray(name.text_len)
    cdef uint32_t k
    for k in range(name.text_len):
        text[k] = ascii_lower(name.text[k])
    return text.decode("ascii")


@cython.final  # no subclass: its cdef methods (checksum policy, shadow, layers) are direct calls, not vtable ones
cdef class FastLoop:
    """Decode batches for one capture's link type; see docs/decoding.md."""

    cdef int linktype
    cdef uint8_t ports[65536]
    cdef SuffixSet rules
    cdef bytes allow
    cdef object patterns
    cdef StreamTable streams
    cdef bint emit_all
    cdef uint64_t counters_[N_COUNTERS]
    cdef uint64_t scratch_[N_COUNTERS]   # what a shadowed response's CNAME walk counts: thrown away
    cdef list out
    cdef DecodedName name
    cdef FlowTable flows         # None unless flows are on; may be shared by the loops of several files
    cdef PendingTable pending    # None unless the query log is on
    cdef object entry_type       # the query-log record class, handed in (ext/ imports nothing from sensor/)
    cdef FragmentTable fragments
    cdef list anomalies
    cdef int shadow              # SHADOW_*: this frame's queries are only looked at (reset per frame)
    cdef int cs_mode
    cdef uint32_t cs_checked, cs_bad
    cdef bint cs_frame_checked, cs_frame_bad
    cdef bint cs_active          # this frame's checksums are checked: a mode other than off, and not outgoing
    cdef bint mirror_any
    cdef int nmirrors
    cdef uint8_t mirror_family[MAX_MIRROR_SOURCES]
    cdef uint8_t mirror_addr[MAX_MIRROR_SOURCES][16]
    cdef uint8_t mirror_prefix[MAX_MIRROR_SOURCES]

    def __cinit__(self, int linktype, ports, table, bint emit_all=False,
                  int max_tcp_streams=4096, double tcp_idle_timeout=30.0, allow=b"", patterns=None,
                  long long max_tcp_bytes=-1, long long max_ooo_bytes=-1,
                  FlowTable flows=None,
                  bint query_log=False, int max_pending_queries=65536, double query_timeout=10.0,
                  int max_fragmented_datagrams=1024, long long max_fragment_bytes=4194304,
                  double fragment_timeout=30.0, int checksums=CHECKSUMS_AUTO, mirror_sources=(),
                  entry_type=None):
        self.linktype = linktype
        self.entry_type = entry_type
        memset(self.ports, 0, sizeof(self.ports))
        for port in ports:
            if not 0 < port < 65536:
                raise ValueError(f"port {port} is outside 1-65535")
            self.ports[port] = 1
        self.set_rules(table, allow, patterns)
        self.streams = StreamTable(max_tcp_streams, tcp_idle_timeout, max_tcp_bytes, max_ooo_bytes)
        self.streams.counters = self.counters_  # tcp_buffer_evicted (the memory budget)
        self.emit_all = emit_all
        self.flows = flows
        memset(self.counters_, 0, sizeof(self.counters_))
        if query_log and entry_type is None:
            raise ValueError("FastLoop(query_log=True) needs entry_type: the query-log record class "
                             "(sensor.querylog.record.QueryLogEntry; sensor/loop.py hands it in)")
        self.pending = PendingTable(max_pending_queries, query_timeout) if query_log else None
        self.fragments = FragmentTable(max_fragmented_datagrams, max_fragment_bytes, fragment_timeout)
        self.anomalies = []
        if checksums not in (CHECKSUMS_OFF, CHECKSUMS_VERIFY, CHECKSUMS_AUTO):
            raise ValueError(f"checksums mode {checksums} is not one of off (0), verify (1), auto (2)")
        self.cs_mode = checksums
        self.cs_checked = 0
        self.cs_bad = 0
        self.cs_frame_checked = False
        self.cs_frame_bad = False
        # parsed here as sensor/anomalies.py MirrorSources does (ext/ imports nothing from sensor/)
        packed = []
        self.mirror_any = False
        for spec in mirror_sources:
            if spec.strip().lower() == "any":
                self.mirror_any = True
            else:
                net = ipaddress.ip_network(spec.strip(), strict=False)
                packed.append((net.version, net.network_address.packed, net.prefixlen))
        if len(packed) > MAX_MIRROR_SOURCES:
            raise ValueError(f"at most {MAX_MIRROR_SOURCES} mirror sources")
        self.nmirrors = len(packed)
        for k, (family, addr, prefix) in enumerate(packed):
            self.mirror_family[k] = family
            memset(self.mirror_addr[k], 0, 16)
            memcpy(self.mirror_addr[k], <const char*>addr, len(addr))
            self.mirror_prefix[k] = prefix

    def set_rules(self, table, allow=b"", patterns=None):
        """Use another rule set from the next batch on (hot reload swaps rules between two batches).

        `table`: a SuffixSet (shareable by the loops of several files) or a RuleSet's table; `allow`: one byte per
        rule, 1 for allow rules; `patterns`: None, or a callable name -> rule index for wildcard and regex rules,
        called only when no exact, suffix or below rule decided (they are less specific).
        """
        self.rules = table if isinstance(table, SuffixSet) else SuffixSet(table)
        self.allow = bytes(allow)
        self.patterns = patterns if patterns else None

    def counters(self):
        """Every counter by name, plus the gauges of table_sizes(): how full each bounded table is now."""
        result = {name: self.counters_[i] for i, name in enumerate(COUNTER_NAMES)}
        result.update(self.table_sizes())
        return result

    def table_sizes(self):
        """How full each bounded table is now: TCP streams, fragmented datagrams, pending queries (0 when off)."""
        return {"tcp_streams": self.streams.count, "fragmented_datagrams": self.fragments.count,
                "pending_queries": self.pending.count if self.pending is not None else 0,
                "tcp_buffered_bytes": self.streams.buffered, "tcp_ooo_bytes": self.streams.ooo_total,
                "fragment_bytes": self.fragments.bytes_held}

    def take_anomalies(self):
        """Anomalies seen since the last take, as tuples in sensor.anomalies.AnomalyRecord order."""
        taken = self.anomalies
        self.anomalies = []
        return taken

    cdef inline bint cs_accept(self, bint good):
        """Whether a frame with this checksum result goes on (auto: marks the frame for its sample)."""
        if self.cs_mode == CHECKSUMS_AUTO:
            self.cs_frame_checked = True
            if not good:
                self.cs_frame_bad = True
        return good

    cdef void cs_end_frame(self):
        """Auto: one more frame of the sample, if it had a check; decided once, at the AUTO_SAMPLE-th."""
        self.cs_frame_checked = False
        self.cs_checked += 1
        if self.cs_frame_bad:
            self.cs_bad += 1
            self.cs_frame_bad = False
        if self.cs_checked == AUTO_SAMPLE:
            if self.cs_bad * AUTO_BAD_RATIO > AUTO_SAMPLE:
                self.cs_mode = CHECKSUMS_OFF
                self.counters_[C_checksums_auto_off] += 1
            else:
                self.cs_mode = CHECKSUMS_VERIFY

    cdef int ip_header_bad(self, FrameInfo* fi) except -1:
        """Check the IPv4 header still unchecked: 1 when the frame stops here (already shadowed), else 0 (a bad one
        shadows the frame)."""
        cdef const uint8_t* h = fi.ip4hdr
        fi.ip4hdr = NULL
        if h == NULL or not self.cs_active or self.cs_accept(ipv4_header_ok(h, fi.ip4ihl)):
            return 0
        if self.shadow != SHADOW_NONE:
            self.reject(C_bad_ip_checksum)   # not counted: the frame was counted by its first reason
            return 1
        self.set_shadow(C_bad_ip_checksum, SHADOW_BAD_CHECKSUM)
        return 0

    cdef void set_shadow(self, int reason, int why):
        """Count the frame under `reason` (once) and only look at it from now on."""
        if self.shadow == SHADOW_NONE:
            self.counters_[reason] += 1
            self.shadow = why

    cdef bint trusts(self, const uint8_t* addr, int version):
        cdef int k, bits, full, rest
        if self.mirror_any:
            return True
        for k in range(self.nmirrors):
            if self.mirror_family[k] != version:
                continue
            bits = self.mirror_prefix[k]
            full = bits // 8
            rest = bits % 8
            if memcmp(addr, self.mirror_addr[k], full) != 0:
                continue
            if rest and (addr[full] ^ self.mirror_addr[k][full]) & (0xFF << (8 - rest)) & 0xFF:
                continue
            return True
        return False

    cdef object anomaly(self, str kind, FrameInfo* fi, const uint8_t* src, const uint8_t* dst, int alen,
                        int transport, int sport, int dport, object qname, int vlan):
        self.anomalies.append((
            kind, fi.frame, fi.sec, fi.usec, None if vlan < 0 else vlan,
            PyBytes_FromStringAndSize(<const char*>src, alen), PyBytes_FromStringAndSize(<const char*>dst, alen),
            transport, sport, dport, qname,
            None if fi.outer_src == NULL or kind != "tunnel_untrusted"
            else PyBytes_FromStringAndSize(<const char*>fi.outer_src, fi.outer_len),
            None if fi.outer_src == NULL or kind != "tunnel_untrusted"
            else PyBytes_FromStringAndSize(<const char*>fi.outer_dst, fi.outer_len),
        ))

    cdef int response_anomaly(self, str kind, FrameInfo* fi, tuple cname) except -1:
        """A response that would be a CNAME hit: named by its client (its receiver, as a CNAME hit's event is)
        and the target that matched."""
        cdef int alen = 4 if fi.ip_version == 4 else 16
        self.anomaly(kind, fi, fi.dst, fi.src, alen, fi.transport, fi.dport, fi.sport,
                     cname[1][cname[0]][2], fi.vlan)
        return 0

    cdef int drop_response(self, FrameInfo* fi, object cname, uint16_t qdcount, uint64_t bad_answers) except -1:
        """A response that would be a CNAME hit but its client never gets: the anomaly, and (when message() counted
        into the loop's counters: a deferred check failed) nothing counted of it but its reason."""
        if self.shadow == SHADOW_NONE:
            self.counters_[C_dns_bad_answers] = bad_answers
            self.counters_[C_dns_cname_hits] -= 1
            self.counters_[C_dns_responses] -= 1
            if qdcount > 1:
                self.counters_[C_dns_extra_questions] -= 1
            return self.response_anomaly(RESPONSE_SHADOW_NAMES[SHADOW_BAD_CHECKSUM], fi, cname)
        return self.response_anomaly(RESPONSE_SHADOW_NAMES[self.shadow], fi, cname)

    cdef int response_dropped(self, FrameInfo* fi) except -1:
        """The deferred checks of a UDP response that would hit (decision 0162): the IPv4 header, then the UDP
        checksum, counted as a query's are; 1 when the client's kernel drops it."""
        cdef const uint8_t* p = fi.udp_deferred
        cdef const uint8_t* h = fi.ip4hdr
        fi.udp_deferred = NULL
        fi.ip4hdr = NULL
        if not self.cs_active:
            return 0
        if h != NULL and not self.cs_accept(ipv4_header_ok(h, fi.ip4ihl)):
            self.counters_[C_bad_ip_checksum] += 1
            return 1
        if not self.cs_accept(transport_ok(17, fi.src, fi.dst, fi.ip_version, p, fi.udp_len)):
            self.counters_[C_bad_udp_checksum] += 1
            return 1
        return 0

    cdef object stream_anomaly(self, str kind, int32_t s, FrameInfo* fi):
        """An anomaly about a stream: its key gives the addresses, its partial message the name."""
        cdef Stream* sp = &self.streams.slots[s]
        cdef int alen = 4 if sp.key[2] == 4 else 16
        pending = PyBytes_FromStringAndSize(<const char*>sp.buf, sp.buf_len) if sp.buf_len else b""
        self.anomaly(kind, fi, sp.key + 4, sp.key + 20, alen, 6, rd16(sp.key + 36), rd16(sp.key + 38),
                     stream_partial_name(pending), ((sp.key[0] << 8) | sp.key[1]) - 1)

    def take_query_log_packed(self):
        """The query-log entries finished since the last take, packed (sensor/querylog/packed.py); b"" when
        the query log is off. Cheap to send between processes; decode with packed.decode_entries."""
        return b"" if self.pending is None else self.pending.take()

    def take_query_log(self):
        """The query-log entries finished since the last take, as `entry_type` records (the selector hands in
        QueryLogEntry), in finishing order."""
        if self.pending is None:
            return []
        return decode_query_log(self.take_query_log_packed(), self.entry_type)

    def flush_query_log(self):
        """Finish every pending query as unanswered (end of a capture, or stop); take them with take_*."""
        if self.pending is not None:
            self.pending.flush()

    def __dealloc__(self):
        # a batch that raised may have left packets queued in a shared flow table with this loop's counters
        if self.flows is not None:
            self.flows.settle()

    def run_batch(self, const uint8_t[::1] data, const uint8_t[::1] meta, long first_frame):
        """Decode the frames of one next_batch() result; return the records made."""
        cdef Py_ssize_t n = meta.shape[0] // 16
        cdef Py_ssize_t i
        cdef const uint32_t* m
        cdef const uint8_t* base
        cdef const uint8_t* ahead
        cdef uint32_t offset, caplen
        self.out = []
        if n == 0:
            return self.out
        base = &data[0] if data.shape[0] > 0 else NULL
        for i in range(n):
            m = <const uint32_t*>(&meta[i * 16])
            offset = m[2]
            caplen = m[3]
            if <Py_ssize_t>offset + caplen > data.shape[0]:
                raise ValueError("batch metadata points past its data")
            if i + 2 < n:
                # The frame after next into the cache while this one is decoded: a batch is read once, front to
                # back, and each frame's headers are a cache miss otherwise (it helps every mode alike).
                ahead = base + (<const uint32_t*>(&meta[(i + 2) * 16]))[2]
                TS_PREFETCH(ahead)
                TS_PREFETCH(ahead + 64)
            self.frame(base + offset, caplen, first_frame + i, m[0], m[1])
            if self.cs_frame_checked:
                self.cs_end_frame()
        if self.flows is not None:
            self.flows.settle()  # the flow table's queued packets applied within the batch (decision 0196)
        return self.out

    cdef int frame(self, const uint8_t* p, uint32_t caplen, int64_t frame_no,
                   uint32_t sec, uint32_t usec) except -1:
        cdef uint32_t fam
        cdef FrameInfo fi
        cdef int lt = self.linktype
        fi.frame = frame_no
        fi.sec = sec
        fi.usec = usec
        fi.vlan = -1
        fi.ntunnels = 0
        fi.flow_seen = self.flows is None
        fi.mac = NULL
        fi.outer_src = NULL
        fi.outer_dst = NULL
        fi.outer_len = 0
        fi.handshake = -1
        fi.ip4hdr = NULL
        fi.udp_deferred = NULL
        self.shadow = SHADOW_NONE
        # A cooked capture marks what the capturing host sent (packet type 4): its checksums are not filled in
        # yet (offload), and the host's own frames are no decoy aimed at it.
        self.cs_active = self.cs_mode != CHECKSUMS_OFF and not (
            (lt == DLT_LINUX_SLL and caplen >= 2 and rd16(p) == 4)
            or (lt == DLT_LINUX_SLL2 and caplen >= 11 and p[10] == 4))
        self.counters_[C_packets] += 1
        self.counters_[C_bytes] += caplen
        if lt == DLT_EN10MB:
            return self.ethernet(p, caplen, &fi)
        if lt == DLT_LINUX_SLL:
            if caplen < 16:
                return self.reject(C_truncated_link)
            if p[4] == 0 and p[5] == 6:
                fi.mac = p + 6
            return self.after_ethertype(p, caplen, 16, rd16(p + 14), &fi)
        if lt == DLT_LINUX_SLL2:
            if caplen < 20:
                return self.reject(C_truncated_link)
            if p[11] == 6:
                fi.mac = p + 12
            return self.after_ethertype(p, caplen, 20, rd16(p), &fi)
        if lt == DLT_RAW or lt == DLT_RAW_A or lt == DLT_RAW_B:
            if caplen < 1:
                return self.reject(C_truncated_ip)
            if p[0] >> 4 == 4:
                return self.ipv4(p, caplen, &fi)
            if p[0] >> 4 == 6:
                return self.ipv6(p, caplen, &fi)
            return self.reject(C_not_ip)
        if lt == DLT_NULL or lt == DLT_LOOP:
            if caplen < 4:
                return self.reject(C_truncated_link)
            fam = rd32(p)
            if lt == DLT_NULL and fam > 0xFFFF:
                # NULL is in the capturing host's byte order: take whichever reading is a small number
                fam = (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0]
            if fam == 2:
                return self.ipv4(p + 4, caplen - 4, &fi)
            if fam == 24 or fam == 28 or fam == 30:
                return self.ipv6(p + 4, caplen - 4, &fi)
            return self.reject(C_not_ip)
        return self.reject(C_unsupported_linktype)

    cdef inline int reject(self, int reason) except -1:
        if self.shadow == SHADOW_NONE:   # a shadowed frame was counted once, by its first reason
            self.counters_[reason] += 1
        return 0

    cdef int ethernet(self, const uint8_t* p, uint32_t n, FrameInfo* fi) except -1:
        if n < 14:
            return self.reject(C_truncated_link)
        fi.mac = p + 6
        return self.after_ethertype(p, n, 14, rd16(p + 12), fi)

    cdef int after_ethertype(self, const uint8_t* p, uint32_t n, uint32_t off, uint16_t et,
                             FrameInfo* fi) except -1:
        """VLAN tags, then IPv4, IPv6 or a PPPoE session. Each Ethernet frame, a tunnel's too, starts
        untagged: the VLAN reported is the innermost frame's (the client's, not the transport network's)."""
        cdef int tags = 0
        fi.vlan = -1
        while is_vlan_type(et):
            if tags == MAX_VLAN_TAGS:
                return self.reject(C_not_ip)
            if off + 4 > n:
                return self.reject(C_truncated_link)
            if fi.vlan < 0:
                fi.vlan = rd16(p + off) & 0x0FFF
            et = rd16(p + off + 2)
            off += 4
            tags += 1
        if et == ETH_IPV4:
            return self.ipv4(p + off, n - off, fi)
        if et == ETH_IPV6:
            return self.ipv6(p + off, n - off, fi)
        if et == ETH_PPPOE_SESSION:
            return self.tunnel(TUN_PPPOE, p + off, n - off, fi)
        return self.reject(C_not_ip)

    cdef int tunnel(self, int which, const uint8_t* p, uint32_t n, FrameInfo* fi) except -1:
        """Open one tunnel (which: TUN_PPPOE, TUN_GRE, TUN_VXLAN, TUN_GENEVE) and decode what it holds."""
        cdef TunnelInner inner
        cdef int reason
        if fi.ntunnels == MAX_TUNNEL_DEPTH:
            return self.reject(C_tunnel_too_deep)   # before the header is read
        if which == TUN_PPPOE:
            reason = pppoe_header(p, n, &inner)
        elif which == TUN_GRE:
            reason = gre_header(p, n, &inner)
        elif which == TUN_VXLAN:
            reason = vxlan_header(p, n, &inner)
        else:
            reason = geneve_header(p, n, &inner)
        if reason:
            return self.reject(reason)
        fi.tunnels[fi.ntunnels] = inner.name
        fi.ntunnels += 1
        if fi.ntunnels == 1:
            self.counters_[C_tunneled] += 1
        if which != TUN_PPPOE and fi.outer_src == NULL:
            # A mirror's tunnel: the sender is trusted only when it is a configured mirror source.
            fi.outer_src = fi.src
            fi.outer_dst = fi.dst
            fi.outer_len = 4 if fi.ip_version == 4 else 16
            if not self.trusts(fi.src, fi.ip_version):
                self.set_shadow(C_tunnel_untrusted, SHADOW_TUNNEL_UNTRUSTED)
        p += inner.offset
        n -= inner.offset
        if inner.kind == INNER_ETHERNET:
            return self.ethernet(p, n, fi)
        if inner.kind == ETH_IPV4:
            return self.ipv4(p, n, fi)
        return self.ipv6(p, n, fi)

    cdef int ipv4(self, const uint8_t* p, uint32_t n, FrameInfo* fi) except -1:
        cdef uint32_t ihl, total
        cdef uint16_t frag
        if not fi.flow_seen:  # flows see the outermost IP header, before any DNS check
            fi.flow_seen = 1
            self.flows.account(p, n, 4, fi.vlan, <int64_t>fi.sec * 1000000 + fi.usec, self.counters_)
        if n < 20:
            return self.reject(C_truncated_ip)
        if p[0] >> 4 != 4:
            return self.reject(C_bad_ip_header)
        ihl = (p[0] & 0x0F) * 4
        if ihl < 20:
            return self.reject(C_bad_ip_header)
        if ihl > n:
            return self.reject(C_truncated_ip)
        total = rd16(p + 2)
        if total < ihl:
            return self.reject(C_bad_ip_header)
        if total > n:
            return self.reject(C_ip_length_exceeds_capture)
        frag = rd16(p + 6)
        fi.ip_version = 4
        # The header checksum is checked once the packet is known to matter (DNS that can hit, a tunnel:
        # ip_header_bad), so other traffic costs nothing; a fragment's at once, before reassembly.
        fi.ip4hdr = NULL
        if frag & 0x3FFF:
            if self.cs_active and not self.cs_accept(ipv4_header_ok(p, ihl)):
                return self.reject(C_bad_ip_checksum)   # Linux drops it before reassembly
        else:
            fi.ip4hdr = p
            fi.ip4ihl = ihl
        if frag & 0x3FFF:
            return self.fragment(p[9], p + 12, p + 16, p + 4, 2, (frag & 0x1FFF) * 8, frag & 0x2000,
                                 p + ihl, total - ihl, fi)
        fi.src = p + 12
        fi.dst = p + 16
        return self.transport(p[9], p + ihl, total - ihl, fi)

    cdef int ipv6(self, const uint8_t* p, uint32_t n, FrameInfo* fi) except -1:
        cdef uint32_t plen
        if not fi.flow_seen:
            fi.flow_seen = 1
            self.flows.account(p, n, 6, fi.vlan, <int64_t>fi.sec * 1000000 + fi.usec, self.counters_)
        if n < 40:
            return self.reject(C_truncated_ip)
        if p[0] >> 4 != 6:
            return self.reject(C_bad_ip_header)
        plen = rd16(p + 4)
        if plen == 0:
            return self.reject(C_bad_ip_header)
        if 40 + plen > n:
            return self.reject(C_ip_length_exceeds_capture)
        fi.ip_version = 6
        fi.src = p + 8
        fi.dst = p + 24
        return self.ipv6_chain(p[6], p, 40, 40 + plen, False, fi)

    cdef int ipv6_chain(self, uint8_t nh, const uint8_t* p, uint32_t pos, uint32_t end, bint reassembled,
                        FrameInfo* fi) except -1:
        """Extension headers from `pos`, then the transport; a fragment header hands the rest to reassembly
        (inside a reassembled datagram, a second one is refused)."""
        cdef uint32_t hl
        cdef uint16_t fragword
        # No count limit: Linux walks to the end of the payload; each header is 8 bytes or more.
        while nh == 0 or nh == 43 or nh == 60 or nh == 44:
            if nh == 44:
                if pos + 8 > end:
                    return self.reject(C_bad_ipv6_extension)
                fragword = rd16(p + pos + 2)
                if fragword & 0xFFF9:
                    if reassembled:
                        return self.reject(C_bad_ipv6_extension)
                    if not fragword & 0xFFF8 and not chain_complete(p[pos], p + pos + 8, end - pos - 8):
                        return self.reject(C_ipv6_fragment_incomplete_chain)
                    return self.fragment(p[pos], fi.src, fi.dst, p + pos + 4, 4, fragword & 0xFFF8,
                                         fragword & 1, p + pos + 8, end - pos - 8, fi)
                nh = p[pos]
                pos += 8
            else:
                if pos + 2 > end:
                    return self.reject(C_bad_ipv6_extension)
                hl = (<uint32_t>p[pos + 1] + 1) * 8
                if pos + hl > end:
                    return self.reject(C_bad_ipv6_extension)
                nh = p[pos]
                pos += hl
        return self.transport(nh, p + pos, end - pos, fi)

    cdef int fragment(self, uint8_t protocol, const uint8_t* src, const uint8_t* dst, const uint8_t* ident,
                      int ident_len, uint32_t offset, bint more, const uint8_t* data, uint32_t n,
                      FrameInfo* fi) except -1:
        """One IP fragment: held for reassembly (counted ip_fragment or ip_fragment_not_first), or the one
        that completes its datagram, which is then decoded from the transport on as this frame."""
        cdef uint8_t key[FRAG_KEY_LEN]
        cdef Reassembled whole
        cdef int alen = 4 if fi.ip_version == 4 else 16
        if self.shadow != SHADOW_NONE:
            return self.reject(C_ip_fragment)   # not counted: the frame was counted by its first reason
        memset(key, 0, FRAG_KEY_LEN)
        key[0] = (fi.vlan + 1) >> 8
        key[1] = (fi.vlan + 1) & 0xFF
        key[2] = fi.ip_version
        key[3] = protocol if fi.ip_version == 4 else 0
        memcpy(key + 4, src, alen)
        memcpy(key + 20, dst, alen)
        memcpy(key + 36, ident, ident_len)
        if not self.fragments.add(key, <int64_t>fi.sec * 1000000 + fi.usec, offset, more, protocol, data, n,
                                  self.counters_, &whole):
            if whole.overlap:
                self.anomaly(ANOMALY_FRAGMENT_OVERLAP, fi, src, dst, alen, 0, 0, 0, None, fi.vlan)
            return self.reject(C_ip_fragment if offset == 0 else C_ip_fragment_not_first)
        fi.src = whole.src
        fi.dst = whole.dst
        try:
            if fi.ip_version == 4:
                return self.transport(whole.protocol, whole.buf, whole.length, fi)
            return self.ipv6_chain(whole.protocol, whole.buf, 0, whole.length, True, fi)
        finally:
            free(whole.buf)

    cdef int transport(self, uint8_t proto, const uint8_t* p, uint32_t n, FrameInfo* fi) except -1:
        cdef uint32_t ulen, doff
        if proto == 17:
            if n < 8:
                return self.reject(C_truncated_transport)
            fi.sport = rd16(p)
            fi.dport = rd16(p + 2)
            # A tunnel only when neither port is a DNS port: a DNS response to a client whose ephemeral port
            # happens to be 4789 or 6081 is DNS.
            if ((fi.dport == VXLAN_PORT or fi.dport == GENEVE_PORT)
                    and not self.ports[fi.dport] and not self.ports[fi.sport]):
                ulen = rd16(p + 4)
                if ulen < 8 or ulen > n:
                    return self.reject(C_bad_udp_length)
                if self.ip_header_bad(fi):
                    return 0
                return self.tunnel(TUN_VXLAN if fi.dport == VXLAN_PORT else TUN_GENEVE, p + 8, ulen - 8, fi)
            if not (self.ports[fi.sport] or self.ports[fi.dport]):
                return self.reject(C_not_dns_port)
            ulen = rd16(p + 4)
            if ulen < 8 or ulen > n:
                return self.reject(C_bad_udp_length)
            # A response's checksum matters to the query log and to a CNAME hit: the client's kernel drops a bad
            # one. Without the log it is checked only when it would hit (half the frames, the larger half, and
            # CNAME hits are rare: decision 0162): message() does it.
            if ulen >= 11 and p[10] & 0x80 and self.pending is None:
                if self.shadow == SHADOW_NONE:
                    fi.udp_deferred = p
                    fi.udp_len = ulen
            else:
                if self.ip_header_bad(fi):
                    return 0
                if (self.shadow == SHADOW_NONE and self.cs_active
                        and not self.cs_accept(transport_ok(17, fi.src, fi.dst, fi.ip_version, p, ulen))):
                    self.set_shadow(C_bad_udp_checksum, SHADOW_BAD_CHECKSUM)
            fi.transport = 17
            return self.message(p + 8, ulen - 8, fi)
        if proto == 6:
            if n < 20:
                return self.reject(C_truncated_transport)
            fi.sport = rd16(p)
            fi.dport = rd16(p + 2)
            if not (self.ports[fi.sport] or self.ports[fi.dport]):
                return self.reject(C_not_dns_port)
            doff = (p[12] >> 4) * 4
            if doff < 20 or doff > n:
                return self.reject(C_bad_tcp_header)
            if self.ip_header_bad(fi):
                return 0
            if (self.shadow == SHADOW_NONE and self.cs_active
                    and not self.cs_accept(transport_ok(6, fi.src, fi.dst, fi.ip_version, p, n))):
                self.set_shadow(C_bad_tcp_checksum, SHADOW_BAD_CHECKSUM)
            fi.transport = 6
            if self.shadow != SHADOW_NONE:
                self.tcp_messages(p + doff, n - doff, fi)   # this segment alone: no stream state
                return 0
            return self.tcp_segment(p, doff, n, fi)
        if proto == IPPROTO_GRE:
            if self.ip_header_bad(fi):
                return 0
            return self.tunnel(TUN_GRE, p, n, fi)
        return self.reject(C_not_udp_tcp)

    cdef int32_t new_stream(self, const uint8_t* key, uint64_t h, int64_t now_us, FrameInfo* fi) except -2:
        """A slot for a new stream; a full table evicts the least recently used one, reported when it held part
        of a message (a flood of streams is how a query is hidden from a sensor)."""
        cdef StreamTable st = self.streams
        cdef int32_t old
        if st.free_head == -1:
            old = st.lru_tail
            if st.is_idle(&st.slots[old], now_us):
                self.counters_[C_tcp_stream_expired] += 1
            else:
                self.counters_[C_tcp_stream_evicted] += 1
                if st.slots[old].buf_len or st.slots[old].nooo:
                    self.counters_[C_tcp_evicted_mid_message] += 1
                    self.stream_anomaly(ANOMALY_EVICTED, old, fi)
            st.remove(old)
        return st.create(key, h, now_us)

    cdef int tcp_segment(self, const uint8_t* th, uint32_t doff, uint32_t n, FrameInfo* fi) except -1:
        """One segment of one direction (the steps of sensor/decode/tcpstream.py, TcpStreams.segment)."""
        cdef uint8_t key[STREAM_KEY_LEN]
        cdef uint8_t peer_key[STREAM_KEY_LEN]
        cdef uint64_t h = FNV_OFFSET, ph = FNV_OFFSET
        cdef int k, alen = 4 if fi.ip_version == 4 else 16
        cdef int64_t now_us = <int64_t>fi.sec * 1000000 + fi.usec
        cdef uint8_t flags = th[13]
        cdef uint32_t seq = rd32(th + 4), data_seq, fin, ptr
        cdef const uint8_t* payload = th + doff
        cdef uint32_t plen = n - doff, given = n - doff
        cdef int32_t s, peer
        cdef StreamTable st = self.streams
        cdef Stream* sp
        memset(key, 0, STREAM_KEY_LEN)
        key[0] = (fi.vlan + 1) >> 8
        key[1] = (fi.vlan + 1) & 0xFF
        key[2] = fi.ip_version
        memcpy(key + 4, fi.src, alen)
        memcpy(key + 20, fi.dst, alen)
        key[36] = fi.sport >> 8
        key[37] = fi.sport & 0xFF
        key[38] = fi.dport >> 8
        key[39] = fi.dport & 0xFF
        for k in range(STREAM_KEY_LEN):
            h = hash_step(h, key[k])
        s = st.find(key, h)
        if s >= 0 and st.is_idle(&st.slots[s], now_us):
            self.counters_[C_tcp_stream_expired] += 1
            st.remove(s)
            s = -1
        peer = -1
        if flags & 0x10 and not flags & 0x04:
            # The peer's acknowledgement: bytes before it reached the host, seen here or not (a capture gap).
            memcpy(peer_key, key, 4)
            memcpy(peer_key + 4, key + 20, 16)
            memcpy(peer_key + 20, key + 4, 16)
            memcpy(peer_key + 36, key + 38, 2)
            memcpy(peer_key + 38, key + 36, 2)
            for k in range(STREAM_KEY_LEN):
                ph = hash_step(ph, peer_key[k])
            peer = st.find(peer_key, ph)
            if peer >= 0 and (not st.slots[peer].acked_valid or seq_diff(rd32(th + 8), st.slots[peer].acked) > 0):
                st.slots[peer].acked = rd32(th + 8)
                st.slots[peer].acked_valid = 1
        if flags & 0x04:
            # RFC 5961 3.2: only a RST at exactly the next expected number ends the stream; its data never counts.
            if s >= 0:
                if seq == st.slots[s].expected_seq:
                    st.remove(s)
                else:
                    self.counters_[C_tcp_rst_ignored] += 1
            return self.reject(C_tcp_no_payload) if given == 0 else 0
        if flags & 0x02:
            if s >= 0 and st.slots[s].has_data:
                self.counters_[C_tcp_syn_ignored] += 1   # RFC 5961 4.2: a SYN inside a live stream
                return self.reject(C_tcp_no_payload) if given == 0 else 0
            if plen and not has_fast_open_cookie(th + 20, doff - 20):
                self.counters_[C_tcp_syn_data_ignored] += 1
                plen = 0
            if s < 0:
                s = self.new_stream(key, h, now_us, fi)
            else:
                st.reset(s)
            sp = &st.slots[s]
            sp.expected_seq = seq + 1
            sp.syn = 1
            sp.synack = 0
            if flags & 0x10:   # a SYN-ACK completes the peer's handshake
                peer = st.find(peer_key, ph)   # found again: new_stream may have evicted it
                if peer >= 0 and st.slots[peer].syn and not st.slots[peer].has_data:
                    st.slots[peer].synack = 1
            data_seq = seq + 1
        else:
            data_seq = seq
            if s < 0:
                if plen == 0:
                    return self.reject(C_tcp_no_payload)
                s = self.new_stream(key, h, now_us, fi)
                st.slots[s].expected_seq = seq
        sp = &st.slots[s]
        if plen or flags & 0x02:   # a bare ACK or FIN does not keep a stream alive
            st.touch(s, now_us)
        if flags & 0x20:
            # Linux's tcp_check_urg: the byte before the pointer is urgent, unless passed or superseded.
            ptr = rd16(th + 18)
            ptr = data_seq + ptr - 1 if ptr else data_seq
            if seq_diff(ptr, sp.expected_seq) >= 0 and not (sp.urg_valid and seq_diff(ptr, sp.urg_seq) <= 0):
                sp.urg_seq = ptr
                sp.urg_valid = 1
        fi.handshake = sp.syn and sp.synack
        if plen:
            self.tcp_accept(s, data_seq, payload, plen, fi)
            sp = &st.slots[s]
        if flags & 0x01:
            fin = data_seq + plen
            if seq_diff(fin, sp.expected_seq) >= 0:
                sp.fin_seq = fin    # ends the stream now, or once the data before it has arrived
                sp.fin_valid = 1
        if sp.fin_valid and sp.fin_seq == sp.expected_seq:
            st.remove(s)
        if given == 0:
            return self.reject(C_tcp_no_payload)
        return 0

    cdef int tcp_accept(self, int32_t s, uint32_t seq, const uint8_t* payload, uint32_t n,
                        FrameInfo* fi) except -1:
        """Bytes at `seq`: delivered (and the messages they complete decoded), queued out of order, or dropped as
        already delivered."""
        cdef StreamTable st = self.streams
        cdef Stream* sp = &st.slots[s]
        cdef int32_t start = seq_diff(seq, sp.expected_seq), skip
        cdef int r
        cdef uint32_t used
        sp.has_data = 1
        if <int64_t>start + n <= 0:
            self.counters_[C_tcp_retransmission] += 1
            if st.conflicts(s, payload, n, -start):
                self.conflict(s, fi)
            return 0
        if start < 0:
            # Bytes already delivered win (Linux reads from rcv_nxt); the rest is new.
            self.counters_[C_tcp_overlap] += 1
            if st.conflicts(s, payload, -start, -start):
                self.conflict(s, fi)
            payload -= start
            n += start
            start = 0
        if start >= OOO_WINDOW:
            self.counters_[C_tcp_gap] += 1   # a capture gap: what was pending cannot complete
            st.reset(s)
            sp.expected_seq = seq
            start = 0
        if start > 0 and sp.acked_valid and seq_diff(sp.acked, sp.expected_seq) > 0:
            # The peer acknowledged bytes the sensor never saw: a capture gap, not a hole the host waits on.
            self.counters_[C_tcp_gap] += 1
            skip = seq_diff(sp.acked, sp.expected_seq)
            if skip > start:
                skip = start
            st.drop_partial(s)
            sp.urg_valid = 0
            sp.expected_seq += <uint32_t>skip
            start -= skip
        if start > 0:
            r = st.queue(s, start, payload, n, self.counters_)
            if r < 0:
                raise MemoryError()
            if r:
                self.conflict(s, fi)
            return 0
        if sp.buf_len == 0 and sp.nooo == 0 and not (sp.urg_valid and <uint32_t>seq_diff(sp.urg_seq, sp.expected_seq) < n):
            # The common case: a whole message in one segment, decoded where it lies.
            sp.expected_seq += n
            used = self.tcp_messages(payload, n, fi)
            sp = &st.slots[s]
            if used < n and st.append(s, payload + used, n - used) < 0:
                raise MemoryError()
            return 0
        if st.deliver(s, payload, n, self.counters_) < 0:
            raise MemoryError()
        r = st.drain(s, self.counters_)
        if r < 0:
            raise MemoryError()
        if r:
            self.conflict(s, fi)
        used = self.tcp_messages(sp.buf, sp.buf_len, fi)
        sp = &st.slots[s]
        if used == sp.buf_len:
            st.drop_partial(s)
        elif used > 0:
            memmove(sp.buf, sp.buf + used, sp.buf_len - used)
            sp.buf_len -= used
        return 0

    cdef int conflict(self, int32_t s, FrameInfo* fi) except -1:
        self.counters_[C_tcp_overlap_conflict] += 1
        self.stream_anomaly(ANOMALY_OVERLAP_CONFLICT, s, fi)
        return 0

    cdef uint32_t tcp_messages(self, const uint8_t* p, uint32_t n, FrameInfo* fi) except? 0xFFFFFFFF:
        """Decode each complete length-prefixed message; return how many bytes were consumed."""
        cdef uint32_t pos = 0, mlen
        while n - pos >= 2:
            mlen = rd16(p + pos)
            if mlen == 0:
                if self.shadow == SHADOW_NONE:
                    self.counters_[C_dns_too_short] += 1
                pos += 2
                continue
            if n - pos - 2 < mlen:
                break
            self.message(p + pos + 2, mlen, fi)
            pos += 2 + mlen
        return pos

    cdef int message(self, const uint8_t* msg, uint32_t n, FrameInfo* fi) except -1:
        cdef uint16_t flags, qdcount, qtype, qclass
        cdef int reason
        cdef int32_t rule = -1
        cdef int alen, found
        cdef DecodedName* name = &self.name
        cdef Subnet subnet
        cdef object subnet_str = None, tunnel = None, cname = None
        cdef int cname_hop = -1
        cdef uint64_t* counters = self.counters_
        cdef uint64_t bad_answers
        if self.shadow != SHADOW_NONE:
            if n < 12 or not msg[2] & 0x80:
                return self.shadow_message(msg, n, fi)
            counters = self.scratch_   # a response the client never gets: walked for a CNAME hit, nothing counted
        if n < 12:
            return self.reject(C_dns_too_short)
        qdcount = rd16(msg + 4)
        if qdcount == 0:
            return self.reject(C_dns_no_question)
        reason = decode_name(msg, n, 12, name)
        if reason:
            return self.reject(reason)
        if name.end + 4 > n:
            return self.reject(C_dns_truncated)
        flags = rd16(msg + 2)
        qtype = rd16(msg + name.end)
        qclass = rd16(msg + name.end + 2)
        if qdcount > 1:
            counters[C_dns_extra_questions] += 1
        if flags & 0x8000:
            counters[C_dns_responses] += 1
            bad_answers = counters[C_dns_bad_answers]
            rule = cname_scan(msg, n, name.end + 4, self.rules, self.patterns, self.allow, counters,
                              &cname_hop, name)
            if rule >= 0:
                cname = cname_chain(msg, n, name.end + 4, cname_hop)
                if self.shadow != SHADOW_NONE or (fi.udp_deferred != NULL and self.response_dropped(fi)):
                    return self.drop_response(fi, cname, qdcount, bad_answers)
                self.counters_[C_hits] += 1
            elif self.shadow != SHADOW_NONE:
                return 0
        else:
            self.counters_[C_dns_queries] += 1
            rule = self.rules.match(name.text, name.text_len, name.label_starts, name.nlabels)
            if rule < 0 and self.patterns is not None:
                rule = self.patterns(lowered_name(name))
            if rule >= 0 and rule < len(self.allow) and self.allow[rule]:
                self.counters_[C_allowed] += 1
                rule = -1
            if rule >= 0:
                self.counters_[C_hits] += 1
        if self.pending is not None:
            self.pending.message(msg, n, flags, name, qtype, qclass, fi, self.counters_)
        if rule < 0 and not self.emit_all:
            return 0
        if not flags & 0x8000:
            found = find_client_subnet(msg, n, name.end + 4, &subnet)
            if found < 0:
                self.counters_[C_dns_bad_edns] += 1
            elif found > 0:
                subnet_str = subnet_text(&subnet)
        if fi.ntunnels:
            tunnel = "/".join([TUNNEL_NAMES[fi.tunnels[k]] for k in range(fi.ntunnels)])
        alen = 4 if fi.ip_version == 4 else 16
        self.out.append((
            fi.frame, fi.sec, fi.usec, None if fi.vlan < 0 else fi.vlan,
            PyBytes_FromStringAndSize(<const char*>fi.src, alen),
            PyBytes_FromStringAndSize(<const char*>fi.dst, alen),
            fi.transport, fi.sport, fi.dport, rd16(msg), flags, qdcount,
            PyUnicode_DecodeASCII(<const char*>name.text, name.text_len, NULL),
            qtype, qclass, rule, tunnel, subnet_str,
            None if fi.mac == NULL else PyBytes_FromStringAndSize(<const char*>fi.mac, 6),
            None if fi.outer_src == NULL else (PyBytes_FromStringAndSize(<const char*>fi.outer_src, fi.outer_len),
                                               PyBytes_FromStringAndSize(<const char*>fi.outer_dst, fi.outer_len)),
            None if fi.handshake < 0 else bool(fi.handshake), cname,
        ))
        return 0

    cdef int shadow_message(self, const uint8_t* msg, uint32_t n, FrameInfo* fi) except -1:
        """A query the resolver never sees: an anomaly when it would hit; nothing counted (a response: message())."""
        cdef DecodedName* name = &self.name
        cdef int32_t rule
        cdef int alen = 4 if fi.ip_version == 4 else 16
        if n < 12 or rd16(msg + 4) == 0 or decode_name(msg, n, 12, name) or name.end + 4 > n:
            return 0
        if rd16(msg + 2) & 0x8000:
            return 0
        rule = self.rules.match(name.text, name.text_len, name.label_starts, name.nlabels)
        if rule < 0 and self.patterns is not None:
            rule = self.patterns(lowered_name(name))
        if rule < 0 or (rule < len(self.allow) and self.allow[rule]):
            return 0
        self.anomaly(SHADOW_NAMES[self.shadow], fi, fi.src, fi.dst, alen, fi.transport, fi.sport, fi.dport,
                     PyUnicode_DecodeASCII(<const char*>name.text, name.text_len, NULL), fi.vlan)
        return 0
