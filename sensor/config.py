"""One configuration file (TOML) for every command, derived from the command-line parser.

Every option of every command has a key, named after its long option (`--buffer-mb` is `buffer_mb`), in the
table of its command (`[capture]`, `[replay]`, `[rules.export]`...). `[common]` holds the options of the
top-level parser and those several commands share with one meaning (same action, type and choices, e.g.
`rules`): a common key applies to every command that has the option, and a command's own table overrides it.
`[heuristics]` is the detectors' table (sensor/heuristics/config.py). The command line wins over the file, the
file over the built-in defaults. Nothing here lists options by hand: an option added to the parser gets its
key, its validation and its line in `config check` by itself.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sensor.errors import StartupError

DEFAULT_CONFIG = "/etc/truesource/sensor.toml"  # used only when it exists and no --config is given
COMMON = "common"
HEURISTICS = "heuristics"
NOT_KEYS = ("help", "version", "config")  # option destinations that are not configuration
# Keys a running capture takes on SIGHUP; every other change waits for a restart (and says so in the log).
LIVE_KEYS = ("rules", "rules_format", "stats_interval", "verbose")


class ConfigError(StartupError):
    """A bad configuration file; the message names the file, the key and what would be valid."""


@dataclass(frozen=True, slots=True)
class OptionKey:
    """One configuration key: the parser action it stands for."""

    table: str  # "capture", "rules.export", "common"
    key: str
    action: argparse.Action

    @property
    def name(self) -> str:
        return f"{self.table}.{self.key}"


@dataclass(frozen=True, slots=True)
class Config:
    """A validated configuration file: every value converted to its option's type."""

    path: str | None
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # table -> key -> value
    heuristics: Mapping[str, Any] | None = None  # the raw [heuristics] table, already validated

    def value(self, command: str, key: str) -> tuple[bool, Any]:
        """(found, value) for a key of a command: its own table first, then [common]."""
        for table in (command, COMMON):
            values = self.tables.get(table, {})
            if key in values:
                return True, values[key]
        return False, None


def option_key(action: argparse.Action) -> str | None:
    """The key of an option: its first long flag, dashes as underscores; None for positionals and non-keys."""
    if not action.option_strings or action.dest in NOT_KEYS or isinstance(action, argparse._SubParsersAction):
        return None
    longs = [s for s in action.option_strings if s.startswith("--")]
    return (longs[0] if longs else action.option_strings[0]).lstrip("-").replace("-", "_")


def command_parsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every command that runs something, by table name ("capture", "rules.check"), depth first."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                table = f"{prefix}.{name}" if prefix else name
                inner = command_parsers(sub, table)
                found.update(inner or {table: sub})
    return found


def _kind(action: argparse.Action) -> tuple:
    return (type(action), action.type, action.nargs, tuple(action.choices or ()), action.const)


def schema(parser: argparse.ArgumentParser) -> dict[str, dict[str, OptionKey]]:
    """table -> key -> OptionKey, for every option of every command; shared options also under [common]."""
    tables: dict[str, dict[str, OptionKey]] = {COMMON: {}}
    for action in parser._actions:  # the top-level options (--verbose)
        key = option_key(action)
        if key:
            tables[COMMON][key] = OptionKey(COMMON, key, action)
    seen: dict[str, list[argparse.Action]] = {}
    for table, sub in command_parsers(parser).items():
        tables[table] = {}
        for action in sub._actions:
            key = option_key(action)
            if key:
                tables[table][key] = OptionKey(table, key, action)
                seen.setdefault(key, []).append(action)
    for key, actions in seen.items():
        if len(actions) > 1 and len({_kind(a) for a in actions}) == 1 and key not in tables[COMMON]:
            tables[COMMON][key] = OptionKey(COMMON, key, actions[0])
    return tables


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """`--config PATH` on every command (call once, after every command is added)."""
    for sub in command_parsers(parser).values():
        sub.add_argument("--config", metavar="PATH",
                         help=f"configuration file (default {DEFAULT_CONFIG} when it exists; the command line wins)")


# --- validation ----------------------------------------------------------------------------------------------

def _describe(action: argparse.Action) -> str:
    """What a value of this option must be, in words."""
    if isinstance(action, argparse._StoreConstAction | argparse._StoreTrueAction | argparse._StoreFalseAction
                  | argparse.BooleanOptionalAction):
        return "true or false"
    if isinstance(action, argparse._CountAction):
        return "an integer >= 0"
    names: dict[Any, str] = {int: "an integer", float: "a number"}
    base = getattr(action.type, "description", None) or names.get(action.type, "a string")
    if action.choices:
        base = "one of " + ", ".join(json.dumps(c) for c in action.choices)
    if isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*") or isinstance(action.nargs, int):
        return f"a list of {base.removeprefix('a ').removeprefix('an ')}s" if not action.choices else \
            f"a list, each {base}"
    if action.nargs == "?":
        return f"{base}, or true for {json.dumps(action.const)}, or false for off"
    return base


def _scalar(item: Any, action: argparse.Action, where: str) -> Any:
    """One item as the parser would have made it from the command line; ConfigError otherwise."""
    kind: Any = action.type
    base = getattr(kind, "base", kind)  # a Bounded number type (sensor/options.py) checks int or float first
    if base is int:
        ok = isinstance(item, int) and not isinstance(item, bool)
    elif base is float:
        ok = isinstance(item, int | float) and not isinstance(item, bool)
    elif kind is None or kind is str:
        ok = isinstance(item, str)
    else:  # a converter function: it takes the text form, as on the command line
        ok = isinstance(item, str | int | float) and not isinstance(item, bool)
    if not ok:
        raise ConfigError(f"{where}: must be {_describe(action)}, got {json.dumps(item)}")
    value = item
    if kind is not None and kind is not str:
        try:
            value = kind(str(item))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
            hint = "" if "must be" in str(err) else f"; must be {_describe(action)}"
            raise ConfigError(f"{where}: {err}{hint}") from None
    if action.choices and value not in action.choices:
        raise ConfigError(f"{where}: {json.dumps(item)} is not valid; must be {_describe(action)}")
    return value


def convert(raw: Any, action: argparse.Action, where: str) -> Any:
    """A TOML value to the value the option's action would have stored."""
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction | argparse._StoreConstAction):
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: must be true or false, got {json.dumps(raw)}")
        if isinstance(action, argparse._StoreFalseAction):
            return not raw if raw else action.default
        return action.const if raw else action.default
    if isinstance(action, argparse.BooleanOptionalAction):  # --x / --no-x
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: must be true or false, got {json.dumps(raw)}")
        return raw
    if isinstance(action, argparse._CountAction):
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise ConfigError(f"{where}: must be an integer >= 0, got {json.dumps(raw)}")
        return raw
    if isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*") or isinstance(action.nargs, int):
        if not isinstance(raw, list):
            raise ConfigError(f"{where}: must be {_describe(action)}, got {json.dumps(raw)}")
        return [_scalar(item, action, f"{where}[{i}]") for i, item in enumerate(raw)]
    if action.nargs == "?":
        if raw is True:
            return action.const
        if raw is False:
            return action.default
    return _scalar(raw, action, where)


def to_toml(value: Any) -> Any:
    """An option's value as TOML can hold it (tuples as lists); None has no TOML form."""
    if isinstance(value, tuple | list):
        return [to_toml(v) for v in value]
    return value


def load(path: str | None, parser: argparse.ArgumentParser) -> Config:
    """Reads and validates a configuration file against the parser's options; an absent default is empty."""
    if path is None:
        if not os.path.exists(DEFAULT_CONFIG):
            return Config(None)
        path = DEFAULT_CONFIG
    import tomllib  # only when there is a file: start-up without one is 20 ms shorter

    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the configuration: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not TOML: {err}") from None
    return validate(document, parser, path)


def _flatten(document: Mapping[str, Any], keys: dict, prefix: str = "") -> dict[str, Any]:
    """TOML's nested tables ([rules.export] is {"rules": {"export": ...}}) to table name -> table."""
    out: dict[str, Any] = {}
    for name, value in document.items():
        table = f"{prefix}.{name}" if prefix else name
        nested = isinstance(value, dict) and any(known.startswith(table + ".") for known in keys)
        if not nested:
            out[table] = value
        else:
            out.update(_flatten(value, keys, table))
    return out


def validate(document: Mapping[str, Any], parser: argparse.ArgumentParser, path: str = "<config>") -> Config:
    keys = schema(parser)
    tables: dict[str, Mapping[str, Any]] = {}
    heuristics = None
    for table, values in _flatten(document, keys).items():
        if table == HEURISTICS:
            from sensor.heuristics.config import HeuristicsConfig

            if not isinstance(values, dict):
                raise ConfigError(f"{path}: heuristics: must be a table")
            try:
                HeuristicsConfig.from_mapping(values)
            except StartupError as err:
                raise ConfigError(f"{path}: {err}") from None
            heuristics = MappingProxyType(dict(values))
            continue
        if table not in keys:
            raise ConfigError(f"{path}: [{table}]: unknown table; valid tables: "
                              f"{', '.join(sorted(keys))}, {HEURISTICS}")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: {table}: must be a table ([{table}]), got {json.dumps(values)}")
        converted = {}
        for key, raw in values.items():
            option = keys[table].get(key)
            if option is None:
                raise ConfigError(f"{path}: {table}.{key}: unknown key; valid keys in [{table}]: "
                                  f"{', '.join(sorted(keys[table]))}")
            converted[key] = convert(raw, option.action, f"{path}: {table}.{key}")
        tables[table] = MappingProxyType(converted)
    return Config(path, MappingProxyType(tables), heuristics)


# --- command line + file -------------------------------------------------------------------------------------

def _chosen(parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> tuple[str, list]:
    """The command's table name and the parsers on its path (top-level first)."""
    path: list[str] = []
    parsers = [parser]
    current = parser
    while True:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return ".".join(path), parsers
        name = getattr(namespace, subs[0].dest)
        path.append(name)
        current = subs[0].choices[name]
        parsers.append(current)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses the command line, then fills every option not given there from the configuration file.

    Options are parsed with no defaults and nothing required, so that what the user typed is told apart from
    what was left out (an `append` option would otherwise add to the file's list instead of replacing it).
    """
    saved = []
    every = [parser, *_all_parsers(parser)]
    for sub in every:
        for action in sub._actions:
            if action.option_strings and action.dest not in NOT_KEYS[:2]:
                saved.append((action, action.default, action.required))
                action.default, action.required = argparse.SUPPRESS, False
        # --help is printed during parsing: its %(default)s must read the real default, not SUPPRESS
        saved.append((sub, sub.formatter_class, None))
        sub.formatter_class = _real_defaults_formatter(sub.formatter_class, saved)
    try:
        namespace = parser.parse_args(argv)
    finally:
        for item, default, required in reversed(saved):
            if isinstance(item, argparse.ArgumentParser):
                item.formatter_class = default
            else:
                item.default, item.required = default, required
    table, parsers = _chosen(parser, namespace)
    if table == "config.check":  # it checks a file of its choice: a broken default must not stop it
        config = Config(getattr(namespace, "config", None))
    else:
        config = load(getattr(namespace, "config", None), parser)
    keys = schema(parser)
    given = set(vars(namespace))
    for sub in parsers:
        for action in sub._actions:
            key = option_key(action)
            if action.dest in given or not action.option_strings or key is None:
                continue
            owner = COMMON if sub is parser else table
            found, value = config.value(owner, key)
            if found and owner != COMMON and key not in config.tables.get(owner, {}) and \
                    _kind(keys[COMMON][key].action) != _kind(action):
                found = False  # a [common] key of another meaning than this command's option
            if found:
                setattr(namespace, action.dest, value)
            elif action.required:
                sub.error(f"the following arguments are required: {'/'.join(action.option_strings)} "
                          f"(or {table}.{key} in the configuration file)")
            elif isinstance(action.default, str) and action.type is not None:
                setattr(namespace, action.dest, sub._get_value(action, action.default))  # as argparse does
            else:
                setattr(namespace, action.dest, action.default)
    namespace.config = config.path
    namespace.config_heuristics = config.heuristics
    namespace.config_table = table
    return namespace


def _real_defaults_formatter(base: type, saved: list) -> type:
    """A help formatter that expands an option's help with the default it had before parse_args suppressed it."""
    real = {id(item): default for item, default, _ in saved}

    class RealDefaults(base):
        def _expand_help(self, action: argparse.Action) -> str:
            if action.default is argparse.SUPPRESS and id(action) in real:
                default = real[id(action)]
                action = copy.copy(action)
                action.default = default
            return super()._expand_help(action)

    return RealDefaults


def _all_parsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield sub
                yield from _all_parsers(sub)


def effective(parser: argparse.ArgumentParser, config: Config) -> dict[str, dict[str, tuple[Any, str]]]:
    """Every command's every key: (value, where from: "file" or "default")."""
    keys = schema(parser)
    out: dict[str, dict[str, tuple[Any, str]]] = {}
    for table, options in keys.items():
        if table == COMMON:
            continue
        out[table] = {}
        for key, option in options.items():
            found, value = config.value(table, key)
            out[table][key] = (value, "file") if found else (option.action.default, "default")
    for key, option in keys[COMMON].items():
        if not any(key in keys[t] for t in keys if t != COMMON):  # a top-level option
            found, value = config.value(COMMON, key)
            out.setdefault(COMMON, {})[key] = (value, "file") if found else (option.action.default, "default")
    return out


def render_toml(parser: argparse.ArgumentParser, config: Config) -> str:
    """The effective configuration as TOML: every key of every command; unset ones as comments."""
    lines = [f"# effective configuration ({config.path or 'no file: built-in defaults'})"]
    for table, values in sorted(effective(parser, config).items(), key=lambda t: (t[0] != COMMON, t[0])):
        lines.append("")
        lines.append(f"[{table}]")
        for key, (value, source) in values.items():
            if value is None or value is argparse.SUPPRESS:
                lines.append(f"# {key} = (unset)")
            else:
                note = "  # from the file" if source == "file" else ""
                lines.append(f"{key} = {toml_value(to_toml(value))}{note}")
    if config.heuristics is not None:
        lines += ["", f"[{HEURISTICS}]"] + [f"{k} = {toml_value(to_toml(v))}" for k, v in config.heuristics.items()]
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """A TOML literal: JSON's strings, numbers and arrays are TOML's too (booleans spelled the same)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, float) and value != value:  # nan
        return "nan"
    return json.dumps(value)


DOC_BEGIN = ("<!-- keys: generated by `python -m sensor.commands.configdoc docs/config.md`; tests/test_config.py "
             "checks it -->")
DOC_END = "<!-- end of keys -->"


def markdown(parser: argparse.ArgumentParser) -> str:
    """Every key of every table as a Markdown table: key, option, what is valid, default, meaning."""
    rows = [DOC_BEGIN, "", "| key | option | valid values | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for table, options in sorted(schema(parser).items(), key=lambda t: (t[0] != COMMON, t[0])):
        for key, option in options.items():
            action = option.action
            default = action.default
            shown = "unset" if default is None or default is argparse.SUPPRESS else \
                f"`{toml_value(to_toml(default))}`"
            meaning = (action.help or "").replace("%(default)s", str(default)).replace("|", "\\|")
            rows.append(f"| `{table}.{key}` | `{'/'.join(action.option_strings)}` | {_describe(action)} | {shown} | "
                        f"{meaning} |")
    return "\n".join(rows + ["", DOC_END])

