"""The command line end to end: exit codes and one clear line for each kind of bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import PEERS, ROOT, run_cli

TCP_QUERY = str(PEERS / "sv-dns-tcp-www-google-com.pcap")
UDP_QUERIES = str(PEERS / "sv-dns-eve.pcap")  # taken with checksum offload: replayed with --checksums off


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "t.rules"
    path.write_text("dropbox.com\n*.google.com\n")
    return str(path)


def hits(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_replay_prints_hits_and_summary(rules):
    # sv-dns-eve.pcap was taken on a host with checksum offload (its queries' UDP checksums are unfilled) and is
    # too short for --checksums auto to find out: off, as for any such capture (docs/decoding.md, "Checksums").
    result = run_cli("replay", UDP_QUERIES, TCP_QUERY, "--rules", rules, "--checksums", "off")
    assert result.returncode == 0, result.stderr
    events = hits(result.stdout)
    assert [e["dns"]["question"]["name"] for e in events] == [
        "client-cf.dropbox.com", "block.dropbox.com", "client-cf.dropbox.com", "www.google.com"]
    assert events[-1]["network"]["transport"] == "tcp" and events[-1]["source"]["port"] == 38195
    assert "2 file(s): 18 packets" in result.stderr
    assert "4 hits" in result.stderr


def test_stdin_is_read_with_dash(rules):
    with open(UDP_QUERIES, "rb") as handle:
        result = run_cli("replay", "-", "--rules", rules, "--checksums", "off", stdin=handle)
    assert result.returncode == 0, result.stderr
    assert len(hits(result.stdout)) == 3
    assert hits(result.stdout)[0]["truesource"]["capture"]["file"] == "<stdin>"


def test_summary_json(rules, tmp_path):
    summary = tmp_path / "s.json"
    result = run_cli("replay", UDP_QUERIES, "--rules", rules, "--out", str(tmp_path / "h.jsonl"),
                     "--summary-json", str(summary), "--checksums", "off")
    assert result.returncode == 0 and result.stdout == ""
    data = json.loads(summary.read_text())
    assert data["counters"]["packets"] == 8 and data["counters"]["hits"] == 3
    assert len((tmp_path / "h.jsonl").read_text().splitlines()) == 3


def test_cut_off_capture_keeps_hits_before_the_cut(rules, tmp_path):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(open(UDP_QUERIES, "rb").read()[:600])
    result = run_cli("replay", str(cut), TCP_QUERY, "--rules", rules, "--checksums", "off")
    assert result.returncode == 1
    assert [e["truesource"]["capture"]["frame"] for e in hits(result.stdout)] == [1, 3]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"truesource: {cut}: capture cut off after frame 5")


@pytest.mark.parametrize("make,message", [
    (lambda d: str(d / "missing.pcap"), "no such file"),
    (lambda d: str(d), "is a directory"),
    (lambda d: (d / "notes.txt").write_text("hello\n" * 10) and str(d / "notes.txt"), "not a readable pcap"),
    (lambda d: (d / "empty.pcap").write_bytes(b"") or str(d / "empty.pcap"), "empty file (0 bytes)"),
])
def test_unusable_capture_exits_2_before_any_output(rules, tmp_path, make, message):
    bad = make(tmp_path)
    result = run_cli("replay", UDP_QUERIES, bad, "--rules", rules)
    assert result.returncode == 2
    assert result.stdout == ""  # checked before the first frame: a typo costs no partial output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unreadable_capture(rules):
    """A capture its reader may not open: exit 2 and one line, as an unprivileged user (root reads anything)."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run the sensor as an unprivileged user")
    folder = tempfile.mkdtemp(prefix="truesource-perm-")
    try:
        os.chmod(folder, 0o755)
        locked = os.path.join(folder, "locked.pcap")
        shutil.copy(UDP_QUERIES, locked)
        os.chmod(locked, 0)
        readable = os.path.join(folder, "r.rules")
        shutil.copy(rules, readable)
        os.chmod(readable, 0o644)
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "sensor",
             "replay", locked, "--rules", readable], cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(folder)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"truesource: {locked}: cannot read: permission denied"


def test_bad_rule_line_exits_2_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.rules"
    bad.write_text("ok.com\n\nnot a name\n")
    result = run_cli("replay", UDP_QUERIES, "--rules", str(bad))
    assert result.returncode == 2
    assert f"{bad}:3: " in result.stderr


def test_bad_ports_exit_2(rules):
    result = run_cli("replay", UDP_QUERIES, "--rules", rules, "--ports", "53,70000")
    assert result.returncode == 2 and "'70000' is not a port" in result.stderr


def test_other_ports(rules, tmp_path):
    rule = tmp_path / "any.rules"
    rule.write_text(".\n")
    default = run_cli("replay", str(PEERS / "tcpdump-dns_udp_8053.pcap"), "--rules", str(rule))
    wide = run_cli("replay", str(PEERS / "tcpdump-dns_udp_8053.pcap"), "--rules", str(rule), "--ports", "53,8053")
    assert default.returncode == wide.returncode == 0
    assert hits(default.stdout) == []
    assert [e["destination"]["port"] for e in hits(wide.stdout)] == [8053]


def test_endpoint_in_use_exits_2(rules, endpoint):
    import zmq

    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.bind(endpoint)
    try:
        result = run_cli("replay", UDP_QUERIES, "--rules", rules, "--publish", endpoint)
    finally:
        sock.close(linger=0)
    assert result.returncode == 2 and "cannot bind" in result.stderr


def test_wait_subscribers_times_out(rules, endpoint):
    result = run_cli("replay", UDP_QUERIES, "--rules", rules, "--publish", endpoint,
                     "--wait-subscribers", "1", "--wait-timeout", "0.5")
    assert result.returncode == 2 and "0 of 1 subscribers joined" in result.stderr


def test_run_path_does_not_import_scapy(rules):
    code = (
        "import sys; from sensor.cli import main; "
        f"rc = main(['replay', {UDP_QUERIES!r}, '--rules', {rules!r}, '--out', '/dev/null']); "
        "assert 'scapy' not in sys.modules, 'scapy imported'; sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
