#!/usr/bin/env python3
"""Profile benchmark: `truesource profile` over a flow store beside nfdump running the report's queries.

Makes N seeded flow records shaped like a network (bench/out/profile/: a flow store and, through IPFIX to a
real nfcapd, the same records as an nfcapd file; both kept for later runs), then times, --repeat times and
interleaved, each as a whole process:
  profile   truesource profile STORE --internal 10.0.0.0/16 --json (every table of the report at once)
  nfdump    the report's five queries that make the same tables (top DNS destinations, DNS servers, DNS
            clients, VPN, mail), one nfdump -s .../packets each, run one after the other
and prints medians, records/s and the ratio. nfdump gets none of the anomalies or asset rows, so it does less.

    .venv/bin/python bench/profile.py [--records 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
OUT = os.path.join(BENCH, "out", "profile")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # tests/nfcapd.py: the nfcapd runner

MAIL_TCP_PORTS = (25, 110, 143, 465, 587, 993, 995)  # as sensor/flows/profile.py (not imported: see main)
NET = "10.0.0.0/16"
OUT_FILTER = f"src net {NET} and not dst net {NET}"
NFDUMP_QUERIES = [
    ("dstip", f"{OUT_FILTER} and proto udp and dst port 53", 10),
    ("srcip", f"{OUT_FILTER} and proto udp and src port 53", 0),
    ("srcip", f"{OUT_FILTER} and proto udp and dst port 53", 0),
    ("srcip", f"{OUT_FILTER} and (proto 47 or proto 50 or proto 51 or (proto udp and (port 500 or port 4500 or "
              "port 1701)) or (proto tcp and port 1723))", 0),
    ("srcip", f"{OUT_FILTER} and proto tcp and (" + " or ".join(f"port {p}" for p in MAIL_TCP_PORTS) + ")", 0),
]
IPFIX_CHUNK = 500  # records per export call, then a pause: loopback UDP drops what nfcapd cannot take
IPFIX_PAUSE = 0.004


def make_records(n: int, seed: int = 7):
    """A seeded network: 5,000 internal hosts (3 resolvers, 2 authoritative servers, mail and VPN hosts),
    50,000 external addresses; DNS out and in, web, mail, VPN, and other traffic."""
    import numpy as np

    from sensor.flows.record import address_halves, empty

    rng = np.random.default_rng(seed)
    inside = address_halves("10.0.0.0")[1] + rng.integers(1, 5000, n)
    outside = address_halves("198.18.0.0")[1] + rng.integers(0, 50_000, n)
    kind = rng.choice(8, n, p=[0.35, 0.1, 0.15, 0.2, 0.05, 0.03, 0.02, 0.1])
    resolvers = address_halves("10.0.0.0")[1] + rng.choice([53, 54, 55], n)
    authoritative = address_halves("10.0.0.0")[1] + rng.choice([60, 61], n)
    ephemeral = rng.integers(32768, 61000, n)
    arr = empty(n)
    arr["ip_version"] = 4
    arr["start_us"] = 1_767_225_600_000_000 + np.sort(rng.integers(0, 3_600_000_000, n))
    arr["end_us"] = arr["start_us"] + rng.integers(0, 2_000_000, n)
    src = np.where(kind == 0, np.where(rng.random(n) < 0.7, resolvers, inside), inside)  # 0: queries out
    src = np.where(kind == 1, np.where(rng.random(n) < 0.9, authoritative, inside), src)  # 1: answers out
    src = np.where(kind == 2, outside, src)  # 2: inbound anything
    dst = np.where(kind == 2, inside, outside)
    arr["src_lo"], arr["dst_lo"] = src.astype(np.uint64), dst.astype(np.uint64)
    proto = np.full(n, 6, dtype=np.uint8)
    proto[kind <= 1] = 17
    sport, dport = ephemeral.copy(), rng.choice([80, 443, 22, 123, 8080], n)
    dport[kind == 0] = 53
    sport[kind == 1], dport[kind == 1] = 53, ephemeral[kind == 1]
    mail = kind == 4
    sport[mail] = np.where(rng.random(int(mail.sum())) < 0.5, rng.choice(MAIL_TCP_PORTS, int(mail.sum())),
                           ephemeral[mail])
    dport[mail] = np.where(sport[mail] >= 32768, 25, ephemeral[mail])
    vpn = kind == 5
    proto[vpn] = rng.choice([17, 47, 50, 51], int(vpn.sum()))
    sport[vpn] = np.where(proto[vpn] == 17, 500, 0)
    dport[vpn] = np.where(proto[vpn] == 17, rng.choice([500, 4500], int(vpn.sum())), 0)
    proto[kind == 6] = 1  # ICMP
    sport[kind == 6], dport[kind == 6] = 0, 2048
    proto[kind == 7] = 17
    arr["proto"], arr["src_port"], arr["dst_port"] = proto, sport, dport
    arr["packets"] = rng.integers(1, 20, n)
    arr["bytes"] = arr["packets"] * rng.integers(60, 1400, n)
    return arr


def write_nfcapd(records, directory: str) -> str:
    """The records through IPFIX to a real nfcapd (tests/nfcapd.py); the file it writes at SIGTERM."""
    from nfcapd import export_to_nfcapd

    return export_to_nfcapd(records, directory, IPFIX_CHUNK, IPFIX_PAUSE).files[-1]


def nfdump_packets(path: str) -> int:
    done = subprocess.run(["nfdump", "-r", path, "-q", "-o", "csv", "-s", "proto/packets"], capture_output=True,
                          text=True, check=True)
    return sum(int(row.split(",")[7]) for row in done.stdout.splitlines() if row[:1].isdigit())


def paths() -> tuple[str, str, str]:
    return os.path.join(OUT, "records.txt"), os.path.join(OUT, "store"), os.path.join(OUT, "nfcapd")


def prepare(n: int) -> None:
    """Write the store and the nfcapd file of n records (in a child process: see main)."""
    from sensor.flows.store import FlowStoreWriter

    stamp, store, nfcapd = paths()
    shutil.rmtree(OUT, ignore_errors=True)
    records = make_records(n)
    print(f"making {n:,} records: flow store and nfcapd file (IPFIX, paced) ...", file=sys.stderr)
    writer = FlowStoreWriter(store)
    writer.write(records)
    writer.close()
    path = write_nfcapd(records, nfcapd)
    got, want = nfdump_packets(path), int(records["packets"].sum())
    if got != want:
        raise SystemExit(f"nfcapd lost records ({got:,} of {want:,} packets): run again, or on a quieter machine")
    with open(stamp, "w") as handle:
        handle.write(f"{n}\n")


def timed(command: list[str]) -> tuple[float, int]:
    """Seconds and peak RSS (bytes; ru_maxrss is in kilobytes on Linux) of one process."""
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=ROOT) as process:
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return time.perf_counter() - start, usage.ru_maxrss * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not shutil.which("nfcapd") or not shutil.which("nfdump"):
        raise SystemExit("needs nfcapd and nfdump (make system-deps)")
    if args.prepare_only:
        prepare(args.records)
        return 0
    # The data is made in a child, and this process imports neither numpy nor the sensor: a forked child's
    # peak RSS starts from its parent's, so a big parent would inflate every measured peak.
    stamp, store, nfcapd_dir = paths()
    if not (os.path.exists(stamp) and open(stamp).read().strip() == str(args.records)):
        subprocess.run([sys.executable, __file__, "--prepare-only", "--records", str(args.records)], check=True)
    nfcapd = os.path.join(nfcapd_dir, sorted(os.listdir(nfcapd_dir))[-1])
    ours = [sys.executable, "-m", "sensor", "profile", store, "--internal", NET, "--json"]
    theirs = [["nfdump", "-r", nfcapd, "-q", "-n", str(top), "-s", f"{field}/packets", "-o", "csv", expression]
              for field, expression, top in NFDUMP_QUERIES]
    times: dict[str, list[float]] = {"profile": [], "nfdump": []}
    rss: dict[str, int] = {"profile": 0, "nfdump": 0}
    for _ in range(args.repeat):
        seconds, peak = timed(ours)
        times["profile"].append(seconds)
        rss["profile"] = max(rss["profile"], peak)
        total = 0.0
        for command in theirs:
            seconds, peak = timed(command)
            total += seconds
            rss["nfdump"] = max(rss["nfdump"], peak)
        times["nfdump"].append(total)
    print(f"{args.records:,} flow records, {args.repeat} runs each, medians "
          f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    print(f"  {'':34} {'seconds':>8} {'records/s':>12} {'peak RSS':>10}")
    labels = {"profile": "truesource profile (all tables)", "nfdump": f"nfdump x{len(theirs)} (the report's queries)"}
    for name, label in labels.items():
        median = statistics.median(times[name])
        print(f"  {label:34} {median:8.2f} {args.records / median:12,.0f} {rss[name] / 1e6:8.0f} MB")
    ratio = statistics.median(times["nfdump"]) / statistics.median(times["profile"])
    print(f"  profile is {ratio:.2f}x nfdump's speed for the same tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
