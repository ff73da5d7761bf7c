"""Hot reload: build new rules beside the old ones, off the capture path, and hand them over between batches.

The build runs in a thread; the capture loop keeps decoding with the old rules (it holds the GIL only for the
batches themselves, and the kernel ring absorbs the slower share it gets while a million rules are parsed).
A file with errors leaves the old rules running; either way the outcome is reported once.

Safety (issue 14): a reload first waits for the rule files to settle (size and modification time unchanged for
SETTLE_SECONDS), so a writer still writing is not read half way; it refuses rules that hold less than half as
many as now (a truncated feed) unless forced (`truesource control reload --force`), and a file that ended with
a line end before and now ends in the middle of a line (`new.exa`: cut off) unless forced. A refused reload
keeps the old rules and says why in its `sensor.reload` event.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sensor.errors import RuleError
from sensor.rules.compiled import CompiledRules
from sensor.rules.loader import build_ruleset, rule_files
from sensor.rules.model import RuleSet

log = logging.getLogger(__name__)
# The loops' compiler (sensor/loop.py: compile_rules), handed in: rules/ sits below the selector and never imports it.
Compiler = Callable[[RuleSet], CompiledRules]
RELOAD_TOPIC = "sensor.reload"
SETTLE_SECONDS = 1.0  # rule files unchanged (size, mtime) this long before a reload reads them
SETTLE_POLL = 0.1
SETTLE_LIMIT = 60.0  # files still changing after this long: the reload is refused, the old rules kept
MAX_DROP = 0.5  # a reload to fewer than this share of the rules loaded now is refused unless forced


@dataclass(frozen=True, slots=True)
class ReloadResult:
    generation: int
    ok: bool
    seconds: float
    ruleset: RuleSet | None = None
    compiled: CompiledRules | None = None
    error: str | None = None
    counts: dict | None = None  # the summary's counts, when the rule set itself stayed elsewhere (a worker)

    def summary(self) -> dict:
        """The `sensor.reload` event body (counts, not the rules)."""
        body: dict = {"generation": self.generation, "ok": self.ok, "seconds": round(self.seconds, 3)}
        if self.ok:
            body.update(self.counts or {})
        else:
            body["error"] = self.error
        return body


def build(sources: list[tuple[str, str, bool]], rules_format: str | None, generation: int,
          compile_rules: Compiler, options: dict | None = None) -> ReloadResult:
    """A worker's build from the parent's snapshot, compiled for the loops by `compile_rules` (its table freed).
    With `options` (RulesReloader.build_options: the cache and --allow-empty-rules) it goes through the
    compiled-rules cache as a start does, and swaps in the mapped file."""
    started = time.perf_counter()
    try:
        if options is None:
            ruleset = build_ruleset(sources, rules_format)
        else:
            from sensor.rules.cache import load_rule_set

            snapshot = [(f, text.encode("utf-8", "surrogateescape"), d) for f, text, d in sources]
            ruleset = load_rule_set([], rules_format, options.get("cache"), options.get("allow_empty", False),
                                    sources=snapshot)
        compiled = compile_rules(ruleset)
    except RuleError as err:
        return ReloadResult(generation, False, time.perf_counter() - started, error=str(err))
    return ReloadResult(generation, True, time.perf_counter() - started, ruleset, compiled, counts=counts_of(ruleset))


def counts_of(ruleset) -> dict:
    return {"rules": len(ruleset), "by_kind": dict(ruleset.report.by_kind),
            "by_format": dict(ruleset.report.by_format), "duplicates": ruleset.duplicates,
            "files": list(ruleset.files)}


def file_states(paths: list[str]) -> dict[str, tuple[int, int]]:
    """(size, mtime in ns) of every rule file the paths name now; a vanished file is (-1, -1)."""
    states: dict[str, tuple[int, int]] = {}
    for path in paths:
        try:
            names = rule_files(path)
        except OSError:
            names = [path]
        for name in names:
            try:
                st = os.stat(name)
                states[name] = (st.st_size, st.st_mtime_ns)
            except OSError:
                states[name] = (-1, -1)
    return states


def wait_settled(paths: list[str], settle: float = SETTLE_SECONDS, limit: float = SETTLE_LIMIT) -> str | None:
    """Block until no rule file changed for `settle` seconds; an error text when that takes over `limit`."""
    started = time.monotonic()
    last, since = file_states(paths), time.monotonic()
    while time.monotonic() - since < settle:
        if time.monotonic() - started > limit:
            return f"rule files still changing after {limit:g} s; old rules kept"
        time.sleep(SETTLE_POLL)
        now = file_states(paths)
        if now != last:
            last, since = now, time.monotonic()
    return None


def cut_off_lines(sources: list[tuple[str, bytes, bool]], before: dict[str, bool]) -> list[str]:
    """Files that ended with a line end at the last load and now end in the middle of a line."""
    found = []
    for filename, data, _ in sources:
        if data and not data.endswith(b"\n") and before.get(filename, False):
            last = data.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")[:60]
            found.append(f"{filename} ends in the middle of a line ({last!r}): cut off?")
    return found


class RulesReloader:
    """`request()` starts a background build from the rule paths (once they settled, a snapshot); `poll()`
    returns its result once, when it is done. One build at a time: a request during a build is remembered and run
    next. `loaded`: rules in use now (the drop check); `force`: the next reload skips the drop and cut-off checks.
    """

    def __init__(self, paths: list[str], rules_format: str | None, compile_rules: Compiler, cache: str | None = None,
                 allow_empty: bool = False, loaded: int = 0, settle: float = SETTLE_SECONDS) -> None:
        self.paths = paths
        self.compile_rules = compile_rules
        self.rules_format = rules_format
        self.cache = cache
        self.allow_empty = allow_empty
        self.loaded = loaded
        self.settle = settle
        self.force = False
        self.generation = 0
        self.reloads = 0
        self.failures = 0
        self.line_ends: dict[str, bool] = self._line_ends()
        self._thread: threading.Thread | None = None
        self._result: ReloadResult | None = None
        self._pending = False
        self._watch: tuple[dict[str, tuple[int, int]], float] | None = None  # settled(): the states and since when

    def _line_ends(self) -> dict[str, bool]:
        """Did each rule file end with a line end (or was it empty) at the last good load?"""
        ends: dict[str, bool] = {}
        for name in file_states(self.paths):
            try:
                with open(name, "rb") as handle:
                    handle.seek(0, os.SEEK_END)
                    if handle.tell() == 0:
                        continue
                    handle.seek(-1, os.SEEK_END)
                    ends[name] = handle.read(1) == b"\n"
            except OSError:
                continue
        return ends

    def request(self) -> None:
        if self._thread is not None:
            self._pending = True
            return
        self.generation += 1
        generation, force, loaded = self.generation, self.force, self.loaded
        self.force = False

        def run() -> None:
            self._result = self._build(generation, force, loaded)

        self._thread = threading.Thread(target=run, name=f"rules-reload-{generation}", daemon=True)
        self._thread.start()

    def _build(self, generation: int, force: bool, loaded: int) -> ReloadResult:
        from sensor.rules.cache import load_rule_set, read_source_bytes

        started = time.perf_counter()

        def failed(error: str) -> ReloadResult:
            return ReloadResult(generation, False, time.perf_counter() - started, error=error)

        error = wait_settled(self.paths, self.settle)
        if error is not None:
            return failed(error)
        try:
            sources = read_source_bytes(self.paths)
            cut = cut_off_lines(sources, self.line_ends)
            if cut and not force:
                return failed("; ".join(cut) + "; old rules kept (`truesource control reload --force` loads it)")
            ruleset = load_rule_set(self.paths, self.rules_format, self.cache, self.allow_empty, sources=sources)
            if not force and loaded and len(ruleset) < loaded * MAX_DROP:
                return failed(f"the rules would drop from {loaded:,} to {len(ruleset):,} (less than half); old "
                              "rules kept (`truesource control reload --force` loads them)")
            compiled = self.compile_rules(ruleset)
        except RuleError as err:
            return failed(str(err))
        return ReloadResult(generation, True, time.perf_counter() - started, ruleset, compiled,
                            counts=counts_of(ruleset))

    def settled(self) -> bool:
        """Non-blocking: have the rule files stayed unchanged for `settle` seconds since this was first asked?
        (the parent of several workers polls this before it snapshots the files for them)."""
        now, states = time.monotonic(), file_states(self.paths)
        if self._watch is None or self._watch[0] != states:
            self._watch = (states, now)
        if now - self._watch[1] >= self.settle:
            self._watch = None
            return True
        return False

    def build_options(self) -> dict:
        """What a worker needs to build as this reloader would (sent with the snapshot)."""
        return {"cache": self.cache, "allow_empty": self.allow_empty}

    def cut_off(self, sources: list) -> str | None:
        """Why the snapshot `sources` (text) must not be loaded: a file cut in the middle of a line; None if
        forced or whole."""
        if self.force:
            return None
        cut = cut_off_lines([(f, t.encode("utf-8", "surrogateescape"), d) for f, t, d in sources], self.line_ends)
        return "; ".join(cut) + "; old rules kept (`truesource control reload --force` loads it)" if cut else None

    def refusal(self, count: int) -> str | None:
        """Why a built rule set of `count` rules must not replace the rules in use, or None; a forced reload is
        never refused. Clears the force flag: it was for this reload."""
        force, self.force = self.force, False
        if not force and self.loaded and count < self.loaded * MAX_DROP:
            return (f"the rules would drop from {self.loaded:,} to {count:,} (less than half); old rules kept "
                    "(`truesource control reload --force` loads them)")
        return None

    def accepted(self, count: int) -> None:
        """A reload went in (workers: all swapped): its count is the next drop check's reference."""
        self.loaded = count
        self.line_ends = self._line_ends()

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def poll(self) -> ReloadResult | None:
        if self._thread is not None and not self._thread.is_alive():
            self._thread.join()
            self._thread = None
        if self._thread is not None or self._result is None:
            return None
        result, self._result = self._result, None
        if result.ok:
            self.reloads += 1
            self.loaded = result.counts["rules"] if result.counts else self.loaded
            self.line_ends = self._line_ends()
            log.info("rules reloaded (generation %d): %d rules in %.2f s", result.generation,
                     len(result.ruleset) if result.ruleset is not None else 0, result.seconds)
        else:
            self.failures += 1
            log.error("rules reload refused, old rules kept: %s", result.error)
        if self._pending:
            self._pending = False
            self.request()
        return result
