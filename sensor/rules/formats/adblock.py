"""Adblock-style lists (Adblock Plus, uBlock Origin, AdGuard): the domain filters, `||name^`.

    [Adblock Plus 2.0]          header: ignored
    ! Title: Example list       comment; `! Title:` becomes the rules' source, `! Homepage:` their reference
    ||ads.example^              suffix: ads.example and every name below it
    @@||cdn.ads.example^        allow, suffix
    ||ads.example^$important    accepted: $important, $all, $document, $doc (they narrow nothing a name does)

Skipped and counted, never errors (valid filters that are not "this name and below"): cosmetic filters (`##`,
`#@#`, `#?#`, `#$#`...), URL and path filters (`||example.com/ads/`, `|http://`, plain `banner`), regular
expression filters (`/ads[0-9]/`), wildcards in the name (`||ads*.example^`), a name without `^` after it
(`||ads.example` is a prefix: it also matches `ads.example.net`), and any other option (`$third-party`,
`$script`, `$domain=`, AdGuard's `$dnstype=`, `$client=`, `$badfilter`...): those rules block the name only in
some contexts, and the sensor sees every query. `$important` is read but has no effect: the sensor's precedence
(most specific rule, then allow) decides between a filter and its exception.

Errors (`file:line: why`): a `||...^` filter whose name is not a domain name (`||ads..example^`, `||^`).
"""

from __future__ import annotations

import io
from typing import Any

from sensor.errors import RuleError
from sensor.rules.formats.hosts import is_address
from sensor.rules.formats.names import plain_name, to_name
from sensor.rules.formats.tally import FileTally, OnError, format_index
from sensor.rules.model import NO_META, SUFFIX, RuleMeta, RuleSet

FORMAT = "adblock"
ACCEPTED_OPTIONS = frozenset(("important", "all", "document", "doc"))
COSMETIC_MARKERS = ("##", "#@#", "#?#", "#$#", "#%#", "#@$#", "#@%#", "#@?#", "$$", "$@$")
URL_CHARS = frozenset("/:?=&%|")  # in a filter's name part: a URL or path filter, not a domain
HEADER_META = {"title": "source", "homepage": "reference"}  # `! Key: value` comments that become metadata


def load_adblock(ruleset: RuleSet, text: str, filename: str, on_error: OnError | None = None) -> None:
    tally = FileTally(ruleset, FORMAT, on_error)
    file_index = ruleset.file_index(filename)
    fmt = format_index(ruleset, FORMAT)
    add = ruleset.add_fields
    meta, meta_index = NO_META, 0
    for number, line in enumerate(io.StringIO(text), 1):
        body = line.strip()
        if not body or (body[0] == "[" and body[-1] == "]"):
            continue
        if body[:2] == "||" and body[-1] == "^":  # the common line, `||name^`: the short way
            name = body[2:-1]
            lowered = name.lower()
            if plain_name(lowered):
                add(SUFFIX, lowered, False, lowered if name == lowered else body, file_index, number, meta_index, fmt)
                continue
        if body[0] == "!":
            found = _comment_meta(body)
            if found is not None:
                meta = meta.merged(found)
                meta_index = ruleset.meta_index(meta)
            elif body.startswith("!#"):
                tally.skip("preprocessor directive (!#if, !#include)")
            continue
        if body[0] == "#" and (len(body) == 1 or body[1] in " \t"):
            continue  # AdGuard Home's comment style
        try:
            why = _not_a_domain_filter(body)
            if why is not None:
                tally.skip(why)
                continue
            allow = body.startswith("@@")
            pattern, _, options = body[4 if allow else 2:].partition("$")
            why = _narrowing_option(options)
            if why is not None:
                tally.skip(why)
                continue
            name = pattern[:-2] if pattern.endswith("^|") else pattern[:-1]
            if not name:
                raise RuleError(f"{filename}:{number}: {body!r} has no name between '||' and '^'")
            name = to_name(name, filename, number, body)
            # The plain `||name^` keeps no text of its own (the format says it): a million such lines would
            # otherwise hold 80 MB of strings.
            add(SUFFIX, name, allow, name if body == f"||{name}^" else body, file_index, number, meta_index, fmt)
        except RuleError as err:
            tally.error(err)
    tally.close()


def _not_a_domain_filter(body: str) -> str | None:
    """Why a filter line is not `||name^` (with options), None when it is."""
    if any(marker in body for marker in COSMETIC_MARKERS):
        return "cosmetic or HTML filter (##, #@#, #?#, $$...)"
    rest = body[2:] if body.startswith("@@") else body
    if rest.startswith("/"):
        return "regular expression or path filter"
    if not rest.startswith("||"):
        words = rest.split()
        if len(words) > 1 and is_address(words[0]):
            return "hosts-style line (load the list as a hosts file)"
        return "URL filter, not '||name^'"
    pattern = rest[2:].partition("$")[0]
    if "*" in pattern:
        return "wildcard in the name"
    if pattern.endswith("^|"):
        pattern = pattern[:-1]
    if not pattern.endswith("^"):
        if any(c in URL_CHARS for c in pattern) or "^" in pattern:
            return "URL or path filter"
        return "no '^' after the name (a prefix: '||ads.example' also matches ads.example.net)"
    if "^" in pattern[:-1] or any(c in URL_CHARS for c in pattern):
        return "URL or path filter"
    return None


def _narrowing_option(options: str) -> str | None:
    for option in options.split(","):
        key = option.strip().lower().partition("=")[0]
        if key and key not in ACCEPTED_OPTIONS:
            return f"option ${key} (the filter applies in some contexts only)"
    return None


def _comment_meta(body: str) -> RuleMeta | None:
    key, sep, value = body[1:].partition(":")
    field = HEADER_META.get(key.strip().lower())
    if not sep or field is None or not value.strip():
        return None
    fields: dict[str, Any] = {field: value.strip()}
    return RuleMeta(**fields)
