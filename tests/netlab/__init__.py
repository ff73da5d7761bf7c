"""A real DNS network for end-to-end tests: client, unbound resolver and bind9 upstream, in namespaces."""

from . import zones
from .availability import lab_or_skip, namespaces_unavailable, skip_or_fail
from .capture import DnsPacket, read_dns, tcpdump
from .dig import DigResult, Record
from .lab import LabError, NetLab, sweep_stale
from .packages import PACKAGES, ensure_packages

__all__ = [
    "PACKAGES",
    "DigResult",
    "DnsPacket",
    "LabError",
    "NetLab",
    "Record",
    "ensure_packages",
    "lab_or_skip",
    "namespaces_unavailable",
    "read_dns",
    "skip_or_fail",
    "sweep_stale",
    "tcpdump",
    "zones",
]
