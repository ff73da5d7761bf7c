"""Shared test helpers: run the real CLI as a subprocess, find the shipped captures, pick free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
PEERS = ROOT.parent / "shared" / "pcaps" / "peers"


def run_cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """`python -m sensor ARGS` from the repository root; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "sensor", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs,
    )


def poll(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """The condition's first true value, polled until `timeout` (generous: the machine may be shared; the wait ends
    as soon as the condition holds). A test that waits calls this, never a bare sleep."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def free_tcp_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def endpoint() -> str:
    return free_tcp_endpoint()


@pytest.fixture(autouse=True, scope="session")
def _compiled_in_ci():
    """On CI the compiled fast path must be the one tested, never a silent fallback."""
    if os.environ.get("CI") == "true" and not os.environ.get("TRUESOURCE_PURE"):
        from sensor import loop

        assert loop.compiled is not None, "sensor._loop is not built"
    yield


@pytest.fixture(autouse=True, scope="session")
def _rules_cache(tmp_path_factory):
    """Compiled rule sets of the commands the tests run go to a directory of this session, not ~/.cache."""
    if "CACHE_DIRECTORY" not in os.environ:
        os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield


def make_batch(frames: list[bytes], start_sec: int = 1_700_000_000, step_usec: int = 1000) -> tuple[bytes, bytes]:
    """Frames as one next_batch() result: the data blob and its 16-byte metadata records."""
    import struct

    meta = []
    offset = 0
    for i, frame in enumerate(frames):
        usec = i * step_usec
        meta.append(struct.pack("=IIII", start_sec + usec // 1_000_000, usec % 1_000_000, offset, len(frame)))
        offset += len(frame)
    return b"".join(frames), b"".join(meta)


@pytest.fixture
def wire():
    """Two namespaces joined by a veth pair (tests/wire.py); skipped where namespaces cannot be made, except on
    CI, where that is a failure."""
    from wire import Wire, available

    reason = available()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"live capture cannot be tested on CI: {reason}")
        pytest.skip(reason)
    with Wire() as w:
        yield w


# Every event any sensor process encodes during the run is appended to one session file (sensor/schema.py reads
# the variable at import), and tests/test_zz_events_ecs.py, collected last, checks them all against ECS.
def pytest_configure(config) -> None:
    import tempfile

    from sensor import schema

    if not os.environ.get(schema.EVENT_LOG_ENV):
        folder = tempfile.mkdtemp(prefix="truesource-events-")
        os.environ[schema.EVENT_LOG_ENV] = os.path.join(folder, "events.jsonl")
        schema._open_log()
        config.event_log_folder = folder
    config.event_log = os.environ[schema.EVENT_LOG_ENV]


def pytest_unconfigure(config) -> None:
    import shutil

    folder = getattr(config, "event_log_folder", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
