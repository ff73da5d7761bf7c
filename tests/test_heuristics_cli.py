"""Heuristics through the sensor: a real tunnelling session in a peer's capture is flagged once, the demo's
ordinary clients are not, and a bad setting stops the start with the key's name."""

from __future__ import annotations

import json

from conftest import PCAPS, PEERS, ROOT, run_cli


def events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_tunnel_session_is_flagged_and_ordinary_clients_are_not():
    result = run_cli("replay", str(PEERS / "sv-dns-bug-1158-txt.pcap"), str(PCAPS / "demo-resolver.pcap"),
                     "--rules", str(ROOT / "rules" / "demo.rules"), "--heuristics", "dga,tunnel",
                     "--checksums", "off")  # the peer capture was taken with checksum offload
    assert result.returncode == 0, result.stderr
    found = [e for e in events(result.stdout) if e["rule"]["ruleset"] == "heuristics"]
    assert [(e["rule"]["name"], e["source"]["ip"]) for e in found] == [("heuristic:tunnel", "10.30.28.90")]
    heuristic = found[0]["truesource"]["heuristic"]
    assert heuristic["detector"] == "tunnel" and heuristic["score"] >= heuristic["threshold"]
    assert heuristic["evidence"]
    rule_hits = [e for e in events(result.stdout) if e["rule"]["ruleset"] != "heuristics"]
    assert len(rule_hits) == 11  # the demo's rule hits are unchanged


def test_bad_heuristics_setting_names_the_key(tmp_path):
    config = tmp_path / "h.toml"
    config.write_text("[heuristics]\ntunnel_window = 0\n")
    result = run_cli("replay", str(PCAPS / "demo-resolver.pcap"), "--rules", str(ROOT / "rules" / "demo.rules"),
                     "--heuristics-config", str(config))
    assert result.returncode == 2 and "heuristics.tunnel_window" in result.stderr
