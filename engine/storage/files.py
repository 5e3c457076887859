"""The file-operation layer: every step the engine takes on its own files, in one place.

The engine's storage code (disks, change logs, durable files, the replica store, the
outbox and the inbox) reaches the filesystem through the :class:`FileSystem` in force,
never through ``os`` directly, for the operations that change files: create, write,
truncate, allocate, fsync, rename, unlink, make and remove directories. Reads go to
``os`` as they are: a read changes nothing a crash could lose.

Why one layer: a process kill keeps the page cache, so killing a real process cannot
show whether the engine made a step durable in the right order. A test installs another
implementation with :func:`use` (an explicit seam, not a patch of internals):

- ``engine.storage.simulation.PowerLossFileSystem`` remembers what each fsync made
  durable (file contents and directory entries) and, at a chosen operation, loses
  everything else, as a power cut does;
- a counting implementation kills the process before or after the N-th operation.

The default, :class:`FileSystem`, binds the ``os`` functions themselves as attributes
(no extra Python frame on the hot path of tracked writes). Objects that write often
(a disk, a change log) take :func:`current` once when they open.

SQLite files (the control state) are written by SQLite, not through this layer: SQLite
makes a commit durable when it returns (``synchronous=FULL``), and the simulation keeps
them as they are at the cut.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from engine.errors import InvalidConfiguration

BOOT_ID_PATH: Final = Path("/proc/sys/kernel/random/boot_id")
"""Changes at every boot: tells a process kill (page cache kept) from a power loss."""

Buffer = bytes | bytearray | memoryview


class FileSystem:
    """The operating system's file operations (the default implementation).

    Subclasses override methods to observe or fault them; every method has the
    meaning of the ``os`` call it is named after.
    """

    def __init__(self) -> None:
        # The hot path (tracked writes) calls these attributes: bound straight to the
        # os functions in this class; a subclass that overrides the method wins.
        cls = type(self)
        if cls.pwrite is FileSystem.pwrite:
            self.pwrite = os.pwrite  # type: ignore[method-assign,assignment]
        if cls.pwritev is FileSystem.pwritev:
            self.pwritev = os.pwritev  # type: ignore[method-assign,assignment]
        if cls.fdatasync is FileSystem.fdatasync:
            self.fdatasync = os.fdatasync  # type: ignore[method-assign,assignment]

    def open(self, path: Path, flags: int, mode: int = 0o600) -> int:
        """``os.open``: the descriptor of ``path`` (created with O_CREAT)."""
        return os.open(path, flags, mode)

    def pwrite(self, descriptor: int, data: Buffer, offset: int) -> int:
        """``os.pwrite``: bytes written at ``offset``."""
        return os.pwrite(descriptor, data, offset)

    def pwritev(self, descriptor: int, buffers: Sequence[Buffer], offset: int) -> int:
        """``os.pwritev``: bytes written at ``offset`` from ``buffers`` in order."""
        return os.pwritev(descriptor, buffers, offset)

    def ftruncate(self, descriptor: int, length: int) -> None:
        """``os.ftruncate``: set the file's size."""
        os.ftruncate(descriptor, length)

    def fallocate(self, descriptor: int, offset: int, length: int) -> None:
        """``os.posix_fallocate``: reserve space without changing content."""
        os.posix_fallocate(descriptor, offset, length)

    def copy_file_range(
        self,
        source: int,
        target: int,
        count: int,
        offset_source: int,
        offset_target: int,
    ) -> int:
        """``os.copy_file_range``: bytes copied in the kernel."""
        return os.copy_file_range(source, target, count, offset_source, offset_target)

    def fsync(self, descriptor: int) -> None:
        """``os.fsync``: the file's data and metadata are durable."""
        os.fsync(descriptor)

    def fdatasync(self, descriptor: int) -> None:
        """``os.fdatasync``: the file's data (and its size) are durable."""
        os.fdatasync(descriptor)

    def fsync_directory(self, path: Path) -> None:
        """Make the creates, renames and unlinks in directory ``path`` durable."""
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def rename(self, source: Path, target: Path) -> None:
        """``os.replace``: ``source`` takes the name ``target`` (replacing it)."""
        os.replace(source, target)

    def unlink(self, path: Path, *, missing_ok: bool = False) -> None:
        """``os.unlink``; with ``missing_ok`` a missing file is not an error."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def make_directory(
        self, path: Path, *, parents: bool = False, exist_ok: bool = False
    ) -> None:
        """``Path.mkdir``."""
        Path(path).mkdir(parents=parents, exist_ok=exist_ok)

    def remove_tree(self, path: Path) -> None:
        """Delete ``path`` and everything under it (nothing if it is missing)."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path)

    def free_bytes(self, path: Path) -> int:
        """Bytes an unprivileged writer can still use on the filesystem of ``path``."""
        found = os.statvfs(path)
        return found.f_bavail * found.f_frsize

    def boot_id(self) -> str:
        """An identifier of this boot of the machine ('' when the OS has none)."""
        try:
            return BOOT_ID_PATH.read_text(encoding="ascii").strip()
        except OSError:
            return ""


_current: FileSystem = FileSystem()


def current() -> FileSystem:
    """The file-operation layer in force (the operating system's by default)."""
    return _current


@contextmanager
def use(file_system: FileSystem) -> Iterator[FileSystem]:
    """Run the body with ``file_system`` in force (tests: simulation, kill points).

    Objects opened inside keep it after the body ends: open and close the engine
    inside the block.
    """
    global _current  # noqa: PLW0603 - the one switch of this seam
    if not isinstance(file_system, FileSystem):  # caller input, typed or not
        msg = f"file_system={file_system!r} must be an engine.storage.files.FileSystem"  # type: ignore[unreachable]
        raise InvalidConfiguration(msg)
    previous, _current = _current, file_system
    try:
        yield file_system
    finally:
        _current = previous


# -- durable steps built on the layer --------------------------------------------------


def fsync_directory(path: Path) -> None:
    """Make a create, rename or unlink in directory ``path`` durable."""
    _current.fsync_directory(Path(path))


def make_directory_durably(path: Path) -> bool:
    """Create ``path`` (and missing parents), each durable in its parent.

    Returns whether anything was created.
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    fs = _current
    for directory in reversed(missing):
        fs.make_directory(directory, exist_ok=True)
        fs.fsync_directory(directory.parent)
    return bool(missing)


def remove_tree_durably(path: Path) -> bool:
    """Delete ``path`` and everything under it, durably in its parent.

    Returns whether anything was there.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return False
    fs = _current
    if path.is_dir() and not path.is_symlink():
        fs.remove_tree(path)
    else:
        fs.unlink(path, missing_ok=True)
    fs.fsync_directory(path.parent)
    return True
