"""truesource: name the true client behind a recursive resolver's suspicious DNS query."""

__version__ = "0.1.0"
