"""Writes the ordinary-name sets the heuristics check reads (run from the repository root):

    .venv/bin/python tests/data/heuristics/make_ordinary.py [--peers ../shared/pcaps/peers]

- ordinary_peers.txt: the query names in the peers' captures (their tshark TSVs), hostnames only.
- ordinary_netlab.txt: the names of the test lab's zones (tests/netlab/zones.py).
- harvest_train.txt / harvest_eval.txt: registered domains named in the Debian copyright files and Python
  package metadata of the machine this ran on (real projects' and people's own domains: the long tail that
  popular-site lists miss), split in two halves by a hash of the name: one half may train the character
  model, the other is only ever evaluated.
- peer_dns2tcp.tsv: the queries of the real dns2tcp session in the peers' sv-dns-bug-1158-txt capture
  (suricata-verify, MIT): the tunnelling check's one tunnel nobody here generated.
popular.txt is written by hand (see its header). The files are committed, so the check does not depend on
what a machine has installed; rerunning this on another machine gives a different harvest.
"""

from __future__ import annotations

import argparse
import csv
import glob
import re
import sys
import zlib
from pathlib import Path

from publicsuffixlist import PublicSuffixList

HERE = Path(__file__).resolve().parent
HOSTNAME = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]*[a-z0-9]$")
URL_OR_MAIL = re.compile(r"(?:https?://|@)([a-z0-9][a-z0-9.-]*\.[a-z]{2,})")
HARVEST_GLOBS = (
    "/usr/share/doc/*/copyright",
    "/usr/lib/python3*/dist-packages/*/METADATA",
    "/usr/lib/python3/dist-packages/*/PKG-INFO",
    ".venv/lib/python3*/site-packages/*/METADATA",
)


def peers_names(folder: Path) -> list[str]:
    names: set[str] = set()
    for tsv in sorted(folder.glob("*.tsv")):
        with tsv.open(newline="") as fh:
            next(fh)  # the tshark command line
            for row in csv.DictReader(fh, delimiter="\t"):
                name = row["qname"].lower().rstrip(".")
                if row["qr"] == "query" and HOSTNAME.match(name):
                    names.add(name)
    return sorted(names)


def peer_tunnel(folder: Path) -> str:
    rows = ["ts\tsrc_ip\tqtype\tqname\n"]
    with (folder / "sv-dns-bug-1158-txt.pcap.tsv").open(newline="") as fh:
        next(fh)
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["qr"] == "query":
                rows.append(f"{row['ts_epoch']}\t{row['src_ip']}\t{row['qtype']}\t{row['qname_wire'].rstrip('.')}\n")
    return "".join(rows)


def netlab_names() -> list[str]:
    sys.path.insert(0, str(HERE.parents[1]))
    from netlab.zones import ZONES

    names = set()
    for zone in ZONES:
        origin = zone.origin.rstrip(".")
        for owner, _rtype, _rdata in zone.records:
            if "*" not in owner and origin:
                names.add(origin if owner == "@" else f"{owner}.{origin}")
    return sorted(names)


def harvest(psl: PublicSuffixList) -> list[str]:
    registered: set[str] = set()
    for pattern in HARVEST_GLOBS:
        for path in glob.glob(pattern):
            text = Path(path).read_text(errors="replace").lower()
            for match in URL_OR_MAIL.finditer(text):
                name = match.group(1).strip(".-")
                reg = psl.privatesuffix(name)
                # only names under a suffix the list knows (drops "example.local", typos, file names)
                if reg and HOSTNAME.match(reg) and psl.publicsuffix(reg, accept_unknown=False):
                    registered.add(reg)
    return sorted(registered)


def write(path: Path, header: str, names: list[str]) -> None:
    path.write_text(f"# {header} (made by make_ordinary.py)\n" + "".join(f"{n}\n" for n in names))
    print(f"{path.name}: {len(names)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=Path, default=HERE.parents[2] / ".." / "shared" / "pcaps" / "peers")
    args = parser.parse_args()
    psl = PublicSuffixList()
    write(HERE / "ordinary_peers.txt", "query names in the peers' captures", peers_names(args.peers))
    (HERE / "peer_dns2tcp.tsv").write_text(peer_tunnel(args.peers))
    write(HERE / "ordinary_netlab.txt", "names in the test lab's zones", netlab_names())
    names = harvest(psl)
    halves: tuple[list[str], list[str]] = ([], [])
    for name in names:
        halves[zlib.crc32(name.encode()) & 1].append(name)
    write(HERE / "harvest_train.txt", "harvested registered domains, training half", halves[0])
    write(HERE / "harvest_eval.txt", "harvested registered domains, evaluation half", halves[1])


if __name__ == "__main__":
    main()
