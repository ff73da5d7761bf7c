"""Where events go: JSON lines files and the ZeroMQ publisher."""

# Loopback: the event stream is not for the network unless the operator says so. Here, not in publisher.py, so
# that the command line can show it without importing ZeroMQ.
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"
