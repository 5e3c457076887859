"""Durable file operations: what "written" means for the engine's own files.

A file the engine relies on after a crash (a replica store's catalogue, an intent
record, an undo image, a shipped log in an inbox) is never updated in place. It is
written under a temporary name in the same directory, fsynced, renamed over its final
name, and the directory is fsynced so the rename itself survives a power cut. A reader
therefore sees the old file or the new one, never a mix: the rename is the commit point.

Temporary files end in :data:`TEMPORARY_SUFFIX`; whoever owns a directory deletes
leftovers with that suffix when it reopens (they are the debris of a crash before a
rename).

Copies find the data with ``SEEK_DATA``/``SEEK_HOLE`` and leave holes as holes, so a
sparse disk image stays sparse and a mostly empty 100 GiB disk costs what it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from engine.storage import files
from engine.storage.disk import STORAGE_FULL_ERRNOS
from engine.storage.files import fsync_directory
from engine.storage.sparse_copy import copy_disk_image

TEMPORARY_SUFFIX: Final = ".tmp"


def is_storage_full(error: OSError) -> bool:
    """Return whether ``error`` means no room: filesystem, quota or file-size limit."""
    return error.errno in STORAGE_FULL_ERRNOS


def temporary_path(path: Path) -> Path:
    """Return the temporary name ``path`` is written under before its rename."""
    return path.with_name(path.name + TEMPORARY_SUFFIX)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: the old content or the new, never a mix."""
    temporary = temporary_path(path)
    fs = files.current()
    try:
        with temporary.open("wb") as target:
            target.write(data)
            target.flush()
            fs.fsync(target.fileno())
    except OSError:
        fs.unlink(temporary, missing_ok=True)
        raise
    fs.rename(temporary, path)
    fsync_directory(path.parent)


def copy_file_atomically(source: Path, target: Path) -> int:
    """Copy ``source`` to ``target`` (sparse, durable, atomic); return its size.

    Holes are found with ``SEEK_DATA``/``SEEK_HOLE`` (``initial_copy.copy_disk_image``),
    so a mostly empty disk costs what it holds, not its size.
    """
    copy_disk_image(source, target)
    return target.stat().st_size


def move_or_copy(source: Path, target: Path) -> int:
    """Move ``source`` onto ``target`` (a rename on one filesystem, else a sparse
    copy then removal of ``source``); durable either way; return the size."""
    if source.stat().st_dev == target.parent.stat().st_dev:
        files.current().rename(source, target)
        fsync_directory(target.parent)
        fsync_directory(source.parent)
        return target.stat().st_size
    size = copy_file_atomically(source, target)
    files.current().unlink(source)
    fsync_directory(source.parent)
    return size


def remove_durably(paths: list[Path]) -> None:
    """Unlink every path that exists, then fsync each directory touched."""
    directories = set()
    for path in paths:
        if path.exists():
            files.current().unlink(path)
            directories.add(path.parent)
    for directory in sorted(directories):
        fsync_directory(directory)
