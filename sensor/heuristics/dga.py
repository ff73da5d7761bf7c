"""Algorithmically generated names: how much likelier the registered domain's label is random letters than an
ordinary name, in bits, by the trigram model of ordinary labels (ngram.py).

score = sum over the label's transitions of -log2 P_ordinary  -  length * log2(26)
i.e. the log-likelihood ratio of "uniform random letters" against "ordinary name". A long random label piles up
evidence; a short one cannot, which is why labels under `dga_min_length` are not scored. Entropy, digit
share, consonant run and vowel share go into the evidence so an analyst sees why, but do not move the score:
the families measured in docs/heuristics.md are separated by the likelihood ratio alone, and every extra
weight would be one more number tuned on the same small labelled set.
"""

from __future__ import annotations

import math
import re
from collections import Counter, OrderedDict

from sensor.heuristics.config import HeuristicsConfig
from sensor.heuristics.hit import HeuristicHit
from sensor.heuristics.ngram import NgramModel, symbols

RANDOM_BITS_PER_LETTER = math.log2(26)  # the alternative hypothesis: each letter drawn uniformly
HOSTNAME_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
VOWELS = frozenset("aeiouy")
SCORE_CACHE = 65_536  # labels scored recently: a client asking one DGA name many times costs one score


def features(label: str, model: NgramModel) -> dict[str, float | int]:
    """Everything the detector computed about a lowercase hostname label (the evidence of a hit)."""
    sym = symbols(label)
    bits = model.bits_per_symbol(sym)
    llr = bits * (len(sym) + 1) - len(sym) * RANDOM_BITS_PER_LETTER
    counts = Counter(label)
    entropy = -sum(n / len(label) * math.log2(n / len(label)) for n in counts.values())
    letters = [ch for ch in label if ch.isalpha()]
    run = longest = 0
    for ch in label:
        run = run + 1 if ch.isalpha() and ch not in VOWELS else 0
        longest = max(longest, run)
    return {
        "length": len(label),
        "bits_per_char": round(bits, 3),
        "llr_bits": round(llr, 3),
        "entropy": round(entropy, 3),
        "digit_ratio": round(sum(ch.isdigit() for ch in label) / len(label), 3),
        "vowel_ratio": round(sum(ch in VOWELS for ch in letters) / len(letters), 3) if letters else 0.0,
        "max_consonant_run": longest,
    }


class DgaDetector:
    def __init__(self, config: HeuristicsConfig, model: NgramModel | None = None,
                 score_cache: int = SCORE_CACHE) -> None:
        self.threshold = config.dga_threshold
        self.min_length = config.dga_min_length
        self.model = model or NgramModel.load()
        self._scores: OrderedDict[str, dict[str, float | int] | None] = OrderedDict()
        self.score_cache = score_cache
        self.counters = Counter(
            {"dga_checked": 0, "dga_hits": 0, "dga_skipped_short": 0, "dga_skipped_idn": 0, "dga_skipped_not_ldh": 0,
             "dga_score_cache_evictions": 0}
        )

    def check(self, registered: str, label: str) -> HeuristicHit | None:
        """Scores one registered domain's label (lowercase); a hit when the score reaches the threshold."""
        if label.startswith("xn--"):
            self.counters["dga_skipped_idn"] += 1  # punycode looks random by construction
            return None
        if len(label) < self.min_length:
            self.counters["dga_skipped_short"] += 1
            return None
        if not HOSTNAME_LABEL.match(label):
            self.counters["dga_skipped_not_ldh"] += 1  # "_tcp", escaped bytes: not a name a DGA registers
            return None
        self.counters["dga_checked"] += 1
        feats = self._score(label)
        if feats["llr_bits"] < self.threshold:
            return None
        self.counters["dga_hits"] += 1
        evidence = {"label": label, "registered_domain": registered, "features": dict(feats)}
        return HeuristicHit("dga", float(feats["llr_bits"]), self.threshold, evidence)

    def _score(self, label: str) -> dict[str, float | int]:
        feats = self._scores.get(label)
        if feats is not None:
            self._scores.move_to_end(label)
            return feats
        feats = features(label, self.model)
        self._scores[label] = feats
        if len(self._scores) > self.score_cache:
            self._scores.popitem(last=False)
            self.counters["dga_score_cache_evictions"] += 1
        return feats
