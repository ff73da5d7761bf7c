"""Rules at start-up: from a compiled file kept in a cache, keyed by the rule sources' content (docs/rules.md).

The key is a SHA-256 of the compiled format's version, the sensor's version, the --rules-format option and every
source file's name and bytes, so a changed file, option or sensor never finds an old compiled set. Hashing 30 MB
of sources costs more than the whole start-up's budget, so a small memo beside the cache remembers the key for
the files' exact state (size, mtime, ctime, inode: git's index trick) and the bytes are hashed again whenever
any of it changed. A miss
parses the sources, writes the compiled file atomically (temporary file, fsync, rename: a concurrent reader sees
the whole old file or the whole new one) and maps it. A cached file that fails its checks is rebuilt with a
warning. The cache directory: --rules-cache, else systemd's $CACHE_DIRECTORY (CacheDirectory=truesource in the
unit), else $XDG_CACHE_HOME/truesource or ~/.cache/truesource. An unwritable cache is said once and the run
goes on with the rules compiled in memory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time

from sensor.errors import RuleError
from sensor.rules.compiled import (
    FORMAT_VERSION,
    SUFFIX,
    CompiledRulesError,
    MappedRuleSet,
    is_compiled,
    write_atomically,
    write_compiled,
)

log = logging.getLogger("truesource")
KEEP_CACHED = 4  # compiled sets kept per cache directory: the current one, and a few to go back to on a reload
OFF = "off"
RACY_NS = 2_000_000_000  # a file changed this close to the memo's writing is hashed again


def cache_directory(option: str | None) -> str | None:
    """The cache directory the option and environment say; None when caching is off."""
    if option is not None:
        return None if option == OFF else option
    if os.environ.get("CACHE_DIRECTORY"):  # systemd: CacheDirectory=truesource (may list several, ':'-separated)
        return os.environ["CACHE_DIRECTORY"].split(":")[0]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "truesource")


def read_source_bytes(paths: list[str]) -> list[tuple[str, bytes, bool]]:
    """Every rule file's bytes, read once (a snapshot): (file, bytes, came from a directory)."""
    from sensor.rules.loader import read_bytes, rule_files

    sources: list[tuple[str, bytes, bool]] = []
    seen: set[str] = set()
    for path in paths:
        if not os.path.exists(path):
            raise RuleError(f"{path}: cannot read rules: no such file")
        in_directory = os.path.isdir(path)
        for filename in rule_files(path):
            if filename not in seen:
                seen.add(filename)
                sources.append((filename, read_bytes(filename), in_directory))
    return sources


def code_stamp() -> str:
    """The rule readers' code as it is installed (each module's name, size and mtime): a sensor whose parsing
    changed, even without a new version number (a development checkout), never reads an old compiled set."""
    from sensor import __version__

    here = os.path.dirname(os.path.abspath(__file__))
    parts = [__version__, str(FORMAT_VERSION)]
    for folder in (here, os.path.join(here, "formats"), os.path.dirname(here)):
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith(".py"))
        except OSError:
            continue
        for name in names:
            if folder == os.path.dirname(here) and name not in ("__init__.py", "idn.py"):
                continue
            st = os.stat(os.path.join(folder, name))
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cache_key(sources: list[tuple[str, bytes, bool]], rules_format: str | None) -> str:
    digest = hashlib.sha256(f"truesource {code_stamp()} format {rules_format}\n".encode())
    for filename, data, in_directory in sources:
        digest.update(f"{len(filename)}:{filename}:{int(in_directory)}:{len(data)}\n".encode("utf-8",
                                                                                            "surrogateescape"))
        digest.update(data)
    return digest.hexdigest()[:40]


def load_rule_set(paths: list[str], rules_format: str | None = None, cache: str | None = None,
                  allow_empty: bool = False, sources: list[tuple[str, bytes, bool]] | None = None):
    """The rules of `paths` for a run: a MappedRuleSet from the cache (or a compiled file given as the only
    --rules), else a RuleSet compiled in memory. RuleError names the file when a source yields no rule."""
    compiled = [p for p in paths if os.path.isfile(p) and is_compiled(p)]
    if compiled:
        if len(paths) > 1:
            raise RuleError(f"{compiled[0]}: a compiled rule set must be the only --rules")
        ruleset = MappedRuleSet(compiled[0])
        check_not_empty(ruleset, allow_empty, [])
        say_skipped(ruleset)
        return ruleset
    directory = cache_directory(cache)
    if directory is None:
        return _build(sources or read_source_bytes(paths), rules_format, allow_empty, paths)
    memo = _memo_path(directory, paths, rules_format)
    stats = _stats(paths)
    key = _memo_key(memo, stats) if sources is None else None
    if key is None:
        if sources is None:
            sources = read_source_bytes(paths)
        key = cache_key(sources, rules_format)
    path = os.path.join(directory, key + SUFFIX)
    if os.path.exists(path):
        try:
            ruleset = MappedRuleSet(path)
        except CompiledRulesError as err:
            log.warning("%s; compiling the rules again", err)
        else:
            check_not_empty(ruleset, allow_empty, paths)
            say_skipped(ruleset)
            _write_memo(memo, stats, key)
            return ruleset
    if sources is None:
        sources = read_source_bytes(paths)
    ruleset = _build(sources, rules_format, allow_empty, paths)
    try:
        os.makedirs(directory, exist_ok=True)
        write_atomically(path, functools.partial(write_compiled, ruleset, rules_format=rules_format,
                                                 sources=[s[0] for s in sources], free_table=True))
    except OSError as err:  # said when asked for; the default cache may simply not exist for this user
        log.log(logging.WARNING if cache else logging.DEBUG, "--rules-cache %s: cannot write (%s); rules compiled "
                "in memory", directory, err.strerror or err)
        if len(ruleset) and not ruleset.table and not ruleset.patterns == list(range(len(ruleset))):
            # the write failed after emptying the name table (a full disk): parse again rather than run without it
            ruleset = build_ruleset_quietly(sources, rules_format)
        return ruleset
    del ruleset, sources  # the parsed set (250 MB at a million rules) goes before the mapping comes in
    _trim(directory, path)
    _write_memo(memo, stats, key)
    return MappedRuleSet(path)


def compile_to(paths: list[str], rules_format: str | None, out: str, allow_empty: bool = False) -> MappedRuleSet:
    """`truesource rules compile`: the compiled file at `out`, checked by mapping it back."""
    sources = read_source_bytes(paths)
    ruleset = _build(sources, rules_format, allow_empty, paths)
    try:
        write_atomically(out, lambda handle: write_compiled(ruleset, handle, rules_format, [s[0] for s in sources]))
    except OSError as err:
        raise RuleError(f"{out}: cannot write: {err.strerror}") from None
    return MappedRuleSet(out)


def _build(sources: list[tuple[str, bytes, bool]], rules_format: str | None, allow_empty: bool, paths: list[str]):
    from sensor.rules.loader import build_ruleset, decode_sources

    ruleset = build_ruleset(decode_sources(sources), rules_format)
    check_not_empty(ruleset, allow_empty, paths)
    say_skipped(ruleset)
    return ruleset


def build_ruleset_quietly(sources: list[tuple[str, bytes, bool]], rules_format: str | None):
    from sensor.rules.loader import build_ruleset, decode_sources

    return build_ruleset(decode_sources(sources), rules_format)


def check_not_empty(ruleset, allow_empty: bool, paths: list[str]) -> None:
    """RuleError naming the source and why when a --rules file, or a whole --rules directory, yields no rule."""
    empty = {filename: why for filename, why, _ in ruleset.report.empty_files}
    reasons: list[tuple[str, str]] = []
    if not paths:  # a worker's reload from the parent's snapshot: the files given directly are known by their flag
        reasons = [(f, why) for f, why, in_directory in ruleset.report.empty_files if not in_directory]
    for path in paths:
        if os.path.isdir(path):
            inside = [f for f in ruleset.files if os.path.dirname(f) == path.rstrip(os.sep) or
                      f.startswith(path.rstrip(os.sep) + os.sep)]
            if not any(f not in empty for f in inside):
                found = [f"{os.path.basename(f)}: {why}" for f, why in empty.items()
                         if os.path.dirname(f) == path.rstrip(os.sep)]
                reasons.append((path, "no usable rule file in the directory" + (f" ({'; '.join(found)})"
                                                                                  if found else "")))
        elif path in empty:
            reasons.append((path, empty[path]))
    if not reasons and not len(ruleset) and not allow_empty:
        reasons.append((", ".join(paths) or ", ".join(ruleset.files) or "the rules", "no rule at all"))
    if not reasons:
        return
    if allow_empty:
        for source, reason in reasons:
            log.warning("%s: no rule (%s); going on (--allow-empty-rules)", source, reason)
        return
    source, reason = reasons[0]
    raise RuleError(f"{source}: no rule ({reason}); --allow-empty-rules to run anyway")


def say_skipped(ruleset) -> None:
    """Each skipped file and each reason lines were skipped for, said once."""
    from sensor.rules.formats.tally import skipped_lines

    for filename, why in ruleset.report.skipped_files:
        log.warning("%s: skipped (%s)", filename, why)
    for filename, why, in_directory in ruleset.report.empty_files:
        if in_directory and (filename, why) not in ruleset.report.skipped_files:
            log.warning("%s: no rule (%s)", filename, why)
    for why, count in skipped_lines(ruleset.report).items():
        log.warning("rules: %d line%s skipped: %s", count, "" if count == 1 else "s", why)


def _stats(paths: list[str]) -> list[list]:
    """What the memo compares: each rule file's name, size, mtime, ctime and inode, in load order."""
    from sensor.rules.loader import rule_files

    found = []
    try:
        for path in paths:
            for filename in rule_files(path):
                found.append(file_state(filename, os.stat(filename)))
    except OSError:
        return []
    return found


def _memo_path(directory: str, paths: list[str], rules_format: str | None) -> str:
    name = hashlib.sha256(json.dumps([code_stamp(), rules_format, paths]).encode()).hexdigest()[:24]
    return os.path.join(directory, f"sources-{name}.json")


def _memo_key(memo: str, stats: list[list]) -> str | None:
    """The content key remembered for exactly these files in exactly this state, else None (hash them again).

    Like git's index: a file whose size, mtime, ctime and inode are what they were when its bytes were hashed
    has those bytes still; a change within RACY_NS of the memo's writing is not trusted (a coarse clock could
    hide a second write)."""
    if not stats:
        return None
    try:
        with open(memo, encoding="utf-8") as handle:
            saved = json.load(handle)
        if not unchanged_since(saved["stats"], stats, saved["written_ns"]):
            return None
        key = saved["key"]
        return key if isinstance(key, str) and key.isalnum() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def file_state(filename: str, st: os.stat_result) -> list:
    """What the memo compares of one file: its name, size, mtime, ctime and inode."""
    return [filename, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def unchanged_since(saved: list[list], stats: list[list], written_ns: int) -> bool:
    """Files whose file_state() is `saved`, recorded at `written_ns`, still have the bytes they had then: the
    states are equal and none changed within RACY_NS of the recording (a coarse clock could hide a second write).
    The memo here and the parsed Public Suffix List (sensor/suffixes.py) go by it."""
    return saved == stats and not any(s[2] >= written_ns - RACY_NS or s[3] >= written_ns - RACY_NS for s in stats)


def drop_all_but_newest(paths: list[str], count: int, keep: str | None = None) -> None:
    """Remove all but the `count` most recently modified of `paths` (never `keep`); OSError to the caller."""
    paths = sorted(paths, key=lambda p: os.stat(p).st_mtime_ns, reverse=True)
    for old in paths[count:]:
        if old != keep:
            os.unlink(old)


def _write_memo(memo: str, stats: list[list], key: str) -> None:
    if not stats:
        return
    try:
        write_atomically(memo, json.dumps({"stats": stats, "key": key, "written_ns": time.time_ns()}).encode())
    except OSError:
        pass


def preload_readers() -> None:
    """Import what a reload reads rules with (a warm start mapped the compiled file and imported none of it): a
    capture drops its privileges after start, and may then be unable to read the Python library."""
    import sensor.rules.check  # noqa: F401  (the loader, every format, detection)
    import sensor.rules.loader  # noqa: F401

    try:
        import idna  # noqa: F401  (Unicode names, sensor/idn.py)
    except ImportError:
        pass


def _trim(directory: str, keep: str) -> None:
    """Keep the newest few compiled sets; an older one still mapped by a running sensor stays readable."""
    try:
        names = os.listdir(directory)
        drop_all_but_newest([os.path.join(directory, n) for n in names if n.startswith("sources-")], 4 * KEEP_CACHED)
        drop_all_but_newest([os.path.join(directory, n) for n in names if n.endswith(SUFFIX)], KEEP_CACHED, keep)
    except OSError:
        pass
