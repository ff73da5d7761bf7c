"""Rule formats analysts already have, each read with the meaning it has in its own tool (docs/rules.md):
hosts files, Adblock-style lists, Zeek Intel files and RPZ zones; `detect` tells them apart by content.
The native format is sensor/rules/native.py."""

from sensor.rules.formats.registry import LOADERS

__all__ = ["LOADERS"]
