"""Coverage-guided fuzzing of everything that reads hostile input (docs/fuzzing.md)."""
