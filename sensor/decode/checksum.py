"""Internet checksums (RFC 1071) of IPv4 headers, UDP and TCP, and the --checksums policy: the reference twin of
the checks in ext/loop.pyx.

A resolver's kernel drops a frame whose IPv4 header, UDP or TCP checksum is wrong, so the sensor must not make a
hit of it (docs/decoding.md, "Checksums"). A capture taken on a host with checksum offload holds the host's own
outgoing frames with checksums not yet filled in; `auto` (Suricata's checksum-validation: auto) verifies the
first AUTO_SAMPLE frames that had a checksum checked, and turns verification off for the rest of the capture
only when more than one in AUTO_BAD_RATIO of them had a bad one. The decision is made once: a later flood of
bad checksums cannot switch it.
"""

from __future__ import annotations

CHECKSUMS_OFF = 0
CHECKSUMS_VERIFY = 1
CHECKSUMS_AUTO = 2
CHECKSUM_MODES = {"off": CHECKSUMS_OFF, "verify": CHECKSUMS_VERIFY, "auto": CHECKSUMS_AUTO}
AUTO_SAMPLE = 1000  # frames with a checksum checked, from the start of the capture (Suricata samples 1,000)
AUTO_BAD_RATIO = 10  # more than 1 in 10 bad: offload on the capturing host, not an attack (Suricata's ratio)


def ones_sum(data: bytes, start: int = 0) -> int:
    """The 16-bit one's complement sum of `data` (odd length padded with a zero byte), folded."""
    if len(data) % 2:
        data = data + b"\x00"
    total = start + sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ipv4_header_ok(header: bytes) -> bool:
    """The header with its checksum field sums to 0xFFFF."""
    return ones_sum(header) == 0xFFFF


def transport_ok(protocol: int, src: bytes, dst: bytes, segment: bytes) -> bool:
    """UDP or TCP over the pseudo-header (RFC 768, RFC 9293 3.1, RFC 8200 8.1). A UDP checksum of 0 means none
    over IPv4 and is refused over IPv6 (RFC 8200 8.1), as Linux refuses it for DNS."""
    if protocol == 17 and segment[6:8] == b"\x00\x00":
        return len(src) == 4
    pseudo = src + dst + len(segment).to_bytes(4 if len(src) == 16 else 2, "big")
    pseudo += (b"\x00\x00\x00" if len(src) == 16 else b"\x00") + bytes([protocol])
    return ones_sum(segment, ones_sum(pseudo)) == 0xFFFF


class ChecksumPolicy:
    """verify, off, or auto (decided once, from the first AUTO_SAMPLE frames checked); counts into `counters`."""

    def __init__(self, mode: int, counters: dict[str, int]) -> None:
        if mode not in CHECKSUM_MODES.values():
            raise ValueError(f"checksums mode {mode} is not one of off (0), verify (1), auto (2)")
        self.mode = mode
        self._counters = counters
        self._checked = 0
        self._bad = 0
        self.outgoing = False  # this frame was sent by the capturing host (a cooked capture says so): not checked
        self._frame_checked = False  # this frame had a check (auto's sample)
        self._frame_bad = False

    @property
    def active(self) -> bool:
        return self.mode != CHECKSUMS_OFF and not self.outgoing

    def accept(self, good: bool) -> bool:
        """Whether a frame with this checksum result goes on; only called while active."""
        if self.mode == CHECKSUMS_AUTO:
            self._frame_checked = True
            self._frame_bad |= not good
        return good

    def end_frame(self) -> None:
        """Auto: one more frame of the sample, if it had a check; the decision at the AUTO_SAMPLE-th."""
        if not self._frame_checked:
            return
        self._frame_checked = False
        self._checked += 1
        self._bad += self._frame_bad
        self._frame_bad = False
        if self._checked == AUTO_SAMPLE:
            if self._bad * AUTO_BAD_RATIO > AUTO_SAMPLE:
                self.mode = CHECKSUMS_OFF
                self._counters["checksums_auto_off"] += 1
            else:
                self.mode = CHECKSUMS_VERIFY
