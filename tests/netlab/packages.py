"""Installs the lab's peers (bind9, unbound, dig, tcpreplay) from Debian's packages when they are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# Debian package -> a program it provides. Also the list the Makefile's system-deps installs.
PACKAGES = {
    "bind9": "named",
    "unbound": "unbound",
    "dnsutils": "dig",
    "tcpreplay": "tcpreplay",
    "tcpdump": "tcpdump",
}
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
APT_TIMEOUT = 600  # seconds: a cold apt-get update plus five packages on a slow mirror


def find_program(name: str) -> str | None:
    """The program's path, looking in the sbin folders too (a non-login PATH may lack them)."""
    return shutil.which(name) or next(
        (f"{d}/{name}" for d in SBIN_DIRS if os.access(f"{d}/{name}", os.X_OK)), None
    )


def missing_packages() -> list[str]:
    return [pkg for pkg, prog in PACKAGES.items() if find_program(prog) is None]


def ensure_packages() -> list[str]:
    """Install what is missing when we are root with apt-get; return the packages still missing.

    Services are kept from starting during the install (policy-rc.d answering 101, RUNLEVEL=1): the lab runs
    its own named and unbound with its own configuration. No package recommendation is installed, so
    neither unbound-anchor nor dns-root-data comes along, and nothing reaches for the real root trust anchor.
    """
    missing = missing_packages()
    if not missing or os.geteuid() != 0 or find_program("apt-get") is None:
        return missing
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", RUNLEVEL="1")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    made_policy = not POLICY_RC_D.exists()
    if made_policy:
        POLICY_RC_D.write_text("#!/bin/sh\n# written by truesource tests/netlab while installing\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        if subprocess.run(install, env=env, capture_output=True, timeout=APT_TIMEOUT).returncode != 0:
            # Most often the package lists are absent or stale: update once, then try again.
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=APT_TIMEOUT)
            subprocess.run(install, env=env, capture_output=True, timeout=APT_TIMEOUT)
    finally:
        if made_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    return missing_packages()
