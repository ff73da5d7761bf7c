"""`truesource profile --html`: one self-contained page, rendered by a real headless Chromium with no network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import PCAPS, run_cli

REPORT = str(PCAPS / "report-network.pcap")
INTERNAL = "203.0.113.0/24"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Added to a copy of the page (the page itself has no script, and its policy forbids one): each mark and table
# row records the size the browser laid it out at, so the dumped DOM shows what was drawn.
MEASURE = """<script>
for (const m of document.querySelectorAll('.mark')) {
  const b = m.getBBox(); m.setAttribute('data-drawn', b.width > 0 && b.height > 0 ? 'yes' : 'no'); }
for (const r of document.querySelectorAll('tr.row')) {
  r.setAttribute('data-drawn', r.getBoundingClientRect().height > 0 ? 'yes' : 'no'); }
</script>"""


class Page(HTMLParser):
    """Marks per chart and rows per table, with what the browser recorded of their size."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: dict[str, list[str | None]] = {}
        self.rows: dict[str, list[str | None]] = {}
        self._chart = self._table = None
        self.fetches: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("src", "href"):
            if name in a:
                self.fetches.append(a[name])
        if tag == "svg" and "data-chart" in a:
            self._chart = a["data-chart"]
            self.marks[self._chart] = []
        elif tag == "rect" and "mark" in (a.get("class") or "").split():
            self.marks[self._chart].append(a.get("data-drawn"))
        elif tag == "table":
            self._table = a["data-table"]
            self.rows[self._table] = []
        elif tag == "tr" and a.get("class") == "row":
            self.rows[self._table].append(a.get("data-drawn"))


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def chromium_dom(path: Path) -> str:
    """The DOM after layout, from Chromium with no network at all (a new, empty network namespace)."""
    browser = shutil.which("chromium")
    if browser is None or shutil.which("unshare") is None or os.geteuid() != 0:
        reason = "needs chromium (Debian package), unshare and root for a network namespace"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with tempfile.TemporaryDirectory() as profile_dir:
        done = subprocess.run(["unshare", "-n", browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}",
                               "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_profile_html_renders_one_mark_per_data_row_in_chromium(tmp_path):
    page_path = tmp_path / "report.html"
    result = run_cli("profile", REPORT, "--internal", INTERNAL, "--json", "--html", str(page_path))
    assert result.returncode == 0, result.stderr
    profile = json.loads(result.stdout)
    text = page_path.read_text()

    # Self-contained: nothing to fetch, no script, and a policy that would refuse a fetch anyway.
    static = parse(text)
    assert static.fetches == [] and "<script" not in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text

    measured = tmp_path / "measured.html"
    measured.write_text(text.replace('<meta http-equiv="Content-Security-Policy"', '<meta name="csp-removed"')
                        .replace("</body>", MEASURE + "</body>"))
    drawn = parse(chromium_dom(measured))
    plain = parse(chromium_dom(page_path))  # the page as shipped, policy on: the same marks in the DOM
    assert {k: len(v) for k, v in plain.marks.items()} == {k: len(v) for k, v in drawn.marks.items()}

    # Charts: one mark per row of the data behind them, and every mark was laid out with a size.
    assert len(drawn.marks["talkers"]) == len(drawn.rows["talkers"]) == 10
    assert len(drawn.marks["roles"]) == len(drawn.rows["roles"]) == 7  # 3 roles, 4 anomaly kinds
    assert len(drawn.marks["timeline"]) == len(drawn.rows["timeline"]) > 0
    for chart, marks in drawn.marks.items():
        assert marks and all(m == "yes" for m in marks), chart

    # Tables: one row per row of the profile (the JSON is the same analysis).
    expected = {
        "top_destinations": len(profile["top_destinations"]),
        "dns_servers": len(profile["dns_servers"]),
        "dns_clients": len(profile["dns_clients"]),
        "dns_assets": len(profile["dns_servers"]) + len(profile["dns_clients"]),
        "anomalies": len(profile["anomalies"]),
        "vpn": sum(len(a["services"]) for a in profile["vpn"]),
        "mail": sum(len(a["services"]) for a in profile["mail"]),
    }
    assert all(expected.values())  # the sample network fills every table
    for table, count in expected.items():
        assert len(drawn.rows[table]) == count, table
        assert all(r == "yes" for r in drawn.rows[table]), table
    roles = dict(row.split("|") for row in _role_cells(text))
    assert int(roles["recursive servers"]) == len(profile["recursive"])
    assert int(roles["iterative servers"]) == len(profile["iterative"])


def _role_cells(text: str) -> list[str]:
    section = text.split('data-table="roles"', 1)[1].split("</table>", 1)[0]
    rows = section.split('<tr class="row">')[1:]
    return ["|".join(cell.split(">", 1)[1].split("</td", 1)[0] for cell in row.split("<td")[1:]) for row in rows]


def test_profile_html_to_an_unwritable_path_is_refused_before_the_analysis(tmp_path):
    result = run_cli("profile", REPORT, "--internal", INTERNAL, "--html", str(tmp_path / "no-dir" / "r.html"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--html" in result.stderr and "no such directory" in result.stderr
