"""Hosts files (`0.0.0.0 ads.example`), as blocklists ship them: every name listed is that exact name.

    # comment                         skipped
    0.0.0.0 ads.example               exact: ads.example (not www.ads.example: a hosts file maps names, not zones)
    127.0.0.1 a.example b.example     one address, several names: each exact
    ::1 tracker.example  # why        IPv6 addresses, comments after the names
    127.0.0.1 localhost               the machine's own names: skipped and counted, never rules

Any address counts, not only the sink addresses (0.0.0.0, 127.0.0.1, ::, ::1): a feed in hosts form may
point its names at a sinkhole server, and the sensor cares about the names, not where a resolver would send them.
"""

from __future__ import annotations

import io
import ipaddress

from sensor.errors import RuleError
from sensor.rules.formats.names import plain_name, to_name
from sensor.rules.formats.tally import FileTally, OnError, format_index
from sensor.rules.model import EXACT, RuleSet

FORMAT = "hosts"
SINK_ADDRESSES = frozenset(("0.0.0.0", "127.0.0.1", "::", "::1"))  # nearly every line: no address parsing
# The machine's own names, found at the top of distributed hosts files (StevenBlack's among them).
LOCAL_NAMES = frozenset((
    "localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost", "ip6-loopback",
    "ip6-localnet", "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters", "ip6-allhosts", "0.0.0.0",
))


def is_address(text: str) -> bool:
    """An IPv4 or IPv6 address, IPv6 with or without a zone (`fe80::1%lo0`)."""
    if text in SINK_ADDRESSES:
        return True
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def load_hosts(ruleset: RuleSet, text: str, filename: str, on_error: OnError | None = None) -> None:
    tally = FileTally(ruleset, FORMAT, on_error)
    file_index = ruleset.file_index(filename)
    fmt = format_index(ruleset, FORMAT)
    add = ruleset.add_fields
    for number, line in enumerate(io.StringIO(text), 1):
        if "#" in line:
            line = line.split("#", 1)[0]
        words = line.split()
        if len(words) == 2 and words[0] in SINK_ADDRESSES:  # the common line, `0.0.0.0 name`: the short way
            name = words[1].lower()
            if name[-1:] == ".":
                name = name[:-1]
            if plain_name(name) and name not in LOCAL_NAMES and not name.replace(".", "").isdigit():
                add(EXACT, name, False, words[1], file_index, number, 0, fmt)
                continue
        elif not words:
            continue
        try:
            address = words[0]
            if not is_address(address):
                raise RuleError(f"{filename}:{number}: {address!r} is not an address (a hosts line is "
                                "'ADDRESS NAME...')")
            if len(words) == 1:
                raise RuleError(f"{filename}:{number}: an address with no name after it")
            for word in words[1:]:
                lowered = word.lower().rstrip(".")
                if lowered in LOCAL_NAMES:
                    tally.skip("the machine's own name (localhost...)")
                    continue
                if (":" in lowered or lowered.replace(".", "").isdigit()) and is_address(lowered):
                    tally.skip("an address where a name should be")
                    continue
                name = to_name(word, filename, number, word)
                add(EXACT, name, False, word, file_index, number, 0, fmt)
        except RuleError as err:
            tally.error(err)
    tally.close()
