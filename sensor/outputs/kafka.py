"""Kafka output: every event to a topic of its kind, keyed by the client's address, through librdkafka.

A durable way out that mainstream shippers and SIEMs read (Vector, Filebeat, Fluent Bit, Logstash, Splunk
Connect): `--kafka BROKERS`. Topics are the event topics with a prefix (`truesource.dns.hit`, `truesource.flow`,
...). The key is `source.ip` (the client), so one client's events stay in one partition, in order; events without
a client (statistics, reloads) are keyed by the sensor's name.

Capture never waits on Kafka: `produce()` only appends to librdkafka's local queue, bounded by
`queue.buffering.max.kbytes` (DEFAULT_QUEUE_MB, far below librdkafka's 1 GiB default: the sensor's memory is
for the capture), and an event that finds the queue full is dropped and counted (`kafka_dropped`). Events the
brokers did not take within `message.timeout.ms` (a broker outage longer than that) fail and are counted
(`kafka_failed`); delivered ones are `kafka_sent`. At exit the queue gets CLOSE_WAIT seconds to drain; what is
left is counted as failed. Settings for a real cluster: docs/deployment.md#kafka.
"""

from __future__ import annotations

import argparse
import logging
import os
from functools import lru_cache

from sensor.errors import StartupError

DEFAULT_TOPIC_PREFIX = "truesource."
DEFAULT_QUEUE_MB = 64  # local queue: ~100,000 hit events, minutes of a busy sensor's hits while a broker is away
DEFAULT_MESSAGE_TIMEOUT_MS = 300_000  # librdkafka's: how long an event may wait for a broker before it fails
CLOSE_WAIT = 10.0  # seconds the queue gets to drain at exit
SECURITY_PROTOCOLS = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")


@lru_cache(maxsize=1)
def _key_decoder():
    """Decodes only what the key needs; msgspec skips the rest of the event without building it. Made on first
    use: the command line builds its parser without msgspec."""
    import msgspec

    source = msgspec.defstruct("Source", [("ip", str, "")])
    named = msgspec.defstruct("Named", [("name", str, "")])
    keyed = msgspec.defstruct("Keyed", [("source", source | None, None), ("observer", named | None, None)])
    return msgspec.json.Decoder(keyed)


def event_key(line: str) -> bytes:
    """The client address of an event (its observer's name when it has no client)."""
    keyed = _key_decoder().decode(line)
    if keyed.source is not None and keyed.source.ip:
        return keyed.source.ip.encode()
    return keyed.observer.name.encode() if keyed.observer is not None else b""


class KafkaSink:
    """An output (write/close) that produces every event to Kafka without ever blocking the caller."""

    def __init__(self, brokers: str, topic_prefix: str = DEFAULT_TOPIC_PREFIX, queue_mb: int = DEFAULT_QUEUE_MB,
                 settings: dict[str, str] | None = None) -> None:
        from confluent_kafka import KafkaException, Producer

        self.brokers = brokers
        self.topic_prefix = topic_prefix
        self.sent = 0
        self.failed = 0
        self.queue_drops = 0
        self.last_error: str | None = None
        config = {
            "bootstrap.servers": brokers,
            "client.id": "truesource",
            "queue.buffering.max.kbytes": queue_mb * 1024,
            "queue.buffering.max.messages": 1_000_000,  # the byte bound above is the one that matters
            "message.timeout.ms": DEFAULT_MESSAGE_TIMEOUT_MS,
            "linger.ms": 20,  # batches: a hit burst goes out in few requests
            "compression.type": "lz4",
            "enable.idempotence": True,  # retries neither duplicate nor reorder one client's events
            "error_cb": self._on_error,
            "logger": logging.getLogger("truesource.kafka"),  # librdkafka's own lines through the sensor's log
            "log.connection.close": False,
            **(settings or {}),
        }
        try:
            self._producer = Producer(config)
        except KafkaException as err:
            raise StartupError(f"--kafka: {err.args[0].str() if err.args else err}") from None
        self._topics: dict[str, str] = {}
        self._key = event_key

    def _on_error(self, err) -> None:
        self.last_error = err.str()  # brokers down, authentication: librdkafka retries by itself

    def _delivered(self, err, _msg) -> None:
        if err is None:
            self.sent += 1
        else:
            self.failed += 1
            self.last_error = err.str()

    def write(self, topic: str, line: str) -> None:
        name = self._topics.get(topic)
        if name is None:
            name = self._topics[topic] = self.topic_prefix + topic
        try:
            self._producer.produce(name, line.encode(), self._key(line), on_delivery=self._delivered)
        except BufferError:  # the local queue is full (brokers away for long): drop, count, never wait
            self.queue_drops += 1
        self._producer.poll(0)  # delivery reports of earlier events; never waits

    def flush(self, timeout: float = 0.0) -> int:
        """Serve delivery reports, waiting up to `timeout` s for the queue to drain; events still queued."""
        return self._producer.flush(timeout)

    @property
    def queued(self) -> int:
        return len(self._producer)

    def close(self) -> None:
        left = self._producer.flush(CLOSE_WAIT)
        self.failed += left  # never delivered: said, not lost silently
        self._left = left

    def state_counters(self) -> dict[str, int]:
        self._producer.poll(0)
        return {"kafka_sent": self.sent, "kafka_failed": self.failed, "kafka_dropped": self.queue_drops,
                "kafka_queued": len(self._producer)}

    def summary_line(self) -> str:
        line = (f"kafka {self.brokers}: {self.sent:,} sent, {self.failed:,} failed, {self.queue_drops:,} dropped "
                "(queue full)")
        if (self.failed or self.queue_drops) and self.last_error:
            line += f"; last error: {self.last_error}"
        return line


def add_kafka_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kafka output (docs/deployment.md#kafka)")
    group.add_argument("--kafka", metavar="BROKERS", help="also produce every event to Kafka (host:port,...)")
    group.add_argument("--kafka-topic-prefix", default=DEFAULT_TOPIC_PREFIX, metavar="PREFIX",
                       help=f"topic = PREFIX + event topic (default {DEFAULT_TOPIC_PREFIX!r}: truesource.dns.hit)")
    group.add_argument("--kafka-queue-mb", type=int, default=DEFAULT_QUEUE_MB, metavar="MB",
                       help=f"local queue while brokers are slow or away; full: events dropped and counted "
                            f"(default {DEFAULT_QUEUE_MB})")
    group.add_argument("--kafka-security-protocol", choices=SECURITY_PROTOCOLS, default="plaintext",
                       help="plaintext (default), ssl, sasl_plaintext, sasl_ssl")
    group.add_argument("--kafka-ca", metavar="PATH", help="TLS: CA certificates to verify the brokers")
    group.add_argument("--kafka-cert", metavar="PATH", help="TLS: this client's certificate (mutual TLS)")
    group.add_argument("--kafka-key", metavar="PATH", help="TLS: this client's private key")
    group.add_argument("--kafka-sasl-mechanism", choices=SASL_MECHANISMS, help="SASL mechanism")
    group.add_argument("--kafka-sasl-username", metavar="USER", help="SASL user name")
    group.add_argument("--kafka-sasl-password-file", metavar="PATH",
                       help="SASL password, read from this file (never on the command line)")
    group.add_argument("--kafka-option", action="append", default=[], metavar="KEY=VALUE",
                       help="any librdkafka producer setting (repeatable), e.g. message.timeout.ms=60000")


def kafka_settings(args: argparse.Namespace) -> dict[str, str]:
    """The librdkafka settings the options ask for; a bad option is one clear error naming it."""
    settings: dict[str, str] = {"security.protocol": args.kafka_security_protocol}
    for option, key in (("kafka_ca", "ssl.ca.location"), ("kafka_cert", "ssl.certificate.location"),
                        ("kafka_key", "ssl.key.location")):
        path = getattr(args, option)
        if path is not None:
            if not os.path.isfile(path):
                raise StartupError(f"--{option.replace('_', '-')}: {path}: no such file")
            settings[key] = path
    if args.kafka_sasl_mechanism:
        if not args.kafka_security_protocol.startswith("sasl"):
            raise StartupError("--kafka-sasl-mechanism needs --kafka-security-protocol sasl_ssl or sasl_plaintext")
        settings["sasl.mechanism"] = args.kafka_sasl_mechanism
    if args.kafka_sasl_username:
        settings["sasl.username"] = args.kafka_sasl_username
    if args.kafka_sasl_password_file:
        try:
            with open(args.kafka_sasl_password_file, encoding="utf-8") as handle:
                settings["sasl.password"] = handle.read().strip()
        except OSError as err:
            raise StartupError(f"--kafka-sasl-password-file: {args.kafka_sasl_password_file}: "
                               f"{err.strerror}") from None
    for item in args.kafka_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise StartupError(f"--kafka-option: {item!r} is not KEY=VALUE")
        settings[key.strip()] = value.strip()
    if args.kafka_queue_mb < 1:
        raise StartupError("--kafka-queue-mb: must be at least 1")
    return settings


def kafka_output(args: argparse.Namespace) -> KafkaSink | None:
    """The Kafka output when --kafka is given."""
    if not getattr(args, "kafka", None):
        return None
    return KafkaSink(args.kafka, args.kafka_topic_prefix, args.kafka_queue_mb, kafka_settings(args))
