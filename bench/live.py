#!/usr/bin/env python3
"""Live-capture benchmark: `truesource capture` on a veth in namespaces, driven at rising rates.

For 1 and 2 workers and each target rate, a fresh sensor captures on the mirror end of a veth pair
(tests/wire.py) while tcpreplay sends the benchmark capture (bench/make_capture.py) from the other end;
optionally dnsperf sends queries to a tiny unbound instead. Each point is run --repeat times, interleaved,
and the table shows medians: achieved send rate, frames decoded, kernel drops and the sensor's CPU seconds
per million packets. The generator shares the machine's cores with the sensor, so a drop at a high rate can
be the generator starving the sensor; the CPU cost per packet is the figure that compares across machines.
Everything measured goes to bench/out/live-results.json. Needs root (namespaces), tcpreplay; dnsperf and
unbound for --dnsperf (installed with apt-get when missing and root).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import pcapy  # noqa: E402

from sensor.capture.live import default_filter  # noqa: E402
from wire import Wire, available  # noqa: E402

OUT = BENCH / "out" / "live"
RESULTS = BENCH / "out" / "live-results.json"
DEFAULT_PACKETS = 200_000
DEFAULT_RULES = 100_000
DEFAULT_RATES = "20k,50k,100k,200k,400k,top"
DEFAULT_DNSPERF_RATES = "20k,50k,top"  # dnsperf and unbound together top out near 60,000 queries/s here
DEFAULT_WORKERS = "1,2"
DEFAULT_REPEAT = 3
# Each point sends for at least this long (the capture is looped): long enough that the kernel ring (64 MiB,
# about 240,000 frames of this mix) cannot hide a sensor that falls behind, short enough for a 10-minute run.
DEFAULT_SECONDS = 4.0
TOP_GUESS_PPS = 400_000  # tcpreplay's top speed into a veth here (preloaded): sizes the --topspeed point
SETTLE = 1.0  # seconds between the generator's end and SIGTERM: the sensor polls every 100 ms
START_TIMEOUT = 60.0  # seconds for the sensor to load its rules and open the interface
STOP_TIMEOUT = 30.0  # seconds for the sensor to finish its batch, write its summary and exit
WORKERS_SETTLE = 0.5  # seconds after "capturing on" for forked workers to reach their loop
BATCH_FRAMES = 4096
RETRIES = 2  # runs of a point lost to something outside the benchmark (see SensorLost) that are made again

# dnsperf mode: queries go to an unbound in the sensor namespace that answers everything NXDOMAIN from a
# static root zone (dnsperf needs answers: without them it sends about 2,000 queries/s, see README).
SENSOR_ADDRESS = "10.98.0.1"  # tests/wire.py gives the mirror end this address
DNSPERF_TIMEOUT = 1  # seconds before dnsperf gives a query up
DNSPERF_OUTSTANDING = 2_000  # queries in flight at most: rate x latency stays well below this on a veth
DNSPERF_CLIENTS = 8  # sockets: spreads source ports, like several clients behind the mirror
QUERY_LINES = 20_000  # lines in the dnsperf input, read in a cycle
HIT_EVERY = 100  # one query line in HIT_EVERY asks a rule name
UNBOUND_CONF = """\
# truesource bench/live.py: answers every query NXDOMAIN from a static root zone; never recurses.
server:
    directory: "{dir}"
    chroot: ""
    username: ""
    pidfile: ""
    use-syslog: no
    logfile: "{dir}/unbound.log"
    verbosity: 0
    interface: {address}
    port: 53
    do-ip6: no
    do-tcp: no
    access-control: 0.0.0.0/0 allow
    module-config: "iterator"
    local-zone: "." static
    num-threads: 1
    num-queries-per-thread: 4096
    ratelimit: 0
    ip-ratelimit: 0
    so-rcvbuf: 4m
remote-control:
    control-enable: no
"""


@dataclass(frozen=True)
class Target:
    """A point's send rate: packets (or queries) per second, or None for as fast as the generator goes."""

    pps: int | None

    @property
    def label(self) -> str:
        return "top" if self.pps is None else f"{self.pps:,}"


def parse_rates(text: str) -> list[Target]:
    targets = []
    for item in text.split(","):
        item = item.strip().lower()
        if item in ("top", "topspeed"):
            targets.append(Target(None))
            continue
        scale = {"k": 1_000, "m": 1_000_000}.get(item[-1:], 1)
        number = item[:-1] if scale > 1 else item
        try:
            pps = int(float(number) * scale)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--rates: {item!r} is not a rate (e.g. 50000, 50k, top)") from None
        if pps <= 0:
            raise argparse.ArgumentTypeError(f"--rates: {item!r} must be positive")
        targets.append(Target(pps))
    return targets


def parse_workers(text: str) -> list[int]:
    try:
        workers = [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers: {text!r} is not a list of counts (e.g. 1,2)") from None
    if any(w < 1 for w in workers):
        raise argparse.ArgumentTypeError("--workers: each count must be at least 1")
    return workers


# --- the capture and what the sensor should see of it ---------------------------------------------------


def ensure_capture(packets: int, rules: int, regenerate: bool) -> dict:
    """bench/make_capture.py's output in bench/out/live, made when missing or made with other options."""
    description_path = OUT / "capture.json"
    if description_path.exists() and not regenerate:
        description = json.loads(description_path.read_text())
        if (description["packets"] == packets and description["rules"] == rules
                and all(os.path.exists(p) for p in description["paths"].values())):
            return description
    command = [sys.executable, str(BENCH / "make_capture.py"), "--packets", str(packets), "--rules", str(rules),
               "--out-dir", str(OUT)]
    print("making the capture:", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return json.loads(description_path.read_text())


def frames_passing_filter(path: str, bpf: str) -> int:
    """Frames of the capture that the sensor's capture filter keeps: all it can decode of one pass."""
    reader = pcapy.open_offline(path)
    reader.setfilter(bpf)
    frames = 0
    while True:
        _, meta = reader.next_batch(BATCH_FRAMES)
        if not meta:
            return frames
        frames += len(meta) // 16


def write_query_file(rules_path: str, path: Path) -> list[bool]:
    """dnsperf's input: mostly benign names, one line in HIT_EVERY a rule name. Returns which lines hit."""
    rule_names = []
    with open(rules_path, encoding="utf-8") as handle:
        for line in handle:
            name = line.strip().lower().rstrip(".")
            if not name or name.startswith("#"):
                continue
            rule_names.append("q." + name[2:] if name.startswith("*.") else name)  # below a `*.` rule, not its apex
            if len(rule_names) >= QUERY_LINES // HIT_EVERY:
                break
    hits = []
    with open(path, "w", encoding="ascii") as handle:
        for i in range(QUERY_LINES):
            qtype = "AAAA" if i % 3 == 2 else "A"
            if i % HIT_EVERY == HIT_EVERY - 1:
                handle.write(f"{rule_names[(i // HIT_EVERY) % len(rule_names)]} {qtype}\n")
                hits.append(True)
            else:
                handle.write(f"www{i % 7}.site{i}.example.net {qtype}\n")
                hits.append(False)
    return hits


def expected_hits(hit_lines: list[bool], sent: int) -> int:
    """Hits in the first `sent` lines of the query file read in a cycle (dnsperf's threads share one reader)."""
    loops, rest = divmod(sent, len(hit_lines))
    return loops * sum(hit_lines) + sum(hit_lines[:rest])


# --- measuring the sensor ---------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (the forked workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        queue.extend(children.get(current, []))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of every live thread of the sensor and its workers, in nanosecond resolution.

    /proc/PID/task/TID/schedstat, not /proc/PID/stat: the latter counts 10 ms ticks, too coarse for a point
    that costs the sensor a tenth of a second. A thread that exited is no longer listed; the sensor's threads
    (ZeroMQ's I/O threads) live as long as it does, so nothing is lost between two snapshots of a running sensor.
    """
    total = 0
    for pid_ in process_tree(pid):
        try:
            tasks = os.listdir(f"/proc/{pid_}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid_}/task/{task}/schedstat", encoding="ascii") as handle:
                    total += int(handle.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def link_stats(namespace: str, iface: str) -> dict:
    result = subprocess.run(["ip", "-n", namespace, "-s", "-j", "link", "show", "dev", iface],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)[0]["stats64"]


def softnet_dropped() -> int:
    """Frames the kernel's per-CPU input backlog dropped (all namespaces): a veth delivers through it."""
    with open("/proc/net/softnet_stat", encoding="ascii") as handle:
        return sum(int(line.split()[1], 16) for line in handle)


def wire_counters(wire: Wire) -> dict:
    sender, mirror = link_stats(wire.sender, wire.sender_iface), link_stats(wire.sensor, wire.sensor_iface)
    return {"sender_tx_dropped": sender["tx"]["dropped"], "mirror_rx_packets": mirror["rx"]["packets"],
            "mirror_rx_dropped": mirror["rx"]["dropped"], "mirror_tx_packets": mirror["tx"]["packets"],
            "softnet_dropped": softnet_dropped()}


class SensorLost(RuntimeError):
    """The sensor ended before the benchmark stopped it (another session's signal, a reused pid): run it again."""


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Sensor:
    """One `truesource capture` in the sensor namespace, its standard error in a file."""

    def __init__(self, wire: Wire, rules: str, workers: int, buffer_mb: int | None, name: str) -> None:
        self.summary_path = OUT / f"{name}.summary.json"
        self.stderr_path = OUT / f"{name}.stderr"
        self.summary_path.unlink(missing_ok=True)
        command = wire.sensor_command("capture", "-i", wire.sensor_iface, "--rules", rules, "--workers",
                                      str(workers), "--out", os.devnull, "--summary-json", str(self.summary_path))
        if buffer_mb is not None:
            command += ["--buffer-mb", str(buffer_mb)]
        self.workers = workers
        with open(self.stderr_path, "wb") as err:
            # `ip netns exec` execs the command: this pid is the sensor's own, and wait4 gives its rusage
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                            cwd=ROOT)

    def wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if "capturing on" in self.stderr_path.read_text(errors="replace"):
                if self.workers > 1:
                    time.sleep(WORKERS_SETTLE)
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the sensor did not start:\n{self.stderr_tail()}")

    def stop(self) -> tuple[int, float]:
        """SIGTERM, then the exit code and the whole process's CPU seconds (its reaped workers included)."""
        if not running(self.process.pid):
            raise SensorLost(f"the sensor ended before it was stopped:\n{self.stderr_tail()}")
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            try:
                pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: no exit code, no rusage
                raise SensorLost("the sensor's exit was collected by something else") from None
            if pid:
                break
            if time.monotonic() > deadline:
                self.process.kill()
                pid, status, usage = os.wait4(self.process.pid, 0)
                break
            time.sleep(0.02)
        self.process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        return self.process.returncode, usage.ru_utime + usage.ru_stime

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def summary(self) -> dict:
        return json.loads(self.summary_path.read_text())

    def stderr_tail(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-2000:]


# --- the generators -----------------------------------------------------------------------------------------


def field_after(text: str, label: str) -> str | None:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(label):
            return line[len(label):].strip()
    return None


def send_tcpreplay(wire: Wire, capture: str, target: Target, loops: int) -> dict:
    """The capture `loops` times out of the sender end; tcpreplay's own report of what it sent."""
    rate = ["--topspeed"] if target.pps is None else ["--pps", str(target.pps)]
    # --preload-pcap: read the file into memory first, so the disk never sets the pace
    command = ["ip", "netns", "exec", wire.sender, "tcpreplay", "--preload-pcap", "-i", wire.sender_iface,
               f"--loop={loops}", *rate, capture]
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    text = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"tcpreplay exited {result.returncode}:\n{text[-2000:]}")
    actual = field_after(text, "Actual:")  # "N packets (B bytes) sent in S seconds"
    rated = field_after(text, "Rated:")  # "X Bps, Y Mbps, Z pps"
    if actual is None or rated is None:
        raise RuntimeError(f"cannot read tcpreplay's report:\n{text[-2000:]}")
    words = actual.split()
    return {"command": command, "sent": int(words[0]), "seconds": float(words[-2]),
            "pps": float(rated.split(",")[2].split()[0]),
            "failed": int(field_after(text, "Failed packets:") or 0)}


def send_dnsperf(wire: Wire, queries: Path, target: Target, seconds: float) -> dict:
    """dnsperf queries to the unbound in the sensor namespace for `seconds`; dnsperf's own report."""
    rate = [] if target.pps is None else ["-Q", str(target.pps)]
    command = ["ip", "netns", "exec", wire.sender, "dnsperf", "-s", SENSOR_ADDRESS, "-d", str(queries),
               "-l", f"{seconds:g}", "-t", str(DNSPERF_TIMEOUT), "-c", str(DNSPERF_CLIENTS),
               "-q", str(DNSPERF_OUTSTANDING), "-O", "suppress=timeouts", *rate]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    text = result.stdout + result.stderr
    sent, completed, run_time = (field_after(text, label) for label in
                                 ("Queries sent:", "Queries completed:", "Run time (s):"))
    if result.returncode != 0 or sent is None or completed is None or run_time is None:
        raise RuntimeError(f"dnsperf exited {result.returncode}:\n{text[-2000:]}")
    sent_n, seconds_run = int(sent), float(run_time)
    return {"command": command, "sent": sent_n, "completed": int(completed.split()[0]), "seconds": seconds_run,
            "pps": sent_n / seconds_run if seconds_run else 0.0, "failed": 0}


class Unbound:
    """The dnsperf target: unbound in the sensor namespace, answering NXDOMAIN from a static root zone."""

    def __init__(self, wire: Wire) -> None:
        conf = OUT / "unbound.conf"
        conf.write_text(UNBOUND_CONF.format(dir=OUT, address=SENSOR_ADDRESS))
        self.log = OUT / "unbound.out"
        with open(self.log, "wb") as out:
            # -d: foreground (this pid is unbound's); -p: no pid file
            self.process = subprocess.Popen(["ip", "netns", "exec", wire.sensor, shutil.which("unbound") or "unbound",
                                             "-d", "-p", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            probe = wire.sender_exec(["dig", f"@{SENSOR_ADDRESS}", "+time=1", "+tries=1", "probe.bench.", "A"])
            if "status: NXDOMAIN" in probe.stdout:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"unbound did not answer:\n{self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def ensure_dnsperf_tools() -> str | None:
    """None when dnsperf, unbound and dig are there (installed with apt-get when missing), else why not."""
    wanted = {"dnsperf": "dnsperf", "unbound": "unbound", "dig": "bind9-dnsutils"}
    missing = [package for program, package in wanted.items() if shutil.which(program) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing", " ".join(missing), flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env,
                       capture_output=True)
        missing = [package for program, package in wanted.items() if shutil.which(program) is None]
    return f"missing: {', '.join(missing)}" if missing else None


# --- one point, medians, the table ---------------------------------------------------------------------------


@dataclass
class Context:
    wire: Wire
    capture: str
    rules: str
    capture_packets: int
    filtered: int  # frames of one pass through the capture the filter keeps
    seconds: float
    buffer_mb: int | None
    queries: Path | None = None
    hit_lines: list[bool] | None = None


def loops_for(target: Target, ctx: Context) -> int:
    pps = target.pps or TOP_GUESS_PPS
    return max(1, math.ceil(pps * ctx.seconds / ctx.capture_packets))


def run_point(ctx: Context, driver: str, workers: int, target: Target) -> dict:
    """Start a sensor, drive the wire, stop the sensor: what was sent, decoded, dropped, and the CPU spent."""
    name = f"{driver}-w{workers}-{target.label.replace(',', '')}"
    sensor = Sensor(ctx.wire, ctx.rules, workers, ctx.buffer_mb, name)
    try:
        sensor.wait_started()
        wire_before, cpu_before = wire_counters(ctx.wire), tree_cpu_seconds(sensor.process.pid)
        if driver == "idle":  # nothing sent: what polling an empty wire costs
            time.sleep(ctx.seconds)
            sent = {"command": None, "sent": 0, "failed": 0, "seconds": ctx.seconds, "pps": 0.0}
            expected = 0
        elif driver == "tcpreplay":
            loops = loops_for(target, ctx)
            sent = send_tcpreplay(ctx.wire, ctx.capture, target, loops)
            expected = loops * ctx.filtered if sent["sent"] == loops * ctx.capture_packets else None
        else:
            sent = send_dnsperf(ctx.wire, ctx.queries, target, ctx.seconds)
            expected = None
        time.sleep(SETTLE)
        cpu_window = tree_cpu_seconds(sensor.process.pid) - cpu_before
        wire_after = wire_counters(ctx.wire)
        code, cpu_total = sensor.stop()
    finally:
        sensor.kill()
    if code != 0:
        raise RuntimeError(f"the sensor exited {code}:\n{sensor.stderr_tail()}")
    counters = sensor.summary()["counters"]
    decoded = counters["packets"]
    wire = {key: wire_after[key] - wire_before[key] for key in wire_after}
    run = {"driver": driver, "workers": workers, "target_pps": target.pps, "sent": sent["sent"],
           "failed": sent["failed"], "send_seconds": sent["seconds"], "achieved_pps": round(sent["pps"], 1),
           "decoded": decoded, "received": counters["received"], "kernel_drops": counters["kernel_drops"],
           "interface_drops": counters["interface_drops"], "dns_queries": counters["dns_queries"],
           "dns_responses": counters["dns_responses"], "hits": counters["hits"],
           "wire": wire, "cpu_seconds": round(cpu_window, 4), "cpu_seconds_whole_process": round(cpu_total, 4),
           "cpu_seconds_per_million": round(cpu_window / decoded * 1e6, 3) if decoded else None,
           "command": sent["command"]}
    run["cpu_seconds_per_second"] = round(cpu_window / (sent["seconds"] + SETTLE), 4)
    if driver in ("tcpreplay", "idle"):
        run["expected_decoded"] = expected
        run["clean"] = (expected is not None and decoded == expected and run["kernel_drops"] == 0
                        and run["failed"] == 0)
    else:
        run["dnsperf_completed"] = sent["completed"]
        run["expected_hits"] = expected_hits(ctx.hit_lines, sent["sent"])
        run["expected_decoded"] = None
        run["clean"] = run["kernel_drops"] == 0 and counters["dns_queries"] == sent["sent"]
    return run


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (driver, workers, target): medians over the repeats, and how many repeats were clean."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["driver"], run["workers"], run["target_pps"]), []).append(run)
    rows = []
    for (driver, workers, target), group in groups.items():
        rows.append({
            "driver": driver, "workers": workers, "target_pps": target, "runs": len(group),
            "clean_runs": sum(r["clean"] for r in group),
            **{key: median([r[key] for r in group]) for key in (
                "achieved_pps", "sent", "decoded", "expected_decoded", "kernel_drops", "cpu_seconds",
                "cpu_seconds_per_million", "cpu_seconds_per_second", "cpu_seconds_whole_process", "dns_queries",
                "dns_responses", "hits")},
            "wire_drops": median([r["wire"]["sender_tx_dropped"] + r["wire"]["mirror_rx_dropped"] for r in group]),
            "softnet_dropped": median([r["wire"]["softnet_dropped"] for r in group]),
        })
    return rows


def highest_clean(rows: list[dict], driver: str, workers: int) -> dict | None:
    """The fastest point (by achieved rate) that was clean in every repeat."""
    clean = [r for r in rows if r["driver"] == driver and r["workers"] == workers and r["clean_runs"] == r["runs"]]
    return max(clean, key=lambda r: r["achieved_pps"], default=None)


def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(rows: list[dict]) -> None:
    header = (f"{'driver':<10}{'workers':>8}{'target pps':>12}{'sent pps':>11}{'sent':>11}{'decoded':>11}"
              f"{'expected':>11}{'k.drops':>9}{'w.drops':>9}{'CPU s':>8}{'CPU s/M':>9}{'clean':>7}")
    print(header)
    for r in rows:
        if r["driver"] == "idle":
            continue
        target = "top" if r["target_pps"] is None else f"{r['target_pps']:,}"
        print(f"{r['driver']:<10}{r['workers']:>8}{target:>12}{number(r['achieved_pps']):>11}{number(r['sent']):>11}"
              f"{number(r['decoded']):>11}{number(r['expected_decoded']):>11}{number(r['kernel_drops']):>9}"
              f"{number(r['wire_drops']):>9}{number(r['cpu_seconds'], 2):>8}"
              f"{number(r['cpu_seconds_per_million'], 2):>9}"
              f"{r['clean_runs']:>5}/{r['runs']}")


def tool_version(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return next((line.strip() for line in lines if "ersion" in line), lines[0].strip() if lines else "unknown")


def environment() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "tcpreplay": tool_version(["tcpreplay", "--version"]), "dnsperf": tool_version(["dnsperf", "-h"]),
            "unbound": tool_version(["unbound", "-V"]),
            "commit": tool_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=parse_rates, default=parse_rates(DEFAULT_RATES),
                        help=f"target packets/s, comma separated, k/M suffixes, 'top' for --topspeed "
                             f"(default {DEFAULT_RATES})")
    parser.add_argument("--workers", type=parse_workers, default=parse_workers(DEFAULT_WORKERS),
                        help=f"worker counts to measure (default {DEFAULT_WORKERS})")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs of each point (medians shown)")
    parser.add_argument("--packets", type=int, default=DEFAULT_PACKETS, help="frames in the capture")
    parser.add_argument("--rules", type=int, default=DEFAULT_RULES, help="names in the rule file")
    parser.add_argument("--regenerate", action="store_true", help="remake the capture and rule file")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                        help="shortest send per point: the capture is looped to last this long")
    parser.add_argument("--buffer-mb", type=int, help="the sensor's kernel ring per worker (default: the sensor's)")
    parser.add_argument("--dnsperf", action="store_true", help="also drive the wire with dnsperf queries to unbound")
    parser.add_argument("--dnsperf-rates", type=parse_rates, default=parse_rates(DEFAULT_DNSPERF_RATES),
                        help=f"target queries/s for dnsperf (default {DEFAULT_DNSPERF_RATES})")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"where the JSON goes (default {RESULTS})")
    parser.add_argument("--idle", action="store_true", help="also time an idle sensor (nothing sent) each round")
    parser.add_argument("--no-tcpreplay", action="store_true", help="with --dnsperf: dnsperf only")
    args = parser.parse_args(argv)

    reason = available()
    if reason is None and shutil.which("tcpreplay") is None and not args.no_tcpreplay:
        reason = "tcpreplay is not installed (apt-get install tcpreplay)"
    if reason is None and args.dnsperf:
        reason = ensure_dnsperf_tools()
    if reason:
        print(f"bench/live.py: cannot run: {reason}", file=sys.stderr)
        return 2
    drivers = ([] if args.no_tcpreplay else ["tcpreplay"]) + (["dnsperf"] if args.dnsperf else [])
    if not drivers:
        parser.error("--no-tcpreplay leaves nothing to run without --dnsperf")

    OUT.mkdir(parents=True, exist_ok=True)
    description = ensure_capture(args.packets, args.rules, args.regenerate)
    capture, rules = description["paths"]["capture.pcap"], description["paths"]["rules.txt"]
    bpf = default_filter((53,))
    filtered = frames_passing_filter(capture, bpf)
    print(f"capture {os.path.relpath(capture)}: {description['packets']:,} frames, {filtered:,} of them kept by the "
          f"sensor's default filter; rules {os.path.relpath(rules)}: {description['rules']:,} names")
    print(f"{os.cpu_count()} CPUs, shared: the generator (tcpreplay, or dnsperf and unbound) runs on the same cores as "
          f"the sensor, so compare CPU s per million packets, not the highest rate alone")
    rates = {"idle": [Target(None)], "tcpreplay": args.rates, "dnsperf": args.dnsperf_rates}
    if args.idle:
        drivers.insert(0, "idle")
    print(f"points: workers {args.workers}; " + "; ".join(f"{d} {', '.join(t.label for t in rates[d])}"
                                                          for d in drivers if d != "idle")
          + f"; {args.repeat} runs each, interleaved; each sends >= {args.seconds:g} s", flush=True)

    runs: list[dict] = []
    lost_runs: list[str] = []
    started = time.monotonic()
    with Wire() as wire:
        ctx = Context(wire, capture, rules, description["packets"], filtered, args.seconds, args.buffer_mb)
        unbound = None
        try:
            if "dnsperf" in drivers:
                ctx.queries = OUT / "dnsperf-queries.txt"
                ctx.hit_lines = write_query_file(rules, ctx.queries)
                unbound = Unbound(wire)
            for round_number in range(args.repeat):
                for driver in drivers:
                    for workers in args.workers:
                        for target in rates[driver]:
                            for attempt in range(RETRIES + 1):
                                try:
                                    run = run_point(ctx, driver, workers, target)
                                    break
                                except SensorLost as lost:
                                    if attempt == RETRIES:
                                        raise
                                    lost_runs.append(f"{driver} w{workers} {target.label}: {lost}")
                                    print(f"  lost a run, running it again: {str(lost).splitlines()[0]}", flush=True)
                            run["round"] = round_number + 1
                            runs.append(run)
                            label = "-" if driver == "idle" else target.label
                            print(f"  round {round_number + 1} {driver} w{workers} {label:>8}: "
                                  f"{run['achieved_pps']:>10,.0f} pps sent, {run['decoded']:>9,} decoded, "
                                  f"{run['kernel_drops']:,} kernel drops, " + (
                                      f"{run['cpu_seconds_per_second']:.3f} CPU s/s" if driver == "idle" else
                                      f"{run['cpu_seconds_per_million']:.2f} CPU s/M")
                                  + ("" if run["clean"] else "  NOT CLEAN"), flush=True)
        finally:
            if unbound is not None:
                unbound.stop()
    elapsed = time.monotonic() - started

    rows = summarise(runs)
    print()
    print_table(rows)
    print("sent pps: the generator's achieved rate; decoded: the sensor's `packets`; expected: frames the capture "
          "filter keeps of what was sent; k.drops: kernel drops (pcap); w.drops: dropped on the veth; CPU s: the "
          "sensor and its workers while the generator ran; clean: runs with no drop and decoded == expected.\n"
          "dnsperf: sent counts queries, decoded counts queries and unbound's answers; clean: no drop and every "
          "query decoded")
    for row in rows:
        if row["driver"] == "idle":
            print(f"idle sensor, {row['workers']} worker{'s' if row['workers'] > 1 else ''}: "
                  f"{row['cpu_seconds_per_second']:.3f} CPU s per second (polling an empty wire)")
    best = {}
    for driver in (d for d in drivers if d != "idle"):
        for workers in args.workers:
            row = highest_clean(rows, driver, workers)
            best[f"{driver}/{workers}"] = row
            shown = ("none" if row is None else
                     f"{number(row['achieved_pps'])} pps sent (target "
                     f"{'top' if row['target_pps'] is None else number(row['target_pps'])}), "
                     f"{number(row['cpu_seconds_per_million'], 2)} CPU s per million packets")
            print(f"highest rate with no drop, {driver}, {workers} worker{'s' if workers > 1 else ''}: {shown}")
    print(f"took {elapsed:.0f} s")

    results = {"capture": {k: description[k] for k in ("packets", "file_bytes", "rules", "seed", "counts")},
               "filter": bpf, "frames_kept_by_filter": filtered,
               "options": {"rates": [t.pps for t in args.rates], "dnsperf_rates": [t.pps for t in args.dnsperf_rates],
                           "workers": args.workers, "repeat": args.repeat,
                           "seconds": args.seconds, "buffer_mb": args.buffer_mb, "drivers": drivers},
               "points": rows, "highest_clean": best, "runs": runs, "lost_runs": lost_runs,
               "seconds": round(elapsed, 1),
               "environment": environment()}
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {os.path.relpath(args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
