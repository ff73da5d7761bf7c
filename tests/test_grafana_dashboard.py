"""The Grafana dashboard shipped in siem/grafana/: every query parses with promtool and reads only metrics a real
capture's /metrics serves; promtool's lint accepts that /metrics output."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from conftest import PCAPS, ROOT, free_tcp_endpoint

DASHBOARD = ROOT / "siem" / "grafana" / "truesource-sensor.json"
# Grafana's variables as a query sees them once Grafana has filled them in (the "All" values, a range)
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "6h", "$instance": ".*",
                     "$job": ".*"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (Debian package prometheus)")
        pytest.skip("promtool is missing (Debian package prometheus)")
    return path


def panels(items: list) -> list:
    out = []
    for panel in items:
        out.append(panel)
        out += panels(panel.get("panels", []))
    return out


def expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables filled in) for every target of every panel."""
    board = json.loads(DASHBOARD.read_text())
    found = []
    for panel in panels(board["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
                expr = expr.replace(name, GRAFANA_VARIABLES[name])
            assert "$" not in expr, f"{panel['title']}: a variable the test does not know: {expr}"
            found.append((panel["title"], expr))
    return found


def test_every_dashboard_query_parses_with_promtool(tmp_path):
    exprs = expressions()
    assert len(exprs) >= 15
    # promtool parses PromQL when it checks recording rules; JSON is YAML, so no YAML writer is needed
    rules = {"groups": [{"name": "truesource-dashboard", "rules": [
        {"record": f"truesource_dashboard:query{i}", "expr": expr} for i, (_, expr) in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules, indent=1))
    checked = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in checked.stdout + checked.stderr


@pytest.mark.netns
def test_dashboard_reads_only_metrics_a_real_capture_serves_and_promtool_lints_them(wire):
    from test_capture_live import stop, wait_started

    address = "127.0.0.1:" + free_tcp_endpoint().rsplit(":", 1)[1]
    proc = wire.start_capture("--rules", str(PCAPS / "pcaps.rules"), "--metrics", address, "--stats-interval", "0.2")
    try:
        wait_started(proc)
        wire.replay(str(PCAPS / "demo-resolver.pcap"), pps=2000)
        code = f"import urllib.request as u; print(u.urlopen('http://{address}/metrics', timeout=5).read().decode())"
        deadline = time.monotonic() + 30
        while True:  # until the scrape shows the replayed packets
            scraped = subprocess.run(["ip", "netns", "exec", wire.sensor, sys.executable, "-c", code],
                                     capture_output=True, text=True, timeout=30).stdout
            if re.search(r"^truesource_packets_total [1-9]", scraped, re.M) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        stop(proc)
    assert re.search(r"^truesource_packets_total [1-9]", scraped, re.M), scraped
    linted = subprocess.run([promtool(), "check", "metrics"], input=scraped, capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    served = set(re.findall(r"^# TYPE (\w+) ", scraped, re.M))
    for title, expr in expressions():
        used = set(re.findall(r"\btruesource_[a-z_]+", expr)) - {"truesource_dashboard"}
        assert used <= served, (title, used - served)
        assert used or expr.startswith("up{"), title  # Prometheus' own `up`: was the scrape answered
    for family in served:  # and the dashboard shows every family the sensor serves
        assert any(family in expr for _, expr in expressions()), family
