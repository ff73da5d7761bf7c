"""`truesource profile SOURCE... --internal CIDR...`: the seed report's DNS, VPN and mail profile in one command.

SOURCE is read as `truesource flows` reads it (a flow store, or captures replayed through the flow table);
the analysis is sensor/flows/profile.py; this module parses options and prints the tables or the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from sensor.errors import StartupError
from sensor.flows.settings import DEFAULT_THRESHOLD, TOP_DESTINATIONS

if TYPE_CHECKING:  # numpy and the analysis load when the command runs, not with every command line
    import numpy as np

    from sensor.flows.profile import Asset, Profile, Talker

# The columns profile() reads: a store scan reads only these (9 of the record's 16).
PROFILE_FIELDS = ("src_hi", "src_lo", "dst_hi", "dst_lo", "src_port", "dst_port", "proto", "ip_version", "packets")
HTML_FIELDS = ("start_us",)  # --html also reads when flows started, for traffic over time
PROTOCOL_NAMES = {6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah"}


def register(subparsers: Any) -> None:
    """Add the `profile` command; it sets `run`, the function main() calls with the arguments."""
    parser = subparsers.add_parser(
        "profile", help="profile a network from flows: DNS servers and clients, anomalies, VPN and mail assets")
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="flow store directory or Parquet file, or pcap/pcapng captures (flows built first)")
    parser.add_argument("--internal", action="append", default=[], metavar="CIDR",
                        help="the networks profiled (repeatable or comma separated); required")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="PERCENT",
                        help="share of packets a DNS server or client must reach (default %(default)s, the "
                             "report's rwstats --percentage=1)")
    parser.add_argument("--top", type=int, default=TOP_DESTINATIONS, metavar="N",
                        help="external DNS destinations listed (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="the whole profile as one JSON object")
    parser.add_argument("--html", metavar="PATH",
                        help="also write the report as one self-contained HTML file: the tables and charts (top "
                             "talkers, DNS roles, traffic over time) as inline SVG, nothing fetched when viewed")
    parser.set_defaults(run=run_profile)


def run_profile(args: argparse.Namespace) -> int:
    from sensor.flows.profile import parse_networks, profile

    if not args.internal:
        raise StartupError("profile: --internal CIDR is required (the networks whose assets are profiled)")
    try:
        networks = parse_networks(args.internal)
    except ValueError as err:
        raise StartupError(f"--internal: {err}") from None
    if not 0 < args.threshold <= 100:
        raise StartupError(f"--threshold: {args.threshold:g} is not a percentage above 0 and at most 100")
    if args.top < 0:
        raise StartupError("--top: must be 0 or more")
    if args.html:
        from sensor.outputs.jsonlines import check_writable

        check_writable(args.html, "--html")
    cut_offs: list = []  # a capture cut off mid-frame: profiled up to the cut, then exit 1
    records = load_records(args.sources, networks, cut_offs, HTML_FIELDS if args.html else ())
    result = profile(records, networks, args.threshold, args.top)
    if args.json:
        sys.stdout.write(json.dumps(result.as_dict()) + "\n")
    else:
        write_profile(sys.stdout, result)
    if args.html:
        from sensor.flows.profile_html import chart_data, render

        page = render(result, chart_data(records, networks, result), args.sources, profile_header(result),
                      profile_tables(result))
        try:
            with open(args.html, "w", encoding="utf-8") as handle:
                handle.write(page)
        except OSError as err:
            raise StartupError(f"--html {args.html}: cannot write: {err.strerror}") from None
    return 1 if cut_offs else 0


def load_records(sources: Sequence[str], internal: Sequence, cut_offs: list | None = None,
                 extra: Sequence[str] = ()) -> np.ndarray:
    """The flow records of the sources, only the columns the profile reads, in one record array.

    Read as `truesource flows` reads them (every source checked first; a store a row group at a time,
    captures through the flow table).
    """
    import numpy as np

    from sensor.commands.flows import scan
    from sensor.flows.filter import compile_filter
    from sensor.flows.record import FLOW_DTYPE

    fields = PROFILE_FIELDS + tuple(extra)
    columns, count = scan(sources, compile_filter(""), set(fields), [str(n) for n in internal], cut_offs)
    records = np.empty(count, dtype=[(name, FLOW_DTYPE[name]) for name in fields])
    for name in fields:
        records[name] = columns[name]
    return records


# ---------------------------------------------------------------- text tables

def _port(value: int) -> str:
    from sensor.flows.profile import ANY_PORT

    return "*" if value == ANY_PORT else str(value)


def _protocols(protocols: Sequence[int]) -> str:
    return ",".join(str(p) for p in protocols)


def _table(out: TextIO, title: str, header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> None:
    """A titled table with columns as wide as their widest cell; `right` columns (numbers) right-aligned."""
    out.write(f"\n{title}\n")
    if not rows:
        out.write("  (none)\n")
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                   strict=True))]
        out.write("  " + "  ".join(cells).rstrip() + "\n")


def _ranked_rows(talkers: Sequence[Talker], with_protocols: bool = False) -> list[list[str]]:
    rows = []
    for t in talkers:
        row = [t.ip, f"{t.packets:,}", f"{t.share:.2f}", f"{t.cumulative:.2f}"]
        rows.append([*row, _protocols(t.protocols)] if with_protocols else row)
    return rows


def _asset_rows(assets: Sequence[Asset]) -> list[list[str]]:
    rows = []
    for asset in assets:
        for i, r in enumerate(asset.rows):
            name = PROTOCOL_NAMES.get(r.proto, "")
            rows.append([asset.ip if i == 0 else "", f"{r.proto} {name}".strip(), _port(r.internal_port),
                         "*", _port(r.external_port), f"{r.packets:,}", f"{r.share:.2f}"])
    return rows


def profile_header(p: Profile) -> str:
    return (f"Profile of {p.flows:,} flows; internal {', '.join(p.internal)}; threshold {p.threshold:g}% "
            f"of packets. Tables count outbound flows (internal source, external destination); unlisted DNS "
            f"servers are also looked for inside.")


def profile_tables(p: Profile) -> list[tuple[str, list[str], list[list[str]], set[int]]]:
    """Every table of the report as (title, header, rows, right-aligned columns): for text and HTML alike."""
    number = {1, 2, 3}
    tables = [
        ("Top external DNS destinations (UDP to port 53, by packets)",
         ["dIP", "packets", "%packets", "cumul_%"], _ranked_rows(p.top_destinations), number),
        (f"DNS servers (UDP from port 53, at least {p.threshold:g}% of packets)",
         ["sIP", "packets", "%packets", "cumul_%", "protocols"], _ranked_rows(p.dns_servers, True), number),
        (f"DNS clients (UDP to port 53, at least {p.threshold:g}% of packets)",
         ["sIP", "packets", "%packets", "cumul_%", "protocols"], _ranked_rows(p.dns_clients, True), number),
    ]

    # The report's Table 15: each server's serving row, and its querying row when it is recursive.
    servers = {t.ip: t for t in p.dns_servers}
    clients = {t.ip: t for t in p.dns_clients}
    rows = []
    for ip in [t.ip for t in p.dns_servers] + [t.ip for t in p.dns_clients if t.ip not in servers]:
        if ip in servers:
            role = "recursive" if ip in p.recursive else "iterative"
            rows.append([ip, _protocols(servers[ip].protocols), "53", "*", "*", role])
        if ip in clients:
            rows.append(["" if ip in servers else ip, _protocols(clients[ip].protocols), "*", "*", "53",
                         "" if ip in servers else "client"])
    tables.append(("DNS assets (recursive: servers that are also clients; iterative: the other servers)",
                   ["internal IP", "proto", "int.port", "ext.IP", "ext.port", "comment"], rows, set()))

    rows = [[a.kind, a.ip, f"{a.packets:,}", f"{a.share:.2f}", str(a.peers), a.peer or ""] for a in p.anomalies]
    tables.append(("DNS anomalies", ["kind", "IP", "packets", "%packets", "peers", "top peer"], rows, {2, 3, 4}))

    header = ["internal IP", "proto", "int.port", "ext.IP", "ext.port", "packets", "%packets"]
    tables.append(("VPN assets (GRE, ESP, AH; IKE UDP 500 and 4500, L2TP UDP 1701, PPTP TCP 1723)", header,
                   _asset_rows(p.vpn), {5, 6}))
    tables.append(("Mail assets (TCP 25, 110, 143, 465, 587, 993, 995)", header, _asset_rows(p.mail), {5, 6}))
    return tables


def write_profile(out: TextIO, p: Profile) -> None:
    out.write(profile_header(p) + "\n")
    for title, header, rows, right in profile_tables(p):
        _table(out, title, header, rows, right)
