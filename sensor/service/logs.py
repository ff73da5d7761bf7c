"""Logs on standard error, one line per event, in a form journald keeps structured.

`journal`: each line starts with its syslog priority (`<6>` info, `<4>` warning, `<3>` error), which journald
turns into the entry's PRIORITY when the unit has SyslogLevelPrefix=yes (the default); details follow as
key=value words (`event=reload outcome=success rules=1200`) that `journalctl -g` and log shippers can match.
`plain`: `truesource: message` for a terminal. `auto`: journal when standard error is journald's stream
(JOURNAL_STREAM names its device and inode), else plain. Nothing is logged per packet.
"""

from __future__ import annotations

import logging
import os
import sys

FORMATS = ("auto", "plain", "journal")
PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(f"{key}={_word(value)}" for key, value in fields.items())
        if record.exc_info:
            text += " exception=" + _word(self.formatException(record.exc_info))
        priority = PRIORITY.get(record.levelno, 6)
        return f"<{priority}>truesource: " + text.replace("\n", " | ")


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = "truesource: " + record.getMessage()
        fields = getattr(record, "fields", None)
        if fields:
            text += " (" + ", ".join(f"{key}={_word(value)}" for key, value in fields.items()) + ")"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _word(value) -> str:
    text = str(value).replace("\n", " | ")
    return f'"{text}"' if (" " in text or not text) else text


def journald_stream() -> bool:
    """True when standard error is the journal's stream (systemd sets JOURNAL_STREAM=device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        info = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


def setup(level: int, log_format: str = "auto") -> None:
    journal = log_format == "journal" or (log_format == "auto" and journald_stream())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter() if journal else PlainFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def add_options(parser) -> None:
    parser.add_argument("--log-format", choices=FORMATS, default="auto",
                        help="standard error as plain lines or with syslog priority prefixes for journald "
                             "(default auto: journald's when standard error is the journal)")
