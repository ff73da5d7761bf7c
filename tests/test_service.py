"""The service in the foreground: the unit's own ExecStart command line against a veth in a namespace, with a
NOTIFY_SOCKET this test listens on, the way systemd would run it.

READY=1 arrives once the capture is open, WATCHDOG=1 pings keep arriving within the interval WATCHDOG_USEC sets,
SIGHUP reloads the rules and the live configuration keys (new rules take effect; the reload is logged and
published), SIGTERM stops with STOPPING=1 and final statistics. Then the restrictions the unit imposes, without
systemd: an unprivileged user holding only CAP_NET_RAW and CAP_NET_ADMIN (setpriv, as AmbientCapabilities= does)
captures, and does not without them; started as root with --user, it captures after dropping to that user.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from dnslib import DNSRecord
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from conftest import ROOT, free_tcp_endpoint

pytestmark = pytest.mark.netns

UNIT = ROOT / "systemd" / "truesource.service"
TRUESOURCE = Path(sys.prefix) / "bin" / "truesource"
WATCHDOG_USEC = 4_000_000  # the sensor pings every 2 s; systemd would kill it after 4 s without one
QUERIES = 20  # per name and round


class NotifySocket:
    """A unix datagram socket standing in for systemd's: collects (time, {key: value}) per datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, dict]] = []
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        os.chmod(path, 0o666)  # the sensor may run as another user
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, key: str, value: str | None = None, after: int = 0, timeout: float = 30) -> int:
        """Index of the first message from `after` on that sets `key` (to `value`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, (_, fields) in enumerate(self.messages[after:], after):
                if key in fields and (value is None or fields[key] == value):
                    return index
            time.sleep(0.05)
        raise AssertionError(f"no {key}={value} from the sensor; got {self.messages}")

    def times(self, key: str) -> list[float]:
        return [when for when, fields in self.messages if key in fields]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


def unit_argv(config: Path) -> list[str]:
    """The unit's ExecStart, with this checkout's truesource and the test's configuration file."""
    line = next(line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0] == "/opt/truesource/bin/truesource"
    return [str(TRUESOURCE)] + [str(config) if arg == "/etc/truesource/sensor.toml" else arg for arg in argv[1:]]


def queries_pcap(path: Path, tag: str) -> None:
    """QUERIES queries each for TAG-N.evil.example and TAG-N.newbad.example, client to resolver on the wire."""
    frames = []
    for i in range(QUERIES):
        for domain in ("evil.example", "newbad.example"):
            frames.append(Ether() / IP(src="10.98.0.2", dst="10.98.0.1") / UDP(sport=30000 + len(frames), dport=53)
                          / DNSRecord.question(f"{tag}-{i}.{domain}").pack())
    wrpcap(str(path), frames)


@pytest.fixture
def workdir():
    """A directory every user can use: the sensor may run as nobody (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="truesource-service-"))
    path.chmod(0o777)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def write_config(workdir: Path, wire, extra: str = "", stats_interval: float = 0.5) -> Path:
    rules = workdir / "rules.txt"
    if not rules.exists():
        rules.write_text("evil.example\n")
        rules.chmod(0o644)
    config = workdir / "sensor.toml"
    config.write_text(f"""
[capture]
interface = "{wire.sensor_iface}"
rules = ["{rules}"]
publish = "ipc://{workdir}/events"
out = ["{workdir}/hits.jsonl"]
stats_interval = {stats_interval}
{extra}
""")
    config.chmod(0o644)
    return config


def start(wire, argv: list[str], notify: NotifySocket, prefix: list[str] = ()) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    return subprocess.Popen(["ip", "netns", "exec", wire.sensor, *prefix, *argv], cwd="/", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def hits(workdir: Path) -> list[str]:
    path = workdir / "hits.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["dns"]["question"]["name"] for line in path.read_text().splitlines()]


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the sensor did not stop on SIGTERM: " + proc.communicate()[1]) from None
    return err


def metrics(wire, address: str) -> str:
    code = f"import urllib.request as u; print(u.urlopen('http://{address}/metrics', timeout=5).read().decode())"
    result = subprocess.run(["ip", "netns", "exec", wire.sensor, sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def metric(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")
                      or line.startswith(name + "{") and line.split()[0] == name))


def test_unit_command_line_notify_watchdog_reload_and_stop(wire, workdir):
    metrics_address = "127.0.0.1:" + free_tcp_endpoint().rsplit(":", 1)[1]
    config = write_config(workdir, wire, f'metrics = "{metrics_address}"')
    notify = NotifySocket(workdir / "notify")
    stats = subprocess.Popen([sys.executable, "-m", "sensor", "tail", "--connect", f"ipc://{workdir}/events",
                              "--topic", "sensor.", "--with-topic", "--idle-exit", "60"], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    proc = start(wire, unit_argv(config), notify)
    try:
        ready = notify.wait_for("READY", "1")
        assert "capturing on" in notify.messages[ready][1].get("STATUS", "")
        queries_pcap(workdir / "round1.pcap", "r1")
        wire.replay(str(workdir / "round1.pcap"), pps=200)
        time.sleep(1.5)
        # the rules change (and the configuration: a live key and one that needs a restart), then SIGHUP
        (workdir / "rules.txt").write_text("evil.example\nnewbad.example\n")
        write_config(workdir, wire, f'metrics = "{metrics_address}"\nworkers = 2', stats_interval=0.7)
        mark = len(notify.messages)
        proc.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING", "1", after=mark)
        notify.wait_for("READY", "1", after=reloading)
        queries_pcap(workdir / "round2.pcap", "r2")
        wire.replay(str(workdir / "round2.pcap"), pps=200)
        time.sleep(1.5)
        scraped = metrics(wire, metrics_address)
        time.sleep(WATCHDOG_USEC / 1e6)  # one more watchdog period with no traffic
    finally:
        err = stop(proc)
        print(err)  # shown with -s: what journald would keep
        stats.terminate()
        stats_out, _ = stats.communicate(timeout=10)
        notify.close()
    assert proc.returncode == 0, err
    names = hits(workdir)
    # before the reload only the old rule hits; after it both do
    assert sum(n.startswith("r1-") and n.endswith(".evil.example") for n in names) == QUERIES
    assert not any(n.startswith("r1-") and n.endswith(".newbad.example") for n in names)
    assert sum(n.startswith("r2-") for n in names) == 2 * QUERIES
    # watchdog: pings all along, never further apart than systemd would allow
    pings = notify.times("WATCHDOG")
    assert len(pings) >= 3
    assert max(b - a for a, b in zip(pings, pings[1:], strict=False)) < WATCHDOG_USEC / 1e6
    assert any(fields.get("STOPPING") == "1" for _, fields in notify.messages)
    assert any("packets" in fields.get("STATUS", "") for _, fields in notify.messages)
    # the journal format: one line per event, syslog priority first, key=value details
    lines = err.splitlines()
    assert all(line.startswith("<") for line in lines[:3]), err
    assert any(line.startswith("<6>") and "event=reload" in line and "outcome=success" in line for line in lines), err
    assert any(line.startswith("<6>") and "event=config_reload" in line and "applied=stats_interval" in line
               for line in lines), err
    assert any(line.startswith("<4>") and "restart_needed=workers" in line for line in lines), err
    # sensor.reload and the final sensor.stats, published
    events = [(line.split(" ", 1)[0], json.loads(line.split(" ", 1)[1])) for line in stats_out.splitlines()]
    reloads = [e for topic, e in events if topic == "sensor.reload"]
    assert reloads and reloads[0]["truesource"]["reload"]["ok"] is True
    final = [e for topic, e in events if topic == "sensor.stats" and e["truesource"]["stats"]["final"]]
    assert len(final) == 1
    body = final[0]["truesource"]["stats"]
    assert body["total"]["hits"] == 3 * QUERIES and body["rules"] == {"loaded": 2, "reloads": 1, "reload_failures": 0}
    assert set(body["drops"]) == {"kernel", "interface", "publisher"} and body["last_packet"]
    # the Prometheus endpoint (scraped after round 2)
    assert metric(scraped, "truesource_hits_total") == 3 * QUERIES
    assert metric(scraped, "truesource_rules_loaded") == 2
    assert 'truesource_reloads_total{outcome="success"} 1' in scraped
    assert 'truesource_drops_total{cause="kernel"}' in scraped
    assert metric(scraped, "truesource_last_packet_timestamp_seconds") > time.time() - 120


def capture_as(wire, workdir, prefix: list[str], extra_args: list[str] = (), workers: int = 0
               ) -> tuple[list[str], str, list]:
    """Runs the unit's command line under `prefix`; returns /proc status of the sensor (and its workers) once
    ready, its standard error, the names that hit."""
    config = write_config(workdir, wire)
    notify = NotifySocket(workdir / "notify")
    proc = start(wire, unit_argv(config) + list(extra_args), notify, prefix)
    try:
        notify.wait_for("READY", "1", timeout=30)
        deadline = time.monotonic() + 20  # READY comes before the fork: wait for the workers
        while len(children(proc.pid)) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [proc.pid, *children(proc.pid)]  # the sensor and its capture workers, if any
        status = [Path(f"/proc/{pid}/status").read_text() for pid in pids]
        queries_pcap(workdir / "q.pcap", "u")
        wire.replay(str(workdir / "q.pcap"), pps=200)
        time.sleep(1.5)
    finally:
        err = stop(proc)
        notify.close()
    assert proc.returncode == 0, err
    return status, err, hits(workdir)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def status_field(status: str, name: str) -> list[str]:
    return next(line.split(":", 1)[1].split() for line in status.splitlines() if line.startswith(name + ":"))


NET_RAW, NET_ADMIN = 13, 12  # capability numbers (linux/capability.h)


def test_unprivileged_user_with_only_the_two_capabilities_captures(wire, workdir):
    """What the unit does with User=truesource and AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN."""
    nobody = pwd.getpwnam("nobody")
    setpriv = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--init-groups",
               "--inh-caps=-all,+net_raw,+net_admin", "--ambient-caps=-all,+net_raw,+net_admin",
               "--bounding-set=-all,+net_raw,+net_admin", "--no-new-privs"]
    statuses, _, names = capture_as(wire, workdir, setpriv)
    assert status_field(statuses[0], "Uid")[0] == str(nobody.pw_uid)
    effective = int(status_field(statuses[0], "CapEff")[0], 16)
    assert effective == (1 << NET_RAW) | (1 << NET_ADMIN)
    assert sum(n.endswith(".evil.example") for n in names) == QUERIES


def test_unprivileged_user_without_capabilities_cannot_capture(wire, workdir):
    """The control: the same user without the capabilities is refused, and the error names them."""
    nobody = pwd.getpwnam("nobody")
    config = write_config(workdir, wire)
    result = subprocess.run(["ip", "netns", "exec", wire.sensor, "setpriv", f"--reuid={nobody.pw_uid}",
                             f"--regid={nobody.pw_gid}", "--init-groups", "--inh-caps=-all",
                             *unit_argv(config)], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 2, result.stderr
    assert "CAP_NET_RAW" in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_root_drops_to_user_after_opening_the_capture(wire, workdir, workers):
    nobody = pwd.getpwnam("nobody")
    statuses, err, names = capture_as(wire, workdir, [], ["--user", "nobody", "--workers", str(workers)],
                                      workers if workers > 1 else 0)
    assert len(statuses) == (1 if workers == 1 else 1 + workers)
    for status in statuses:  # the parent and every worker: all ids the user's, no capability left
        assert status_field(status, "Uid") == [str(nobody.pw_uid)] * 4
        assert status_field(status, "Gid") == [str(nobody.pw_gid)] * 4
        assert status_field(status, "Groups") == [str(nobody.pw_gid)]
        for caps in ("CapEff", "CapPrm", "CapAmb"):
            assert int(status_field(status, caps)[0], 16) == 0, caps
    assert "dropped privileges to user nobody" in err
    assert sum(n.endswith(".evil.example") for n in names) == QUERIES


# The unit's sandbox, rebuilt with the kernel's own tools since no systemd runs here. File system and processes:
# ProtectSystem=strict (every mount read-only but the state directory, as ReadWritePaths/StateDirectory leave it),
# PrivateTmp, ProtectHome, PrivateDevices (a /dev of null, zero, full, random, urandom, tty), ProcSubset=pid with
# ProtectProc=invisible, ProtectKernelTunables (/sys read-only); then User= with only the two ambient capabilities
# and NoNewPrivileges (setpriv); then the unit's own SystemCallFilter= and RestrictAddressFamilies= as a seccomp
# filter, and MemoryDenyWriteExecute as the kernel's PR_SET_MDWE (tests/unit_seccomp.py, under the system Python
# with python3-seccomp). This checkout and its Python may live under /tmp, /home or /root (a CI clone, pyenv): they
# are bound back read-only, as a BindReadOnlyPaths= drop-in would (install.sh's venv uses the system Python).
# Not rebuilt: the IP firewall (IPAddressDeny=, cgroup BPF; docs/deployment.md says why it cannot see capture).
SANDBOX = r"""
set -e
state=$1; shift
keep=""
while [ "$1" != "--" ]; do keep="$keep $1"; shift; done
shift
mount --make-rprivate /
mount --bind "$state" "$state"
# Paths the sandbox would hide (/tmp, /var/tmp, /home, /root) but the test needs: parked in the state directory.
i=0
for path in $keep; do
    case $path in /tmp/*|/var/tmp/*|/home/*|/root/*)
        mkdir -p "$state/.keep$i" && mount -n --bind "$path" "$state/.keep$i" ;;
    esac
    i=$((i + 1))
done
for target in $(findmnt -rno TARGET | sort -u); do
    case $target in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$state") continue ;; esac
    mount -n -o remount,bind,ro "$target" 2>/dev/null || true
done
mount -n -t tmpfs -o mode=1777 tmpfs /tmp
mount -n -t tmpfs -o mode=1777 tmpfs /var/tmp
mount -n -t tmpfs -o mode=0755 tmpfs /home
mount -n -t tmpfs -o mode=0755 tmpfs /root
i=0
for path in $keep; do  # back where they were, read-only, as a BindReadOnlyPaths= drop-in would put them
    if [ -d "$state/.keep$i" ]; then mkdir -p "$path" && mount -n --move "$state/.keep$i" "$path"; fi
    i=$((i + 1))
done
mount -n -t tmpfs -o mode=0755,nosuid tmpfs /dev
for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    name=${node%%:*}; numbers=${node#*:}
    mknod -m 666 "/dev/$name" c "${numbers%:*}" "${numbers#*:}"
done
mkdir /dev/shm && mount -n -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -n -t proc -o subset=pid,hidepid=invisible proc /proc
mount -n -o remount,bind,ro /sys
exec "$@"
"""
SECCOMP = ["/usr/bin/python3", str(ROOT / "tests" / "unit_seccomp.py"), str(UNIT)]


@pytest.fixture
def statedir():
    """Like StateDirectory=: under /var/lib, the one writable place once the system is read-only."""
    path = Path(tempfile.mkdtemp(prefix="truesource-test-", dir="/var/lib"))
    path.chmod(0o777)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def sandboxed(statedir: Path) -> list[str]:
    nobody = pwd.getpwnam("nobody")
    keep = sorted({sys.base_prefix, str(ROOT)})  # this Python and this checkout, wherever they live
    return ["unshare", "--mount", "--", "sh", "-c", SANDBOX, "sh", str(statedir), *keep, "--",
            "setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--init-groups",
            "--inh-caps=-all,+net_raw,+net_admin", "--ambient-caps=-all,+net_raw,+net_admin",
            "--bounding-set=-all,+net_raw,+net_admin", "--no-new-privs", *SECCOMP]


PROBE = """
import mmap, os, socket
def refused(call):
    try:
        call()
    except OSError as err:
        return err.errno
    return 0
print(refused(lambda: open("/etc/truesource-probe", "w")),  # EROFS: ProtectSystem=strict
      refused(lambda: mmap.mmap(-1, 4096, prot=7)),  # EACCES: MemoryDenyWriteExecute
      refused(lambda: os.sched_setaffinity(0, {0})),  # EPERM: ~@resources
      refused(lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)),  # EPERM: not an allowed family
      os.listdir("/home") == [],  # ProtectHome: empty
      os.path.exists("/proc/net"), os.getuid())
"""


def test_captures_inside_the_units_sandbox_rebuilt_without_systemd(wire, statedir, monkeypatch):
    if subprocess.run(["/usr/bin/python3", "-c", "import seccomp"], capture_output=True).returncode != 0:
        pytest.fail("python3-seccomp is missing (make system-deps installs it)")
    probe = subprocess.run([*sandboxed(statedir), sys.executable, "-c", PROBE], capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode == 0, probe.stderr
    import errno

    nobody = pwd.getpwnam("nobody").pw_uid
    # the sandbox is really in force: each restriction refuses what it should
    assert probe.stdout.split() == [str(errno.EROFS), str(errno.EACCES), str(errno.EPERM), str(errno.EPERM), "True",
                                    "False", str(nobody)], probe.stdout
    # CacheDirectory=: systemd makes it writable and says where in $CACHE_DIRECTORY; the rules folder is read-only
    cache = statedir / "cache"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    monkeypatch.setenv("CACHE_DIRECTORY", str(cache))
    # two workers: the fanout group, the fork, and the workers' pipe in the private /tmp; metrics over TCP
    statuses, err, names = capture_as(wire, statedir, sandboxed(statedir),
                                      ["--workers", "2", "--metrics", "127.0.0.1:9156"], 2)
    assert len(statuses) == 3
    assert sum(n.endswith(".evil.example") for n in names) == QUERIES, err
    assert len(list(cache.glob("*.tsrules"))) == 1, err  # the compiled rules, kept where the unit lets it write
