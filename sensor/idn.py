"""Internationalised domain names: the one conversion of a name as people write it (`müller.de`) to the form a
query carries on the wire (`xn--mller-kva.de`), for rules of every format, `rules test`, `who-asked` and `hunt`.

UTS 46 non-transitional processing (the `idna` package, IDNA 2008): what current browsers and resolvers send, so
`faß.de` is `xn--fa-hia.de`, not IDNA 2003's `fass.de`.
"""

from __future__ import annotations


class NameError_(ValueError):
    """The text is not a domain name under UTS 46; the message says why."""


def to_ascii(name: str) -> str:
    """`name` with its Unicode labels as `xn--` A-labels, lowercased, the rest (and a trailing dot) kept.

    ASCII names come back lowercased and otherwise unchanged, without loading the idna package: rule files hold
    millions of them. Raises NameError_ when a Unicode name is not valid under UTS 46.
    """
    if name.isascii():
        return name.lower()
    import idna

    trailing = name.endswith(".") and len(name) > 1
    try:
        text = idna.encode(name[:-1] if trailing else name, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as err:
        raise NameError_(str(err) or "not a domain name") from None
    return text + "." if trailing else text
