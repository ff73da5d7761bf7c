"""A name's registered domain, subdomain and public suffix, by the Public Suffix List bundled with publicsuffixlist.

The list file is read here into three sets (rules, wildcard parents, exceptions) rather than through the library's
PublicSuffixList object: that takes ~50 ms to build and ~4 us a lookup, and the events need only the public suffix;
this reads the file in 7-13 ms (rules in Unicode are put in their punycode form only when a name has an `xn--`
label) and answers from a cache keyed by the labels that can matter. tests/test_events.py checks both agree on
every rule of the list.

A run that has a rule cache directory keeps the parsed sets there (decision 0208): the first hit of every later
process reads them back in ~1.5 ms instead of parsing the list again. The file is trusted only while the list file
is as it was (size, times, inode) and its checksum holds; anything else parses the list, as a run without a
cache directory does.
"""

from __future__ import annotations

# Imported here, not on first use: by the first hit capture has dropped root and may no longer read the standard
# library's folder (tests/test_service.py runs the sensor as nobody).
import encodings.idna  # noqa: F401  the codec of the list's Unicode rules, used on the first xn-- name
import hashlib
import importlib.util
import marshal
import os
import time
from functools import lru_cache
from pathlib import Path

from sensor.rules.cache import drop_all_but_newest, file_state, unchanged_since
from sensor.rules.compiled import write_atomically

MAX_CACHED = 65_536  # distinct name tails remembered (a tail is the last 2-5 labels: few per registered domain)
CACHE_MAGIC = b"truesource psl 1\n"  # the parsed list's file: this line, a BLAKE2b digest of the rest, the rest
CACHE_KEEP = 2  # parsed-list files kept in a cache directory (another code version or list beside this one)

_cache_directory: str | None = None


class _Rules:
    def __init__(self, data: bytes | None = None) -> None:
        """The rules of the list's bytes `data` (None: none, for a state read back)."""
        self.exact: set[str] = set()
        self.wild: set[str] = set()  # "ck" for the rule "*.ck"
        self.exceptions: set[str] = set()
        self.depth: dict[str, int] = {}  # last two labels -> labels of the deepest rule under them
        self.wild_tlds: set[str] = set()  # TLDs with a wildcard right below (`*.ck`): any second label matters
        self.unicode: list[str] = []  # rules in Unicode, added in punycode on the first `xn--` name
        if data is None:
            return
        # (read as bytes and decoded: 0.5 ms, where a text-mode read with its newline translation took 1.7)
        rules = [rule for rule in map(str.strip, data.decode("utf-8").splitlines())
                 if rule and rule[0] != "/"]  # comments start "//"; a rule never starts with "/"
        self.unicode = [rule for rule in rules if not rule.isascii()]
        self.add_all([rule.lower() for rule in rules if rule.isascii()])

    def state(self) -> tuple:
        """What the parsed list is, in types marshal writes (taken before any Unicode rule was added)."""
        return (self.exact, self.wild, self.exceptions, self.depth, self.wild_tlds, self.unicode)

    @classmethod
    def from_state(cls, state: tuple) -> _Rules:
        rules = cls()
        rules.exact, rules.wild, rules.exceptions, rules.depth, rules.wild_tlds, rules.unicode = state
        return rules

    def add_all(self, rules: list[str]) -> None:
        """Many rules at once: the list's ~10,000 are read at the first hit, in set operations where they can be."""
        # (a rule's first character decides its kind: "!" an exception, "*" a wildcard, which is always "*.")
        self.exceptions.update([rule[1:] for rule in rules if rule[0] == "!"])
        wild = [rule[2:] for rule in rules if rule[0] == "*"]
        self.wild.update(wild)
        self.exact.update([rule for rule in rules if rule[0] != "!" and rule[0] != "*"])
        self.wild_tlds.update([tld for tld in wild if "." not in tld])
        depth = self.depth
        # depth 2 is every lookup's default: only rules of three labels or more are filed (a third of the list)
        for rule in [rule for rule in rules if rule.count(".") >= 2]:
            labels = rule.count(".") + 1
            last = rule.removeprefix("!").rsplit(".", 2)
            key = last[-2] + "." + last[-1]
            if depth.get(key, 0) < labels:
                depth[key] = labels

    def add_unicode(self) -> None:
        rules, self.unicode = self.unicode, []
        converted = []
        for rule in rules:
            bang = rule.startswith("!")
            try:
                ascii_rule = ".".join(label if label == "*" else label.encode("idna").decode("ascii")
                                      for label in rule.lstrip("!").split("."))
            except UnicodeError:
                continue
            converted.append(("!" if bang else "") + ascii_rule.lower())
        self.add_all(converted)

    def public_suffix(self, name: str) -> str:
        """The longest matching rule (an exception: that rule less its first label); the TLD when none does."""
        start = 0
        while True:
            candidate = name[start:]
            if candidate in self.exceptions:
                return candidate.split(".", 1)[1]
            if candidate in self.exact:
                return candidate
            dot = candidate.find(".")
            if dot < 0:
                return candidate
            if candidate[dot + 1:] in self.wild:
                return candidate
            start += dot + 1


def _list_file() -> Path:
    """The list the publicsuffixlist package bundles, found without importing the package (~30 ms)."""
    spec = importlib.util.find_spec("publicsuffixlist")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("publicsuffixlist is not installed (a runtime dependency)")
    return Path(next(iter(spec.submodule_search_locations))) / "public_suffix_list.dat"


def keep_parsed_in(directory: str | None) -> None:
    """Keep the parsed list in `directory` (the run's rule cache; None: parse it in every process). Set before
    the first lookup: a run's commands set it where they load the rules."""
    global _cache_directory
    _cache_directory = directory


@lru_cache(maxsize=1)
def _rules() -> _Rules:
    path = _list_file()
    cached = None if _cache_directory is None else os.path.join(_cache_directory, f"psl-{_stamp(path)}.marshal")
    with open(path, "rb") as handle:
        stats = [file_state(str(path), os.fstat(handle.fileno()))]  # the state of the bytes read below
        found = None if cached is None else _read_parsed(cached, stats)
        if found is not None:
            return found
        rules = _Rules(handle.read())
    if cached is not None:
        _write_parsed(cached, stats, rules)
    return rules


def _stamp(path: Path) -> str:
    """This code and this list's path: another version of either never reads the file another one wrote."""
    here = os.stat(__file__)
    return hashlib.sha256(f"{CACHE_MAGIC!r} {here.st_size} {here.st_mtime_ns} {path}".encode()).hexdigest()[:16]


def _read_parsed(cached: str, stats: list[list]) -> _Rules | None:
    """The parsed list from `cached` if it is whole and the list file is still as it was; else None."""
    try:
        with open(cached, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    head, size = len(CACHE_MAGIC), hashlib.blake2b().digest_size
    body = memoryview(data)[head + size:]  # (no copy of the 167 KB: hashed and loaded in place)
    if not data.startswith(CACHE_MAGIC) or hashlib.blake2b(body).digest() != data[head:head + size]:
        return None  # torn or damaged: marshal is never handed bytes this code did not write
    try:
        saved, written_ns, state = marshal.loads(body)
        if not unchanged_since(saved, stats, written_ns):
            return None  # the list changed, or changed so close to the writing that its times cannot tell
        return _Rules.from_state(state)
    except (EOFError, ValueError, TypeError):
        return None


def _write_parsed(cached: str, stats: list[list], rules: _Rules) -> None:
    """Write the parsed list beside the rule cache (as the cache writes its files: a reader sees a whole file or
    the old one) and drop old ones; a cache that cannot be written costs the next run a parse, nothing else."""
    body = marshal.dumps((stats, time.time_ns(), rules.state()))
    directory = os.path.dirname(cached)
    try:
        os.makedirs(directory, exist_ok=True)
        write_atomically(cached, CACHE_MAGIC + hashlib.blake2b(body).digest() + body)
        drop_all_but_newest([os.path.join(directory, name) for name in os.listdir(directory)
                             if name.startswith("psl-") and name.endswith(".marshal")], CACHE_KEEP, cached)
    except OSError:
        pass


@lru_cache(maxsize=MAX_CACHED)
def _public_suffix(tail: str) -> str:
    return _rules().public_suffix(tail)


def domain_parts(lower: str) -> tuple[str | None, str | None, str | None]:
    """(registered_domain, subdomain, top_level_domain) of a lower-case name without trailing dot. A rule reads
    only as many labels from the right as it has, so the lookup is cached on the name's last labels, as many as the
    deepest rule under its last two: random labels in front (DGA, tunnels) cost a dict lookup, not a new search.
    Most names end in a public suffix of one label under a registered domain of two: that case reuses the one split
    it made (a new name's fields are most of a hit's cost, issue 15)."""
    if not lower or lower[0] == "." or "\\" in lower or ".." in lower:
        return None, None, None  # the root, escaped bytes, empty labels: no domain parts
    rules = _rules()
    if rules.unicode and "xn--" in lower:
        rules.add_unicode()
        _public_suffix.cache_clear()
    labels = lower.rsplit(".", 2)
    if len(labels) < 3 or labels[2] in rules.wild_tlds:
        tail = lower
    else:
        tail = labels[1] + "." + labels[2]
        depth = rules.depth.get(tail, 2)
        if depth > 2:
            cut = lower.rsplit(".", depth)
            tail = lower[len(cut[0]) + 1:] if len(cut) > depth else lower
    suffix = _public_suffix(tail)
    if "." not in suffix and len(labels) == 3:  # registered domain: the last two labels, split already
        return lower[len(labels[0]) + 1:], labels[0], suffix
    depth = suffix.count(".") + 2  # labels of the registered domain
    parts = lower.rsplit(".", depth)
    if len(parts) < depth:  # the name is the public suffix itself
        return None, None, suffix
    if len(parts) == depth:
        return lower, None, suffix
    return lower[len(parts[0]) + 1:], parts[0], suffix
