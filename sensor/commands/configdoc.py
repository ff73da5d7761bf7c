"""`python -m sensor.commands.configdoc docs/config.md`: rewrite the table of configuration keys in that file from
the parser (tests/test_config.py checks it is current)."""

from __future__ import annotations

import sys

from sensor import config
from sensor.commands.parser import build_parser


def write_markdown(target: str) -> None:
    with open(target, encoding="utf-8") as handle:
        text = handle.read()
    head, rest = text.split(config.DOC_BEGIN, 1)
    tail = rest.split(config.DOC_END, 1)[1]
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(head + config.markdown(build_parser()) + tail)


if __name__ == "__main__":
    write_markdown(sys.argv[1])
