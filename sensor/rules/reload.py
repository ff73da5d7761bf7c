"""Hot reload: build new rules beside the old ones, off the capture path, and hand them over between batches.

The build runs in a thread; the capture loop keeps decoding with the old rules (it holds the GIL only for the
batches themselves, and the kernel ring absorbs the slower share it gets while a million rules are parsed).
A file with errors leaves the old rules running; either way the outcome is reported once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sensor.errors import RuleError
from sensor.rules.compiled import CompiledRules
from sensor.rules.loader import build_ruleset, read_sources
from sensor.rules.model import RuleSet

log = logging.getLogger(__name__)
# The loops' compiler (sensor/loop.py: compile_rules), handed in: rules/ sits below the selector and never imports it.
Compiler = Callable[[RuleSet], CompiledRules]
RELOAD_TOPIC = "sensor.reload"


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
          compile_rules: Compiler) -> ReloadResult:
    """A rule set from a snapshot of the files, compiled for the loops by `compile_rules` (its table freed)."""
    started = time.perf_counter()
    try:
        ruleset = build_ruleset(sources, rules_format)
        compiled = compile_rules(ruleset)
    except RuleError as err:
        return ReloadResult(generation, False, time.perf_counter() - started, error=str(err))
    counts = {"rules": len(ruleset), "by_kind": dict(ruleset.report.by_kind),
              "by_format": dict(ruleset.report.by_format), "duplicates": ruleset.duplicates,
              "files": list(ruleset.files)}
    return ReloadResult(generation, True, time.perf_counter() - started, ruleset, compiled, counts=counts)


class RulesReloader:
    """`request()` starts a background build from the rule paths (read now, a snapshot); `poll()` returns its
    result once, when it is done. One build at a time: a request during a build is remembered and run next."""

    def __init__(self, paths: list[str], rules_format: str | None, compile_rules: Compiler) -> None:
        self.paths = paths
        self.compile_rules = compile_rules
        self.rules_format = rules_format
        self.generation = 0
        self.reloads = 0
        self.failures = 0
        self.sources: list[tuple[str, str, bool]] | None = None  # the snapshot of the last request
        self._thread: threading.Thread | None = None
        self._result: ReloadResult | None = None
        self._pending = False

    def request(self) -> None:
        if self._thread is not None:
            self._pending = True
            return
        self.generation += 1
        generation = self.generation
        try:
            self.sources = read_sources(self.paths)
        except RuleError as err:
            self._result = ReloadResult(generation, False, 0.0, error=str(err))
            return
        sources = self.sources

        def run() -> None:
            self._result = build(sources, self.rules_format, generation, self.compile_rules)

        self._thread = threading.Thread(target=run, name=f"rules-reload-{generation}", daemon=True)
        self._thread.start()

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
            log.info("rules reloaded (generation %d): %d rules in %.2f s", result.generation,
                     len(result.ruleset) if result.ruleset is not None else 0, result.seconds)
        else:
            self.failures += 1
            log.error("rules reload failed, old rules kept: %s", result.error)
        if self._pending:
            self._pending = False
            self.request()
        return result
