"""Fixtures for the engine's unit tests: a real "storage full" without mocks."""

from __future__ import annotations

import contextlib
import resource
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest


@contextlib.contextmanager
def _file_size_limit(limit_bytes: int) -> Iterator[None]:
    """Make writes past ``limit_bytes`` of any file fail with EFBIG (as a full disk)."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


@pytest.fixture
def file_size_limit() -> Callable[[int], AbstractContextManager[None]]:
    """A context manager factory: inside it, the process cannot grow files past N bytes.

    The kernel then refuses writes exactly as a full filesystem does (a short write,
    then an error), which the engine maps to StorageFull: a real OS failure, no mock.
    """
    return _file_size_limit
