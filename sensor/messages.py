"""Typed records that leave the decode loop, and the messages between the sensor's processes (docs/architecture.md).

Everything that crosses a process boundary is a tagged msgspec Struct, encoded with msgpack by one reused
encoder and decoded against the union of what may arrive, so a message is checked when it is read and its
fields have names (no pickled positional tuples):

    capture worker -> parent   Report (hits, watermark, counters), Flows, Built, Swapped   (WorkerMessage)
    parent -> capture worker   Reload, Swap, Drop                                         (ParentMessage)
    loop -> query-log writer   PackedEntries, Entries                                     (QueryLogMessage)

Flows cross as FLOW_DTYPE bytes (a numpy structured array, read by field name) inside Flows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from sensor.querylog.record import QueryLogEntry
from sensor.rules.model import Rule


class DnsRecord(msgspec.Struct, frozen=True, array_like=True):
    """A decoded DNS message out of the loop: a rule hit (`rule` >= 0), or, when the detectors or the message
    trace want every message, any query or response. Fields in the loop's record order (sensor/records.py)."""

    frame: int
    ts_sec: int
    ts_usec: int
    vlan_id: int | None
    src_ip: bytes
    dst_ip: bytes
    transport: int
    src_port: int
    dst_port: int
    dns_id: int
    flags: int
    qdcount: int
    qname: str
    qtype: int
    qclass: int
    rule: int
    tunnel: str | None = None
    client_subnet: str | None = None
    src_mac: bytes | None = None  # issue 13's spoofing fields (sensor/records.py)
    tunnel_outer: tuple[bytes, bytes] | None = None
    tcp_handshake: bool | None = None
    cname: tuple[int, tuple[tuple[str, int, str], ...]] | None = None  # a CNAME hit's chain (sensor/records.py)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def time_us(self) -> int:
        return self.ts_sec * 1_000_000 + self.ts_usec


def records_of(loop_records: Iterable[tuple[Any, ...]]) -> list[DnsRecord]:
    """The loop's raw records (tuples, sensor/records.py order) as DnsRecord: done once, where they leave the loop."""
    return [DnsRecord(*record) for record in loop_records]


# --- capture worker -> parent --------------------------------------------------------------------------------

class Report(msgspec.Struct, tag="report", array_like=True):
    """A worker's records since its last report, how far it has read, and now and then its counters."""

    worker: int
    watermark: int  # packet time (us) up to which this worker has read
    records: list[DnsRecord]
    rules: dict[int, Rule]  # the Rule of every hit in `records`: the parent keeps no rule set of its own
    counters: dict[str, int] | None = None
    pcap: tuple[int, int, int] | None = None  # received, kernel drops, interface drops
    last: bool = False  # the worker's final report: it has stopped
    anomalies: list[tuple[Any, ...]] = []  # AnomalyRecord fields (sensor/anomalies.py), rate-limited by the parent


class Flows(msgspec.Struct, tag="flows", array_like=True):
    worker: int
    data: bytes  # FLOW_DTYPE records (sensor/flows/record.py)


class Built(msgspec.Struct, tag="built", array_like=True):
    """A worker built (or failed to build) a reload's rules and waits for the swap time."""

    worker: int
    generation: int
    error: str | None = None
    counts: dict[str, Any] | None = None


class Swapped(msgspec.Struct, tag="swapped", array_like=True):
    """A worker decides with the new rules from now on."""

    worker: int
    generation: int
    counts: dict[str, Any] | None = None


WorkerMessage = Report | Flows | Built | Swapped


# --- parent -> capture workers -------------------------------------------------------------------------------

class Reload(msgspec.Struct, tag="reload", array_like=True):
    generation: int
    sources: list[tuple[str, str, bool]]  # rule_loader.read_sources(): the same bytes for every worker
    rules_format: str | None
    options: dict[str, Any] | None = None  # RulesReloader.build_options(): the cache and --allow-empty-rules


class Swap(msgspec.Struct, tag="swap", array_like=True):
    generation: int
    at_us: int  # the packet time from which the new rules decide


class Drop(msgspec.Struct, tag="drop", array_like=True):
    generation: int


ParentMessage = Reload | Swap | Drop


# --- loop -> query-log writer --------------------------------------------------------------------------------

class PackedEntries(msgspec.Struct, tag="packed", array_like=True):
    data: bytes  # the fast path's packed entries (sensor/querylog/packed.py), decoded by the writer


class Entries(msgspec.Struct, tag="entries", array_like=True):
    entries: list[QueryLogEntry]


QueryLogMessage = PackedEntries | Entries

encode = msgspec.msgpack.Encoder().encode
decode_worker_message = msgspec.msgpack.Decoder(WorkerMessage).decode
decode_parent_message = msgspec.msgpack.Decoder(ParentMessage).decode
decode_query_log_message = msgspec.msgpack.Decoder(QueryLogMessage).decode
