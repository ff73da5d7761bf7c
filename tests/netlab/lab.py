"""A test network in namespaces: clients -> unbound (recursive) -> bind9 (authoritative for a test root).

    client ns                resolver ns                       upstream ns
    cl0 10.77.1.10-13 ---- rc0 10.77.1.1   ru0 10.77.2.1 ---- up0 10.77.2.2 root, .3 TLDs, .4 zones
        fd77:1::10-13          fd77:1::1       fd77:2::1          fd77:2::2,     ::3,     ::4

No namespace has a default route and the resolver does not forward, so lab traffic never leaves the lab.
Every name carries a tag made of the owner's pid and a random part: two runs never collide, and a later run
removes what a killed run left (its owner pid is gone).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from string import Template

from . import dig as digparse
from . import zones
from .packages import find_program
from .signing import sign_zones
from .topology import (
    CLIENT,
    CLIENT_IFACE,
    CLIENT_NET4,
    CLIENT_NET6,
    CLIENTS4,
    CLIENTS6,
    PREFIX4,
    PREFIX6,
    RESOLVER,
    RESOLVER_CLIENT4,
    RESOLVER_CLIENT6,
    RESOLVER_CLIENT_IFACE,
    RESOLVER_UPSTREAM4,
    RESOLVER_UPSTREAM6,
    RESOLVER_UPSTREAM_IFACE,
    ROLES,
    ROOT_SERVER4,
    UPSTREAM,
    UPSTREAM_ADDRS4,
    UPSTREAM_ADDRS6,
    UPSTREAM_IFACE,
)

NS_PREFIX = "netlab"  # namespace names: netlab<pid>-<hex>-<role>
TEMPLATES = Path(__file__).with_name("templates")
READY_TIMEOUT = 10.0  # seconds for named and unbound to answer; both take well under one here
STOP_TIMEOUT = 3.0  # seconds a daemon gets to exit on SIGTERM before SIGKILL
EXEC_TIMEOUT = 30.0  # default for lab.exec: no lab command should get near it
# dig's pinned source ports: below Linux's ephemeral range (32768-60999), so nothing else in the client
# namespace can hold one, and never reused within a lab, so no TCP TIME_WAIT gets in the way.
SPORT_FIRST, SPORT_LAST = 10000, 32000
# Sysctls for each namespace: no IPv6 duplicate-address wait (addresses usable at once), no router
# solicitations or autoconfiguration (no stray ICMPv6 on the wire), and explicitly no forwarding.
SYSCTLS = (
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.default.router_solicitations=0",
    "net.ipv6.conf.default.accept_ra=0",
    "net.ipv4.ip_forward=0",
    "net.ipv6.conf.all.forwarding=0",
)


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1  # prctl(2)


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGKILL when the test process dies, even by SIGKILL, so
    no daemon outlives its lab. (Namespaces and folders of such a run go at the next run's sweep.)"""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class LabError(RuntimeError):
    """The lab could not be built or a daemon would not come up; the message says which and why."""


def _run(argv: list[str], stdin: str | None = None) -> None:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=EXEC_TIMEOUT)
    if proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}\n{stdin or ''}")


def list_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=EXEC_TIMEOUT).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_namespace(name: str) -> None:
    """Stop every process still inside namespace `name` (all started by a lab), then delete it."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in map(int, pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _owner_alive(name: str) -> bool:
    pid = name[len(NS_PREFIX):].split("-", 1)[0]
    if not pid.isdigit():
        return True  # not one of ours in the expected form: leave it
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a killed owner may linger as a zombie


def sweep_stale() -> list[str]:
    """Remove what labs left when their owning process died without tearing down (killed, power cut):
    their namespaces with any process inside, and their folders. Return the namespace names."""
    stale = [n for n in list_namespaces() if n.startswith(NS_PREFIX) and not _owner_alive(n)]
    for name in stale:
        _kill_namespace(name)
    for folder in Path(tempfile.gettempdir()).glob(f"{NS_PREFIX}*-*"):
        if folder.is_dir() and not _owner_alive(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
    return stale


class NetLab:
    """One lab: `start()` builds it and waits until both servers answer, `stop()` removes every trace."""

    resolver_iface = RESOLVER_CLIENT_IFACE  # in namespace "resolver": client queries and answers
    upstream_iface = RESOLVER_UPSTREAM_IFACE  # in namespace "resolver": the resolver's own queries
    client_iface = CLIENT_IFACE
    clients4, clients6 = CLIENTS4, CLIENTS6
    resolver4, resolver6 = RESOLVER_CLIENT4, RESOLVER_CLIENT6

    def __init__(self, workdir: Path | None = None, keep_workdir: bool = False, dnssec: bool = True,
                 unbound_extra: str = "") -> None:
        """`dnssec`: signed zones and a validating resolver, whose upstream queries then include DS and DNSKEY
        lookups as a real resolver's do; without it unbound only iterates (A/AAAA/... and NS referrals).
        `unbound_extra`: configuration text appended to unbound.conf (whole clauses: `server:` to add server
        options, `rpz:`, ...); see reconfigure_resolver to change it on a running lab."""
        self.dnssec = dnssec
        self.unbound_extra = unbound_extra
        self.tag = f"{NS_PREFIX}{os.getpid()}-{secrets.token_hex(2)}"
        self.ns = {role: f"{self.tag}-{role}" for role in ROLES}  # role -> real namespace name
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self.keep_workdir = keep_workdir
        self._procs: list[subprocess.Popen] = []
        self._daemons: dict[str, subprocess.Popen] = {}
        self._next_sport = random.randrange(SPORT_FIRST, SPORT_LAST)
        self._names = 0
        self.started_seconds = 0.0

    # -- life cycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> NetLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> NetLab:
        began = time.monotonic()
        sweep_stale()
        try:
            self._build_network()
            self._write_configs()
            self._start_named()
            self._start_unbound()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.started_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop what the lab started, delete its namespaces (their veths go with them) and its folder."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self._procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        self._daemons.clear()
        existing = set(list_namespaces())
        for name in self.ns.values():
            if name in existing:
                _kill_namespace(name)  # anything a test started there and did not stop
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _build_network(self) -> None:
        for name in self.ns.values():
            _run(["ip", "netns", "add", name])
            _run(["ip", "netns", "exec", name, "sysctl", "-q", "-w", *SYSCTLS])
        c, r, u = self.ns[CLIENT], self.ns[RESOLVER], self.ns[UPSTREAM]
        # Each veth end is born inside its namespace: its name never appears in the host namespace.
        _run(["ip", "link", "add", CLIENT_IFACE, "netns", c, "type", "veth",
              "peer", "name", RESOLVER_CLIENT_IFACE, "netns", r])
        _run(["ip", "link", "add", RESOLVER_UPSTREAM_IFACE, "netns", r, "type", "veth",
              "peer", "name", UPSTREAM_IFACE, "netns", u])
        plan = {
            c: (CLIENT_IFACE, [*CLIENTS4, *CLIENTS6]),
            u: (UPSTREAM_IFACE, [*UPSTREAM_ADDRS4, *UPSTREAM_ADDRS6]),
        }
        batches = {name: ["link set lo up"] for name in self.ns.values()}
        for name, (iface, addrs) in plan.items():
            batches[name] += [_addr_cmd(a, iface) for a in addrs] + [f"link set {iface} up"]
        batches[r] += [
            _addr_cmd(RESOLVER_CLIENT4, RESOLVER_CLIENT_IFACE), _addr_cmd(RESOLVER_CLIENT6, RESOLVER_CLIENT_IFACE),
            _addr_cmd(RESOLVER_UPSTREAM4, RESOLVER_UPSTREAM_IFACE),
            _addr_cmd(RESOLVER_UPSTREAM6, RESOLVER_UPSTREAM_IFACE),
            f"link set {RESOLVER_CLIENT_IFACE} up", f"link set {RESOLVER_UPSTREAM_IFACE} up",
        ]
        for name, cmds in batches.items():
            _run(["ip", "-n", name, "-batch", "-"], stdin="\n".join(cmds) + "\n")
        # No TX checksum offload on the veths: a veth hands on frames with their UDP/TCP checksums unfilled, which
        # the receiving kernel trusts but a sensor (verifying checksums as a resolver on a real wire would) drops.
        for name, iface in ((c, CLIENT_IFACE), (r, RESOLVER_CLIENT_IFACE), (r, RESOLVER_UPSTREAM_IFACE),
                            (u, UPSTREAM_IFACE)):
            _run(["ip", "netns", "exec", name, "ethtool", "-K", iface, "tx", "off"])

    def _write_configs(self) -> None:
        named_dir = self.workdir / "named"
        named_dir.mkdir(parents=True, exist_ok=True)
        if self.dnssec:
            files = sign_zones(named_dir)
        else:
            files = {z.origin: zones.zone_file_name(z) for z in zones.ZONES}
            for zone in zones.ZONES:
                (named_dir / files[zone.origin]).write_text(zones.render_zone(zone))
        views = []
        for level, (v4, v6) in zones.SERVERS.items():
            zone_stanzas = "".join(
                f'    zone "{z.origin}" {{ type primary; file "{files[z.origin]}"; }};\n'
                for z in zones.ZONES if z.server == level
            )
            views.append(f'view "{level}" {{\n    match-destinations {{ {v4}; {v6}; }};\n{zone_stanzas}}};\n')
        named_conf = Template((TEMPLATES / "named.conf.in").read_text()).substitute(
            workdir=named_dir,
            listen4=" ".join(f"{a};" for a in UPSTREAM_ADDRS4),
            listen6=" ".join(f"{a};" for a in UPSTREAM_ADDRS6),
            views="\n".join(views),
        )
        (named_dir / "named.conf").write_text(named_conf)
        (self.workdir / "root.hints").write_text(zones.root_hints())
        self._write_unbound_conf()

    def _write_unbound_conf(self) -> None:
        named_dir = self.workdir / "named"
        unbound_conf = Template((TEMPLATES / "unbound.conf.in").read_text()).substitute(
            workdir=self.workdir,
            client4=RESOLVER_CLIENT4, client6=RESOLVER_CLIENT6,
            upstream4=RESOLVER_UPSTREAM4, upstream6=RESOLVER_UPSTREAM6,
            clientnet4=CLIENT_NET4, clientnet6=CLIENT_NET6,
            validation=(f'    module-config: "validator iterator"\n    trust-anchor-file: "{named_dir / "root.ds"}"\n'
                        "    val-log-level: 2\n") if self.dnssec else '    module-config: "iterator"\n',
            extra=self.unbound_extra,
        )
        (self.workdir / "unbound.conf").write_text(unbound_conf)

    def _start_daemon(self, key: str, ns: str, argv: list[str], log: Path) -> None:
        with log.open("ab") as out:
            self._daemons[key] = self.popen(ns, argv, stdout=out, stderr=subprocess.STDOUT)

    def _start_named(self) -> None:
        named_dir = self.workdir / "named"
        check = subprocess.run([_program("named-checkconf"), "-z", str(named_dir / "named.conf")],
                               capture_output=True, text=True, timeout=EXEC_TIMEOUT)
        if check.returncode != 0:
            raise LabError(f"named-checkconf rejected the lab configuration:\n{check.stdout}{check.stderr}")
        # -g: foreground, log to stderr (our log file); -n 1: one worker thread on a two-core box.
        self._start_daemon("named", UPSTREAM, [_program("named"), "-g", "-n", "1", "-c",
                                               str(named_dir / "named.conf")], self.named_log)

    def _start_unbound(self) -> None:
        # -d: foreground; -p: no pid file; it logs to the file named in its configuration.
        self._start_daemon("unbound", RESOLVER, [_program("unbound"), "-d", "-p", "-c",
                                                 str(self.workdir / "unbound.conf")], self.workdir / "unbound.out")

    def restart_resolver(self) -> None:
        """A cold resolver: empty caches, so the next query walks the tree from the root again."""
        proc = self._daemons.pop("unbound")
        proc.terminate()
        proc.wait(STOP_TIMEOUT)
        self._procs.remove(proc)
        self._start_unbound()
        self.wait_ready()

    def reconfigure_resolver(self, unbound_extra: str) -> None:
        """Restart unbound with `unbound_extra` in place of the extra configuration it had (cold caches too)."""
        self.unbound_extra = unbound_extra
        self._write_unbound_conf()
        self.restart_resolver()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Return once named serves the root and unbound answers clients; raise LabError with the logs if not."""
        deadline = time.monotonic() + timeout
        probes = [  # none crosses the resolver's upstream link or makes unbound recurse: all stays cold
            (UPSTREAM, ["dig", f"@{ROOT_SERVER4}", ".", "SOA", "+norec", "+time=1", "+tries=1"]),
            (CLIENT, ["dig", f"@{RESOLVER_CLIENT4}", "id.server", "CH", "TXT", "+time=1", "+tries=1"]),
            (CLIENT, ["dig", f"@{RESOLVER_CLIENT6}", "id.server", "CH", "TXT", "+time=1", "+tries=1"]),
        ]
        for ns, argv in probes:
            while "status: NOERROR" not in self.exec(ns, argv).stdout:
                dead = [k for k, p in self._daemons.items() if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    why = f"{', '.join(dead)} exited" if dead else f"no answer within {timeout:.0f} s"
                    raise LabError(f"netlab not ready ({why}) for: {' '.join(argv)}\n{self.logs()}")
                time.sleep(0.02)

    # -- running things inside ------------------------------------------------------------------------------

    def exec(self, ns: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Run `argv` in namespace role `ns` (client, resolver, upstream); output captured as text by default."""
        kw.setdefault("timeout", EXEC_TIMEOUT)
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", self.ns[ns], *argv], **kw)

    def popen(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        """Start `argv` in namespace role `ns`; the lab stops it at teardown if the test has not."""
        kw.setdefault("preexec_fn", _die_with_parent)
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[ns], *argv], **kw)
        self._procs.append(proc)
        return proc

    def source_port(self) -> int:
        port = self._next_sport
        self._next_sport = SPORT_FIRST + (port + 1 - SPORT_FIRST) % (SPORT_LAST - SPORT_FIRST)
        return port

    def dig(self, name: str, qtype: str = "A", src: str | None = None, tcp: bool = False,
            server: str = RESOLVER_CLIENT4, sport: int | None = None, opts: tuple[str, ...] = ()
            ) -> digparse.DigResult:
        """Ask `server` from the client namespace, from address `src` and a pinned, known source port."""
        v6 = ipaddress.ip_address(server).version == 6
        src = src or (CLIENTS6[0] if v6 else CLIENTS4[0])
        sport = sport or self.source_port()
        argv = ["dig", f"@{server}", "-b", f"{src}#{sport}", name, qtype, "+noall", "+comments", "+answer",
                "+time=3", "+tries=1", *(["+tcp"] if tcp else []), *opts]
        proc = self.exec(CLIENT, argv)
        return digparse.parse(proc.stdout + proc.stderr, name=name, qtype=qtype, src=src, sport=sport,
                              server=server, tcp=tcp, returncode=proc.returncode)

    def unique_name(self, zone: str) -> str:
        """A name never asked before in this lab, answered by the wildcard `*.u.<zone>`."""
        self._names += 1
        return f"q{self._names}-{secrets.token_hex(3)}.u.{zone.rstrip('.')}"

    # -- looking at it ----------------------------------------------------------------------------------------

    @property
    def named_log(self) -> Path:
        return self.workdir / "named.log"

    @property
    def unbound_log(self) -> Path:
        return self.workdir / "unbound.log"

    def logs(self, tail: int = 40) -> str:
        parts = []
        for path in (self.named_log, self.unbound_log, self.workdir / "unbound.out"):
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)


def _addr_cmd(addr: str, iface: str) -> str:
    if ipaddress.ip_address(addr).version == 6:
        return f"address add {addr}/{PREFIX6} dev {iface} nodad"
    return f"address add {addr}/{PREFIX4} dev {iface}"


def _program(name: str) -> str:
    path = find_program(name)
    if path is None:
        raise LabError(f"{name} is not installed (see netlab.packages.ensure_packages)")
    return path
