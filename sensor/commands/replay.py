"""`truesource replay FILE...`: capture files through the sensor, in order; the summary on standard error."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from sensor.capture.files import IDLE_FLUSH_MS
from sensor.commands.common import (
    add_common_options,
    flow_settings,
    loop_limits,
    memory_budget,
    parse_ports,
    rules_for_run,
)
from sensor.errors import StartupError
from sensor.options import above, at_least

WAIT_SUBSCRIBERS_TIMEOUT = 10.0

log = logging.getLogger("truesource")


def register(commands: Any) -> None:
    replay = commands.add_parser("replay", help="replay capture files through the sensor")
    replay.add_argument("files", nargs="+", metavar="FILE", help="pcap or pcapng files, in order; - is stdin")
    add_common_options(replay)
    replay.add_argument("--wait-subscribers", type=at_least(0), default=0, metavar="N",
                        help="with --publish: wait for N subscribers before reading, then never drop")
    replay.add_argument("--wait-timeout", type=above(0), default=WAIT_SUBSCRIBERS_TIMEOUT, metavar="SECONDS",
                        help="how long --wait-subscribers waits (default %(default)s)")
    replay.add_argument("--no-progress", action="store_true", help="no progress line even on a terminal")
    replay.add_argument("--idle-flush-ms", type=at_least(0, float), default=IDLE_FLUSH_MS, metavar="MS",
                        help="reading a pipe: decode a partial batch once its first frame has waited this long "
                             "(default %(default)s; 0: wait for a full batch)")
    replay.set_defaults(run=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    import time

    from sensor.capture.files import check_readable
    from sensor.commands.sinks import attach_sinks, open_outputs
    from sensor.loop import compile_rules
    from sensor.outputs.jsonlines import check_writable
    from sensor.replay import replay, terminal_progress
    from sensor.runner import BatchRunner
    from sensor.summary import Summary, counter_lines

    ports = parse_ports(args.ports)
    settings = flow_settings(args)
    if args.wait_subscribers and not args.publish:
        raise StartupError("--wait-subscribers needs --publish")
    if args.summary_json:
        check_writable(args.summary_json, "--summary-json")
    limits = loop_limits(args)
    loading = time.perf_counter()
    ruleset = rules_for_run(args)
    load_seconds = time.perf_counter() - loading
    log.info("loaded %d rules from %d files in %.2f s", len(ruleset), len(ruleset.files), load_seconds)
    for path in args.files:  # a missing capture fails before the flow store or query log is created
        check_readable(path)
    started = time.perf_counter()
    compiled = compile_rules(ruleset, keep_table=False)
    compile_seconds = time.perf_counter() - started
    runner = BatchRunner(ports, compiled, limits=limits, batch_frames=memory_budget(args).batch_frames)
    runner.fail_on_lost_lines = True  # replay waits for a pipe: a lost line is a full disk, and fails the run
    progress = terminal_progress if sys.stderr.isatty() and not args.no_progress else None
    interrupt = Interrupt()
    try:

        def wait(publisher: Any) -> None:  # before any store is created: it may time out
            if publisher is not None and args.wait_subscribers:
                publisher.wait_for_subscribers(args.wait_subscribers, args.wait_timeout)

        attach_sinks(runner, args, ruleset, blocking=True, flows=settings, before_stores=wait)
        interrupt.install()
        result = replay(args.files, runner, progress, interrupt, idle_flush_ms=args.idle_flush_ms,
                        ready=lambda: open_outputs(runner.outputs))
    except BaseException:
        runner.abort()
        raise
    decoded = time.perf_counter()
    result.compile_seconds = compile_seconds
    if progress is not None:
        sys.stderr.write("\n")  # the progress line stays, at 100%, above the summary

    def summary(done: BatchRunner) -> Summary:
        # from compiling the rules to the last frame, and closing the sinks after it (the query log's last segment)
        result.wait_seconds = time.perf_counter() - decoded
        result.seconds += compile_seconds + result.wait_seconds
        lines = counter_lines(done.totals, result.seconds, f"{len(result.files)} file(s)", done.outputs)
        if result.interrupted_after is not None:
            lines.insert(0, f"interrupted after frame {result.interrupted_after:,}")
        return Summary(lines, args.summary_json, summary_json(done, result, len(ruleset), load_seconds))

    code = runner.finish(summary=summary)
    if runner.cut_off is not None:
        log.error("%s", runner.cut_off)
    if result.interrupted_after is not None and code == 0:
        return 130
    return code


class Interrupt:
    """SIGINT/SIGTERM end a replay as they end a capture: after the current batch, with the summary (and its
    JSON) and exit 130. A second signal while the sinks close stops at once (KeyboardInterrupt, exit 130)."""

    def __init__(self) -> None:
        self.signalled = False

    def install(self) -> None:
        import signal

        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signalled:
            raise KeyboardInterrupt
        self.signalled = True

    def __call__(self) -> bool:
        return self.signalled


def summary_json(runner: Any, result: Any, rules: int, load_seconds: float) -> dict[str, Any]:
    cut_off = runner.cut_off
    from sensor.summary import output_counters

    counters = dict(runner.totals)
    for key, value in output_counters(runner.outputs).items():  # what the outputs sent, left undelivered, dropped
        counters[key] = counters.get(key, 0) + value
    return {"counters": dict(sorted(counters.items())), "files": result.files,
            "seconds": round(result.seconds, 6), "cut_off": str(cut_off) if cut_off else None,
            "interrupted_after_frame": result.interrupted_after, "failed": runner.failed,
            "rules": {"rules": rules, "load_seconds": round(load_seconds, 3),
                      "compile_seconds": round(result.compile_seconds, 3)},
            "decode_seconds": round(result.seconds - result.compile_seconds - result.wait_seconds, 6),
            "wait_seconds": round(result.wait_seconds, 6)}
