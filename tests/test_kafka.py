"""The Kafka output end to end against librdkafka's mock cluster in a helper process: what the sensor produces is
what a consumer reads (topic per kind, key = client), and a broker outage is counted without blocking."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from conftest import PCAPS, ROOT, run_cli

pytest.importorskip("confluent_kafka")

DEMO = str(PCAPS / "demo-resolver.pcap")
DEMO_RULES = str(ROOT / "rules" / "demo.rules")
FLOW_PCAP = str(PCAPS / "flows" / "flows.pcap")
ADDRESS = re.compile(r"replaced with (\S+:\d+)")


@pytest.fixture
def mock_cluster():
    """(process, bootstrap address) of a mock cluster, the address read from the helper's log."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "kafka_mock.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        address = None
        while address is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            found = ADDRESS.search(line)
            address = found.group(1) if found else None
        assert address, "the mock cluster did not say its address"
        yield proc, address
    finally:
        proc.kill()
        proc.wait(timeout=10)


def consume(address: str, topic: str, count: int, deadline: float = 30.0) -> list:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": address, "group.id": f"test-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got = []
    end = time.monotonic() + deadline
    try:
        while len(got) < count and time.monotonic() < end:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message)
    finally:
        consumer.close()
    return got


def test_kafka_topics_carry_what_out_writes_keyed_by_client(mock_cluster, tmp_path):
    _, address = mock_cluster
    out = tmp_path / "hits.jsonl"
    result = run_cli("replay", DEMO, "--rules", DEMO_RULES, "--no-progress", "--out", str(out), "--kafka", address,
                     "--flows")
    assert result.returncode == 0, result.stderr
    hits = out.read_text().splitlines()
    assert hits
    assert f"kafka {address}: " in result.stderr and ", 0 failed, 0 dropped" in result.stderr, result.stderr
    messages = consume(address, "truesource.dns.hit", len(hits))
    assert sorted(m.value().decode() for m in messages) == sorted(hits)
    for message in messages:
        assert message.key().decode() == json.loads(message.value())["source"]["ip"]
    flows = consume(address, "truesource.flow", 1)
    assert flows and json.loads(flows[0].value())["event"]["dataset"] == "truesource.flow"


def test_broker_outage_is_counted_and_never_blocks_the_replay(mock_cluster, tmp_path):
    proc, address = mock_cluster
    proc.kill()  # the outage: every broker gone
    proc.wait(timeout=10)
    out = tmp_path / "hits.jsonl"
    started = time.monotonic()
    result = run_cli("replay", DEMO, "--rules", DEMO_RULES, "--no-progress", "--out", str(out), "--kafka", address,
                     "--kafka-option", "message.timeout.ms=2000", timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    hits = len(out.read_text().splitlines())
    assert hits and re.search(rf"kafka {re.escape(address)}: 0 sent, {hits} failed, 0 dropped", result.stderr), \
        result.stderr
    assert took < 30  # the hits were all written to --out; Kafka only waited its message timeout


def test_full_local_queue_drops_and_counts(mock_cluster, tmp_path):
    from sensor.outputs.kafka import KafkaSink

    proc, address = mock_cluster
    proc.kill()
    proc.wait(timeout=10)
    sink = KafkaSink(address, queue_mb=1, settings={"message.timeout.ms": "1000"})
    line = json.dumps({"source": {"ip": "10.0.0.1"}, "pad": "x" * 4000})
    started = time.monotonic()
    for _ in range(1000):  # 4 MB into a 1 MB queue: about three quarters cannot be queued
        sink.write("dns.hit", line)
    assert time.monotonic() - started < 5  # never waits for the queue
    assert sink.queue_drops > 0
    sink.close()
    assert sink.sent == 0 and sink.failed + sink.queue_drops == 1000


def test_bad_kafka_options_are_one_clear_line(tmp_path):
    result = run_cli("replay", DEMO, "--rules", DEMO_RULES, "--kafka", "127.0.0.1:9", "--kafka-option", "oops")
    assert result.returncode != 0 and "--kafka-option: 'oops' is not KEY=VALUE" in result.stderr
    result = run_cli("replay", DEMO, "--rules", DEMO_RULES, "--kafka", "127.0.0.1:9", "--kafka-ca",
                     str(tmp_path / "missing.pem"))
    assert result.returncode != 0 and "--kafka-ca:" in result.stderr and "no such file" in result.stderr
