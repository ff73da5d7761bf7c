"""Trains the ordinary-label trigram table (data/ngrams.tsv) from text any machine with this project has:

    .venv/bin/python -m sensor.heuristics.train

Corpus, each word or label counted once (types, not tokens, so "the" does not outweigh "bank"):
- English words in the comments, docstrings and identifiers of Python's standard library (seen at least
  twice, tests excluded): ordinary English and the compounds programmers make;
- every label of the Public Suffix List bundled with `publicsuffixlist` (place names in many languages,
  brand and word TLDs, hosting providers);
- the training half of the harvested registered domains (tests/data/heuristics/harvest_train.txt).
Labels of the heuristics check's evaluation sets are removed first, so the check measures names the model
never saw. Deterministic: the same inputs give the same table.
"""

from __future__ import annotations

import re
import sysconfig
from collections import Counter
from pathlib import Path

import publicsuffixlist

from sensor.heuristics.ngram import TABLE, count_ngrams, symbols

REPO = Path(__file__).resolve().parents[2]
SETS = REPO / "tests" / "data" / "heuristics"
EVAL_FILES = ("popular.txt", "ordinary_peers.txt", "ordinary_netlab.txt", "harvest_eval.txt")
LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
MIN_STDLIB_COUNT = 2  # a word seen once in the standard library is as often a typo or a hex constant


def read_names(path: Path) -> list[str]:
    return [ln.strip().lower() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def stdlib_words() -> set[str]:
    seen: Counter[str] = Counter()
    for path in Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"):
        if "site-packages" in path.parts or "test" in path.parts or "tests" in path.parts:
            continue
        seen.update(re.findall(r"\b[a-z]{3,}\b", path.read_text(errors="replace")))
    return {word for word, n in seen.items() if n >= MIN_STDLIB_COUNT}


def psl_labels() -> set[str]:
    data = Path(publicsuffixlist.__file__).with_name("public_suffix_list.dat").read_text()
    labels = set()
    for line in data.splitlines():
        if line.startswith("//") or not line.strip():
            continue
        for label in line.strip().lstrip("!*.").split("."):
            if label.isascii() and not label.startswith("xn--"):
                labels.add(label.lower())
    return labels


def first_labels(names: list[str]) -> set[str]:
    """The registered domain's own label of each name (names in these files are registered domains or below)."""
    psl = publicsuffixlist.PublicSuffixList()
    out = set()
    for name in names:
        registered = psl.privatesuffix(name)
        if registered:
            out.add(registered.split(".")[0])
    return out


def corpus() -> tuple[list[str], dict[str, int]]:
    held_out: set[str] = set()
    for name in EVAL_FILES:
        held_out |= first_labels(read_names(SETS / name))
    sources = {
        "stdlib": stdlib_words(),
        "psl": psl_labels(),
        "harvest_train": first_labels(read_names(SETS / "harvest_train.txt")),
    }
    labels: set[str] = set()
    sizes = {}
    for source, words in sources.items():
        kept = {w for w in words if LABEL.match(w) and w not in held_out}
        sizes[source] = len(kept)
        labels |= kept
    return sorted(symbols(w) for w in labels), sizes


def main() -> None:
    labels, sizes = corpus()
    counts = count_ngrams(labels)
    lines = [f"# character n-gram counts of {len(labels)} ordinary labels ({sizes}); made by train.py\n"]
    lines += [f"{key}\t{n}\n" for key, n in sorted(counts.items())]
    TABLE.parent.mkdir(exist_ok=True)
    TABLE.write_text("".join(lines))
    print(f"{TABLE}: {len(counts)} n-grams from {len(labels)} labels {sizes}")


if __name__ == "__main__":
    main()
