"""Suspicious-domain rules: load files into a RuleSet; match names against it."""

from sensor.rules.loader import Rule, RuleSet, load_rules
from sensor.rules.matcher import match_labels

__all__ = ["Rule", "RuleSet", "load_rules", "match_labels"]
