"""Fixtures of the stateful tests: a real Redis server for a shared example database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_server import running_redis_server


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real redis-server on a free port of 127.0.0.1, stopped after the test."""
    yield from running_redis_server()
