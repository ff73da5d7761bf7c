"""dig's answer, parsed: what a test asserts on (status, id, answers) and the true client address and port."""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADER = re.compile(r";; ->>HEADER<<- opcode: (\w+), status: (\w+), id: (\d+)")
_FLAGS = re.compile(r";; flags:([^;]*);")


@dataclass(frozen=True)
class Record:
    name: str  # absolute, lowercase, with the trailing dot
    ttl: int
    rtype: str
    rdata: str


@dataclass(frozen=True)
class DigResult:
    name: str
    qtype: str
    src: str  # the client address the query left from
    sport: int  # and its port: what a sensor must report as the client
    server: str
    tcp: bool
    returncode: int
    output: str
    status: str = ""  # NOERROR, NXDOMAIN, ...; "" when no answer came (time-out)
    id: int = -1
    flags: frozenset[str] = frozenset()
    answers: tuple[Record, ...] = ()

    @property
    def addresses(self) -> list[str]:
        """The A and AAAA data of the answer (after any CNAME chain)."""
        return [r.rdata for r in self.answers if r.rtype in ("A", "AAAA")]


def parse(output: str, **query) -> DigResult:
    """Parse `dig +noall +comments +answer` output; the query's own parameters come as keywords."""
    fields: dict = {}
    if m := _HEADER.search(output):
        fields.update(status=m.group(2), id=int(m.group(3)))
    if m := _FLAGS.search(output):
        fields["flags"] = frozenset(m.group(1).split())
    answers = []
    in_answer = False
    for line in output.splitlines():
        if line.startswith(";; ANSWER SECTION:"):
            in_answer = True
        elif in_answer and line.strip() and not line.startswith(";"):
            name, ttl, _cls, rtype, rdata = line.split(None, 4)
            answers.append(Record(name.lower(), int(ttl), rtype, rdata.strip()))
        elif in_answer:
            in_answer = False
    return DigResult(output=output, answers=tuple(answers), **query, **fields)
