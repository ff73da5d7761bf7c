"""Captures made from what the fuzzers found (docs/fuzzing.md): each one the smallest file that showed a bug,
rebuilt by a script so that it reads like the other samples. The raw fuzz input is in fuzz/regressions/."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pcaps.craft import DLT_EN10MB, Frame, Timeline, ether, write_pcap
from pcaps.layers import q4

# A pcap stores seconds in 32 unsigned bits (good until 2106); libpcap hands them over as signed, so a time
# after 2038-01-19 came back negative. 0xCD67E000 is 2079-03-15T20:13:52Z.
AFTER_2038 = 0xCD67E000


def cut_off_after_2038(path: Path) -> None:
    """fuzz/capture_file, crash 504a2705: a cut-off capture whose last whole frame is dated after 2038. Re-reading
    the frames before the cut one at a time (CaptureFile._salvage) packed the negative time into an unsigned
    field and raised struct.error instead of decoding them and reporting the cut."""
    t = Timeline(4300)
    t.add(ether() / q4("before.evil.example", 43301))  # 1 hit
    late = Frame(bytes(ether() / q4("late.evil.example", 43302)), Decimal(AFTER_2038) + Decimal("0.065537"))  # 2 hit
    third = Frame(bytes(ether() / q4("cut.evil.example", 43303)), Decimal(AFTER_2038 + 1))  # 3 cut off
    write_pcap(path, DLT_EN10MB, [*t.frames, late, third])
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - len(third.data) // 2])
