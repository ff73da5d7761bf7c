"""Option value types that carry their valid range, so the command line and the configuration file check a value
the same way and say the same thing (`--workers 0` and `workers = 0` both: "must be an integer >= 1")."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import NoReturn


class Bounded:
    """A number type with a lower bound (inclusive, or exclusive with `above`); argparse calls it on the text."""

    def __init__(self, base: type, minimum: float, exclusive: bool = False) -> None:
        self.base = base
        self.minimum = minimum
        self.exclusive = exclusive
        word = "an integer" if base is int else "a number"
        self.description = f"{word} {'>' if exclusive else '>='} {minimum:g}"
        self.__name__ = self.description  # argparse names the type in "invalid <type> value"

    def __call__(self, text: str) -> int | float:
        try:
            value = self.base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.description}") from None
        if value < self.minimum or (self.exclusive and value == self.minimum):
            raise argparse.ArgumentTypeError(f"{text} is out of range; must be {self.description}")
        return value

    def __repr__(self) -> str:
        return self.description


def at_least(minimum: float, base: type = int) -> Callable[[str], int | float]:
    return Bounded(base, minimum)


def above(minimum: float, base: type = float) -> Callable[[str], int | float]:
    return Bounded(base, minimum, exclusive=True)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the bad option and where help is, not the whole usage block (docs/cli.md).

    Subcommand parsers are made of the same class (argparse's add_subparsers takes the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """As argparse's, but an unknown option is reported by the command it was given to (its --help lists what
        that command takes), not by the top-level parser."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser: argparse.ArgumentParser = self
            while True:
                subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
                chosen = getattr(parsed, subs[0].dest, None) if subs else None
                if chosen is None:
                    break
                parser = subs[0].choices[chosen]
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed
