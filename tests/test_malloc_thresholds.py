"""glibc's malloc thresholds in a process that decodes batches (decision 0209): a BatchRunner sets them, after which
large blocks made and freed again and again (each batch's frames) reuse the heap's pages
instead of coming back from the kernel as fresh zeroed pages. Counted in minor page faults, which the kernel counts
exactly, in a process of their own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT
from sensor import loop

pytestmark = [pytest.mark.skipif(loop.compiled is None, reason="sensor._loop not built"),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")]

# Blocks of 256 KB and up, each larger than any freed before it: with glibc's moving thresholds each is a fresh
# mmap (its pages faulted in and zeroed), as the batches of a replay were.
GROWING_BLOCKS = """
import resource, sys
{setup}
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(200):
    block = b"x" * (256_000 + i * 8_192)
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(setup: str) -> int:
    done = subprocess.run([sys.executable, "-c", GROWING_BLOCKS.format(setup=setup)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "TRUESOURCE_PURE": "0"})
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_a_batch_runner_keeps_freed_blocks_for_the_next_batch():
    default = faults("")
    kept = faults("from sensor.runner import BatchRunner\nBatchRunner((53,), {})")
    # 200 blocks of 0.25-1.9 MB: ~52,000 pages faulted in with the defaults, one heap's growth (~500) once set
    assert default > 20_000
    assert kept < default / 20


def test_thresholds_are_within_what_glibc_reaches_by_itself():
    """glibc moves its mmap threshold up to 32 MiB and its trim threshold to twice that: the fixed values keep no
    more than glibc would after one large free."""
    assert loop.MALLOC_MMAP_THRESHOLD <= 32 << 20
    assert loop.MALLOC_TRIM_THRESHOLD <= 2 * (32 << 20)
    assert loop.keep_batch_memory() is True
