#!/usr/bin/env python3
"""Soak: a live capture fed in a loop for minutes, rules reloaded every 30 s; does memory grow? (`make soak`)

    python bench/soak.py [--seconds 600] [--reload-every 30] [--pps 4000] [--packets 200000] [--workers 1]

A generated capture (bench/make_capture.py: thousands of clients, UDP and TCP DNS, background traffic, a
rule file) is sent by `tcpreplay --loop 0` into a veth (tests/wire.py: two network namespaces, no route out)
where `truesource capture` runs with every table on: attribution, heuristics (DGA and tunnel windows),
publisher, JSON lines to /dev/null, flows (the table, a Parquet store) and the query log (SQLite). Every
--reload-every seconds the rule file changes and `truesource control
reload` rebuilds it. The sensor's resident memory (VmRSS of its processes) is printed at the start, every
minute and at the end with the main counters; at the end every counter, and the growth from the end of the
first minute (the warm-up: tables filling to their limits) to the end. Needs root (namespaces). Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from memory import pss_kib, tree  # noqa: E402  the process tree's memory, as the memory-budget tests read it

from wire import Wire, available  # noqa: E402

OUT = ROOT / "build" / "soak"
SHOWN = ("packets", "dns_queries", "hits", "kernel_drops", "tcp_streams", "attribution_recent",
         "heuristics_tunnel_keys", "publisher_drops", "out_drops")


def make_capture(packets: int) -> tuple[Path, Path]:
    capture, rules = OUT / "capture.pcap", OUT / "rules.txt"
    info = OUT / "capture.json"
    if not capture.exists() or json.loads(info.read_text()).get("options", {}).get("packets") != packets:
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_capture.py"), "--packets", str(packets),
                        "--rules", "20000", "--out-dir", str(OUT)], check=True, stdout=subprocess.DEVNULL)
    return capture, rules


def optional_features(tmp: Path) -> list[str]:
    """Flows (kept in memory, written to a Parquet store) and the query log (SQLite), on as in production."""
    return ["--flows", "--flow-store", str(tmp / "flows"), "--internal", "10.0.0.0/8",
            "--query-log", str(tmp / "queries.db")]


def rss_kib(pid: int) -> int:
    """VmRSS of a process and its descendants (workers, the query-log writer), KiB."""
    total = 0
    for one in tree(pid):
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--reload-every", type=float, default=30)
    parser.add_argument("--pps", type=int, default=4000, help="tcpreplay packet rate")
    parser.add_argument("--packets", type=int, default=200_000, help="frames in the generated capture")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    reason = available()
    if reason:
        print(f"soak: {reason}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    capture, rules_source = make_capture(args.packets)
    tmp = Path(tempfile.mkdtemp(prefix="truesource-soak-"))
    rules = tmp / "soak.rules"
    rules.write_text(rules_source.read_text())
    events, control = f"ipc://{tmp}/events", f"ipc://{tmp}/control"
    features = optional_features(tmp)
    print(f"soak: {args.seconds:g} s at {args.pps} packets/s of {capture.name} ({args.packets:,} frames, looped), "
          f"reload every {args.reload_every:g} s, {args.workers} worker(s); optional: {features or 'none available'}")
    context = zmq.Context.instance()
    stats = context.socket(zmq.SUB)
    stats.setsockopt(zmq.LINGER, 0)
    stats.setsockopt(zmq.SUBSCRIBE, b"sensor.")
    reloads = {"asked": 0, "success": 0, "failure": 0}
    latest: dict = {}
    with Wire() as wire:
        log = open(tmp / "sensor.log", "w+")
        proc = subprocess.Popen(wire.sensor_command(
            "capture", "-i", wire.sensor_iface, "--rules", str(rules), "--workers", str(args.workers),
            "--publish", events, "--control", control, "--stats-interval", "5", "--out", "/dev/null",
            "--heuristics", "dga,tunnel", "--summary-json", str(tmp / "summary.json"), *features),
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        stats.connect(events)
        time.sleep(3)
        if proc.poll() is not None:
            print((tmp / "sensor.log").read_text(), file=sys.stderr)
            return 1
        start_rss = rss_kib(proc.pid)
        print(f"t=   0 s  rss {start_rss / 1024:7.1f} MiB (started, no traffic yet)")
        sender = subprocess.Popen(["ip", "netns", "exec", wire.sender, "tcpreplay", "-q", "--loop", "0",
                                   "--pps", str(args.pps), "-i", wire.sender_iface, str(capture)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        began = time.monotonic()
        next_reload, next_print, minute_rss = began + args.reload_every, began + 60, []
        try:
            while time.monotonic() - began < args.seconds:
                if stats.poll(500):
                    topic, line = stats.recv_multipart()
                    event = json.loads(line)
                    if topic == b"sensor.stats":
                        latest = event["truesource"]["stats"]["total"]
                    elif topic == b"sensor.reload":
                        reloads[event["event"]["outcome"]] += 1
                now = time.monotonic()
                if now >= next_reload:
                    next_reload += args.reload_every
                    reloads["asked"] += 1
                    with open(rules, "a") as handle:  # a change each time, so every reload builds a new set
                        handle.write(f"soak-reload-{reloads['asked']}.example\n")
                    subprocess.run([sys.executable, "-m", "sensor", "control", "reload", "--connect", control],
                                   cwd=ROOT, capture_output=True, timeout=30)
                if now >= next_print:
                    next_print += 60
                    rss, pss = rss_kib(proc.pid), pss_kib(proc.pid)
                    minute_rss.append(rss)
                    shown = ", ".join(f"{k} {latest.get(k, 0):,}" for k in SHOWN if k in latest)
                    print(f"t={now - began:4.0f} s  rss {rss / 1024:7.1f} MiB  pss {pss / 1024:7.1f} MiB  {shown}",
                          flush=True)
        finally:
            sender.send_signal(signal.SIGINT)
            sender.wait(timeout=30)
            end_rss = rss_kib(proc.pid)
            time.sleep(1)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            log.close()
        while stats.poll(1500):  # the final statistics and the last reload reports
            topic, line = stats.recv_multipart()
            event = json.loads(line)
            if topic == b"sensor.reload":
                reloads[event["event"]["outcome"]] += 1
        stats.close()
    summary = json.loads((tmp / "summary.json").read_text())
    print(f"t={args.seconds:4.0f} s  rss {end_rss / 1024:7.1f} MiB (end, before stop)")
    print(f"reloads: {reloads['asked']} asked, {reloads['success']} succeeded, {reloads['failure']} failed")
    print("every counter at the end:")
    for name, value in summary["counters"].items():
        print(f"  {name:32} {value:>14,}")
    warm = minute_rss[0] if minute_rss else start_rss
    print(f"resident memory: start {start_rss / 1024:.1f} MiB, after the first minute {warm / 1024:.1f} MiB, "
          f"end {end_rss / 1024:.1f} MiB; growth after warm-up {(end_rss - warm) / 1024:+.1f} MiB "
          f"({(end_rss - warm) / warm * 100:+.1f} %)")
    if minute_rss:
        print("per minute (MiB): " + ", ".join(f"{r / 1024:.1f}" for r in minute_rss))
    if len(minute_rss) >= 5:
        # The check of issue 14: after minute 5 (tables full) memory is flat: the last minute within 5 %.
        fifth, last = minute_rss[4], minute_rss[-1]
        change = (last - fifth) / fifth * 100
        print(f"minute 5 {fifth / 1024:.1f} MiB, minute {len(minute_rss)} {last / 1024:.1f} MiB: {change:+.1f} % "
              f"({'within' if abs(change) <= 5 else 'OUTSIDE'} 5 %)")
    print(f"sensor log (summary at its end): {tmp / 'sensor.log'}")
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
