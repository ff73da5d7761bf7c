"""One module per fuzz target; each is listed in fuzz/registry.py."""
