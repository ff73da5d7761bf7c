"""A Kafka cluster for tests: librdkafka's mock cluster (`test.mock.num.brokers`), kept alive by this process.

librdkafka runs the mock brokers inside the client that asked for them and logs their bootstrap address
("Mock cluster enabled: ... replaced with 127.0.0.1:PORT"); this process prints that log line on standard output
and waits until it is killed, which is how a test takes the cluster down (tests/test_kafka.py).
"""

from __future__ import annotations

import logging
import sys
import time

from confluent_kafka import Producer


class _Lines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print(record.getMessage(), flush=True)


def main() -> None:
    logger = logging.getLogger("kafka-mock")
    logger.setLevel(logging.INFO)
    logger.addHandler(_Lines())
    brokers = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    client = Producer({"test.mock.num.brokers": brokers, "bootstrap.servers": "unused:9092", "logger": logger})
    while True:  # the cluster lives as long as this client
        client.poll(1.0)
        time.sleep(0.5)


if __name__ == "__main__":
    main()
