"""Live capture on an interface through pcapy-ng: create, set options, activate, filter, join a fanout group.

Frames arrive in batches (next_batch) exactly as from a file. The handle is non-blocking and waited on with
poll(): on Linux with TPACKET_V3 libpcap's read timeout only fires once a packet has arrived, so a blocking
read on a quiet interface would never return to check for a stop signal.
"""

from __future__ import annotations

import select
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pcapy

from sensor.capture.files import BATCH_FRAMES, Batch
from sensor.errors import StartupError

POLL_MS = 100  # longest wait for frames before the loop gets control back (stop signal, statistics, watermark)
DEFAULT_SNAPLEN = 65_535  # whole frames: a DNS-over-TCP segment or an EDNS response can be large
DEFAULT_BUFFER_MB = 64  # kernel ring per worker: 1 MiB held ~6,000 DNS frames in bench/live.py, so ~380,000
DLT_EN10MB = 1

# pcap_activate() results (pcap/pcap.h), to the words an operator needs.
_ACTIVATE_ERRORS = {
    -1: "capture failed to start",
    -4: "capture already active",
    -5: "no such interface",
    -8: "permission denied: live capture needs CAP_NET_RAW (and CAP_NET_ADMIN for promiscuous mode and "
        "the buffer size); run as root or grant these capabilities",
    -9: "interface is not up",
    -11: "permission denied for promiscuous mode: needs CAP_NET_ADMIN",
    -12: "timestamp precision not supported",
}


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    interface: str
    bpf: str | None  # None: default_filter() for the interface's link type
    ports: tuple[int, ...] = (53,)
    snaplen: int = DEFAULT_SNAPLEN
    buffer_mb: int = DEFAULT_BUFFER_MB
    promiscuous: bool = True
    all_ip: bool = False  # flows on: the default filter passes every IP packet, not only DNS


@dataclass(frozen=True, slots=True)
class PcapStats:
    received: int
    kernel_drops: int
    interface_drops: int


class LiveCapture:
    """One capture handle on an interface, optionally one member of a fanout group."""

    def __init__(self, options: CaptureOptions, fanout_group: int | None = None) -> None:
        self.options = options
        self.name = options.interface
        try:
            handle = pcapy.create(options.interface)
            handle.set_snaplen(options.snaplen)
            handle.set_promisc(1 if options.promiscuous else 0)
            handle.set_timeout(POLL_MS)
            handle.set_buffer_size(options.buffer_mb << 20)
            status = handle.activate()
        except pcapy.PcapError as err:
            raise StartupError(f"{options.interface}: cannot capture: {err}") from None
        if status < 0:
            reason = _ACTIVATE_ERRORS.get(status, f"pcap_activate error {status}")
            raise StartupError(f"{options.interface}: cannot capture: {reason}")
        self.bpf = options.bpf if options.bpf is not None else default_filter(options.ports, handle.datalink(),
                                                                                    options.all_ip)
        try:
            handle.setfilter(self.bpf)
        except pcapy.PcapError as err:
            raise StartupError(f"--bpf {self.bpf!r}: {err}") from None
        if fanout_group is not None:
            try:
                handle.set_fanout(fanout_group, pcapy.PACKET_FANOUT_HASH)
            except (pcapy.PcapError, OSError) as err:
                raise StartupError(f"{options.interface}: cannot join fanout group {fanout_group}: {err}") from None
        handle.setnonblock(1)
        self._handle = handle
        self.linktype: int = handle.datalink()
        self.frames_read = 0
        self._poll = select.poll()
        self._poll.register(handle.getfd(), select.POLLIN)

    def batches(self, stop, size: int = BATCH_FRAMES) -> Iterator[Batch]:
        """Batches until `stop()` is true; an empty batch now and then when the wire is quiet."""
        handle = self._handle
        while not stop():
            data, meta = handle.next_batch(size)
            if not meta:
                self._poll.poll(POLL_MS)
                data, meta = handle.next_batch(size)
            batch = Batch(data, meta, self.frames_read + 1)
            self.frames_read += batch.frames
            yield batch

    def stats(self) -> PcapStats:
        received, dropped, if_dropped = self._handle.stats()
        return PcapStats(received, dropped, if_dropped)

    def close(self) -> None:
        self._handle.close()


def last_packet_time(batch: Batch) -> int | None:
    """Packet time of a batch's last frame in microseconds (the worker's watermark), None if empty."""
    if not batch.meta:
        return None
    sec, usec = struct.unpack_from("=II", batch.meta, len(batch.meta) - 16)
    return sec * 1_000_000 + usec


def default_filter(ports: tuple[int, ...] | list[int], linktype: int = DLT_EN10MB, all_ip: bool = False) -> str:
    """DNS on the given ports, untagged and under up to three VLAN tags (a plain `port 53` filter silently loses
    tagged frames), PPPoE sessions, and the tunnels remote mirrors arrive in (GRE and ERSPAN, VXLAN, Geneve).

    Order matters: each libpcap `vlan` shifts the offsets of everything after it. PPPoE is matched by its
    ethertype, not with `pppoes`: libpcap 1.9 cannot put `pppoes` and `vlan` in one kernel filter (it falls back
    to filtering every frame in user space), so all PPPoE session frames pass and the loop sorts them.
    `all_ip` (flows on): every IPv4 and IPv6 packet, tagged or not, since flows account for all traffic.
    """
    dns = " or ".join(f"port {port}" for port in ports)
    wanted = f"((udp or tcp) and ({dns})) or ip proto 47 or ip6 proto 47 or udp dst port 4789 or udp dst port 6081"
    # What `port 53` cannot see and the resolver's kernel still reassembles or walks: IPv4 fragments after the
    # first, and IPv6 with extension headers or fragments before UDP/TCP (libpcap's `udp` reads only the fixed
    # header's next header). The loop sorts them (docs/decoding.md).
    wanted += " or (ip and ip[6:2] & 0x1fff != 0) or (ip6 and (ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44"
    wanted += " or ip6[6] == 60))"
    if all_ip:
        wanted = "ip or ip6"
    if linktype != DLT_EN10MB:  # cooked (`any`), raw IP...: no Ethernet header, no tags to look under
        return wanted
    pppoe = "ether proto 0x8864"
    tagged = f"(vlan and ({wanted} or {pppoe}))"
    return f"{pppoe} or {wanted} or {tagged} or {tagged} or {tagged}"  # up to three tags deep
