"""A file-operation layer whose chosen folders are full: a site's replica storage.

The model's ``fill_storage`` fault is a site whose replica storage has no room left,
for as long as it lasts (until ``free_storage``). :class:`FullStorageFileSystem` plays
it for real through the engine's file-operation seam (``engine.storage.files``): every
operation that needs space (:data:`~engine.storage.simulation.SPACE_OPERATIONS`) on a
path under a folder marked full fails with ``ENOSPC`` before it happens, and
:meth:`FullStorageFileSystem.free_bytes` answers 0 there, as ``statvfs`` does on a
full filesystem. Everything else is the operating system's. Install it with
``files.use(FullStorageFileSystem())`` around the engine's whole life.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from engine.storage.durable_image import descriptor_path
from engine.storage.files import Buffer, FileSystem


class FullStorageFileSystem(FileSystem):
    """The operating system's file operations, with folders that can be full."""

    def __init__(self) -> None:
        super().__init__()
        self._full: set[Path] = set()

    def fill(self, folder: Path) -> None:
        """Everything under ``folder`` is out of space from now on."""
        self._full.add(Path(os.path.abspath(folder)))

    def free(self, folder: Path) -> None:
        """Room is made under ``folder`` again (no error if it was not full)."""
        self._full.discard(Path(os.path.abspath(folder)))

    def is_full(self, path: Path) -> bool:
        """Whether ``path`` lies under a folder marked full."""
        found = Path(os.path.abspath(path))
        return any(found == full or full in found.parents for full in self._full)

    def _refuse(self, path: Path | str) -> None:
        if self.is_full(Path(path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def _refuse_descriptor(self, descriptor: int) -> None:
        self._refuse(descriptor_path(descriptor))

    def free_bytes(self, path: Path) -> int:
        """0 under a full folder, else what ``statvfs`` says."""
        return 0 if self.is_full(path) else super().free_bytes(path)

    def open(self, path: Path, flags: int, mode: int = 0o600) -> int:
        """Creating a file needs an inode and an entry: refused when full."""
        if flags & os.O_CREAT and not os.path.exists(path):
            self._refuse(path)
        return super().open(path, flags, mode)

    def pwrite(self, descriptor: int, data: Buffer, offset: int) -> int:
        """Refused on a full folder's file."""
        self._refuse_descriptor(descriptor)
        return super().pwrite(descriptor, data, offset)

    def pwritev(self, descriptor: int, buffers: Sequence[Buffer], offset: int) -> int:
        """Refused on a full folder's file."""
        self._refuse_descriptor(descriptor)
        return super().pwritev(descriptor, buffers, offset)

    def fallocate(self, descriptor: int, offset: int, length: int) -> None:
        """Refused on a full folder's file."""
        self._refuse_descriptor(descriptor)
        super().fallocate(descriptor, offset, length)

    def copy_file_range(
        self,
        source: int,
        target: int,
        count: int,
        offset_source: int,
        offset_target: int,
    ) -> int:
        """Refused when the target file is in a full folder."""
        self._refuse_descriptor(target)
        return super().copy_file_range(
            source, target, count, offset_source, offset_target
        )

    def make_directory(
        self, path: Path, *, parents: bool = False, exist_ok: bool = False
    ) -> None:
        """A new folder needs an entry: refused when full (and new)."""
        if not os.path.isdir(path):
            self._refuse(path)
        super().make_directory(path, parents=parents, exist_ok=exist_ok)
