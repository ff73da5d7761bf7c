"""The memory budget (issue 14, sensor/budget.py, docs/limits.md "The memory budget"): under a flood the whole
process tree's PSS, less its PSS idle after start-up, stays within --memory-budget. Real replays of generated flood
captures fed through stdin (tests/memory.py), PSS polled from /proc; and the split itself."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from memory import ROOT, replay_flood

from sensor import budget
from sensor.querylog.writer import WriterLimits

BUDGET_MB = 64


def generate(script: str, out, *args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "bench" / script), str(out), *args], check=True,
                   stdout=subprocess.DEVNULL, timeout=300)


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "flood.rules"
    path.write_text("example.com\n")
    return path


def flood_within_budget(tmp_path, rules, generator: str, *options: str) -> dict[str, int]:
    """Replay bench/GENERATOR's flood at BUDGET_MB; the process tree's PSS growth stays within it. Its counters."""
    pcap = tmp_path / "flood.pcap"
    generate(generator, pcap, *options)
    summary = tmp_path / "summary.json"
    result = replay_flood(pcap, ["--rules", str(rules), "--out", "/dev/null", "--memory-budget", str(BUDGET_MB),
                                 "--summary-json", str(summary)])
    assert result.returncode == 0, result.stderr
    assert result.growth_mb <= BUDGET_MB, \
        f"PSS idle {result.idle_kib / 1024:.1f} MB, peak {result.peak_kib / 1024:.1f} MB: +{result.growth_mb:.1f} MB"
    return json.loads(summary.read_text())["counters"]

def test_tcp_partial_messages_across_2000_streams_stay_within_the_budget(tmp_path, rules) -> None:
    """2,000 streams each holding a ~64 KB partial message: ~130 MB of partials without a byte limit
    (measured: 142 MB of PSS growth with --memory-budget 0)."""
    counters = flood_within_budget(tmp_path, rules, "make_tcp_partials.py", "--streams", "2000")
    assert counters["tcp_buffer_evicted"] > 0  # the byte limit did the work, and said so
    assert counters["packets"] == 88_000


def test_out_of_order_queues_and_fragment_buffers_stay_within_the_budget(tmp_path, rules) -> None:
    """bench/make_ooo_fragments.py: 1,500 streams each with ~56 KB queued behind a hole, then 2,000 fragments at
    offset 64,000 (a 64 KiB buffer each): the out-of-order share and the fragment share (buffers as allocated) hold
    them, each eviction counted (decisions 0171, 0172)."""
    counters = flood_within_budget(tmp_path, rules, "make_ooo_fragments.py", "--streams", "1500", "--fragments", "2000")
    assert counters["tcp_out_of_order"] == 1500 * 40
    assert counters["tcp_ooo_evicted"] > 0 and counters["tcp_ooo_dropped"] == 0
    share = budget.split(BUDGET_MB)
    assert counters["ip_fragment_evicted"] >= 2000 - share.max_fragment_bytes // 65_535


def test_query_log_answer_amplification_stays_within_the_budget(tmp_path, rules) -> None:
    """bench/make_amplification.py: response-only UDP answers packed under 255-byte names and 65 KB TCP responses
    into the query log; the replay writes its query log itself (decision 0207): one process."""
    pcap = tmp_path / "amplification.pcap"
    generate("make_amplification.py", pcap, "--udp-mb", "15", "--tcp-mb", "15")
    result = replay_flood(pcap, ["--rules", str(rules), "--out", "/dev/null", "--memory-budget", str(BUDGET_MB),
                                 "--query-log", str(tmp_path / "queries.db"), "--query-log-max-mb", "20"],
                          processes=1)
    assert result.returncode == 0, result.stderr
    assert "queries written, 0 dropped" in result.stderr  # a replay stores every entry: nothing lost
    assert result.growth_mb <= BUDGET_MB, \
        f"PSS idle {result.idle_kib / 1024:.1f} MB, peak {result.peak_kib / 1024:.1f} MB: +{result.growth_mb:.1f} MB"


def test_budget_splits_the_loop_tables_over_workers_and_never_raises_a_limit() -> None:
    one, two = budget.split(BUDGET_MB, 1), budget.split(BUDGET_MB, 2)
    assert two.shares["tcp_stream_bytes"] * 2 == pytest.approx(one.shares["tcp_stream_bytes"], abs=2)
    assert two.max_flows * 2 == pytest.approx(one.max_flows, abs=2)
    assert two.query_log == one.query_log and two.publish_hwm == one.publish_hwm  # the parent's, not split
    assert sum(one.shares.values()) <= BUDGET_MB * budget.MB
    assert one.query_log.memory_bytes() <= one.shares["query_log"] * 1.05
    big = budget.split(1_000_000)
    assert big.loop_limits() == budget.unlimited().loop_limits()
    assert big.query_log == WriterLimits() and big.max_flows == budget.MAX_FLOWS


def test_a_budget_too_small_is_refused_with_one_line(tmp_path, rules) -> None:
    pcap = tmp_path / "tcp-partials.pcap"
    generate("make_tcp_partials.py", pcap, "--streams", "1")
    done = subprocess.run([sys.executable, "-m", "sensor", "replay", str(pcap), "--rules", str(rules),
                           "--memory-budget", "5"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "--memory-budget: must be 0 (no budget) or at least 16 MB" in done.stderr
