"""The lab's fixed layout: namespace roles, interface names and addresses (all private to the lab)."""

from __future__ import annotations

# Namespace roles; the real namespace names carry a per-run tag (see lab.py).
CLIENT, RESOLVER, UPSTREAM = "client", "resolver", "upstream"
ROLES = (CLIENT, RESOLVER, UPSTREAM)

# Interface names inside each namespace. The veths are created directly inside their namespaces, so these
# short fixed names never exist in the host namespace and two labs never collide on them.
CLIENT_IFACE = "cl0"  # client -> resolver
RESOLVER_CLIENT_IFACE = "rc0"  # resolver, facing the clients: where a sensor on the resolver's mirror captures
RESOLVER_UPSTREAM_IFACE = "ru0"  # resolver, facing the authoritative servers
UPSTREAM_IFACE = "up0"  # upstream -> resolver

CLIENT_NET4, CLIENT_NET6 = "10.77.1.0/24", "fd77:1::/64"
UPSTREAM_NET4, UPSTREAM_NET6 = "10.77.2.0/24", "fd77:2::/64"

RESOLVER_CLIENT4, RESOLVER_CLIENT6 = "10.77.1.1", "fd77:1::1"  # unbound listens here
RESOLVER_UPSTREAM4, RESOLVER_UPSTREAM6 = "10.77.2.1", "fd77:2::1"  # unbound's source toward the servers

# Several client hosts, so tests can tell clients apart by address.
CLIENTS4 = ("10.77.1.10", "10.77.1.11", "10.77.1.12", "10.77.1.13")
CLIENTS6 = ("fd77:1::10", "fd77:1::11", "fd77:1::12", "fd77:1::13")

# One named answers on several addresses; a view per address set holds only that level's zones, so the
# resolver really walks root -> TLD -> zone and gets a referral at each step.
ROOT_SERVER4, ROOT_SERVER6 = "10.77.2.2", "fd77:2::2"
TLD_SERVER4, TLD_SERVER6 = "10.77.2.3", "fd77:2::3"
ZONE_SERVER4, ZONE_SERVER6 = "10.77.2.4", "fd77:2::4"
UPSTREAM_ADDRS4 = (ROOT_SERVER4, TLD_SERVER4, ZONE_SERVER4)
UPSTREAM_ADDRS6 = (ROOT_SERVER6, TLD_SERVER6, ZONE_SERVER6)

PREFIX4, PREFIX6 = 24, 64

# An address that is in no lab subnet (TEST-NET-1, RFC 5737): reaching it must fail for want of a route.
OUTSIDE4, OUTSIDE6 = "192.0.2.1", "2001:db8::1"
