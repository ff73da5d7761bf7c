"""Whether this machine can host the lab, and the one rule for when it cannot: skip, except on CI."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from .lab import NetLab
from .packages import ensure_packages, find_program


def namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can (checked by making one)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    if find_program("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"netlabprobe{os.getpid()}-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it under CI=true, where a skipped end-to-end test would hide a broken runner."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"netlab unavailable on CI: {reason}", pytrace=False)
    pytest.skip(f"netlab unavailable: {reason}")


@contextmanager
def lab_or_skip() -> Iterator[NetLab]:
    """A started lab (installing its packages if needed), torn down on exit whatever happened inside.

    Set NETLAB_KEEP=1 to keep the lab's folder (configurations, zone files, daemon logs) after the run.
    """
    reason = namespaces_unavailable()
    if reason:
        skip_or_fail(reason)
    missing = ensure_packages()
    if missing:
        skip_or_fail(f"packages missing and not installable here: {' '.join(missing)}")
    with NetLab(keep_workdir=os.environ.get("NETLAB_KEEP") == "1") as lab:
        yield lab
