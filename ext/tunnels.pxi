# Tunnel headers a mirror delivers traffic in (docs/decoding.md, "Tunnels"): PPPoE, GRE with ERSPAN types
# I, II and III, VXLAN, Geneve. Each parser checks one header and says what follows and where; FastLoop
# decodes the inner bytes like a local frame. Included by loop.pyx; the reference is sensor/decode/tunnel.py.

cdef enum:
    # Nesting a real mirror produces: ERSPAN of a VXLAN fabric, GRE over a PPPoE uplink: two, rarely three.
    # Each level re-runs the link and IP decoders, so a crafted onion of tunnels is bounded work per frame.
    MAX_TUNNEL_DEPTH = 4
    IPPROTO_GRE = 47
    VXLAN_PORT = 4789            # RFC 7348
    GENEVE_PORT = 6081           # RFC 8926
    ETH_PPPOE_SESSION = 0x8864   # RFC 2516; discovery (0x8863) carries no IP
    INNER_ETHERNET = 0x6558      # transparent Ethernet bridging: GRE's and Geneve's type for an Ethernet frame
    GRE_CHECKSUM = 0x8000
    GRE_ROUTING = 0x4000         # RFC 1701 source routing, deprecated by RFC 2784: not implemented
    GRE_KEY = 0x2000
    GRE_SEQUENCE = 0x1000
    GRE_VERSION = 0x0007         # 1 is PPTP's enhanced GRE (PPP inside): not implemented
    ERSPAN_I_II = 0x88BE         # type II with the GRE sequence bit, type I without
    ERSPAN_III = 0x22EB
    # Which tunnel, as recorded; the index into TUNNEL_NAMES.
    TUN_PPPOE = 0
    TUN_GRE = 1
    TUN_ERSPAN1 = 2
    TUN_ERSPAN2 = 3
    TUN_ERSPAN3 = 4
    TUN_VXLAN = 5
    TUN_GENEVE = 6

TUNNEL_NAMES = ("pppoe", "gre", "erspan1", "erspan2", "erspan3", "vxlan", "geneve")

ctypedef struct TunnelInner:
    uint32_t offset              # where the inner bytes start, from the tunnel header's start
    uint16_t kind                # INNER_ETHERNET, ETH_IPV4 or ETH_IPV6
    uint8_t name                 # TUN_*


cdef inline int inner_kind(uint16_t protocol, TunnelInner* out) noexcept nogil:
    """GRE's and Geneve's protocol type: Ethernet, IPv4 or IPv6, else not_ip."""
    if protocol == ETH_IPV4 or protocol == ETH_IPV6 or protocol == INNER_ETHERNET:
        out.kind = protocol
        return 0
    return C_not_ip


cdef int pppoe_header(const uint8_t* p, uint32_t n, TunnelInner* out) noexcept nogil:
    """Session data: version/type 0x11, code 0, session, length, then the 2-byte PPP protocol."""
    cdef uint16_t protocol
    if n < 8:
        return C_bad_tunnel
    if p[0] != 0x11 or p[1] != 0:
        return C_bad_tunnel
    protocol = rd16(p + 6)
    if protocol == 0x0021:
        out.kind = ETH_IPV4
    elif protocol == 0x0057:
        out.kind = ETH_IPV6
    else:
        return C_not_ip          # LCP, IPCP, ...: PPP's own control traffic
    out.offset = 8
    out.name = TUN_PPPOE
    return 0


cdef int gre_header(const uint8_t* p, uint32_t n, TunnelInner* out) noexcept nogil:
    """GRE version 0 (RFC 2784, RFC 2890 key and sequence), and the ERSPAN header behind it."""
    cdef uint16_t flags, protocol
    cdef uint32_t hl = 4
    if n < 4:
        return C_bad_tunnel
    flags = rd16(p)
    protocol = rd16(p + 2)
    if flags & (GRE_ROUTING | GRE_VERSION):
        return C_bad_tunnel
    if flags & GRE_CHECKSUM:
        hl += 4
    if flags & GRE_KEY:
        hl += 4
    if flags & GRE_SEQUENCE:
        hl += 4
    if hl > n:
        return C_bad_tunnel
    if protocol == ERSPAN_I_II:
        out.kind = INNER_ETHERNET
        if not flags & GRE_SEQUENCE:
            out.name = TUN_ERSPAN1   # type I: no ERSPAN header at all
            out.offset = hl
            return 0
        if hl + 8 > n or p[hl] >> 4 != 1:
            return C_bad_tunnel
        out.name = TUN_ERSPAN2
        out.offset = hl + 8
        return 0
    if protocol == ERSPAN_III:
        if hl + 12 > n or p[hl] >> 4 != 2:
            return C_bad_tunnel
        out.offset = hl + 12 + (8 if p[hl + 11] & 0x01 else 0)  # the O bit: platform subheader follows
        if out.offset > n:
            return C_bad_tunnel
        if p[hl + 10] & 0x7C:    # frame type: 0 is Ethernet (2, IP, is not implemented)
            return C_not_ip
        out.kind = INNER_ETHERNET
        out.name = TUN_ERSPAN3
        return 0
    out.offset = hl
    out.name = TUN_GRE
    return inner_kind(protocol, out)


cdef int vxlan_header(const uint8_t* p, uint32_t n, TunnelInner* out) noexcept nogil:
    """8 bytes with the I flag (RFC 7348 requires it), then Ethernet."""
    if n < 8 or not p[0] & 0x08:
        return C_bad_tunnel
    out.offset = 8
    out.kind = INNER_ETHERNET
    out.name = TUN_VXLAN
    return 0


cdef int geneve_header(const uint8_t* p, uint32_t n, TunnelInner* out) noexcept nogil:
    """Version 0, 8 bytes plus options (in 4-byte words), then what the protocol type names."""
    if n < 8 or p[0] >> 6:
        return C_bad_tunnel
    out.offset = 8 + (p[0] & 0x3F) * 4
    if out.offset > n:
        return C_bad_tunnel
    out.name = TUN_GENEVE
    return inner_kind(rd16(p + 2), out)
