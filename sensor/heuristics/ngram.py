"""The character trigram model of ordinary domain labels the DGA detector scores against (trained by train.py)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

TABLE = Path(__file__).with_name("data") / "ngrams.tsv"
START, END = "^", "$"
# Digits are one symbol: which digit a name uses says nothing about how it was made, and 10 symbols would
# spread the few digit-bearing training names too thin.
SYMBOLS = "abcdefghijklmnopqrstuvwxyz0-" + END
# Interpolation weights for trigram, bigram, unigram and uniform estimates; the uniform share keeps an unseen
# transition finite (about 2^-12) so one odd pair never decides alone.
WEIGHTS = (0.6, 0.3, 0.09, 0.01)


def symbols(label: str) -> str:
    """The model's alphabet: lowercase letters, '0' for any digit, '-'; None-safe for what the caller checked."""
    return "".join("0" if ch.isdigit() else ch for ch in label.lower())


def count_ngrams(labels: Iterable[str]) -> Counter[str]:
    """Unigram, bigram and trigram counts (with start and end marks) over labels already in `symbols` form."""
    counts: Counter[str] = Counter()
    for label in labels:
        padded = START + START + label + END
        for i in range(2, len(padded)):
            counts[padded[i]] += 1
            counts[padded[i - 1 : i + 1]] += 1
            counts[padded[i - 2 : i + 1]] += 1
    return counts


class NgramModel:
    """Log-probabilities of every (two-symbol context, next symbol), computed once from the counts table."""

    def __init__(self, counts: Counter[str]) -> None:
        uni_total = sum(n for k, n in counts.items() if len(k) == 1) or 1
        context_total: Counter[str] = Counter()
        for key, n in counts.items():
            if len(key) > 1:
                context_total[key[:-1]] += n
        contexts = [a + b for a in START + SYMBOLS[:-1] for b in START + SYMBOLS[:-1] if not (a != START == b)]
        w3, w2, w1, w0 = WEIGHTS
        self._log2: dict[str, float] = {}
        for ctx in contexts:
            for sym in SYMBOLS:
                p3 = counts[ctx + sym] / context_total[ctx] if context_total[ctx] else 0.0
                p2 = counts[ctx[1] + sym] / context_total[ctx[1]] if context_total[ctx[1]] else 0.0
                p1 = counts[sym] / uni_total
                self._log2[ctx + sym] = math.log2(w3 * p3 + w2 * p2 + w1 * p1 + w0 / len(SYMBOLS))

    @classmethod
    def load(cls, path: Path = TABLE) -> NgramModel:
        counts: Counter[str] = Counter()
        with path.open() as fh:
            for line in fh:
                if line.startswith("#") or not line.strip():
                    continue
                key, n = line.rstrip("\n").split("\t")
                counts[key] = int(n)
        return cls(counts)

    def bits_per_symbol(self, label: str) -> float:
        """Mean surprise (-log2 p) per transition, end mark included; `label` in `symbols` form."""
        padded = START + START + label + END
        total = 0.0
        for i in range(2, len(padded)):
            total -= self._log2[padded[i - 2 : i + 1]]
        return total / (len(padded) - 2)
