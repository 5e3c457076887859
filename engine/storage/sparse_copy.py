"""Initial replication: copy a whole disk image to the target, holes left as holes.

What it owns: one streaming copy from a source image to a target image file. It
knows nothing of change logs or the lifecycle (it never imports ``model``): the caller
starts change tracking *before* the copy, lets the guest keep writing while it runs,
and then ships the log from tracking start, which brings the target to the source's
state whatever the copy saw of those concurrent writes (each record rewrites the bytes
it covers, in order).

How, and why:

- **Extents, not bytes.** ``SEEK_DATA``/``SEEK_HOLE`` list the source's allocated
  extents; holes are never read nor written, so an empty 1 TiB disk copies in a
  moment and the target stays as sparse as the source. Filesystems without the feature
  report the whole file as one extent: correct, only slower.
- **In-kernel copying.** ``copy_file_range`` moves each chunk without passing through
  Python (and may share blocks on filesystems that can); when the kernel or filesystem
  refuses it (``EXDEV``, ``ENOSYS``, ``EOPNOTSUPP``, ``EINVAL``) the copy falls back to
  ``pread``/``pwrite`` for the rest of the run.
- **Bounded memory.** At most one chunk (:data:`CHUNK_BYTES_DEFAULT`, 8 MiB) is held in
  memory, and only on the fallback path, in one buffer reused for every chunk.
- **Atomic result.** The copy is written to ``<target>.partial`` beside the target,
  sized to the source with ``ftruncate``, fsynced, then renamed over the target and the
  directory fsynced: a crash or an error leaves the old target (or none), never a
  half-copied image under the target's name.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.errors import InvalidConfiguration
from engine.storage import files
from engine.storage.disk import require_int, storage_error
from engine.storage.files import fsync_directory

CHUNK_BYTES_DEFAULT: Final = 8 * 1024 * 1024
"""Large enough that per-call overhead vanishes, small enough for frequent progress."""

CHUNK_BYTES_MIN: Final = 4096
"""Below a page, system-call overhead dominates and nothing is saved."""

CHUNK_BYTES_MAX: Final = 256 * 1024 * 1024
"""The fallback path holds one chunk in memory; this bounds it."""

PARTIAL_SUFFIX: Final = ".partial"
"""Name of the in-progress copy beside the target; renamed over it when complete."""

_COPY_FILE_RANGE_REFUSED: Final = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF}
)
"""Errors by which a kernel or filesystem says "not here": fall back to pread/pwrite."""

Progress = Callable[[int, int], None]
"""Called as ``progress(bytes_done, bytes_total)`` after each chunk and hole."""


@dataclass(frozen=True)
class CopyStatistics:
    """What a copy did: bytes moved, bytes skipped as holes, and how long it took."""

    bytes_copied: int
    bytes_skipped_as_holes: int
    seconds: float
    used_copy_file_range: bool


def copy_disk_image(
    source: Path,
    target: Path,
    *,
    chunk_bytes: int = CHUNK_BYTES_DEFAULT,
    progress: Progress | None = None,
    use_copy_file_range: bool = True,
) -> CopyStatistics:
    """Copy the image ``source`` to ``target`` (replaced atomically), keeping holes.

    ``use_copy_file_range=False`` forces the ``pread``/``pwrite`` path (for
    measurements and tests; the default falls back to it by itself when needed).

    Raises :class:`InvalidConfiguration` for a missing source, a target that is the
    source, or a chunk size out of range; :class:`StorageFull` when the target's
    storage fills up (the partial copy is removed).
    """
    source = Path(source)
    target = Path(target)
    chunk_bytes = require_int(chunk_bytes, argument="chunk_bytes")
    if not CHUNK_BYTES_MIN <= chunk_bytes <= CHUNK_BYTES_MAX:
        msg = (
            f"chunk_bytes={chunk_bytes!r} must be between {CHUNK_BYTES_MIN} and "
            f"{CHUNK_BYTES_MAX}"
        )
        raise InvalidConfiguration(msg)
    if not source.is_file():
        msg = f"source={str(source)!r} is not an existing disk image file"
        raise InvalidConfiguration(msg)
    if not target.parent.is_dir():
        msg = f"target={str(target)!r}: its directory does not exist; create it first"
        raise InvalidConfiguration(msg)
    if target.exists() and target.resolve() == source.resolve():
        msg = f"target={str(target)!r} is the source itself; choose another path"
        raise InvalidConfiguration(msg)
    started = time.perf_counter()
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    source_descriptor = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        fs = files.current()
        target_descriptor = fs.open(partial, flags, 0o600)
        try:
            copier = _Copier(
                source_descriptor, target_descriptor, chunk_bytes, progress
            )
            copier.use_copy_file_range &= use_copy_file_range
            copier.run()
            fs.fsync(target_descriptor)
        except BaseException:
            os.close(target_descriptor)
            fs.unlink(partial, missing_ok=True)
            raise
        os.close(target_descriptor)
    finally:
        os.close(source_descriptor)
    fs.rename(partial, target)
    fsync_directory(target.parent)
    return CopyStatistics(
        bytes_copied=copier.bytes_copied,
        bytes_skipped_as_holes=copier.bytes_skipped,
        seconds=time.perf_counter() - started,
        used_copy_file_range=copier.use_copy_file_range,
    )


def data_extents(descriptor: int, size_bytes: int) -> Iterator[tuple[int, int]]:
    """Yield ``(start, end)`` of each allocated extent below ``size_bytes``, in order.

    Without ``SEEK_DATA`` support the whole file is one extent.
    """
    position = 0
    while position < size_bytes:
        try:
            start = os.lseek(descriptor, position, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # no data past position: a trailing hole
                return
            if error.errno in {errno.EINVAL, errno.EOPNOTSUPP}:
                yield position, size_bytes
                return
            raise
        if start >= size_bytes:
            return
        end = min(os.lseek(descriptor, start, os.SEEK_HOLE), size_bytes)
        assert start < end
        yield start, end
        position = end


class _Copier:
    """One run of the copy loop, with its counters."""

    def __init__(
        self,
        source_descriptor: int,
        target_descriptor: int,
        chunk_bytes: int,
        progress: Progress | None,
    ) -> None:
        self.source_descriptor = source_descriptor
        self.target_descriptor = target_descriptor
        self.chunk_bytes = chunk_bytes
        self.progress = progress
        self.files = files.current()
        self.size_bytes = os.fstat(source_descriptor).st_size
        self.bytes_copied = 0
        self.bytes_skipped = 0
        self.use_copy_file_range = hasattr(os, "copy_file_range")
        self.buffer: memoryview | None = None

    def run(self) -> None:
        try:
            self.files.ftruncate(self.target_descriptor, self.size_bytes)
        except OSError as error:
            raise storage_error(error, "sizing the target image") from error
        position = 0
        for start, end in data_extents(self.source_descriptor, self.size_bytes):
            self._skip(start - position)
            self._copy_extent(start, end)
            position = end
        self._skip(self.size_bytes - position)
        assert self.bytes_copied + self.bytes_skipped == self.size_bytes

    def _skip(self, hole_bytes: int) -> None:
        if hole_bytes > 0:
            self.bytes_skipped += hole_bytes
            self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.bytes_copied + self.bytes_skipped, self.size_bytes)

    def _copy_extent(self, start: int, end: int) -> None:
        offset = start
        while offset < end:
            count = min(self.chunk_bytes, end - offset)
            try:
                moved = self._copy_chunk(offset, count)
            except OSError as error:
                action = f"copying bytes [{offset}, {offset + count}) of the image"
                raise storage_error(error, action) from error
            offset += moved
            self.bytes_copied += moved
            self._report()

    def _copy_chunk(self, offset: int, count: int) -> int:
        if self.use_copy_file_range:
            try:
                moved = self.files.copy_file_range(
                    self.source_descriptor,
                    self.target_descriptor,
                    count,
                    offset,
                    offset,
                )
            except OSError as error:
                if error.errno not in _COPY_FILE_RANGE_REFUSED:
                    raise
                self.use_copy_file_range = False
            else:
                return self._checked(moved, offset)
        if self.buffer is None:  # one buffer for the whole run: no churn
            self.buffer = memoryview(bytearray(self.chunk_bytes))
        read = os.preadv(self.source_descriptor, [self.buffer[:count]], offset)
        data = self.buffer[:read]
        written = 0
        while written < read:
            written += self.files.pwrite(
                self.target_descriptor, data[written:], offset + written
            )
        return self._checked(read, offset)

    def _checked(self, moved: int, offset: int) -> int:
        if moved <= 0:
            msg = (
                f"source image ended at byte {offset}, before its size "
                f"{self.size_bytes}: something truncated it during the copy"
            )
            raise InvalidConfiguration(msg)
        return moved
