"""Every command in README.md's ```sh blocks, read from the README at test time and run as written (issue 17).

The shipped data stands in for the placeholder files an example names (capture.pcap, feeds/, q.db...), in a
working directory where rules/, pcaps/ and systemd/ are this checkout's; `.venv/bin/` is the test's own
environment. Each README line must match one case below, so a new example fails here until it is run too (or
skipped with its reason). Exit 0 and what the command is for are checked, not only that it ran.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_first_hour import SLOW_WRITER

from conftest import ROOT, free_tcp_endpoint

BIN = Path(sys.executable).parent  # the README says .venv/bin/; the environment running the tests is that one
DEMO = "pcaps/demo-resolver.pcap"
PLACEHOLDERS = {  # a README placeholder -> the shipped file that stands in for it
    "capture.pcap": DEMO, "more.pcapng": "pcaps/pcapng.pcapng", "day.pcap": DEMO, "feeds/": "rules/",
    "todays-intel.rules": "rules/demo.rules",
}


def readme_examples() -> list[str]:
    """Each command line of the README's ```sh blocks, without its trailing comment."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command:
                lines.append(command)
    return lines


EXAMPLES = readme_examples()


def as_run(command: str, **more: str) -> str:
    """The example with the shipped data for its placeholders and this environment for .venv/bin/."""
    for placeholder, shipped in {**PLACEHOLDERS, **more}.items():
        command = re.sub(rf"(?<![\w/.-]){re.escape(placeholder)}(?![\w.-])", shipped, command)
    return command.replace(".venv/bin/", f"{BIN}/")


def shell(command: str, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Where the examples run: this checkout's rules/, pcaps/, systemd/, and the placeholder inputs they need."""
    path = tmp_path_factory.mktemp("readme")
    for name in ("rules", "pcaps", "systemd"):
        (path / name).symlink_to(ROOT / name)
    (path / "clients.set").write_text("10.1.0.0/24\n")
    (path / "servers.set").write_text("10.1.0.53\n203.0.113.0/24\n")
    return path


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def hits(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# ---- the cases: a pattern matching the README line, and how it is run and checked ---------------------------

def run_make_run(command: str, cwd: Path) -> None:
    if not (ROOT / ".venv" / ".built-ext").exists():
        pytest.skip("this checkout has no `make build` yet: make run would set up a venv first")
    made = ok(shell(command, ROOT, timeout=900))  # in the checkout: `make run` is about this tree
    assert len(hits(made.stdout)) == 11 and "11 hits" in made.stderr


def run_replay_files(command: str, cwd: Path) -> None:
    result = ok(shell(as_run(command), cwd))
    assert len(hits(result.stdout)) == 13 and "2 file(s)" in result.stderr


def run_pipe(command: str, cwd: Path) -> None:
    """tcpdump's side becomes a slow writer (tests/test_first_hour.py): the frames up to the first hit, then
    nothing until told; the hit must show while the pipe is quiet. The reader's side is the README's."""
    writer = f"{sys.executable} -c {shlex.quote(SLOW_WRITER)} {DEMO} 30"
    reader = as_run(command.split("|", 1)[1].strip())
    assert command.split("|", 1)[0].split()[:4] == ["tcpdump", "-i", "eth1", "-U"]  # -U: a packet, not a buffer
    pipeline = subprocess.Popen(["bash", "-o", "pipefail", "-c", f"{writer} | {reader}"], cwd=cwd,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([pipeline.stdout], [], [], 30)
        assert ready, "no hit within 30 s from a quiet pipe"
        first = json.loads(pipeline.stdout.readline())
        assert pipeline.poll() is None and first["truesource"]["capture"]["file"] == "<stdin>"
        pipeline.stdin.close()  # the writer sends the rest and ends, and so does the replay
        rest, err = pipeline.stdout.read(), pipeline.stderr.read()  # the summary is a few lines: no deadlock
        pipeline.wait(timeout=60)
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
            pipeline.wait()
    assert pipeline.returncode == 0, err
    assert 1 + len(hits(rest)) == 11


def run_rules_check(command: str, cwd: Path) -> None:
    result = ok(shell(as_run(command), cwd))
    assert "rules/demo.rules: native, 3 rules" in result.stdout and "no errors" in result.stdout


def run_rules_test(command: str, cwd: Path) -> None:
    result = ok(shell(as_run(command), cwd))
    assert result.stdout.startswith("login.evil.example: hit by 'evil.example'")


def run_rules_export(command: str, cwd: Path) -> None:
    ok(shell(as_run(command), cwd))
    zone = (cwd / "block.rpz.zone").read_text()
    assert "SOA" in zone and "evil.example" in zone


def run_config_check(command: str, cwd: Path) -> None:
    result = ok(shell(as_run(command), cwd))
    assert result.stdout.startswith("# effective configuration (systemd/sensor.toml)") and "[capture]" in result.stdout


def run_flow_store(command: str, cwd: Path) -> None:
    """--ipfix 127.0.0.1:4739 goes to a collector socket of this test (a free port, so parallel runs do not meet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        port = collector.getsockname()[1]
        result = ok(shell(as_run(command, **{"127.0.0.1:4739": f"127.0.0.1:{port}"}), cwd))
        collector.settimeout(10)
        assert collector.recv(65535)[:2] == b"\x00\x0a"  # an IPFIX message (version 10)
    assert len(hits(result.stdout)) == 11 and list((cwd / "store").rglob("*.parquet"))


def ensure_flow_store(cwd: Path) -> None:
    if not (cwd / "store").exists():
        ok(shell(f"{BIN}/truesource replay {DEMO} --rules rules/demo.rules --flow-store store/ --out /dev/null", cwd))


def run_flows(command: str, cwd: Path) -> None:
    ensure_flow_store(cwd)
    result = ok(shell(as_run(command), cwd))
    assert "srcip|flows|" in result.stdout.replace(" ", "") and "10.1.0.53" in result.stdout


def run_ipset(command: str, cwd: Path) -> None:
    result = ok(shell(as_run(command), cwd))
    assert result.stdout.split() == ["10.1.0.53"]


def run_profile(command: str, cwd: Path) -> None:
    ensure_flow_store(cwd)
    result = ok(shell(as_run(command), cwd))
    assert result.stdout.startswith("Profile of 269 flows; internal 203.0.113.0/24")
    if "--html" in command:  # the report beside the text: one self-contained page
        page = (cwd / "report.html").read_text(encoding="utf-8")
        assert page.lstrip().lower().startswith("<!doctype html") and "<svg" in page and "<script src" not in page


def ensure_query_log(cwd: Path) -> None:
    """The README's who-asked and hunt follow `replay/capture --query-log q.db`: that replay, on the demo."""
    if not (cwd / "q.db").exists():
        ok(shell(f"{BIN}/truesource replay {DEMO} --rules rules/demo.rules --query-log q.db --out /dev/null", cwd))


def run_who_asked(command: str, cwd: Path) -> None:
    ensure_query_log(cwd)
    result = ok(shell(as_run(command), cwd))
    assert re.search(r"^10\.1\.0\.23 .* login-verify\.evil\.example", result.stdout, flags=re.M), result.stdout


def run_hunt(command: str, cwd: Path) -> None:
    """`--since -24h` as written finds nothing in a capture from 2026-01-01; it runs as written, then from that day."""
    ensure_query_log(cwd)
    as_written = ok(shell(as_run(command), cwd))
    assert "hunt: " in as_written.stderr
    that_day = ok(shell(as_run(command, **{"-24h": "2026-01-01T00:00:00Z"}), cwd))
    assert "11 hits" in that_day.stderr and len(hits(that_day.stdout)) == 11


def run_querylog_export(command: str, cwd: Path) -> None:
    ensure_query_log(cwd)
    result = ok(shell(as_run(command), cwd))
    files = list((cwd / "lake").rglob("*.parquet"))
    assert files and all("date=" in str(f) and "sensor=" in str(f) for f in files), (result.stderr, files)


def run_kafka(command: str, cwd: Path) -> None:
    """The README's brokers become librdkafka's mock cluster (tests/kafka_mock.py, a helper process); every hit
    must reach its topic and the summary must say so."""
    from test_kafka import ADDRESS, consume

    brokers = command.split("--kafka ", 1)[1].split()[0]
    mock = subprocess.Popen([sys.executable, str(ROOT / "tests" / "kafka_mock.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        address = None
        while address is None:  # the helper says its address first; EOF if it died
            line = mock.stdout.readline()
            assert line, "the mock cluster did not say its address"
            found = ADDRESS.search(line)
            address = found.group(1) if found else None
        result = ok(shell(as_run(command, **{brokers: address}), cwd))
        assert len(hits(result.stdout)) == 11 and f"kafka {address}: 11 sent" in result.stderr, result.stderr
        assert len(consume(address, "truesource.dns.hit", 11)) == 11
    finally:
        mock.kill()
        mock.wait(timeout=10)


CASES: list[tuple[str, Callable[[str, Path], None] | str]] = [
    (r"^make run$", run_make_run),
    (r"^make test$", "the whole suite, of which this test is a part"),
    (r"truesource replay capture\.pcap more\.pcapng", run_replay_files),
    (r"truesource replay .*--publish\b", "run by test_readme_publish_example_reaches_a_subscriber_started_first"),
    (r"truesource tail ", "run by test_readme_publish_example_reaches_a_subscriber_started_first"),
    (r"truesource replay .*--kafka ", run_kafka),
    (r"^tcpdump .*\| .*truesource replay - ", run_pipe),
    (r"^sudo .*truesource capture -i eth1 ",
     "a live capture on eth1 (the mirror port): tests/test_capture_live.py runs capture on veths in namespaces"),
    (r"truesource rules check ", run_rules_check),
    (r"truesource rules test ", run_rules_test),
    (r"truesource rules export ", run_rules_export),
    (r"truesource config check ", run_config_check),
    (r"^sudo make install && sudo systemctl enable",
     "installs into / and starts a service: tests/test_first_hour.py (item 10) runs make install DESTDIR= and "
     "tests/test_service.py runs the unit in a sandbox"),
    (r"truesource replay day\.pcap .*--flow-store", run_flow_store),
    (r"truesource flows store/", run_flows),
    (r"truesource ipset intersect", run_ipset),
    (r"truesource profile store/", run_profile),
    (r"truesource who-asked ", run_who_asked),
    (r"truesource hunt ", run_hunt),
    (r"truesource querylog export ", run_querylog_export),
]


def case_of(command: str) -> Callable[[str, Path], None] | str:
    found = [handler for pattern, handler in CASES if re.search(pattern, command)]
    assert len(found) == 1, f"README example {command!r} matches {len(found)} cases: give it one in this test"
    return found[0]


def test_the_readme_has_its_examples():
    assert len(EXAMPLES) >= 18 and any("truesource replay -" in line for line in EXAMPLES)


@pytest.mark.parametrize("command", EXAMPLES, ids=lambda c: re.sub(r"\s+", " ", c)[:60])
def test_readme_example(command: str, workdir: Path) -> None:
    handler = case_of(command)
    if isinstance(handler, str):
        pytest.skip(handler)
    handler(command, workdir)


def test_readme_publish_example_reaches_a_subscriber_started_first(workdir: Path) -> None:
    """The README's subscriber (`tail`) started first, then its publishing replay: every hit reaches it."""
    (publish,) = [c for c in EXAMPLES if re.search(r"truesource replay .*--publish", c)]
    (subscribe,) = [c for c in EXAMPLES if re.search(r"truesource tail ", c)]
    endpoint = free_tcp_endpoint()  # the README's default endpoint, made unique to this run
    subscribe = as_run(subscribe).removesuffix("&").strip().replace("tcp://127.0.0.1:5556", endpoint)
    publish = re.sub(r"--publish(?=\s+-|\s*$)", f"--publish {endpoint}",
                     as_run(publish).replace("tcp://127.0.0.1:5556", endpoint))
    tail = subprocess.Popen(["bash", "-c", f"exec {subscribe} --idle-exit 10"], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        replayed = ok(shell(publish, workdir))
        written = hits((workdir / "hits.jsonl").read_text())
        assert len(written) == 11 and "publisher" in replayed.stderr
        received, err = tail.communicate(timeout=60)  # --idle-exit: ends 10 s after the last event
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    got = hits(received)
    assert len(got) == len(written), f"{len(got)} of {len(written)} hits reached the subscriber; {err}"
    assert [h["dns"]["question"]["name"] for h in got] == [h["dns"]["question"]["name"] for h in written]


def test_readme_cases_cover_only_readme_lines():
    """No case left over from an example that was removed from the README."""
    for pattern, _ in CASES:
        assert any(re.search(pattern, command) for command in EXAMPLES), pattern


def test_placeholders_are_shipped_files():
    for shipped in PLACEHOLDERS.values():
        assert (ROOT / shipped).exists(), shipped
    assert os.path.isdir(ROOT / "rules")


# docs/cli.md's one ```sh block is the query-log commands' synopsis: each line runs with its optional parts left
# out and its placeholders filled from the demo capture's query log.
SYNOPSIS_VALUES = {"NAME": "login-verify.evil.example", "PATH": "rules/demo.rules", "ADDR": "203.0.113.198",
                   "T": "2026-01-01T09:00:01.817089Z"}
SYNOPSIS_EXPECT = {"who-asked": "10.1.0.23", "hunt": "login-verify.evil.example", "resolved-ip": "10.1.0.23"}


def cli_doc_examples() -> list[str]:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    return [line.strip() for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)
            for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("synopsis", cli_doc_examples(), ids=lambda c: c[:50])
def test_docs_cli_example(synopsis: str, workdir: Path) -> None:
    ensure_query_log(workdir)
    words = re.sub(r"\s*\[[^]]*\]", "", synopsis).split()  # optional parts out
    assert words[0] == "truesource", synopsis
    command = [f"{BIN}/truesource"] + [SYNOPSIS_VALUES.get(word, word) for word in words[1:]]
    result = ok(subprocess.run([*command, "--query-log", "q.db"], cwd=workdir, capture_output=True, text=True,
                               timeout=120))
    assert SYNOPSIS_EXPECT[words[1]] in result.stdout, result.stdout
