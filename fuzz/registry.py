"""Every fuzz target by name. A new parser adds one module under fuzz/targets/ and one line here.

Each target module defines:
  `fuzz_one(data: bytes) -> None`  read one input; raise only on a finding (a crash, a disagreement between
                                   the fast path and the reference decoder, an exception the parser must not
                                   raise); everything a hostile input may legitimately cause is caught inside
  `seeds() -> Iterator[bytes]`     the starting corpus, taken from pcaps/, the peers' captures and rules/
  `INSTRUMENT: tuple[str, ...]`    the modules it reads input with: imported first, so atheris instruments them
"""

from __future__ import annotations

import importlib
from types import ModuleType

TARGETS: dict[str, str] = {
    "frame_decoder": "fuzz.targets.frame_decoder",  # whole frames, every link type: fast path == reference
    "dns_name": "fuzz.targets.dns_name",  # DNS messages on UDP: names, pointers, EDNS
    "tcp_framing": "fuzz.targets.tcp_framing",  # segment sequences on a few streams, a small stream table
    "capture_file": "fuzz.targets.capture_file",  # pcap/pcapng bytes read by sensor/capture/files.py
    "rule_parsers": "fuzz.targets.rule_parsers",  # each rule format, format detection, the compiled rule set
    "flow_filter": "fuzz.targets.flow_filter",  # nfdump filter expressions: only FilterError, and sound logic
    "tcp_reassembly": "fuzz.targets.tcp_reassembly",  # Linux's TCP reassembly, checksums verified: fast == reference
    "ip_reassembly": "fuzz.targets.ip_reassembly",  # Linux's fragment policy, checksums verified: fast == reference
    "compiled_rules": "fuzz.targets.compiled_rules",  # compiled rule-set files: only CompiledRulesError; loops agree
}


def load(name: str) -> ModuleType:
    if name not in TARGETS:
        raise KeyError(f"no fuzz target {name!r}; known: {', '.join(TARGETS)}")
    return importlib.import_module(TARGETS[name])
