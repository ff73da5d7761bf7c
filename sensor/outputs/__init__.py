"""Where events go: JSON lines files and the ZeroMQ publisher."""
