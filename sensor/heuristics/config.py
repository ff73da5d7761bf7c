"""The `[heuristics]` settings: which detectors run, their thresholds, the tunnel window and its state limit.

Defaults are the ones docs/heuristics.md measures. Keys are flat (`dga_threshold`, `tunnel_window`, ...) so
each can map one-to-one to a command-line option.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sensor.errors import StartupError

DETECTORS = ("dga", "tunnel")
# Query types that carry data back in answers or are asked mostly by tunnels: TXT, NULL, ANY, CNAME, MX.
DEFAULT_DATA_QTYPES = (16, 10, 255, 5, 15)


class HeuristicsConfigError(StartupError):
    """A bad `[heuristics]` value; the message names the key and what would be valid."""


@dataclass(frozen=True, slots=True)
class HeuristicsConfig:
    detectors: tuple[str, ...] = DETECTORS  # which detectors run; () switches heuristics off
    exempt_domains: tuple[str, ...] = ()  # registered domains never scored (a DNSBL, an antivirus lookup zone)
    # DGA: evidence in bits that the label is random letters rather than an ordinary name (see dga.py)
    dga_threshold: float = 6.0
    dga_min_length: int = 6  # shorter labels are acronyms as often as not: "wsj", "nhk", "qq"
    # Tunnelling: per client and registered domain, in tumbling windows of packet time
    tunnel_window: float = 60.0  # seconds
    tunnel_min_distinct: int = 20  # distinct subdomains in a window: required, a tunnel cannot reuse names
    tunnel_long_label: int = 40  # a label this many bytes or more counts as long
    tunnel_long_share: float = 0.3  # share of the window's queries with a long label
    tunnel_data_share: float = 0.5  # share of the window's queries of a data type (tunnel_data_qtypes)
    tunnel_data_qtypes: tuple[int, ...] = DEFAULT_DATA_QTYPES
    tunnel_name_bytes: int = 2000  # bytes of subdomain labels (what could carry data) in a window
    tunnel_min_indicators: int = 3  # of the four above (distinct always among them)
    tunnel_max_keys: int = 10_000  # windows kept at once; least recently seen evicted (and counted) past it

    def __post_init__(self) -> None:
        for name in self.detectors:
            if name not in DETECTORS:
                raise HeuristicsConfigError(f"heuristics.detectors: unknown detector {name!r}; valid: {DETECTORS}")
        _positive("dga_threshold", self.dga_threshold, allow_zero=True)
        _positive("dga_min_length", self.dga_min_length)
        _positive("tunnel_window", self.tunnel_window)
        _positive("tunnel_min_distinct", self.tunnel_min_distinct)
        _positive("tunnel_long_label", self.tunnel_long_label)
        _positive("tunnel_name_bytes", self.tunnel_name_bytes)
        _positive("tunnel_max_keys", self.tunnel_max_keys)
        for key in ("tunnel_long_share", "tunnel_data_share"):
            value = getattr(self, key)
            if not 0 < value <= 1:
                raise HeuristicsConfigError(f"heuristics.{key}: must be a share in (0, 1], got {value!r}")
        if not 1 <= self.tunnel_min_indicators <= 4:
            raise HeuristicsConfigError(
                f"heuristics.tunnel_min_indicators: must be 1 to 4, got {self.tunnel_min_indicators!r}"
            )

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> HeuristicsConfig:
        """Builds the configuration from a TOML `[heuristics]` table (keys as in this class, all optional)."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in section.items():
            if key not in known:
                raise HeuristicsConfigError(f"heuristics.{key}: unknown key; valid keys: {', '.join(known)}")
            default = known[key].default
            if key == "tunnel_data_qtypes":
                values[key] = _qtypes(raw)
            elif isinstance(default, tuple):
                if not isinstance(raw, list | tuple) or not all(isinstance(v, str) for v in raw):
                    raise HeuristicsConfigError(f"heuristics.{key}: must be a list of strings, got {raw!r}")
                values[key] = tuple(v.lower().rstrip(".") for v in raw)
            elif isinstance(default, float):
                if isinstance(raw, bool) or not isinstance(raw, int | float):
                    raise HeuristicsConfigError(f"heuristics.{key}: must be a number, got {raw!r}")
                values[key] = float(raw)
            else:
                if isinstance(raw, bool) or not isinstance(raw, int):
                    raise HeuristicsConfigError(f"heuristics.{key}: must be an integer, got {raw!r}")
                values[key] = raw
        return cls(**values)


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise HeuristicsConfigError(f"heuristics.{key}: must be {bound}, got {value!r}")


def _qtypes(raw: Any) -> tuple[int, ...]:
    from dnslib import QTYPE

    if not isinstance(raw, list | tuple) or not raw:
        raise HeuristicsConfigError(f"heuristics.tunnel_data_qtypes: must be a list of query types, got {raw!r}")
    out = []
    for item in raw:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 0xFFFF:
            out.append(item)
        elif isinstance(item, str) and item.upper() in QTYPE.reverse:
            out.append(QTYPE.reverse[item.upper()])
        else:
            raise HeuristicsConfigError(
                f"heuristics.tunnel_data_qtypes: {item!r} is not a query type (a name like TXT or a number 0-65535)"
            )
    return tuple(out)
