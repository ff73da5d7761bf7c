"""The `truesource` command's entry point: `--version` answered before the command line's imports (a
packaging script or a health check asks it often; the full parser costs 100 ms to import)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# numpy (flows, the flow store) loads OpenBLAS, whose threads spin on every core for a while after each call
# that uses them: 0.1-0.2 s CPU of a --flow-store replay on 2 cores, for no matrix work at all. One thread, set
# before numpy is imported (it reads the variable once, at load); a caller's own setting is kept (decision 0190).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    from sensor import heap

    heap.quiet_start()  # no garbage collection while the command's modules load (decision 0203)
    try:
        return _main(argv)
    finally:
        heap.settle()  # a command that ended before reading its options leaves the collector as it found it


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        from sensor import __version__

        print(f"truesource {__version__}")
        return 0
    if args[:1] == ["who-asked"]:  # the short way in: only the store's imports (decision 0180)
        from sensor.commands.querylog import quick_who_asked

        code = quick_who_asked(args)
        if code is not None:
            return code
    from sensor.cli import main as run

    return run(argv)
