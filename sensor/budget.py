"""The memory budget (`--memory-budget MB`, issue 14): one figure turned into the limit of every table and buffer
that traffic can fill (docs/limits.md, "The memory budget").

Each table gets a share of the budget and a limit derived from it by what one entry costs. A limit never goes
above the table's own default (the constants in docs/limits.md): the budget only tightens, so the default budget
changes nothing a small capture can notice, and a large budget does not make tables larger than they were tested
at. With N fanout workers, each worker runs its own decode loop and flow table: their shares are split N ways. The
query log, the flow store and the publisher live in the parent and keep their whole share. An option given
explicitly (`--max-flows`, `--publish-hwm`, `--max-tcp-streams`) wins over the budget.

What stays outside the budget: the process as it is at start-up (interpreter, rules, libraries: the "idle" PSS
the flood tests subtract) and the tables with fixed small limits (attribution, heuristics, the DGA and
registered-domain caches: tens of MB at most, docs/limits.md); the `reserve` share is headroom for the transient
objects of a batch being decoded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from sensor.querylog.limits import (
    CACHE_KIB,
    PIPE_BATCHES,
    PIPE_MESSAGE_BYTES,
    WRITE_BYTES,
    WriterLimits,
)

MB = 1024 * 1024
DEFAULT_BUDGET_MB = 512  # a small appliance: 1-2 GB of RAM, the sensor one service among a few
MIN_BUDGET_MB = 16

# The fraction of the budget each table may fill; what is left over (reserve) is headroom for a batch in flight.
SHARES: dict[str, float] = {
    "tcp_stream_bytes": 0.13,  # partial DNS-over-TCP messages (the TCP share, 16 %, less the next)
    "tcp_ooo_bytes": 0.03,  # out-of-order TCP segments waiting for a hole to fill (decision 0171)
    "ip_fragments": 0.03,  # datagrams being reassembled
    "pending_queries": 0.05,  # queries waiting for their response (--query-log)
    "flow_table": 0.08,  # flow records being built (--flows)
    "flow_store": 0.06,  # flow records buffered for the next Parquet row group (--flow-store)
    "query_log": 0.24,  # the pipe to the writer, the writer's pending entries and its page cache (--query-log)
    "publisher": 0.10,  # events queued for a slow subscriber (--publish)
}
RESERVE = 1.0 - sum(SHARES.values())  # 0.28: one batch of frames in flight (batch_frames) and its objects
WORKER_SHARES = ("tcp_stream_bytes", "tcp_ooo_bytes", "ip_fragments", "pending_queries", "flow_table")  # one per worker

# What one entry costs, bytes (measured or from the structs; docs/limits.md).
PENDING_QUERY_BYTES = 256  # PendingQuery (ext/correlate.pxi, ~180 bytes with the inline name) and its bucket
FLOW_RECORD_BYTES = 128  # 77 bytes in the table's arrays, its hash index, the record when emitted
FLOW_STORE_RECORD_BYTES = 200  # a buffered record and its share of the Arrow table built from the row group
EVENT_BYTES = 1_500  # a hit or dns.query event as JSON in a ZeroMQ queue
FRAGMENT_SLOT_BYTES = 4_096  # a datagram's slot and its first fragments
# A batch of frames in flight, per frame: its bytes, the query-log entries it packs, their copies into the pipe's
# messages, and the allocator's slack. Measured on the amplification flood (bench/flood_soak.py): 4,096 frames of
# ~2 KB responses took ~44 MB in the sensor process whatever the budget, 1,835 frames ~35 MB, 1,024 ~23 MB.
IN_FLIGHT_FRAME_BYTES = 16_384

# The tables' own defaults (the most the budget gives); kept here, not imported, so that the budget does not
# load the decoders or the flow store.
MAX_TCP_STREAMS = 4_096
MAX_TCP_MESSAGE = 65_537
MIN_TCP_BYTES = 262_144
OOO_TOTAL_BYTES = 8 * MB  # sensor/decode/tcpstream.py
MIN_OOO_BYTES = 262_144
MAX_FRAGMENTED_DATAGRAMS = 1_024
MAX_FRAGMENT_BYTES = 4 * MB
MAX_PENDING_QUERIES = 65_536
MAX_FLOWS = 262_144
ROW_GROUP_RECORDS = 1 << 17
BATCH_FRAMES = 4_096  # sensor/capture/files.py
PUBLISH_HWM = 100_000


@dataclass(frozen=True)
class Budget:
    """The limits one budget gives; `shares` in bytes per table (per worker for the loop's tables)."""

    megabytes: float
    workers: int
    shares: dict[str, int] = field(default_factory=dict)
    max_tcp_bytes: int = MAX_TCP_STREAMS * MAX_TCP_MESSAGE
    max_ooo_bytes: int = OOO_TOTAL_BYTES
    max_fragmented_datagrams: int = MAX_FRAGMENTED_DATAGRAMS
    max_fragment_bytes: int = MAX_FRAGMENT_BYTES
    max_pending_queries: int = MAX_PENDING_QUERIES
    max_flows: int = MAX_FLOWS
    flow_store_row_group: int = ROW_GROUP_RECORDS
    publish_hwm: int = PUBLISH_HWM
    batch_frames: int = BATCH_FRAMES  # frames read and decoded at once: the reserve share holds one batch
    query_log: WriterLimits = field(default_factory=WriterLimits)

    def loop_limits(self) -> dict[str, int]:
        """The decode loop's constructor arguments (FastLoop and ReferenceLoop take the same)."""
        return {"max_tcp_bytes": self.max_tcp_bytes, "max_ooo_bytes": self.max_ooo_bytes,
                "max_fragmented_datagrams": self.max_fragmented_datagrams,
                "max_fragment_bytes": self.max_fragment_bytes, "max_pending_queries": self.max_pending_queries}

    def describe(self) -> str:
        """One line for the start-up log: the budget and what each table got."""
        return (f"memory budget {self.megabytes:g} MB ({self.workers} worker(s)): TCP partial messages "
                f"{self.max_tcp_bytes / MB:.1f} MB, TCP out of order {self.max_ooo_bytes / MB:.1f} MB, "
                f"fragments {self.max_fragment_bytes / MB:.1f} MB, "
                f"{self.max_pending_queries:,} pending queries, {self.max_flows:,} flows, flow-store row group "
                f"{self.flow_store_row_group:,}, query log {self.query_log.memory_bytes() / MB:.1f} MB, "
                f"publisher {self.publish_hwm:,} events per subscriber, batches of {self.batch_frames:,} frames")


def unlimited(workers: int = 1) -> Budget:
    """`--memory-budget 0`: every table at its own default (as before the budget)."""
    return Budget(0, workers)


@functools.cache  # every sink asks for its share at start-up: the split is made once per budget
def split(megabytes: float, workers: int = 1) -> Budget:
    """The limits `megabytes` gives, the loop's tables split over `workers`. ValueError below MIN_BUDGET_MB."""
    if megabytes == 0:
        return unlimited(workers)
    if megabytes < MIN_BUDGET_MB:
        raise ValueError(f"must be 0 (no budget) or at least {MIN_BUDGET_MB} MB")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    total = megabytes * MB
    shares = {name: int(total * fraction / (workers if name in WORKER_SHARES else 1))
              for name, fraction in SHARES.items()}
    return Budget(
        megabytes, workers, shares,
        max_tcp_bytes=min(MAX_TCP_STREAMS * MAX_TCP_MESSAGE, max(MIN_TCP_BYTES, shares["tcp_stream_bytes"])),
        max_ooo_bytes=clamp(shares["tcp_ooo_bytes"], MIN_OOO_BYTES, OOO_TOTAL_BYTES),
        max_fragmented_datagrams=clamp(shares["ip_fragments"] // FRAGMENT_SLOT_BYTES, 16, MAX_FRAGMENTED_DATAGRAMS),
        max_fragment_bytes=clamp(shares["ip_fragments"], 256 * 1024, MAX_FRAGMENT_BYTES),
        max_pending_queries=clamp(shares["pending_queries"] // PENDING_QUERY_BYTES, 1_024, MAX_PENDING_QUERIES),
        max_flows=clamp(shares["flow_table"] // FLOW_RECORD_BYTES, 1_024, MAX_FLOWS),
        flow_store_row_group=clamp(shares["flow_store"] // FLOW_STORE_RECORD_BYTES, 1_024, ROW_GROUP_RECORDS),
        publish_hwm=clamp(shares["publisher"] // EVENT_BYTES, 100, PUBLISH_HWM),
        batch_frames=clamp(total * RESERVE / workers // IN_FLIGHT_FRAME_BYTES, 256, BATCH_FRAMES),
        query_log=query_log_limits(shares["query_log"]),
    )


def query_log_limits(share: int) -> WriterLimits:
    """The query log's share: a quarter for the writer's page cache, an eighth for the entries it holds before a
    transaction, the rest for the pipe (messages queued on both sides)."""
    message = clamp(share // 64, 64 * 1024, PIPE_MESSAGE_BYTES)
    batches = clamp(share * 5 // 8 // (2 * message), 2, PIPE_BATCHES)
    return WriterLimits(pipe_batches=batches, pipe_message_bytes=message,
                        write_bytes=clamp(share // 8, 256 * 1024, WRITE_BYTES),
                        cache_kib=clamp(share // 4 // 1024, 2_048, CACHE_KIB))


def clamp(value: float, low: int, high: int) -> int:
    return max(low, min(high, int(value)))
