"""The compiled rule-set file (sensor/rules/compiled.py) and its cache (sensor/rules/cache.py): the same hits as the
rules it came from, in the compiled loop and the reference loop; a damaged, cut or foreign file is a clear error
(or a rebuilt cache), never a wrong match; a changed source, option or file never finds an old compiled set."""

from __future__ import annotations

import json
import os
import struct
import threading

import pytest

from conftest import PCAPS, ROOT, run_cli
from sensor.errors import RuleError
from sensor.rules import cache
from sensor.rules import compiled as compiled_module
from sensor.rules.compiled import (
    CRC_AT,
    HEADER,
    CompiledRulesError,
    MappedRuleSet,
    _table_bytes_python,
    compiled_bytes,
    table_bytes,
)
from sensor.rules.loader import load_rules
from sensor.rules.matcher import match_table

SHIPPED_RULES = [ROOT / "rules", PCAPS / "pcaps.rules"]
CAPTURE = PCAPS / "demo-resolver.pcap"


def hits(stdout: str) -> list[tuple]:
    """Each hit's frame, name and rule, as a sorted list (the comparison ignores nothing else that differs)."""
    found = []
    for line in stdout.splitlines():
        event = json.loads(line)
        found.append((event["truesource"]["capture"]["frame"], event["dns"]["question"]["name"],
                       event["rule"]["name"], event["rule"]["ruleset"], event["truesource"]["rule"]["line"]))
    return sorted(found)


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


def test_compiled_file_holds_every_rule_as_the_rule_set(tmp_path):
    """Every rule read back from the file is the rule that was loaded, and every table name decides the same."""
    for source in SHIPPED_RULES:
        ruleset = load_rules([str(source)])
        table = dict(ruleset.table)
        rules = ruleset.rules
        path = tmp_path / "set.tsrules"
        path.write_bytes(compiled_bytes(ruleset))
        mapped = MappedRuleSet(str(path))
        assert len(mapped) == len(rules)
        assert mapped.rules == rules
        assert mapped.patterns == ruleset.patterns
        assert mapped.allow == bytes(ruleset.allow)
        assert dict(mapped.table.items()) == table
        for name in list(table) + ["nothing.example", "", "x." * 10 + "evil.example"]:
            labels = name.split(".") if name else []
            assert match_table(mapped.table, labels) == match_table(table, labels), name


def test_python_table_builder_writes_the_compiled_builders_bytes():
    """The reference writer (no compiler) and the compiled SuffixSet lay out the table identically."""
    pytest.importorskip("sensor._loop")
    import sensor.loop  # the selector registers the compiled SuffixSet with the writer

    assert compiled_module.NATIVE_SUFFIX_SET is sensor.loop.compiled.SuffixSet
    ruleset = load_rules([str(p) for p in SHIPPED_RULES])
    assert _table_bytes_python(ruleset.table)[0] == table_bytes(ruleset.table)[0]


@pytest.mark.parametrize("pure", ["0", "1"])
def test_replay_from_the_cache_hits_exactly_as_from_the_sources(cache_dir, pure):
    """Cold cache, warm cache and no cache: the same hits, in the compiled and the reference loop."""
    env = {**os.environ, "TRUESOURCE_PURE": pure}
    args = ["replay", str(CAPTURE), "--rules", str(PCAPS / "pcaps.rules"), "--out", "-"]
    plain = run_cli(*args, "--rules-cache", "off", env=env)
    cold = run_cli(*args, "--rules-cache", str(cache_dir), env=env)
    compiled = [p for p in os.listdir(cache_dir) if p.endswith(".tsrules")]
    warm = run_cli(*args, "--rules-cache", str(cache_dir), env=env)
    assert plain.returncode == cold.returncode == warm.returncode == 0, (cold.stderr, warm.stderr)
    assert len(compiled) == 1
    assert hits(plain.stdout) == hits(cold.stdout) == hits(warm.stdout)
    assert len(hits(plain.stdout)) > 0


def test_rules_compile_command_and_replay_from_the_file(tmp_path):
    out = tmp_path / "feed.tsrules"
    made = run_cli("rules", "compile", "--rules", str(PCAPS / "pcaps.rules"), "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert "rules from 1 file" in made.stdout
    args = ["replay", str(CAPTURE), "--out", "-", "--rules-cache", "off"]
    from_file = run_cli(*args, "--rules", str(out))
    from_source = run_cli(*args, "--rules", str(PCAPS / "pcaps.rules"))
    assert from_file.returncode == 0, from_file.stderr
    assert hits(from_file.stdout) == hits(from_source.stdout)
    tested = run_cli("rules", "test", "--rules", str(out), "login-verify.evil.example")
    assert tested.returncode == 0 and "hit by 'evil.example'" in tested.stdout, tested.stdout + tested.stderr
    both = run_cli(*args, "--rules", str(out), "--rules", str(PCAPS / "pcaps.rules"))
    assert both.returncode == 2 and "must be the only --rules" in both.stderr


def damaged_copies(data: bytes):
    """A flipped bit in the header, the table, the middle and the last byte; cut short; another version."""
    for at in (CRC_AT + 8, HEADER.size + 5, len(data) // 2, len(data) - 1):
        flipped = bytearray(data)
        flipped[at] ^= 0x10
        yield f"bit flipped at {at}", bytes(flipped), "checksum mismatch" if at != CRC_AT + 8 else "cut off"
    yield "cut short", data[:-7], "cut off"
    newer = bytearray(data)
    struct.pack_into("<I", newer, 8, 99)
    yield "another format version", bytes(newer), "format 99"
    yield "not a compiled file", b"evil.example\n" * 20, "no rule"


def test_damaged_compiled_file_is_a_clear_error_never_a_match(tmp_path):
    """`--rules damaged.tsrules`: exit 2, one line naming the file and what is wrong; no hit is printed."""
    good = tmp_path / "good.tsrules"
    assert run_cli("rules", "compile", "--rules", str(PCAPS / "pcaps.rules"), "--out", str(good)).returncode == 0
    data = good.read_bytes()
    for why, damaged, expected in damaged_copies(data):
        path = tmp_path / "damaged.tsrules"
        path.write_bytes(damaged)
        if why == "not a compiled file":
            continue  # a rules text file named .tsrules is read as rules text
        result = run_cli("replay", str(CAPTURE), "--rules", str(path), "--out", "-")
        assert result.returncode == 2, (why, result.stderr)
        assert result.stdout == "", why
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and expected in lines[0], (why, lines)


def test_damaged_cache_file_is_rebuilt_with_a_warning(cache_dir):
    args = ["replay", str(CAPTURE), "--rules", str(PCAPS / "pcaps.rules"), "--out", "-", "--rules-cache",
            str(cache_dir)]
    first = run_cli(*args)
    [name] = [p for p in os.listdir(cache_dir) if p.endswith(".tsrules")]
    compiled = cache_dir / name
    data = bytearray(compiled.read_bytes())
    data[len(data) // 3] ^= 0xFF
    compiled.write_bytes(bytes(data))
    second = run_cli(*args)
    assert second.returncode == 0
    assert "corrupt (checksum mismatch); compiling the rules again" in second.stderr
    assert hits(second.stdout) == hits(first.stdout)
    assert MappedRuleSet(str(compiled)).rules  # rewritten whole


def test_changed_source_or_option_never_finds_the_old_compiled_set(tmp_path, cache_dir):
    rules = tmp_path / "r.rules"
    rules.write_text("evil.example\n")
    first = cache.load_rule_set([str(rules)], None, str(cache_dir))
    assert [r.pattern for r in first.rules] == ["evil.example"]
    rules.write_text("other.example\n")  # same second, maybe same size: the memo must not be trusted blindly
    second = cache.load_rule_set([str(rules)], None, str(cache_dir))
    assert [r.pattern for r in second.rules] == ["other.example"]
    os.utime(rules, ns=(1_000_000_000, 1_000_000_000))  # an old mtime: the memo may now be used...
    third = cache.load_rule_set([str(rules)], None, str(cache_dir))
    assert [r.pattern for r in third.rules] == ["other.example"]
    rules.write_text("third.example\n")  # ...and a write changes size, mtime and ctime again
    os.utime(rules, ns=(1_000_000_000, 1_000_000_000))
    fourth = cache.load_rule_set([str(rules)], None, str(cache_dir))
    assert [r.pattern for r in fourth.rules] == ["third.example"]
    hosts = cache.load_rule_set([str(rules)], "native", str(cache_dir))
    assert hosts.path != fourth.path  # the format option is part of the key
    assert len([p for p in os.listdir(cache_dir) if p.endswith(".tsrules")]) <= cache.KEEP_CACHED


def test_concurrent_reader_never_sees_a_half_written_compiled_file(tmp_path, cache_dir):
    """Writers replace the file again and again while a reader maps it: every map is whole (atomic rename)."""
    rules = tmp_path / "r.rules"
    rules.write_text("".join(f"name{i}.example\n" for i in range(20000)))
    ruleset = load_rules([str(rules)])
    data = compiled_bytes(ruleset)
    target = tmp_path / "shared.tsrules"
    from sensor.rules.compiled import write_atomically

    write_atomically(str(target), data)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            write_atomically(str(target), data)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(100):
            mapped = MappedRuleSet(str(target))
            assert len(mapped) == 20000
            mapped.close()
    finally:
        stop.set()
        thread.join()


def test_unwritable_cache_runs_with_rules_compiled_in_memory(tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    result = run_cli("replay", str(CAPTURE), "--rules", str(PCAPS / "pcaps.rules"), "--out", "-",
                     "--rules-cache", str(blocked / "sub"))
    assert result.returncode == 0
    assert f"--rules-cache {blocked / 'sub'}: cannot write" in result.stderr
    assert len(hits(result.stdout)) > 0


def test_cache_directory_from_systemd_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "unit"))
    assert cache.cache_directory(None) == str(tmp_path / "unit")
    assert cache.cache_directory("off") is None
    assert cache.cache_directory(str(tmp_path / "x")) == str(tmp_path / "x")
    monkeypatch.delenv("CACHE_DIRECTORY")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_directory(None) == str(tmp_path / "xdg" / "truesource")


def test_compiled_file_loader_rejects_every_damaged_copy(tmp_path):
    """The loader itself (what the fuzz target drives): CompiledRulesError, a RuleError, for each damage."""
    ruleset = load_rules([str(PCAPS / "pcaps.rules")])
    data = compiled_bytes(ruleset)
    for why, damaged, expected in damaged_copies(data):
        path = tmp_path / "d.tsrules"
        path.write_bytes(damaged)
        with pytest.raises(CompiledRulesError) as caught:
            MappedRuleSet(str(path))
        assert isinstance(caught.value, RuleError)
        assert expected in str(caught.value) or why == "not a compiled file", (why, caught.value)


def test_cache_write_failing_mid_file_still_runs_with_every_rule(tmp_path, cache_dir, monkeypatch):
    """A full disk after the name table was handed to the writer: the rules are parsed again, none is lost."""
    import errno

    from sensor.rules import compiled

    real = compiled.write_compiled

    def full_disk(ruleset, out, **kwargs):
        real(ruleset, out, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "write_compiled", full_disk)
    rules = tmp_path / "r.rules"
    rules.write_text("evil.example\n=login.other.example\n")
    ruleset = cache.load_rule_set([str(rules)], None, str(cache_dir))
    assert match_table(ruleset.table, ["www", "evil", "example"]) == 0
    assert match_table(ruleset.table, ["login", "other", "example"]) == 1
    assert not [p for p in os.listdir(cache_dir) if p.endswith(".tsrules") or p.endswith(".tmp")]
