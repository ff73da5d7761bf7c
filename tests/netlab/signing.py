"""DNSSEC for the lab's zones, so a validating resolver also asks DS (at each parent) and DNSKEY upstream.

Keys are made fresh for every lab (ECDSA P-256: a few milliseconds each) and thrown away with it. All keys
come first, so each signed child's DS record is in its parent's file before the parent is signed; the root's
DS becomes unbound's only trust anchor. Unsigned zones stay insecure delegations (no DS in the parent).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import zones
from .packages import find_program

ALGORITHM = "ECDSAP256SHA256"  # algorithm 13: fastest to generate and sign, what real zones now use
SIGN_TIMEOUT = 30


def _tool(name: str, *args: str, cwd: Path) -> str:
    proc = subprocess.run([find_program(name) or name, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=SIGN_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def sign_zones(named_dir: Path) -> dict[str, str]:
    """Write every zone file into `named_dir`, signing the signed ones; return {origin: file named loads}.

    Also writes `root.ds` there: the trust anchor for the resolver.
    """
    keys_dir = named_dir / "keys"
    keys_dir.mkdir(exist_ok=True)
    keys, ds = {}, {}
    for zone in zones.ZONES:
        if zone.signed:
            keys[zone.origin] = _tool("dnssec-keygen", "-q", "-K", str(keys_dir), "-a", ALGORITHM, "-f", "KSK",
                                      "-n", "ZONE", zone.origin, cwd=named_dir)
            ds[zone.origin] = _tool("dnssec-dsfromkey", "-2", str(keys_dir / f"{keys[zone.origin]}.key"),
                                    cwd=named_dir)
    files = {}
    for zone in zones.ZONES:
        children_ds = [ds[c.origin] for c in zones.ZONES if c.origin != "." and c.origin in ds
                       and zones.parent(c.origin) == zone.origin]
        name = zones.zone_file_name(zone)
        (named_dir / name).write_text(zones.render_zone(zone) + "".join(f"{line}\n" for line in children_ds))
        if zone.signed:
            # -S -K: find the zone's key and add its DNSKEY; -z: that one key (a KSK) signs every record.
            _tool("dnssec-signzone", "-q", "-S", "-K", str(keys_dir), "-z", "-o", zone.origin,
                  "-f", f"{name}.signed", name, cwd=named_dir)
            name = f"{name}.signed"
        files[zone.origin] = name
    (named_dir / "root.ds").write_text(ds["."] + "\n")
    return files
