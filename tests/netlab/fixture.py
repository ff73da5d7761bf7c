"""A session-wide `netlab` fixture, for `pytest_plugins = ["netlab.fixture"]` in the root conftest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .availability import lab_or_skip
from .lab import NetLab


@pytest.fixture(scope="session")
def netlab() -> Iterator[NetLab]:
    with lab_or_skip() as lab:
        yield lab
