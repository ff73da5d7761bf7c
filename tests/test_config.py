"""The configuration file: every option of every command round-trips through it, the command line wins, and each
kind of bad value is refused with the file, the key and what would be valid.

The options are read from the parser itself, so options other branches add are covered without edits here.
"""

from __future__ import annotations

import argparse
import tomllib

import pytest

from conftest import run_cli
from sensor import config
from sensor.commands.config import run_config
from sensor.commands.parser import build_parser
from sensor.options import Bounded

CANDIDATE_TEXTS = ("7", "2.5", "127.0.0.1:9100", "tcp://127.0.0.1:5599", "10.0.0.0/8", "x")


def sample(action: argparse.Action, index: int = 0):
    """A valid value for one item of an option, and its command-line text."""
    if action.choices:
        choices = [c for c in action.choices if c != action.default] or list(action.choices)
        choice = choices[-1 - index % len(choices)]
        return choice, str(choice)
    kind = action.type
    if isinstance(kind, Bounded) or kind in (int, float):
        base = kind.base if isinstance(kind, Bounded) else kind
        value = base(max(getattr(kind, "minimum", 0), 0) + 3 + index) + (0.5 if base is float else 0)
        if value == action.default:
            value += 10
        return value, str(value)
    if kind is None or kind is str:
        return f"v{index}-{action.dest}", f"v{index}-{action.dest}"
    for text in CANDIDATE_TEXTS:  # an option type of its own: the first text it takes
        try:
            kind(text)
        except Exception:  # noqa: BLE001 - any refusal means "try the next text"
            continue
        return text, text
    pytest.fail(f"no sample value for {action.option_strings} (type {kind})")


def file_and_argv(action: argparse.Action):
    """(TOML value, command-line words) meaning the same non-default setting."""
    flag = action.option_strings[-1] if action.option_strings[-1].startswith("--") else action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):  # the value that is not the default
        value = not action.default
        return value, [next(s for s in action.option_strings if s.startswith("--no-") != value)]
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction | argparse._StoreConstAction):
        return True, [flag]
    if isinstance(action, argparse._CountAction):
        return 2, [flag, flag]
    if isinstance(action, argparse._AppendAction):
        items = [sample(action, i) for i in range(2)]
        return [v for v, _ in items], [w for _, text in items for w in (flag, text)]
    if action.nargs in ("+", "*"):
        items = [sample(action, i) for i in range(2)]
        return [v for v, _ in items], [flag, *[t for _, t in items]]
    value, text = sample(action)
    return value, [flag, text]


def positionals(sub: argparse.ArgumentParser) -> list[str]:
    words = []
    for action in sub._actions:
        if action.option_strings or isinstance(action, argparse._SubParsersAction):
            continue
        if action.nargs == "?":
            continue
        words.append(str(list(action.choices)[0]) if action.choices else sample(action)[1])
    return words


def write_toml(path, table: str, values: dict) -> None:
    lines = [f"[{table}]"] + [f"{key} = {config.toml_value(config.to_toml(v))}" for key, v in values.items()]
    path.write_text("\n".join(lines) + "\n")


PARSER = build_parser()
COMMANDS = config.command_parsers(PARSER)


@pytest.mark.parametrize("table", sorted(COMMANDS))
def test_every_option_round_trips(table, tmp_path):
    """Each key set in the file gives the namespace the same option gives on the command line."""
    sub = COMMANDS[table]
    keys = config.schema(PARSER)[table]
    file_values, argv = {}, []
    for key, option in keys.items():
        value, words = file_and_argv(option.action)
        file_values[key] = value
        argv += words
    path = tmp_path / "sensor.toml"
    write_toml(path, table, file_values)
    command = table.split(".")
    from_file = config.parse_args(PARSER, [*command, *positionals(sub), "--config", str(path)])
    from_line = build_parser().parse_args([*command, *positionals(sub), *argv])  # plain argparse, no file
    for key, option in keys.items():
        dest = option.action.dest
        assert getattr(from_file, dest) == getattr(from_line, dest), f"{table}.{key}"
        assert getattr(from_file, dest) != option.action.default, f"{table}.{key}: the sample is the default"


def test_every_key_is_documented_in_the_example():
    """systemd/sensor.toml names every key of every command (commented out or set)."""
    from conftest import ROOT

    text = (ROOT / "systemd" / "sensor.toml").read_text()
    missing = []
    for table, keys in config.schema(PARSER).items():
        header = f"\n[{table}]\n"
        if header not in text:
            missing.append(f"[{table}]")
            continue
        section = text.split(header, 1)[1].split("\n[", 1)[0]
        for key in keys:
            if f"{key} =" not in section:
                missing.append(f"{table}.{key}")
    assert not missing, f"systemd/sensor.toml lacks: {missing}"
    tomllib.loads(text)  # and it is TOML
    assert config.validate(tomllib.loads(text), PARSER, "sensor.toml") is not None


def test_config_doc_lists_every_key():
    """docs/config.md's key table is the one the parser gives (regenerate:
    python -m sensor.commands.configdoc docs/config.md)."""
    from conftest import ROOT

    text = (ROOT / "docs" / "config.md").read_text()
    assert config.markdown(PARSER) in text, \
        "docs/config.md is stale: run python -m sensor.commands.configdoc docs/config.md"


def test_command_line_wins_over_the_file(tmp_path):
    path = tmp_path / "sensor.toml"
    path.write_text('[capture]\ninterface = "eth9"\nworkers = 3\nrules = ["a.rules", "b.rules"]\n')
    args = config.parse_args(PARSER, ["capture", "--config", str(path), "--workers", "5", "--rules", "c.rules"])
    assert (args.interface, args.workers, args.rules) == ("eth9", 5, ["c.rules"])
    args = config.parse_args(PARSER, ["capture", "--config", str(path)])
    assert (args.interface, args.workers, args.rules) == ("eth9", 3, ["a.rules", "b.rules"])


def test_common_table_and_command_table(tmp_path):
    path = tmp_path / "sensor.toml"
    path.write_text('[common]\nrules = ["shared.rules"]\nverbose = true\n[rules.test]\nrules = ["own.rules"]\n')
    replay = config.parse_args(PARSER, ["replay", "x.pcap", "--config", str(path)])
    assert replay.rules == ["shared.rules"] and replay.verbose is True
    test = config.parse_args(PARSER, ["rules", "test", "a.example", "--config", str(path)])
    assert test.rules == ["own.rules"]


def test_required_option_may_come_from_the_file_or_is_asked_for(tmp_path):
    path = tmp_path / "sensor.toml"
    path.write_text('[capture]\nworkers = 2\n')
    result = run_cli("capture", "--config", str(path), "--rules", "rules/demo.rules")
    assert result.returncode == 2
    assert "--interface" in result.stderr and "capture.interface" in result.stderr


def test_default_file_is_used_only_when_it_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_CONFIG", str(tmp_path / "absent.toml"))
    assert config.parse_args(PARSER, ["tail"]).count == 0
    (tmp_path / "present.toml").write_text("[tail]\ncount = 4\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG", str(tmp_path / "present.toml"))
    args = config.parse_args(PARSER, ["tail"])
    assert args.count == 4 and args.config == str(tmp_path / "present.toml")


BAD = [
    ("[capture]\nworkers = \"two\"\n", "capture.workers", "must be an integer >= 1"),
    ("[capture]\nworkers = 0\n", "capture.workers", "must be an integer >= 1"),
    ("[capture]\nstats_interval = 0\n", "capture.stats_interval", "a number > 0"),
    ("[capture]\nno_promisc = \"yes\"\n", "capture.no_promisc", "must be true or false"),
    ("[capture]\nrules = \"one.rules\"\n", "capture.rules", "must be a list of strings"),
    ("[capture]\nrules_format = \"snort\"\n", "capture.rules_format", 'one of "native", "hosts"'),
    ("[capture]\nworker = 2\n", "capture.worker", "unknown key; valid keys in [capture]: "),
    ("[captur]\nworkers = 2\n", "[captur]", "unknown table; valid tables: "),
    ("[heuristics]\ndga_threshold = -1\n", "heuristics.dga_threshold", "must be >= 0"),
    ("[capture\nworkers = 2\n", "not TOML", "line 1"),
]


@pytest.mark.parametrize("text,key,valid", BAD, ids=[b[1] + ":" + b[2][:16] for b in BAD])
def test_bad_values_name_file_key_and_what_is_valid(tmp_path, text, key, valid):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = run_cli("config", "check", str(path))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert line.startswith(f"truesource: {path}: ") and key in line and valid in line, line


def test_missing_file_given_with_config_is_an_error(tmp_path):
    result = run_cli("replay", "pcaps/demo-resolver.pcap", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and "nope.toml: cannot read the configuration" in result.stderr


def test_config_check_prints_the_effective_configuration_as_toml(tmp_path):
    path = tmp_path / "sensor.toml"
    path.write_text('[capture]\ninterface = "eth1"\nworkers = 2\n[heuristics]\ndetectors = ["dga"]\n')
    result = run_cli("config", "check", str(path))
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert printed["capture"]["interface"] == "eth1" and printed["capture"]["workers"] == 2
    assert printed["capture"]["snaplen"] == PARSER.parse_args(["capture", "-i", "x", "--rules", "r"]).snaplen
    assert printed["heuristics"] == {"detectors": ["dga"]}
    # what it prints is itself a valid configuration that prints the same
    again = tmp_path / "again.toml"
    again.write_text(result.stdout)
    second = run_cli("config", "check", str(again))
    assert second.returncode == 0, second.stderr
    assert tomllib.loads(second.stdout) == printed


def test_config_drives_a_replay(tmp_path):
    path = tmp_path / "sensor.toml"
    out = tmp_path / "hits.jsonl"
    path.write_text(f'[replay]\nrules = ["rules/demo.rules"]\nout = ["{out}"]\nsensor_name = "from-config"\n')
    result = run_cli("replay", "pcaps/demo-resolver.pcap", "--config", str(path))
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert lines and all('"name":"from-config"' in line for line in lines)


def test_config_check_of_a_file_is_not_stopped_by_a_broken_default(tmp_path, monkeypatch, capsys):
    broken = tmp_path / "default.toml"
    broken.write_text("[capture]\nworkers = 0\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG", str(broken))
    good = tmp_path / "good.toml"
    good.write_text("[tail]\ncount = 3\n")
    args = config.parse_args(PARSER, ["config", "check", str(good)])
    assert run_config(args, PARSER) == 0
    assert tomllib.loads(capsys.readouterr().out)["tail"]["count"] == 3
    with pytest.raises(config.ConfigError, match="capture.workers"):
        run_config(config.parse_args(PARSER, ["config", "check"]), PARSER)  # the default itself: checked


def test_heuristics_table_of_the_config_file_turns_the_detectors_on(tmp_path):
    from conftest import PCAPS, PEERS

    path = tmp_path / "sensor.toml"
    path.write_text('[replay]\nrules = ["rules/demo.rules"]\n[heuristics]\ndetectors = ["tunnel"]\n')
    result = run_cli("replay", str(PEERS / "sv-dns-bug-1158-txt.pcap"), str(PCAPS / "demo-resolver.pcap"),
                     "--config", str(path), "--checksums", "off")  # the peer capture was taken with offload
    assert result.returncode == 0, result.stderr
    found = [line for line in result.stdout.splitlines() if '"ruleset":"heuristics"' in line]
    assert len(found) == 1 and "heuristic:tunnel" in found[0]
