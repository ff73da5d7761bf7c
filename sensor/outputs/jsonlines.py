"""JSON lines output: one event a line, to a file or standard output."""

from __future__ import annotations

import sys
from typing import TextIO

from sensor.errors import StartupError


class JsonLinesWriter:
    """Appends events as lines; `-` is standard output."""

    def __init__(self, path: str = "-", topics: tuple[str, ...] = ("dns.hit",)) -> None:
        self.path = path
        self.topics = topics
        self.lines = 0
        if path == "-":
            self._handle: TextIO = sys.stdout
        else:
            try:
                self._handle = open(path, "w", encoding="ascii", buffering=1 << 16)
            except OSError as err:
                raise StartupError(f"{path}: cannot write events: {err.strerror}") from None

    def write(self, topic: str, line: str) -> None:
        if topic not in self.topics:
            return
        self._handle.write(line)
        self._handle.write("\n")
        self.lines += 1

    def close(self) -> None:
        self._handle.flush()
        if self._handle is not sys.stdout:
            self._handle.close()
