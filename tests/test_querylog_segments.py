"""The query log's schema 2 (decision 0180): packed entries in segment files with sorted key files, a SQLite
catalogue. The compiled walk and sort agree with their twins; decoded entries survive packing; lookups by name,
below a name and by address find what a scan finds; a store of schema 1 is refused and left as it was; a writer
killed between writing and committing leaves nothing a reader misreads; `who-asked`'s short way in answers as
the whole CLI does."""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import subprocess
import sys

import pytest
from querylog_support import batches

from conftest import PCAPS, ROOT, run_cli
from sensor import loop as selector
from sensor.querylog.record import QueryLogEntry
from sensor.querylog.segment import pack_entries, segment_keys_reference, sort_keys_reference
from sensor.querylog.store import QueryStore, address_text

DEMO = str(PCAPS / "demo-resolver.pcap")
CAPS = (32, 2048, 4)


def entry(i: int, name: str, answers: tuple = (), client: bytes = b"\x0a\x00\x00\x01", status: int = 0,
          rcode: int = 0) -> QueryLogEntry:
    return QueryLogEntry(1_700_000_000 + i, i % 1_000_000, None if i % 3 else 7, client, b"\x0a\x00\x00\x35",
                         40000 + i % 1000, 53, 17 if i % 5 else 6, i % 65536, name, 1, 1, status, rcode,
                         0x8180 | rcode if rcode >= 0 else 0, 1000 if status == 0 else -1, answers, i,
                         "vxlan" if i % 7 == 0 else None, i % 2, 0)


def generated(n: int, seed: int = 1) -> list[QueryLogEntry]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        depth = rng.randrange(1, 6)
        name = ".".join(rng.choice(["a", "Www", "evil", "x-1", "b\\.c", "\\001z"]) for _ in range(depth - 1))
        name = (name + "." if name else "") + rng.choice(["example", "com", "EXAMPLE"])
        kind = rng.randrange(4)
        if kind == 0:
            out.append(entry(i, name, status=1, rcode=-1))
        elif kind == 1:
            out.append(entry(i, name, ((name, 1, 60, f"192.0.2.{i % 256}"), (name, 28, 60, "2001:db8::1"),
                                       (name, 5, 60, "alias.example"), (name, 15, 60, "10 mx.example"),
                                       (name, 16, 60, '"v=spf1 \\"x\\" -all" "y"'), (name, 99, 60, "\\# 2 abcd"))))
        elif kind == 2:
            out.append(entry(i, name, tuple((name, 1, 60, f"198.51.100.{k}") for k in range(40)), status=2))
        else:
            out.append(entry(i, name, rcode=3))
    return out


def test_packed_entries_decode_back_to_the_same_records():
    entries = generated(300)
    decoded = selector.decode_query_log(pack_entries(entries))
    for before, after in zip(entries, decoded, strict=True):
        assert after == before._replace(answers=tuple(before.answers))


@pytest.mark.skipif(selector.compiled is None, reason="the compiled module is not built")
@pytest.mark.parametrize("limits", [(1 << 40, 1 << 40), (17, 1 << 40), (1 << 40, 3000)])
def test_the_compiled_walk_and_sort_agree_with_their_twins(limits):
    packed = pack_entries(generated(500))
    compiled = selector.compiled
    for data in (packed, _demo_packed()):
        position = 0
        while position < len(data):
            got = compiled.querylog_segment_keys(data, position, *limits, 1000 + position, *CAPS)
            want = segment_keys_reference(data, position, *limits, 1000 + position, *CAPS)
            assert got == want
            assert compiled.querylog_sort_keys(got[4]) == sort_keys_reference(got[4])
            position = got[0]


def _demo_packed() -> bytes:
    loop = selector.make_loop(1, (53,), {}, query_log=True)
    out = []
    for first, data, meta in batches(DEMO, 64):
        loop.run_batch(data, meta, first)
        out.append(loop.take_query_log_packed())
    loop.flush_query_log()
    out.append(loop.take_query_log_packed())
    return b"".join(out)


def test_lookups_find_what_a_scan_finds(tmp_path):
    entries = generated(2000, seed=3)
    store = QueryStore.open_writer(str(tmp_path / "q.db"), segment_rows=300)
    assert store.insert(entries) == 2000
    reader = QueryStore.open_reader(str(tmp_path / "q.db"))
    stored = list(reader.by_time())
    assert len(stored) == 2000
    from sensor.querylog.segment import reversed_name

    deep = next(e.qname for e in stored if len(reversed_name(e.qname).split(".")) >= 6)  # 5 labels and more
    for name in ("www.evil.example", "evil.example", "a.b\\.c.com", "example", "\\001z.com", "nothere.example",
                 deep, deep.split(".", 1)[1]):
        wanted = reversed_name(name)
        exact = sorted(e.frame for _, e in reader.by_name(name, False))
        assert exact == sorted(e.frame for e in stored if reversed_name(e.qname) == wanted), name
        below = sorted(e.frame for _, e in reader.by_name(name, True))
        assert below == sorted(e.frame for e in stored if reversed_name(e.qname).startswith(wanted)), name
    for address in (b"\xc0\x00\x02\x05", b"\xc6\x33\x64\x03", b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01"):
        found = sorted(e.frame for e in reader.by_resolved_ip(address))
        text = address_text(address)
        assert found == sorted(e.frame for e in stored if any(a[3] == text for a in e.answers))
    assert {len(e.answers) for e in stored if e.status == 2} == {4}  # response-only entries: 4 answers kept


def test_a_store_of_schema_1_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL); "
                     "INSERT INTO meta VALUES ('schema', '1'); CREATE TABLE segments(id INTEGER PRIMARY KEY);")
    db.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    listing = sorted(os.listdir(tmp_path))
    for command in (["who-asked", "x.example"], ["hunt", "--rules", str(ROOT / "rules" / "demo.rules")],
                    ["replay", DEMO, "--rules", str(ROOT / "rules" / "demo.rules"), "--no-progress"]):
        result = run_cli(*command, "--query-log", str(path))
        assert result.returncode == 2, result.stderr
        assert "schema 1" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(os.listdir(tmp_path)) == listing


def test_bytes_past_the_last_commit_are_never_read_and_are_cut_at_reopen(tmp_path):
    path = str(tmp_path / "q.db")
    store = QueryStore.open_writer(path, segment_rows=1000)
    store.insert(generated(100))
    entries_file = os.path.join(path + ".segments", "0000000001.entries")
    committed = os.path.getsize(entries_file)
    with open(entries_file, "ab") as handle:  # a writer killed after writing, before its commit
        handle.write(pack_entries(generated(5, seed=9))[:-3])
    assert len(list(QueryStore.open_reader(path).by_time())) == 100
    store.close()
    store = QueryStore.open_writer(path, segment_rows=1000)
    assert os.path.getsize(entries_file) == committed
    store.insert(generated(10, seed=4))
    assert len(list(QueryStore.open_reader(path).by_time())) == 110


def test_the_attribution_window_default_is_the_attributions():
    from sensor.attribution import DEFAULT_WINDOW
    from sensor.querylog.options import DEFAULT_ATTRIBUTION_WINDOW

    assert DEFAULT_ATTRIBUTION_WINDOW == DEFAULT_WINDOW


def test_who_asked_short_way_answers_as_the_whole_cli(tmp_path):
    path = str(tmp_path / "q.db")
    assert run_cli("replay", DEMO, "--rules", str(ROOT / "rules" / "demo.rules"), "--no-progress",
                   "--query-log", path).returncode == 0
    for args in (["evil.example", "--subdomains", "--json"], ["login-verify.evil.example"],
                 ["evil.example", "--subdomains", "--since", "2026-01-01T09:00:05Z"], ["nothing.example"],
                 ["x", "--since", "yesterday"]):
        quick = run_cli("who-asked", *args, "--query-log", path)
        whole = subprocess.run([sys.executable, "-c", "import sys; from sensor.cli import main; "
                                "sys.exit(main(sys.argv[1:]))", "who-asked", *args, "--query-log", path],
                               cwd=ROOT, capture_output=True, text=True)
        assert (quick.returncode, quick.stdout, quick.stderr) == (whole.returncode, whole.stdout, whole.stderr)
    probe = subprocess.run([sys.executable, "-c", "import sys; from sensor.entry import main; main(sys.argv[1:]); "
                            "print(sorted(m for m in sys.modules if m in ('sensor.cli', 'sensor.events', "
                            "'sensor.config', 'sensor.attribution')), file=sys.stderr)",
                            "who-asked", "evil.example", "--query-log", path],
                           cwd=ROOT, capture_output=True, text=True)
    assert probe.stderr.strip().endswith("[]"), probe.stderr


def test_segment_files_without_their_catalogue_are_refused_not_overwritten(tmp_path):
    path = str(tmp_path / "q.db")
    store = QueryStore.open_writer(path, segment_rows=50)
    store.insert(generated(120))
    store.close()
    os.unlink(path)
    before = sorted(os.listdir(path + ".segments"))
    with pytest.raises(Exception, match="segment files"):
        QueryStore.open_writer(path)
    assert not os.path.exists(path) and sorted(os.listdir(path + ".segments")) == before
