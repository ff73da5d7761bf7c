"""The parsed Public Suffix List kept in the rule cache directory (sensor/suffixes.py, decision 0208): read back it
answers exactly as a fresh parse; a changed list, a damaged or cut file, or a directory that cannot be written is a
parse of the list, never an old or wrong answer."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import PCAPS, run_cli
from sensor import suffixes
from sensor.rules import cache
from sensor.rules.cache import file_state

RACY_NS = cache.RACY_NS  # the rule cache's window, which the fixture closes

NAMES = ["www.example.co.uk", "a.b.c.blogspot.com", "x9f3k2.city.kawasaki.jp", "www.ck", "q.a.b.zz-test", "com",
         "deep.a.b.zz-test", "xn--80ak6aa92e.com", "pages.xn--p1ai"]


@pytest.fixture
def list_copy(tmp_path, monkeypatch):
    """A copy of the bundled list as the one read, and a cache directory; the module's caches emptied before and
    after. A copy's ctime is now, and no call sets it back: the racy window is closed here (RACY_NS 0) but in the
    test of that window."""
    path = tmp_path / "public_suffix_list.dat"
    shutil.copyfile(suffixes._list_file(), path)
    monkeypatch.setattr(suffixes, "_list_file", lambda: path)
    monkeypatch.setattr(cache, "RACY_NS", 0)
    directory = tmp_path / "cache"
    suffixes.keep_parsed_in(str(directory))
    clear()
    yield path, directory
    suffixes.keep_parsed_in(None)
    clear()


def clear() -> None:
    suffixes._rules.cache_clear()
    suffixes._public_suffix.cache_clear()


def answers() -> list[tuple]:
    clear()
    return [suffixes.domain_parts(name) for name in NAMES]


def cached_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("psl-*.marshal"))


def list_stat(path: Path) -> list[list]:
    return [file_state(str(path), os.stat(path))]


def test_parsed_list_read_back_answers_as_a_fresh_parse(list_copy):
    path, directory = list_copy
    suffixes.keep_parsed_in(None)
    fresh = answers()
    fresh_state = suffixes._Rules(path.read_bytes()).state()  # as parsed (lookups of xn-- names add to it)
    suffixes.keep_parsed_in(str(directory))
    assert answers() == fresh  # the first run parses and writes the file
    [written] = cached_files(directory)
    read_back = suffixes._read_parsed(str(written), list_stat(path))
    assert read_back is not None and read_back.state() == fresh_state
    assert answers() == fresh  # the second reads it back
    assert fresh[1][2] == "blogspot.com" and fresh[2] == ("city.kawasaki.jp", "x9f3k2", "kawasaki.jp")  # !city


def test_a_changed_list_is_parsed_again(list_copy):
    path, directory = list_copy
    before = answers()
    assert before[4] == ("b.zz-test", "q.a", "zz-test")
    [written] = cached_files(directory)
    with open(path, "ab") as handle:
        handle.write(b"b.zz-test\n")  # a new rule: the names under it get another registered domain
    assert suffixes._read_parsed(str(written), list_stat(path)) is None
    after = answers()
    assert after[4] == ("a.b.zz-test", "q", "b.zz-test")
    assert after[6] == ("a.b.zz-test", "deep", "b.zz-test")


def test_a_list_changed_as_the_file_was_written_is_not_trusted(list_copy, monkeypatch):
    """Like the rule cache's memo: a list whose times fall within RACY_NS of the file's writing could have been
    written again within the clock's step; it is parsed again until it is older (the copy was made just now)."""
    path, directory = list_copy
    monkeypatch.setattr(cache, "RACY_NS", RACY_NS)
    answers()
    [written] = cached_files(directory)
    assert suffixes._read_parsed(str(written), list_stat(path)) is None
    monkeypatch.setattr(cache, "RACY_NS", 0)  # the same file, its times no longer in doubt
    assert suffixes._read_parsed(str(written), list_stat(path)) is not None


@pytest.mark.parametrize("damage", ["flip", "cut", "garbage", "empty", "magic only"])
def test_a_damaged_file_is_parsed_again_and_rewritten(list_copy, damage):
    path, directory = list_copy
    good = answers()
    [written] = cached_files(directory)
    data = written.read_bytes()
    damaged = {"flip": data[:-100] + bytes([data[-100] ^ 0x40]) + data[-99:], "cut": data[: len(data) // 2],
               "garbage": os.urandom(len(data)), "empty": b"", "magic only": suffixes.CACHE_MAGIC}[damage]
    written.write_bytes(damaged)
    assert suffixes._read_parsed(str(written), list_stat(path)) is None
    assert answers() == good
    assert suffixes._read_parsed(str(written), list_stat(path)) is not None  # written again, whole


def test_a_directory_that_cannot_be_written_costs_a_parse_only(list_copy, tmp_path):
    path, _ = list_copy
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    suffixes.keep_parsed_in(None)
    expected = answers()
    suffixes.keep_parsed_in(str(blocker / "cache"))
    assert answers() == expected
    assert blocker.read_text() == "not a directory"
    assert not list(tmp_path.glob("**/*.tmp"))


def test_old_files_are_trimmed(list_copy):
    _, directory = list_copy
    directory.mkdir()
    for stamp in ("0000000000000001", "0000000000000002", "0000000000000003"):
        (directory / f"psl-{stamp}.marshal").write_bytes(b"old")
        os.utime(directory / f"psl-{stamp}.marshal", (1, 1))
    answers()
    assert len(cached_files(directory)) == suffixes.CACHE_KEEP
    assert any(f.read_bytes().startswith(suffixes.CACHE_MAGIC) for f in cached_files(directory))


def domain_fields(stdout: str) -> list[tuple]:
    found = []
    for line in stdout.splitlines():
        question = json.loads(line)["dns"]["question"]
        found.append((question["name"], question.get("registered_domain"), question.get("subdomain"),
                      question.get("top_level_domain")))
    return found


def test_replay_keeps_the_parsed_list_in_its_rule_cache(tmp_path):
    """`--rules-cache DIR`: the first replay with a hit writes the parsed list there, the next reads it; the events'
    domain fields are the same with it, from it, and with caching off (which writes nothing anywhere)."""
    args = ["replay", str(PCAPS / "demo-resolver.pcap"), "--rules", str(PCAPS / "pcaps.rules"), "--out", "-"]
    cache = tmp_path / "cache"
    home = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    off = run_cli(*args, "--rules-cache", "off", env=home)
    cold = run_cli(*args, "--rules-cache", str(cache), env=home)
    written = cached_files(cache)
    assert len(written) == 1
    stamp = os.stat(written[0]).st_mtime_ns
    warm = run_cli(*args, "--rules-cache", str(cache), env=home)
    assert off.returncode == cold.returncode == warm.returncode == 0, (cold.stderr, warm.stderr)
    # read, not written again (a file that did not hold would have been replaced)
    assert cached_files(cache) == written and os.stat(written[0]).st_mtime_ns == stamp
    assert domain_fields(off.stdout) == domain_fields(cold.stdout) == domain_fields(warm.stdout)
    assert any(fields[1] for fields in domain_fields(off.stdout))
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()
