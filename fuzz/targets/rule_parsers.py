"""Rule files in every format (and format detection): only RuleError may come out of a load, and the compiled
rule set must decide as the reference matcher does for the names the rules name.

Input: byte 0 picks the format (the sorted loader names, then `detect`), the rest is the file's text.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from fuzz.common import DLT_RAW, PROTO_UDP, RULES, differential, ip_packet, udp_datagram
from sensor.errors import RuleError
from sensor.rules.formats.registry import loaders
from sensor.rules.loader import build_ruleset
from sensor.rules.model import RuleSet
from sensor.rules.patterns import PatternMatcher

INSTRUMENT = ("sensor.rules.loader", "sensor.rules.formats.registry", "sensor.rules.patterns",
              "sensor.decode")
FORMATS = sorted(loaders())
NAMES_CHECKED = 6  # names of the loaded table sent through both loops as queries


def query_for(name: str) -> bytes | None:
    """A DNS query for a table name, or None when the name cannot be written as wire labels."""
    labels = [label.encode("utf-8", "surrogatepass") for label in name.split(".")] if name else []
    if any(not 0 < len(label) < 64 for label in labels):
        return None
    wire = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    if len(wire) > 255:
        return None
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + wire + struct.pack("!HH", 1, 1)


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    text = data[1:].decode("utf-8", "replace")
    choice = data[0] % (len(FORMATS) + 1)
    try:
        if choice == len(FORMATS):
            ruleset = build_ruleset([("fuzz.rules", text, False)])
        else:
            ruleset = RuleSet()
            loaders()[FORMATS[choice]](ruleset, text, "fuzz.rules")
    except RuleError:
        return
    matcher = PatternMatcher(ruleset)
    frames = [ip_packet(PROTO_UDP, udp_datagram(query)) for name in list(ruleset.table)[:NAMES_CHECKED]
              if (query := query_for(name)) is not None]
    frames.append(ip_packet(PROTO_UDP, udp_datagram(query_for("www.example.com"))))
    patterns = matcher.match if matcher else None
    differential(DLT_RAW, (53,), frames, rules=(ruleset.table, bytes(ruleset.allow), patterns))


def seeds() -> Iterator[bytes]:
    for path in sorted(Path(RULES).iterdir()) + [Path(RULES).parent / "pcaps" / "pcaps.rules"]:
        if path.suffix == ".md" or not path.is_file():
            continue
        text = path.read_bytes()[:8192]
        for choice in range(len(FORMATS) + 1):
            yield bytes([choice]) + text
