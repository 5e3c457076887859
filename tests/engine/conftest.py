"""Fixtures for engine tests: a real small filesystem that can be filled up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from small_filesystem import SmallFilesystem, mounted


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[SmallFilesystem]:
    """A real 8 MiB tmpfs under ``tmp_path`` (skipped where mounting is not allowed)."""
    with mounted(tmp_path / "small") as found:
        yield found
