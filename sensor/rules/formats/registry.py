"""The format loaders by name, for sensor.rules.loader.FORMAT_LOADERS and `--rules-format`."""

from __future__ import annotations

from collections.abc import Callable

from sensor.rules.formats.adblock import load_adblock
from sensor.rules.formats.hosts import load_hosts
from sensor.rules.formats.rpz import load_rpz
from sensor.rules.formats.zeek_intel import load_zeek_intel
from sensor.rules.model import RuleSet

# Each takes (ruleset, text, filename) and an optional on_error: without it the first bad line raises
# RuleError `file:line: why`; with it every bad line is handed over and the load goes on (`rules check`).
Loader = Callable[..., None]

LOADERS: dict[str, Loader] = {
    "hosts": load_hosts,
    "adblock": load_adblock,
    "zeek_intel": load_zeek_intel,
    "rpz": load_rpz,
}


def loaders() -> dict[str, Callable[[RuleSet, str, str], None]]:
    """Every format's loader, the native one included (loader.py's FORMAT_LOADERS is built the same way; this
    module never imports loader.py, which imports it)."""
    from sensor.rules.native import load_native

    return {"native": load_native, **LOADERS}
