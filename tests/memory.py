"""The memory of a whole process tree (the sensor, its query-log writer, its workers), for the memory-budget tests
and bench/flood_soak.py: PSS from /proc/PID/smaps_rollup, summed over the tree, and a replay fed through stdin so
that its PSS can be read idle after start-up before the flood comes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PCAP_HEADER = 24  # the classic pcap file header: the replay opens the file once it has it


def tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    pids, queue = [], [pid]
    while queue:
        one = queue.pop()
        pids.append(one)
        try:
            for task in Path(f"/proc/{one}/task").iterdir():
                queue += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids


def pss_kib(pid: int) -> int:
    """Proportional set size of the process tree, KiB: shared pages counted once, split between sharers."""
    total = 0
    for one in tree(pid):
        try:
            for line in Path(f"/proc/{one}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
    return total


class PeakSampler(threading.Thread):
    """Reads the tree's PSS every `every` seconds until stopped; keeps the peak and the samples."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak, self.samples = 0, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            value = pss_kib(self.pid)
            self.samples.append(value)
            self.peak = max(self.peak, value)
            self.done.wait(self.every)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def wait_idle(pid: int, processes: int, deadline: float = 60.0, quiet_kib: int = 512, quiet_for: int = 10) -> int:
    """Poll until the tree has `processes` processes and its PSS has moved less than `quiet_kib` over `quiet_for`
    readings 0.1 s apart: start-up is over. Returns that PSS (KiB). AssertionError past the deadline."""
    end = time.monotonic() + deadline
    recent: list[int] = []
    while time.monotonic() < end:
        if len(tree(pid)) >= processes:
            recent = (recent + [pss_kib(pid)])[-quiet_for:]
            if len(recent) == quiet_for and max(recent) - min(recent) < quiet_kib:
                return recent[-1]
        else:
            recent = []
        threading.Event().wait(0.1)  # the polling interval, not a wait for luck: the loop re-checks
    raise AssertionError(f"process {pid}: not idle after {deadline:g} s (tree {tree(pid)}, PSS {recent})")


@dataclass
class FloodResult:
    idle_kib: int
    peak_kib: int
    returncode: int
    stderr: str

    @property
    def growth_mb(self) -> float:
        return (self.peak_kib - self.idle_kib) / 1024


def replay_flood(pcap: Path, args: list[str], processes: int = 1, timeout: float = 600.0,
                 rounds: int = 1) -> FloodResult:
    """`truesource replay - ARGS` with `pcap` on stdin: the PSS of its tree idle after start-up (the pcap header
    given, no frame yet), then the peak while the frames go in (`rounds` times over), until it exits."""
    proc = subprocess.Popen([sys.executable, "-m", "sensor", "replay", "-", "--no-progress", *args], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    try:
        with open(pcap, "rb") as source:
            proc.stdin.write(source.read(PCAP_HEADER))
            proc.stdin.flush()
            idle = wait_idle(proc.pid, processes)
            sampler = PeakSampler(proc.pid)
            sampler.start()
            for _ in range(rounds):
                source.seek(PCAP_HEADER)
                while chunk := source.read(1 << 20):
                    proc.stdin.write(chunk)
        proc.stdin.close()
        proc.wait(timeout=timeout)
        peak = sampler.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=30)
    return FloodResult(idle, peak, proc.returncode, b"".join(errors).decode(errors="replace"))
