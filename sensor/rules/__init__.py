"""Suspicious-domain rules: formats (formats/, native.py), the rule model, loading (loader.py), the compiled
rule-set file and its cache (compiled.py, cache.py), matching (matcher.py, patterns.py), reload (reload.py)."""
