"""The one exception the decoder layers raise: a named, counted reason for not decoding."""


class Anomaly(Exception):
    """Malformed or uninteresting input; `reason` is the counter it adds to (sensor.records.COUNTERS)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
