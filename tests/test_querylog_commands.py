"""The query log end to end: stores written by `truesource replay --query-log`, read by who-asked, hunt and
resolved-ip; a store read while written; retention; the dns.query topic; live capture with --query-log.

Expectations come from the captures themselves, decoded here by scapy and dnslib (not by the sensor)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import defaultdict
from datetime import UTC, datetime

import dnslib
import pytest
import zmq
from scapy.all import IP, TCP, UDP, IPv6, rdpcap

from conftest import PCAPS, ROOT, free_tcp_endpoint, run_cli
from sensor.querylog.lookup import parse_duration, parse_time
from sensor.querylog.record import QueryLogEntry
from sensor.querylog.store import QueryStore, Retention, name_range, reversed_name

DEMO = str(PCAPS / "demo-resolver.pcap")
DEMO_RULES = str(ROOT / "rules" / "demo.rules")


def iso(us: int) -> str:
    return datetime.fromtimestamp(us // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{us % 1_000_000:06d}Z"


def dns_messages(pcap: str) -> list[dict]:
    """Every UDP DNS message on port 53 of the capture, decoded by scapy and dnslib."""
    out = []
    for packet in rdpcap(pcap):
        ip = packet.getlayer(IP) or packet.getlayer(IPv6)
        udp = packet.getlayer(UDP)
        if ip is None or udp is None or 53 not in (udp.sport, udp.dport) or packet.getlayer(TCP):
            continue
        try:
            record = dnslib.DNSRecord.parse(bytes(udp.payload))
        except Exception:
            continue
        if not record.questions:
            continue
        out.append({"ts": int(round(float(packet.time) * 1_000_000)), "src": ip.src, "dst": ip.dst,
                    "sport": udp.sport, "dport": udp.dport, "id": record.header.id, "response": record.header.qr,
                    "name": str(record.q.qname).rstrip(".").lower(), "rd": record.header.rd,
                    "answers": [str(rr.rdata) for rr in record.rr if rr.rtype in (1, 28)]})
    return out


def queries(messages, name: str, below: bool = True) -> list[dict]:
    return [m for m in messages if not m["response"]
            and (m["name"] == name or (below and m["name"].endswith("." + name)))]


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("qlog") / "demo.db")
    result = run_cli("replay", DEMO, "--rules", DEMO_RULES, "--no-progress", "--query-log", path)
    assert result.returncode == 0, result.stderr
    assert "queries written, 0 dropped" in result.stderr
    return path


@pytest.fixture(scope="module")
def demo_messages() -> list[dict]:
    return dns_messages(DEMO)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_who_asked_names_every_client_with_times_counts_and_answers(demo_store, demo_messages):
    result = run_cli("who-asked", "evil.example", "--subdomains", "--json", "--query-log", demo_store)
    assert result.returncode == 0, result.stderr
    got = {(r["client_ip"], r["name"]): r for r in json_lines(result.stdout)}
    expected: dict[tuple, list] = defaultdict(list)
    for m in queries(demo_messages, "evil.example"):
        expected[(m["src"], m["name"])].append(m)
    assert set(got) == set(expected)
    for key, asked in expected.items():
        row = got[key]
        assert row["count"] == len(asked)
        assert row["first_seen"] == iso(min(m["ts"] for m in asked))
        assert row["last_seen"] == iso(max(m["ts"] for m in asked))
        answers = {a for m in demo_messages if m["response"] and (m["dst"], m["dport"]) in
                   {(q["src"], q["sport"]) for q in asked} and m["id"] in {q["id"] for q in asked}
                   for a in m["answers"]}
        assert set(row["answers"]) >= answers


def test_who_asked_without_subdomains_is_the_name_only(demo_store, demo_messages):
    name = queries(demo_messages, "evil.example")[0]["name"]
    result = run_cli("who-asked", name, "--json", "--query-log", demo_store)
    rows = json_lines(result.stdout)
    assert rows and {r["name"] for r in rows} == {name}
    assert sum(r["count"] for r in rows) == len(queries(demo_messages, name, below=False))
    parent = run_cli("who-asked", "evil.example", "--json", "--query-log", demo_store)
    assert sum(r["count"] for r in json_lines(parent.stdout)) == \
        len(queries(demo_messages, "evil.example", below=False))


def test_who_asked_time_filters(demo_store, demo_messages):
    asked = sorted(queries(demo_messages, "evil.example"), key=lambda m: m["ts"])
    middle = asked[len(asked) // 2]["ts"]
    since = run_cli("who-asked", "evil.example", "--subdomains", "--json", "--since", iso(middle),
                    "--query-log", demo_store)
    assert sum(r["count"] for r in json_lines(since.stdout)) == sum(1 for m in asked if m["ts"] >= middle)
    until = run_cli("who-asked", "evil.example", "--subdomains", "--json", "--until", iso(middle),
                    "--query-log", demo_store)
    assert sum(r["count"] for r in json_lines(until.stdout)) == sum(1 for m in asked if m["ts"] < middle)
    around = run_cli("who-asked", "evil.example", "--subdomains", "--json", "--around", iso(middle), "--window",
                     "1s", "--query-log", demo_store)
    assert sum(r["count"] for r in json_lines(around.stdout)) == \
        sum(1 for m in asked if abs(m["ts"] - middle) <= 1_000_000)


def test_resolver_query_names_the_clients_behind_the_upstream_query(demo_store, demo_messages):
    """Upstream: an iterative query (RD clear) from a resolver; its clients: stub queries to that resolver, from
    other hosts, for the name or below it, in the 5 s before."""
    resolvers = {m["dst"] for m in demo_messages if not m["response"] and m["rd"]}
    upstream = [m for m in demo_messages if not m["response"] and m["src"] in resolvers and not m["rd"]]
    assert upstream, "the demo capture has resolver upstream queries"
    checked = 0
    for up in upstream:
        clients = {(m["src"], m["sport"]) for m in demo_messages if not m["response"] and m["dst"] == up["src"]
                   and m["src"] not in resolvers
                   and (m["name"] == up["name"] or m["name"].endswith("." + up["name"]))
                   and 0 <= up["ts"] - m["ts"] <= 5_000_000}
        if not clients:
            continue
        result = run_cli("who-asked", up["name"], "--resolver-query", iso(up["ts"] + 300_000), "--json",
                         "--query-log", demo_store)
        assert result.returncode == 0, result.stderr
        rows = [r for r in json_lines(result.stdout) if r["resolver_query"]["time"] == iso(up["ts"])]
        assert {(r["client_ip"], p) for r in rows for p in r["ports"]} == clients
        assert {r["resolver_query"]["resolver_ip"] for r in rows} == {up["src"]}
        checked += 1
    assert checked


def test_hunt_finds_what_the_live_sensor_found(demo_store):
    live = run_cli("replay", DEMO, "--rules", DEMO_RULES, "--no-progress")
    hunt = run_cli("hunt", "--rules", DEMO_RULES, "--query-log", demo_store)
    assert hunt.returncode == 0, hunt.stderr

    def key(e):
        return (e["source"]["ip"], e["source"]["port"], e["dns"]["id"], e["dns"]["question"]["name"],
                e["rule"]["name"], e["@timestamp"], e["network"]["community_id"])
    live_events, hunted = json_lines(live.stdout), json_lines(hunt.stdout)
    assert live_events
    assert sorted(map(key, hunted)) == sorted(map(key, live_events))
    for event in hunted:
        assert event["truesource"]["retrospective"] is True
        assert event["event"]["type"] == ["indicator"] and event["event"]["kind"] == "alert"
        assert "response_code" in event["dns"]


def test_hunt_since_excludes_older_queries(demo_store):
    result = run_cli("hunt", "--rules", DEMO_RULES, "--since", "2099-01-01T00:00:00Z", "--query-log", demo_store)
    assert result.returncode == 0 and result.stdout == ""
    assert "0 hits" in result.stderr


def test_resolved_ip_names_the_name_and_who_asked(demo_store, demo_messages):
    answered = [m for m in demo_messages if m["response"] and m["answers"]]
    assert answered
    response = answered[0]
    address = response["answers"][0]
    result = run_cli("resolved-ip", address, "--json", "--query-log", demo_store)
    assert result.returncode == 0, result.stderr
    rows = json_lines(result.stdout)
    expected = {(r["dst"], r["name"]) for r in demo_messages if r["response"] and address in r["answers"]}
    assert {(r["client_ip"], r["name"]) for r in rows} == expected
    assert all(r["resolved_ip"] == address for r in rows)
    text = run_cli("resolved-ip", address, "--query-log", demo_store)
    assert response["name"] in text.stdout


@pytest.mark.parametrize("args, message", [
    (["who-asked", "x.example", "--query-log", "/nonexistent/q.db"], "no query log here"),
    (["who-asked", "x.example", "--since", "yesterday", "--query-log", "{store}"],
     "--since: 'yesterday' is not a time"),
    (["who-asked", "x.example", "--window", "5m", "--query-log", "{store}"], "--window needs --around"),
    (["resolved-ip", "not-an-ip", "--query-log", "{store}"], "is not an IP address"),
    (["hunt", "--rules", DEMO_RULES, "--query-log", "{junk}"], "not a query log"),
    (["who-asked", "x.example"], "no query log: give --query-log"),
])
def test_errors_are_one_line_and_exit_2(demo_store, tmp_path, args, message):
    junk = tmp_path / "junk.db"
    junk.write_text("this is not SQLite\n")
    env = {k: v for k, v in os.environ.items() if k != "TRUESOURCE_QUERY_LOG"}
    result = run_cli(*[a.format(store=demo_store, junk=junk) for a in args], env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_query_log_environment_variable_names_the_store(demo_store):
    result = run_cli("who-asked", "evil.example", "--subdomains", "--json",
                     env={**os.environ, "TRUESOURCE_QUERY_LOG": demo_store})
    assert result.returncode == 0 and json_lines(result.stdout)


def test_store_is_read_by_another_process_while_a_replay_writes_it(tmp_path):
    """A replay from standard input is fed in two halves; between them, a second process (who-asked) already
    reads what the first half stored, and after the end it reads everything."""
    made = subprocess.run([sys.executable, str(ROOT / "bench" / "make_capture.py"), "--packets", "40000",
                           "--rules", "300", "--out-dir", str(tmp_path)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    data = (tmp_path / "capture.pcap").read_bytes()
    store = str(tmp_path / "live.db")
    proc = subprocess.Popen([sys.executable, "-m", "sensor", "replay", "-", "--rules", str(tmp_path / "rules.txt"),
                             "--no-progress", "--query-log", store, "--out", os.devnull], cwd=ROOT,
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=False)
    half = len(data) // 2
    proc.stdin.write(data[:half])
    proc.stdin.flush()

    def stored() -> int:
        result = run_cli("who-asked", ".", "--subdomains", "--json", "--query-log", store)
        assert result.returncode == 0, result.stderr
        return sum(r["count"] for r in json_lines(result.stdout))

    deadline = time.monotonic() + 60
    seen = 0
    while time.monotonic() < deadline and seen == 0:
        if os.path.exists(store):
            seen = stored()
        time.sleep(0.2)  # poll interval
    assert seen > 0, "nothing readable while the replay was still running"
    assert proc.poll() is None, "the replay must still be running (its input is open)"
    proc.stdin.write(data[half:])
    proc.stdin.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    written = int(err.split("query log ")[1].split(": ")[1].split(" queries written")[0].replace(",", ""))
    assert seen < written == stored()


def entry(ts: float, name: str, client: bytes = b"\x0a\x00\x00\x01", answers: tuple = ()) -> QueryLogEntry:
    sec = int(ts)
    return QueryLogEntry(sec, int((ts - sec) * 1e6), None, client, b"\x0a\x00\x00\x35", 40000, 53, 17, 1, name, 1,
                         1, 0, 0, 0x8180, 1000, answers, 1)


def test_retention_by_age_drops_whole_old_segments_and_keeps_new_ones(tmp_path):
    store = QueryStore.open_writer(str(tmp_path / "age.db"), segment_rows=100)
    now = time.time()
    store.insert([entry(now - 3 * 86400 + i, f"old{i}.example") for i in range(250)])
    store.insert([entry(now - 60 + i * 0.1, f"new{i}.example") for i in range(150)])
    # four full segments: 100 old, 100 old, 50 old + 50 new, 100 new
    result = store.apply_retention(Retention(max_age_seconds=86400), now=now)
    assert result.segments_by_age == 2 and result.queries_deleted == 200
    names = [e.qname for e in store.by_time()]
    assert len(names) == 200 and all(n.startswith("new") for n in names[50:])
    assert sum(n.startswith("old") for n in names) == 50  # the segment shared with new queries stays


def test_retention_by_size_keeps_the_file_under_the_limit_and_the_newest_queries(tmp_path):
    path = str(tmp_path / "size.db")
    store = QueryStore.open_writer(path, segment_rows=2000)
    for batch in range(20):
        store.insert([entry(1_700_000_000 + batch * 2000 + i, f"q{batch}-{i}.padding-to-take-some-room.example",
                            answers=((f"q{batch}-{i}.example", 1, 60, f"192.0.2.{i % 250}"),))
                      for i in range(2000)])
    before = store.used_bytes()  # the catalogue (PATH) and the segment files (PATH.segments/)
    limit = before // 3
    result = store.apply_retention(Retention(max_bytes=limit))
    assert result.segments_by_size > 0
    assert store.used_bytes() <= limit
    kept = [e.qname for e in store.by_time()]
    assert kept[-1] == "q19-1999.padding-to-take-some-room.example"
    assert result.queries_deleted + len(kept) == 40_000
    first_kept = int(kept[0].split("-")[0][1:])
    assert all(int(n.split("-")[0][1:]) >= first_kept for n in kept)


def test_retention_options_on_replay(tmp_path):
    """The demo capture is from 2026-01-01: a one-day limit drops every full segment at start and at stop."""
    path = str(tmp_path / "r.db")
    result = run_cli("replay", DEMO, "--rules", DEMO_RULES, "--no-progress", "--query-log", path,
                     "--query-log-retention-days", "1", "--query-log-segment-rows", "20")
    assert result.returncode == 0, result.stderr
    line = [x for x in result.stderr.splitlines() if x.startswith("query log")][0]
    written = int(line.split(": ")[1].split(" queries")[0].replace(",", ""))
    removed = int(line.split(", ")[-1].split(" removed")[0].replace(",", ""))
    assert removed == (written // 20) * 20 and removed > 0
    assert QueryStore.open_reader(path).count() == written - removed


def test_names_reversed_for_subtree_ranges():
    assert reversed_name("Login.Evil.Example") == "example.evil.login."
    assert reversed_name(".") == "" and reversed_name("example.") == "example."
    assert reversed_name("a\\.b.example") == "example.a\\.b."
    low, high = name_range("evil.example")
    for inside in ("evil.example", "x.evil.example", "a.b.evil.example"):
        assert low <= reversed_name(inside) < high
    for outside in ("notevil.example", "evil.example2", "example", "evil.example.com"):
        assert not low <= reversed_name(outside) < high


def test_times_absolute_and_relative():
    now = 1_800_000_000.0
    assert parse_time("2026-11-23T10:00:01Z", "--since") == \
        int(datetime(2026, 11, 23, 10, 0, 1, tzinfo=UTC).timestamp()) * 1_000_000
    assert parse_time("2026-11-23T10:00:01.5+01:00", "--since") == \
        int(datetime(2026, 11, 23, 9, 0, 1, tzinfo=UTC).timestamp()) * 1_000_000 + 500_000
    assert parse_time("-2h", "--since", now) == int((now - 7200) * 1_000_000)
    assert parse_time("-1.5d", "--since", now) == int((now - 129600) * 1_000_000)
    assert parse_time("now", "--until", now) == int(now * 1_000_000)
    assert parse_duration("5m", "--window") == 300 and parse_duration("90", "--window") == 90


def test_dns_query_topic_reaches_a_real_subscriber(tmp_path, demo_messages):
    endpoint = free_tcp_endpoint()
    path = str(tmp_path / "pub.db")
    proc = subprocess.Popen([sys.executable, "-m", "sensor", "replay", DEMO, "--rules", DEMO_RULES, "--no-progress",
                             "--query-log", path, "--publish", endpoint, "--publish-queries", "--wait-subscribers",
                             "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"dns.query")
    sub.connect(endpoint)
    events = []
    try:
        while sub.poll(10_000):
            topic, payload = sub.recv_multipart()
            assert topic == b"dns.query"
            events.append(json.loads(payload))
            if proc.poll() is not None and not sub.poll(500):
                break
    finally:
        sub.close()
        context.term()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    written = int(err.split("query log ")[1].split(": ")[1].split(" queries")[0].replace(",", ""))
    assert len(events) == written
    answered = [e for e in events if e["dns"]["type"] == "answer"]
    assert answered and all("response_code" in e["dns"] for e in answered)
    for response in (m for m in demo_messages if m["response"] and m["answers"]):
        match = [e for e in events if e["source"]["ip"] == response["dst"] and e["source"]["port"] == response["dport"]
                 and e["dns"]["id"] == str(response["id"])]
        assert match and set(match[0]["dns"]["resolved_ip"]) == set(response["answers"])
        assert set(response["answers"]) <= set(match[0]["related"]["ip"])  # pivot from a resolved address
        assert match[0]["event"]["dataset"] == "truesource.query" and "rule" not in match[0]


@pytest.mark.netns
@pytest.mark.parametrize("workers", [1, 2])
def test_live_capture_writes_the_query_log(wire, tmp_path, workers):
    from test_capture_live import replay_hits, stop, wait_started, wait_total

    path = str(tmp_path / "live.db")
    endpoint = f"ipc://{tmp_path}/events"  # statistics, to know when the capture has seen the traffic
    proc = wire.start_capture("--rules", DEMO_RULES, "--query-log", path, "--stats-interval", "1",
                              "--workers", str(workers), "--publish", endpoint)
    wait_started(proc)
    wire.replay(DEMO, pps=2000)
    wait_total(endpoint, "hits", len(replay_hits(DEMO, DEMO_RULES)))
    out, err = stop(proc)
    assert "queries written, 0 dropped" in err, err
    demo = dns_messages(DEMO)
    result = run_cli("who-asked", "evil.example", "--subdomains", "--json", "--query-log", path)
    rows = json_lines(result.stdout)
    expected = {(m["src"], m["name"]) for m in queries(demo, "evil.example")}
    assert {(r["client_ip"], r["name"]) for r in rows} == expected


def shipped_captures() -> list:
    found = sorted(PCAPS.glob("*.pcap")) + sorted(PCAPS.glob("*.pcapng")) + sorted((PCAPS / "querylog").glob("*.pcap"))
    # Captures that end mid-frame make replay exit 1 (pcaps/expectations.toml `exit`; tested in test_pcaps.py).
    expectations = tomllib.loads((PCAPS / "expectations.toml").read_text())["captures"]
    return [p for p in found if expectations.get(p.name, {}).get("exit", 0) == 0]


def loop_entries(path) -> list[tuple]:
    """The query-log entries the loop makes from the capture, in this process (no writer, no store), with the
    answers the store keeps of each (the writer's caps)."""
    import pcapy

    from sensor.loop import decode_query_log, make_loop
    from sensor.querylog.writer import WriterLimits

    reader = pcapy.open_offline(str(path))
    loop = make_loop(reader.datalink(), (53,), {}, query_log=True)
    caps = WriterLimits().caps  # what the writer keeps of each entry's answers
    entries, frame = [], 1
    while True:
        data, meta = reader.next_batch(4096)
        if not meta:
            break
        loop.run_batch(data, meta, frame)
        frame += len(meta) // 16
        entries += decode_query_log(loop.take_query_log_packed(), caps=caps)
    loop.flush_query_log()
    entries += decode_query_log(loop.take_query_log_packed(), caps=caps)
    return entries


def comparable(entry) -> tuple:
    return tuple(entry._replace(answers=tuple(tuple(a) for a in entry.answers)))


@pytest.mark.parametrize("pcap", shipped_captures(), ids=lambda p: p.name)
def test_replay_stores_exactly_the_entries_the_loop_makes_and_hunt_finds_the_live_hits(tmp_path, pcap):
    """Through the real path (sink, pipe, writer process, store) nothing is lost, added or changed; and `hunt`
    with the same rules (allow, wildcard, regex and escaped names in pcaps.rules) finds the hits the live sensor
    found, CNAME hits included, plus only name hits on responses whose query was not seen (the live sensor matches
    the names of queries only)."""
    path = str(tmp_path / "q.db")
    rules = str(PCAPS / "pcaps.rules")
    result = run_cli("replay", str(pcap), "--rules", rules, "--no-progress", "--query-log", path)
    assert result.returncode == 0, result.stderr
    expected = sorted(map(comparable, loop_entries(pcap)))
    stored = sorted(map(comparable, QueryStore.open_reader(path).by_time()))
    assert stored == expected
    hunt = run_cli("hunt", "--rules", rules, "--query-log", path)
    assert hunt.returncode == 0, hunt.stderr

    def key(e):
        return (e["source"]["ip"], e["source"]["port"], e["dns"]["id"], e["dns"]["question"]["name"],
                e["rule"]["name"], e["@timestamp"])
    # a response-only entry's question name was never asked in the capture (live hits are on queries), but a
    # response is what makes a live CNAME hit, with or without its query
    hunted = [e for e in json_lines(hunt.stdout)
              if e["truesource"]["query"]["status"] != "response_only" or "cname" in e["truesource"]]
    # not anomalies; CNAME hits too (a response's CNAME target matching a rule: hunt walks the stored answers of the
    # entries whose response holds a CNAME, docs/querylog.md), with the chain and the hop that matched
    live_hits = [e for e in json_lines(result.stdout) if e["event"]["dataset"] == "truesource.hit"]
    assert sorted(map(key, hunted)) == sorted(map(key, live_hits))

    def cname_key(e):
        return (*key(e), e["destination"]["ip"], e["dns"]["type"], json.dumps(e["dns"].get("answers")),
                json.dumps(e["truesource"]["cname"]), json.dumps(e["threat"]))
    assert (sorted(map(cname_key, [e for e in hunted if "cname" in e["truesource"]]))
            == sorted(map(cname_key, [e for e in live_hits if "cname" in e["truesource"]])))


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root to mount a small tmpfs")
def test_a_full_disk_ends_the_replay_with_exit_1_and_every_hit_written(tmp_path):
    """The store on a 400 KiB file system: the writer reports the failure (one line, exit 1), the replay does
    not hang on the pipe, and the hits still reach their output."""
    made = subprocess.run([sys.executable, str(ROOT / "bench" / "make_capture.py"), "--packets", "20000",
                           "--rules", "300", "--out-dir", str(tmp_path)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    small = tmp_path / "small"
    small.mkdir()
    hits = tmp_path / "hits.jsonl"
    script = (f"mount -t tmpfs -o size=400k none {small} && exec {sys.executable} -m sensor replay "
              f"{tmp_path / 'capture.pcap'} --rules {tmp_path / 'rules.txt'} --no-progress --out {hits} "
              f"--query-log {small / 'q.db'}")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and ("No space left on device" in result.stderr
                                              or "database or disk is full" in result.stderr)
    expected = (tmp_path / "expected_hits.tsv").read_text().count("\n")
    assert expected and len(hits.read_text().splitlines()) == expected


def test_relative_times_on_the_command_line(demo_store, demo_messages):
    """`--since -2h` as typed (argparse alone would take -2h for an option); relative to the clock."""
    asked = len(queries(demo_messages, "evil.example"))
    everything = run_cli("who-asked", "evil.example", "--subdomains", "--json", "--since", "-100000d",
                         "--query-log", demo_store)
    assert everything.returncode == 0, everything.stderr
    assert sum(r["count"] for r in json_lines(everything.stdout)) == asked
    recent = run_cli("who-asked", "evil.example", "--subdomains", "--json", "--since", "-1h", "--until", "now",
                     "--query-log", demo_store)
    assert recent.returncode == 0 and recent.stdout == ""  # the capture is from 2026-01-01


def test_hunt_cname_hits_follow_the_live_rule(tmp_path):
    """Hunt's CNAME hits (decision 0163): a target hop that a rule matches makes the hit, an allowed question name
    does not stop it, a question that hits is one alert (its own), an allow rule on the target is none, the 17th
    CNAME is never read, and a CNAME question (the searched pattern, no CNAME record) is a false candidate only."""
    rules = tmp_path / "rules.txt"
    rules.write_text("evil.example\n!ok.evil.example\n!allowed.test\n")
    store = QueryStore.open_writer(str(tmp_path / "q.db"))
    cname, a = 5, 1
    base = 1_767_225_600.0

    def chain(name, targets):
        owners = [name, *targets]
        return tuple((owners[k], cname, 300, t) for k, t in enumerate(targets)) + ((owners[-1], a, 60, "192.0.2.1"),)

    entries = [
        entry(base + 1, "one.good.test", answers=chain("one.good.test", ["mid.good.test", "X.Evil.Example"])),
        entry(base + 2, "allowed.test", answers=chain("allowed.test", ["c2.evil.example"])),
        entry(base + 3, "c2.evil.example", answers=chain("c2.evil.example", ["c3.evil.example"])),
        entry(base + 4, "ok.good.test", answers=chain("ok.good.test", ["ok.evil.example"])),
        entry(base + 5, "long.good.test",
              answers=chain("long.good.test", [f"h{k}.good.test" for k in range(16)] + ["far.evil.example"])),
        entry(base + 6, "plain.good.test", answers=(("plain.good.test", a, 60, "192.0.2.2"),)),
    ]
    question = entry(base + 7, "asks.good.test", answers=(("asks.good.test", a, 60, "192.0.2.3"),))
    entries.append(question._replace(qtype=cname))
    store.insert(entries)
    store.close()
    hunt = run_cli("hunt", "--rules", str(rules), "--query-log", str(tmp_path / "q.db"))
    assert hunt.returncode == 0, hunt.stderr
    assert "7 stored queries, 3 hits (2 through a CNAME)" in hunt.stderr
    events = {e["dns"]["question"]["name"]: e for e in json_lines(hunt.stdout)}
    assert sorted(events) == ["allowed.test", "c2.evil.example", "one.good.test"]
    one = events["one.good.test"]
    assert one["truesource"]["cname"] == {"chain": ["one.good.test", "mid.good.test", "X.Evil.Example"],
                                          "matched": "X.Evil.Example", "hop": 2}
    assert one["source"]["ip"] == "10.0.0.1" and one["destination"]["ip"] == "10.0.0.53"
    assert one["dns"]["type"] == "answer" and [r["type"] for r in one["dns"]["answers"]] == ["CNAME", "CNAME"]
    assert one["threat"]["enrichments"][0]["matched"]["field"] == "dns.answers.data"
    assert one["@timestamp"] == "2026-01-01T00:00:01.001000Z"  # the response's time: query + latency
    assert one["truesource"]["retrospective"] is True and one["event"]["dataset"] == "truesource.hunt"
    assert "cname" in events["allowed.test"]["truesource"]
    assert "cname" not in events["c2.evil.example"]["truesource"]
