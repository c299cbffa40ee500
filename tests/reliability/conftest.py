"""Fixtures the reliability tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.support import ServeProcess


@pytest.fixture
def servers() -> Iterator[list[ServeProcess]]:
    """Every server the test starts is gone when it ends, whatever happened."""
    started: list[ServeProcess] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.kill()
