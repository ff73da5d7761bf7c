"""Every option of every command survives: the parser tree (commands, options, defaults, configuration keys) against
a snapshot taken before the commands moved (tests/data/parser_tree.json).

A change or removal fails. A new option passes only when it is named in ADDED_SINCE_SNAPSHOT below, so that an
addition is deliberate. `python tests/test_parser_tree.py --write` rewrites the snapshot (only on purpose).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).parent / "data" / "parser_tree.json"

# "command path: option strings" of options added after the snapshot, e.g. "replay: --idle-flush-ms".
# "COMMAND: OPTION" for a new option of an old command; "COMMAND" alone for a whole new command.
ADDED_SINCE_SNAPSHOT: set[str] = {
    "replay: --idle-flush-ms",  # issue 17 item 4: a pipe's partial batch is decoded after a short wait
    "querylog",  # issue 16: the query log exported for other engines
    "querylog export",
    # the rules branch: compiled rule sets and their cache, empty sources, forced reloads
    "replay: --rules-cache",
    "replay: --allow-empty-rules",
    "capture: --rules-cache",
    "capture: --allow-empty-rules",
    "rules test: --rules-cache",
    "rules test: --allow-empty-rules",
    "rules compile",
    "rules export: --allow-empty-rules",
    "control: --force",
    "profile: --html",  # issue 14: the profile as one self-contained HTML page
    # issue 15: the Kafka output (sensor/outputs/kafka.py), on both commands that run the loop
    *(f"{command}: {option}" for command in ("replay", "capture") for option in (
        "--kafka", "--kafka-topic-prefix", "--kafka-queue-mb", "--kafka-security-protocol", "--kafka-ca",
        "--kafka-cert", "--kafka-key", "--kafka-sasl-mechanism", "--kafka-sasl-username",
        "--kafka-sasl-password-file", "--kafka-option")),
    "replay: --memory-budget",  # issue 14: the memory budget (sensor/budget.py)
    "capture: --memory-budget",
    # issue 13: evasion-proof decoding
    "replay: --checksums",
    "replay: --mirror-source",
    "capture: --checksums",
    "capture: --mirror-source",
}


def _plain(value: Any) -> Any:
    """A default or a choice as JSON can hold it, the same way each time."""
    if value is argparse.SUPPRESS:
        return "<SUPPRESS>"
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return f"<{type(value).__name__}>"


def _type_name(kind: Any) -> str | None:
    if kind is None:
        return None
    return getattr(kind, "description", None) or getattr(kind, "__name__", None) or type(kind).__name__


def _option(action: argparse.Action, key: str | None) -> dict[str, Any]:
    return {
        "strings": list(action.option_strings), "dest": action.dest, "action": type(action).__name__,
        "default": _plain(action.default), "type": _type_name(action.type), "nargs": _plain(action.nargs),
        "const": _plain(action.const), "choices": _plain(list(action.choices)) if action.choices else None,
        "required": action.required, "config_key": key,
    }


def tree(parser: argparse.ArgumentParser | None = None) -> dict[str, Any]:
    """command path -> {"options": {strings: option}, "positionals": [...]}; "" is the top-level parser."""
    from sensor import config
    from sensor.cli import build_parser

    parser = parser or build_parser()
    keys = config.schema(parser)
    key_of = {id(option.action): option.name for name, table in keys.items() if name != config.COMMON
              for option in table.values()}
    common_actions = {id(a) for a in parser._actions}
    out: dict[str, Any] = {}

    def walk(sub: argparse.ArgumentParser, path: str) -> None:
        node: dict[str, Any] = {"options": {}, "positionals": [], "commands": []}
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                node["commands"] = sorted(action.choices)
                node["subcommand_dest"] = action.dest
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}".strip())
            elif action.option_strings:
                table_key = key_of.get(id(action))
                if table_key is None:  # not a key of its own table: a top-level option, or --help/--config
                    table_key = config.option_key(action)
                    table_key = (f"{config.COMMON}.{table_key}" if id(action) in common_actions else
                                 f"{path.replace(' ', '.')}.{table_key}") if table_key else None
                node["options"][" ".join(action.option_strings)] = _option(action, table_key)
            else:
                node["positionals"].append(_option(action, None))
        out[path] = node

    walk(parser, "")
    # keys of [common]: the top-level options and those several commands share with one meaning
    out[""]["common_keys"] = sorted(keys[config.COMMON])
    return out


def added_option(key: str) -> bool:
    """Is the option of this configuration key named in ADDED_SINCE_SNAPSHOT (for any command)?"""
    option = "--" + key.replace("_", "-")
    return any(entry.endswith(f": {option}") for entry in ADDED_SINCE_SNAPSHOT)


def test_every_option_of_every_command_survives_the_move():
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    actual = tree()
    problems = []
    for path, node in expected.items():
        if path not in actual:
            problems.append(f"command {path!r} is gone")
            continue
        now = actual[path]
        for field in ("positionals", "subcommand_dest", "common_keys"):
            was, is_now = node.get(field), now.get(field)
            if field == "common_keys" and was is not None and is_now is not None:  # a listed new option may join
                is_now = [k for k in is_now if k in was or not added_option(k)]
            if was != is_now:
                problems.append(f"{path!r}: {field} was {was}, now {is_now}")
        missing = set(node["commands"]) - set(now["commands"])
        if missing:
            problems.append(f"{path!r}: subcommands gone: {sorted(missing)}")
        for strings, option in node["options"].items():
            if strings not in now["options"]:
                problems.append(f"{path!r}: option {strings} is gone")
            elif now["options"][strings] != option:
                diff = {k: (v, now["options"][strings].get(k)) for k, v in option.items()
                        if now["options"][strings].get(k) != v}
                problems.append(f"{path!r}: option {strings} changed (was, now): {diff}")
    for path, node in actual.items():
        if path not in expected and path in ADDED_SINCE_SNAPSHOT:  # a whole new command, listed by name
            continue
        old = expected.get(path, {"options": {}, "commands": []})
        for strings in node["options"]:
            if strings not in old["options"] and f"{path}: {strings}" not in ADDED_SINCE_SNAPSHOT:
                problems.append(f"{path!r}: new option {strings} is not in ADDED_SINCE_SNAPSHOT")
        if path not in expected and f"{path}: " not in {a[:len(path) + 2] for a in ADDED_SINCE_SNAPSHOT}:
            problems.append(f"new command {path!r} is not in ADDED_SINCE_SNAPSHOT")
    assert not problems, "\n".join(problems)


def test_the_snapshot_covers_every_command():
    """The snapshot itself is not empty or partial: the commands a user knows are in it with their options."""
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    for path in ("replay", "capture", "rules check", "rules test", "rules export", "tail", "config check"):
        assert path in expected
    assert expected["replay"]["options"]["--rules"]["config_key"] == "replay.rules"
    assert expected["replay"]["options"]["--rules"]["required"] is True


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    SNAPSHOT.write_text(json.dumps(tree(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
