"""Fixtures for engine tests: a real small filesystem that can be filled up."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class SmallFilesystem:
    """A tmpfs of a few MiB mounted for one test: ``fill()`` makes it really full."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ballast = root / "ballast"

    def fill(self) -> None:
        """Write a ballast file until the kernel answers ENOSPC."""
        chunk = b"\xaa" * 65536
        with self._ballast.open("ab", buffering=0) as ballast:
            with contextlib.suppress(OSError):
                while True:
                    ballast.write(chunk)
            for size in (4096, 512, 1):
                with contextlib.suppress(OSError):
                    while True:
                        ballast.write(chunk[:size])

    def free(self) -> None:
        """Delete the ballast: the space is back."""
        self._ballast.unlink(missing_ok=True)


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[SmallFilesystem]:
    """A real 8 MiB tmpfs under ``tmp_path`` (skipped where mounting is not allowed)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield SmallFilesystem(mount_point)
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
