"""What a flapping subscriber (connect, subscribe, disconnect in a loop) costs a publisher, in RSS.

Three publishers take the same flapping, round after round, each measured in the same run:
  truesource   `truesource replay - --publish` reading from a pipe that stays idle (no event is sent: only the
               publisher's own reader thread reads subscriptions)
  never-reads  a bare XPUB socket (XPUB_VERBOSER, as truesource sets it) that never reads its subscriptions: the
               publisher before issue 14
  reads        a bare XPUB socket that reads its subscriptions every 0.1 s: the floor
Prints the RSS of each after every round; the growth per cycle once the allocators have settled (after round
2) is the cost.

    .venv/bin/python bench/flapping_subscriber.py [--rounds 4] [--cycles 3000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAPPER = ROOT / "tests" / "flapper.py"
BARE = """
import sys, time, zmq
sock = zmq.Context().socket(zmq.XPUB)
sock.setsockopt(zmq.XPUB_VERBOSER, 1)
sock.bind(sys.argv[1])
print("ready", flush=True)
while True:
    time.sleep(0.1)
    while sys.argv[2] == "reads" and sock.poll(0):
        sock.recv()
"""


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--cycles", type=int, default=3000, help="flapping subscribers a round")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flap-bench-"))
    rules = work / "r.rules"
    rules.write_text("example.com\n")
    header = (ROOT / "pcaps" / "demo-resolver.pcap").read_bytes()[:24]
    publishers = {}
    ts = subprocess.Popen([sys.executable, "-m", "sensor", "replay", "-", "--rules", str(rules), "--publish",
                           f"ipc://{work}/truesource"], cwd=ROOT, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    ts.stdin.write(header)
    ts.stdin.flush()
    publishers["truesource"] = (ts, f"ipc://{work}/truesource")
    for mode in ("never-reads", "reads"):
        proc = subprocess.Popen([sys.executable, "-c", BARE, f"ipc://{work}/{mode}", mode], stdout=subprocess.PIPE,
                                text=True)
        proc.stdout.readline()
        publishers[mode] = (proc, f"ipc://{work}/{mode}")
    deadline = time.monotonic() + 30
    while not os.path.exists(f"{work}/truesource"):
        if time.monotonic() > deadline:
            raise SystemExit("truesource replay did not bind")
        time.sleep(0.05)
    try:
        curves = {name: [rss_kb(proc.pid)] for name, (proc, _) in publishers.items()}
        print(f"{'round':>5} {'cycles':>7}  " + "  ".join(f"{name:>16}" for name in publishers))
        print(f"{0:>5} {0:>7}  " + "  ".join(f"{curves[n][-1]:>13} kB" for n in publishers))
        for round_ in range(1, args.rounds + 1):
            for _proc, endpoint in publishers.values():
                done = subprocess.run([sys.executable, str(FLAPPER), endpoint, str(args.cycles)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"flapper against {endpoint}: {done.stderr}")
            time.sleep(0.3)  # the reader thread's next visit (0.1 s) has happened
            for name, (proc, _) in publishers.items():
                curves[name].append(rss_kb(proc.pid))
            print(f"{round_:>5} {round_ * args.cycles:>7}  " + "  ".join(f"{curves[n][-1]:>13} kB" for n in publishers))
        print("growth per cycle after round 2, once the allocators have settled (bytes):")
        for name, curve in curves.items():
            cycles = (len(curve) - 3) * args.cycles
            print(f"  {name:>12}: {(curve[-1] - curve[2]) * 1024 / cycles:8.0f}" if cycles > 0 else "")
    finally:
        for proc, _ in publishers.values():
            proc.kill()
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
