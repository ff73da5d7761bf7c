"""What the query log may hold in memory and keep of an entry (docs/limits.md): constants and WriterLimits, apart
from the writer so that the memory budget (sensor/budget.py) sizes them without importing the writer's zmq,
multiprocessing and SQLite into every run (decision 0118: start-up loads only what the run uses)."""

from __future__ import annotations

from dataclasses import dataclass

CACHE_KIB = 65_536  # 64 MiB SQLite page cache for the writer
PIPE_BATCHES = 64  # messages queued for the writer (on each side of the pipe) before capture drops ...
PIPE_MESSAGE_BYTES = 1 << 20  # ... each at most this many bytes (a larger batch is sent in parts): the queue
# holds at most 2 x 64 x 1 MiB = 128 MiB even under a flood of 64 KiB responses (a batch is ~0.3 MiB normally)
WRITE_ROWS = 20_000  # entries gathered before one insert transaction ...
WRITE_BYTES = 8 << 20  # ... or this many bytes of packed entries (the writer's buffer; and a segment's at most)
# What one entry keeps of its response's answers (decision 0121): a response packed with ~110 answers under a
# 255-byte name decoded to ~100 KB of text and made the store grow 70 times faster than the traffic.
MAX_ANSWERS = 32  # records
MAX_ANSWER_BYTES = 2_048  # bytes of owner and data text
RESPONSE_ONLY_ANSWERS = 4  # records of a response with no query: anyone can send those, no query needed


@dataclass(frozen=True, slots=True)
class WriterLimits:
    """What the query log may hold in memory and keep of an entry (docs/limits.md): one parameter each, so that a
    memory budget can size them. The defaults are the constants above."""

    pipe_batches: int = PIPE_BATCHES  # messages queued on each side of the pipe
    pipe_message_bytes: int = PIPE_MESSAGE_BYTES  # bytes a message holds at most (whole entries)
    write_rows: int = WRITE_ROWS  # entries the writer holds before a transaction ...
    write_bytes: int = WRITE_BYTES  # ... or bytes of packed entries
    max_answers: int = MAX_ANSWERS
    max_answer_bytes: int = MAX_ANSWER_BYTES
    response_only_answers: int = RESPONSE_ONLY_ANSWERS
    cache_kib: int = CACHE_KIB  # the writer's SQLite page cache

    @property
    def caps(self) -> tuple[int, int, int]:
        return (self.max_answers, self.max_answer_bytes, self.response_only_answers)

    def memory_bytes(self) -> int:
        """The most the pipe, the writer's pending entries and its page cache hold (decoded entries aside)."""
        return 2 * self.pipe_batches * self.pipe_message_bytes + self.write_bytes + self.cache_kib * 1024


DEFAULT_LIMITS = WriterLimits()
