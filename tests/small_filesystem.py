"""A real small filesystem (a tmpfs of a few MiB) that a test can fill up."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
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

    def free_some(self, count: int) -> None:
        """Give ``count`` bytes back (the ballast shrinks by that much)."""
        size = self._ballast.stat().st_size
        with self._ballast.open("r+b") as ballast:
            ballast.truncate(max(0, size - count))

    def free(self) -> None:
        """Delete the ballast: the space is back."""
        self._ballast.unlink(missing_ok=True)


@contextmanager
def mounted(mount_point: Path, size: str = "8m") -> Iterator[SmallFilesystem]:
    """A real tmpfs of ``size`` at ``mount_point`` (skipped where mounting is not
    allowed), unmounted after."""
    mount_point.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield SmallFilesystem(mount_point)
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
