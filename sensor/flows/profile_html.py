"""`truesource profile --html`: the profile as one self-contained HTML page, tables and charts.

The page needs nothing at view time: styles inline, charts as inline SVG drawn here, no script, and a
Content-Security-Policy that forbids fetching anything, so a report mailed or archived opens the same anywhere
(docs/decisions/0103-profile-html-inline-svg.md). Every chart mark carries `class="mark"` and a `<title>` with
its numbers; every chart has its data as a table beside it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from sensor.flows.profile import ANOMALY_KINDS, DNS_PORT, Profile, _keys, _ranked
from sensor.flows.record import in_networks

TOP_TALKERS = 10  # internal hosts in the top-talkers chart
MAX_BINS = 60  # time bins in traffic over time at most; the bin width is the smallest nice step that fits
BIN_STEPS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)  # seconds
CHART_WIDTH = 720
BAR_HEIGHT = 22
MIN_BAR = 2  # pixels: a row whose value is 0 still has a visible mark (its number is printed beside it)
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@dataclass(frozen=True)
class TimeBin:
    start: int  # seconds since the epoch
    packets: int
    dns_packets: int  # flows with port 53 at either end


@dataclass(frozen=True)
class Charts:
    talkers: tuple[tuple[str, int], ...]  # internal hosts by outbound packets, most first
    roles: tuple[tuple[str, int], ...]  # DNS role and how many hosts have it
    timeline: tuple[TimeBin, ...]
    bin_seconds: int


def chart_data(records: np.ndarray, internal: Sequence, p: Profile, top: int = TOP_TALKERS) -> Charts:
    """The charts' numbers: `records` as profile() read them, with `start_us` for traffic over time."""
    src_in = in_networks(records["src_hi"], records["src_lo"], internal)
    dst_in = in_networks(records["dst_hi"], records["dst_lo"], internal)
    outbound = src_in & ~dst_in
    talkers = tuple(_ranked(_keys(records[outbound], "src"), records["packets"][outbound])[:top])

    servers = {t.ip for t in p.dns_servers}
    roles = [("recursive servers", len(p.recursive)), ("iterative servers", len(p.iterative)),
             ("clients (not servers)", sum(t.ip not in servers for t in p.dns_clients))]
    for kind in ANOMALY_KINDS:
        roles.append((f"anomaly: {kind}", len({a.ip for a in p.anomalies if a.kind == kind})))

    timeline: tuple[TimeBin, ...] = ()
    step = BIN_STEPS[0]
    if len(records):
        seconds = records["start_us"] // 1_000_000
        first, last = int(seconds.min()), int(seconds.max())
        step = next((s for s in BIN_STEPS if (last // s - first // s) < MAX_BINS), BIN_STEPS[-1])
        index = seconds // step - first // step
        count = int(index.max()) + 1
        packets = np.bincount(index, weights=records["packets"].astype(np.float64), minlength=count)
        dns = (records["src_port"] == DNS_PORT) | (records["dst_port"] == DNS_PORT)
        dns_packets = np.bincount(index[dns], weights=records["packets"][dns].astype(np.float64), minlength=count)
        base = (first // step) * step
        timeline = tuple(TimeBin(base + i * step, int(packets[i]), int(dns_packets[i])) for i in range(count))
    return Charts(talkers, tuple(roles), timeline, step)


# ---------------------------------------------------------------- drawing

def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _bar_chart(chart: str, rows: Sequence[tuple[str, int]], unit: str) -> str:
    """Horizontal bars, one a row, labelled with the row's name and number."""
    label_width, value_width = 190, 90
    plot = CHART_WIDTH - label_width - value_width
    height = max(len(rows), 1) * BAR_HEIGHT + 8
    top = max((value for _, value in rows), default=0) or 1
    parts = [f'<svg class="chart" data-chart="{chart}" xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" '
             f'height="{height}" viewBox="0 0 {CHART_WIDTH} {height}" role="img">']
    if not rows:
        parts.append(f'<text x="4" y="16" class="empty">no {unit}</text>')
    for i, (name, value) in enumerate(rows):
        y = 4 + i * BAR_HEIGHT
        width = max(plot * value / top, MIN_BAR)
        parts.append(f'<text x="{label_width - 6}" y="{y + 15}" text-anchor="end">{_e(name)}</text>')
        parts.append(f'<rect class="mark" data-row="{i}" x="{label_width}" y="{y + 3}" width="{width:.1f}" '
                     f'height="{BAR_HEIGHT - 6}"><title>{_e(name)}: {value:,} {unit}</title></rect>')
        parts.append(f'<text x="{label_width + width + 6:.1f}" y="{y + 15}">{value:,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _time_chart(bins: Sequence[TimeBin], step: int) -> str:
    """Columns per time bin: all packets, with the DNS share drawn inside each."""
    height, left, bottom, top_pad = 240, 70, 36, 10
    plot_w, plot_h = CHART_WIDTH - left - 10, height - bottom - top_pad
    parts = [f'<svg class="chart" data-chart="timeline" xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" '
             f'height="{height}" viewBox="0 0 {CHART_WIDTH} {height}" role="img">']
    if not bins:
        parts.append('<text x="4" y="16" class="empty">no flows</text></svg>')
        return "".join(parts)
    peak = max(b.packets for b in bins) or 1
    slot = plot_w / len(bins)
    base_y = top_pad + plot_h
    parts.append(f'<line class="axis" x1="{left}" y1="{base_y}" x2="{left + plot_w}" y2="{base_y}"/>')
    parts.append(f'<text x="{left - 6}" y="{top_pad + 10}" text-anchor="end">{peak:,}</text>')
    parts.append(f'<text x="{left - 6}" y="{base_y}" text-anchor="end">0</text>')
    for i, b in enumerate(bins):
        x = left + i * slot + slot * 0.1
        width = max(slot * 0.8, 1.0)
        h = max(plot_h * b.packets / peak, MIN_BAR)
        dns_h = plot_h * b.dns_packets / peak
        when = _time(b.start)
        parts.append(f'<rect class="mark" data-row="{i}" x="{x:.1f}" y="{base_y - h:.1f}" width="{width:.1f}" '
                     f'height="{h:.1f}"><title>{when} (+{step} s): {b.packets:,} packets, {b.dns_packets:,} DNS'
                     f'</title></rect>')
        if dns_h > 0:
            parts.append(f'<rect class="dns" x="{x:.1f}" y="{base_y - dns_h:.1f}" width="{width:.1f}" '
                         f'height="{dns_h:.1f}"/>')
    for i in sorted({0, len(bins) // 2, len(bins) - 1}):
        x = left + i * slot + slot / 2
        parts.append(f'<text x="{x:.1f}" y="{base_y + 16}" text-anchor="middle">{_time(bins[i].start)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _time(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int], kind: str) -> str:
    parts = [f'<table data-table="{_e(kind)}"><caption>{_e(title)}</caption><thead><tr>']
    parts += [f'<th{" class=num" if i in right else ""}>{_e(h)}</th>' for i, h in enumerate(header)]
    parts.append("</tr></thead><tbody>")
    if not rows:
        parts.append(f'<tr class="none"><td colspan="{len(header)}">(none)</td></tr>')
    for row in rows:
        cells = "".join(f'<td{" class=num" if i in right else ""}>{_e(c)}</td>' for i, c in enumerate(row))
        parts.append(f'<tr class="row">{cells}</tr>')
    parts.append("</tbody></table>")
    return "".join(parts)


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:12px 0 20px}caption{text-align:left;font-weight:600;padding:4px 0}
th,td{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left;font-variant-numeric:tabular-nums}
.num{text-align:right}svg text{font:12px system-ui,sans-serif;fill:#333}
rect.mark{fill:#4a78b5}rect.dns{fill:#e08a2e}line.axis{stroke:#888}.empty{fill:#888}
.key span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
details{margin-bottom:16px}
"""

TABLE_KINDS = ("top_destinations", "dns_servers", "dns_clients", "dns_assets", "anomalies", "vpn", "mail")


Table = tuple[str, list[str], list[list[str]], set[int]]  # title, header, rows, right-aligned columns


def render(p: Profile, charts: Charts, sources: Sequence[str], heading: str, tables: Sequence[Table]) -> str:
    """The whole page. `heading` and `tables`: the text report's (sensor/commands/profile.py profile_header() and
    profile_tables()), so that both show the same rows; passed in, as the analysis layer imports no command."""
    talker_rows = [[ip, f"{n:,}"] for ip, n in charts.talkers]
    role_rows = [[name, str(n)] for name, n in charts.roles]
    time_rows = [[_time(b.start), f"{b.packets:,}", f"{b.dns_packets:,}"] for b in charts.timeline]
    body = [
        f"<h1>Network profile: {_e(', '.join(p.internal))}</h1>",
        f"<p>{_e(heading)}</p>",
        f"<p>Sources: {_e(', '.join(sources))}.</p>",
        "<h2>Top talkers (internal hosts by outbound packets)</h2>",
        _bar_chart("talkers", charts.talkers, "packets"),
        "<details><summary>data</summary>",
        _table("Top talkers", ["internal IP", "packets"], talker_rows, {1}, "talkers"), "</details>",
        "<h2>DNS roles (hosts in each role)</h2>",
        _bar_chart("roles", charts.roles, "hosts"),
        "<details><summary>data</summary>",
        _table("DNS roles", ["role", "hosts"], role_rows, {1}, "roles"), "</details>",
        f"<h2>Traffic over time ({charts.bin_seconds} s bins, each flow counted at its start)</h2>",
        '<p class="key"><span style="background:#4a78b5"></span>all packets'
        '<span style="background:#e08a2e"></span>DNS (port 53)</p>',
        _time_chart(charts.timeline, charts.bin_seconds),
        "<details><summary>data</summary>",
        _table("Traffic over time", ["bin start (UTC)", "packets", "DNS packets"], time_rows, {1, 2}, "timeline"),
        "</details>",
        "<h2>The report's tables</h2>",
    ]
    for kind, (title, header, rows, right) in zip(TABLE_KINDS, tables, strict=True):
        body.append(_table(title, header, rows, right, kind))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            f"<title>truesource profile: {_e(', '.join(p.internal))}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
