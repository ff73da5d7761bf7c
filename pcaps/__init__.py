"""Sample captures: their generators (make_pcaps.py), rules, expectations and expected outputs (README.md)."""
