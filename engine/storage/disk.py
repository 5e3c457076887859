"""A virtual disk: one raw image file, read and written at byte offsets.

What it owns: the image file's descriptor, its size and the block size the rest of the
engine uses to compare and resynchronise disks. It knows nothing of change tracking
(``engine/log/tracked_disk.py`` puts a change log in front of the write path),
replication or the lifecycle; it never imports ``model``.

Format and why: a disk is a *raw* image, byte ``n`` of the guest disk at byte ``n`` of
the file, with no header. Raw images need no parser (nothing to corrupt, nothing to
version), map one-to-one onto the records of a change log, and stay sparse where the
filesystem allows: :meth:`VirtualDisk.create` sizes the file with ``ftruncate`` and
allocates nothing, so an empty 100 GiB disk costs a few KiB. The block size is not
stored in the file: the caller passes it in, as the replication settings own it.

Invariants:

- ``size_bytes`` is a positive multiple of ``block_bytes``, and ``block_bytes`` a power
  of two in ``[BLOCK_BYTES_MIN, BLOCK_BYTES_MAX]``;
- every read and write lies within ``[0, size_bytes)``: a request that does not is
  refused with :class:`DiskRangeError` before any I/O, so the image never grows;
- a full filesystem (``ENOSPC``, a quota, a file-size limit) surfaces as
  :class:`StorageFull`; :meth:`VirtualDisk.write_some` says how much landed, so a caller
  that records writes can record exactly that.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from engine.errors import DiskRangeError, InvalidConfiguration, StorageFull
from engine.storage import files
from engine.storage.files import fsync_directory

BLOCK_BYTES_MIN: Final = 512
"""A sector: no guest can address less, so a smaller block would only waste digests."""

BLOCK_BYTES_MAX: Final = 1024 * 1024
"""Above 1 MiB a resynchronisation ships mostly unchanged bytes around each change."""

BLOCK_BYTES_DEFAULT: Final = 4096
"""The page and filesystem block size almost every guest writes in."""

STORAGE_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Errors meaning "no room": the filesystem, a quota or a file-size limit ran out."""

Buffer = bytes | bytearray | memoryview


def storage_error(error: OSError, action: str) -> StorageFull | OSError:
    """Turn an ``OSError`` from ``action`` into :class:`StorageFull` when it is one.

    Other errors come back unchanged, to be re-raised as they are.
    """
    if error.errno in STORAGE_FULL_ERRNOS:
        name = errno.errorcode.get(error.errno or 0, str(error.errno))
        msg = f"{action}: no room left on the storage ({name}: {error.strerror})"
        return StorageFull(msg)
    return error


def validate_block_bytes(block_bytes: object) -> int:
    """Return ``block_bytes`` if it is a power of two in the allowed range."""
    if (
        not isinstance(block_bytes, int)
        or isinstance(block_bytes, bool)
        or not BLOCK_BYTES_MIN <= block_bytes <= BLOCK_BYTES_MAX
        or block_bytes & (block_bytes - 1)
    ):
        msg = (
            f"block_bytes={block_bytes!r} must be a power of two between "
            f"{BLOCK_BYTES_MIN} and {BLOCK_BYTES_MAX} (1 MiB)"
        )
        raise InvalidConfiguration(msg)
    return block_bytes


def require_int(value: object, *, argument: str) -> int:
    """Return ``value`` if it is an ``int`` (and not a ``bool``)."""
    if not isinstance(value, int) or isinstance(value, bool):
        msg = f"{argument}={value!r} must be an int (got {type(value).__name__})"
        raise InvalidConfiguration(msg)
    return value


def require_buffer(value: object, *, argument: str) -> Buffer:
    """Return ``value`` if it is bytes-like (bytes, bytearray or memoryview)."""
    if not isinstance(value, bytes | bytearray | memoryview):
        msg = (
            f"{argument} must be bytes, bytearray or memoryview "
            f"(got {type(value).__name__})"
        )
        raise InvalidConfiguration(msg)
    return value


class VirtualDisk:
    """A raw disk image file with bounds-checked positional reads and writes.

    Build one with :meth:`create` or :meth:`open`; close it (or use ``with``).
    Positional I/O (``pread``/``pwrite``) keeps no file position, so concurrent readers
    and writers need no lock here.
    """

    def __init__(
        self, path: Path, descriptor: int, size_bytes: int, block_bytes: int
    ) -> None:
        assert size_bytes > 0
        assert size_bytes % block_bytes == 0
        self._path = path
        self._files = files.current()
        self._descriptor = descriptor
        self._size_bytes = size_bytes
        self._block_bytes = block_bytes

    @classmethod
    def create(
        cls,
        path: Path,
        size_bytes: int,
        *,
        block_bytes: int = BLOCK_BYTES_DEFAULT,
    ) -> Self:
        """Create a new, sparse, zero-filled image; refuse to overwrite a file."""
        path = Path(path)
        validate_block_bytes(block_bytes)
        require_int(size_bytes, argument="size_bytes")
        if size_bytes <= 0 or size_bytes % block_bytes:
            msg = (
                f"size_bytes={size_bytes!r} must be a positive multiple of "
                f"block_bytes={block_bytes}"
            )
            raise InvalidConfiguration(msg)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            descriptor = files.current().open(path, flags, 0o600)
        except FileExistsError as error:
            msg = f"path={str(path)!r} already exists; choose a new path for the disk"
            raise InvalidConfiguration(msg) from error
        try:
            fs = files.current()
            fs.ftruncate(descriptor, size_bytes)
            fs.fsync(descriptor)
            fsync_directory(path.parent)
        except OSError as error:
            os.close(descriptor)
            files.current().unlink(path, missing_ok=True)
            raise storage_error(error, f"creating disk {str(path)!r}") from error
        return cls(path, descriptor, size_bytes, block_bytes)

    @classmethod
    def open(cls, path: Path, *, block_bytes: int = BLOCK_BYTES_DEFAULT) -> Self:
        """Open an existing image; its size is the file's size."""
        path = Path(path)
        validate_block_bytes(block_bytes)
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as error:
            msg = f"path={str(path)!r} does not exist; create the disk first"
            raise InvalidConfiguration(msg) from error
        status = os.fstat(descriptor)
        size_bytes = status.st_size
        if (
            not stat.S_ISREG(status.st_mode)
            or size_bytes <= 0
            or size_bytes % block_bytes
        ):
            os.close(descriptor)
            msg = (
                f"path={str(path)!r} must be a regular file whose size is a positive "
                f"multiple of block_bytes={block_bytes} (size is {size_bytes})"
            )
            raise InvalidConfiguration(msg)
        return cls(path, descriptor, size_bytes, block_bytes)

    @property
    def path(self) -> Path:
        """Where the image lives."""
        return self._path

    @property
    def size_bytes(self) -> int:
        """Size of the disk as the guest sees it."""
        return self._size_bytes

    @property
    def block_bytes(self) -> int:
        """Unit of comparison and resynchronisation."""
        return self._block_bytes

    @property
    def block_count(self) -> int:
        """Number of blocks (``size_bytes // block_bytes``)."""
        return self._size_bytes // self._block_bytes

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._descriptor < 0

    def check_range(self, offset: object, length: object) -> None:
        """Refuse (typed) any range not wholly inside the disk, or empty."""
        offset = require_int(offset, argument="offset")
        length = require_int(length, argument="length")
        if offset < 0 or length <= 0 or offset + length > self._size_bytes:
            msg = (
                f"offset={offset!r}, length={length!r} must satisfy 0 <= offset, "
                f"0 < length and offset + length <= size_bytes={self._size_bytes} "
                f"for disk {str(self._path)!r}"
            )
            raise DiskRangeError(msg)

    def write(self, offset: int, data: Buffer) -> None:
        """Write all of ``data`` at ``offset``, or raise (StorageFull when no room)."""
        view = memoryview(require_buffer(data, argument="data")).cast("B")
        written = self.write_some(offset, view)
        if written < len(view):
            msg = (
                f"writing {len(view)} bytes at offset {offset} of disk "
                f"{str(self._path)!r}: the storage accepted only {written}"
            )
            raise StorageFull(msg)

    def write_some(self, offset: int, data: Buffer) -> int:
        """Write ``data`` at ``offset``; return how many bytes landed.

        Less than ``len(data)`` only when the storage filled up part-way; when nothing
        at all could be written the error is raised (StorageFull for no room).
        """
        if (  # the hot path of tracked writes: bytes, in range, one system call
            type(data) is bytes
            and type(offset) is int
            and offset >= 0
            and 0 < len(data) <= self._size_bytes - offset
            and self._descriptor >= 0
        ):
            return self._write_checked(offset, data)
        view = memoryview(require_buffer(data, argument="data")).cast("B")
        self.check_range(offset, len(view))
        self._open_descriptor()
        return self._write_checked(offset, view)

    def _write_checked(self, offset: int, data: Buffer) -> int:
        """Write ``data`` at ``offset``, a range already checked; see write_some."""
        descriptor = self._descriptor
        try:  # EINTR is retried by Python itself (PEP 475)
            written = self._files.pwrite(descriptor, data, offset)
        except OSError as error:
            action = f"writing at offset {offset} of disk {str(self._path)!r}"
            raise storage_error(error, action) from error
        if written == len(data):
            return written
        view = memoryview(data)
        while 0 < written < len(view):  # short write: the storage is filling up
            try:
                more = self._files.pwrite(descriptor, view[written:], offset + written)
            except OSError:
                return written  # the caller learns how much landed
            if more == 0:
                return written
            written += more
        return written

    def read(self, offset: int, length: int) -> bytes:
        """Return ``length`` bytes from ``offset`` (zeros where never written)."""
        self.check_range(offset, length)
        descriptor = self._open_descriptor()
        first = os.pread(descriptor, length, offset)
        if len(first) == length:
            return first
        parts = [first]
        done = len(first)
        while done < length:
            part = os.pread(descriptor, length - done, offset + done)
            if not part:
                msg = (
                    f"disk {str(self._path)!r} is shorter than its size_bytes="
                    f"{self._size_bytes}: something else truncated the image"
                )
                raise DiskRangeError(msg)
            parts.append(part)
            done += len(part)
        return b"".join(parts)

    def flush(self) -> None:
        """Make every write so far durable (``fsync``)."""
        self._files.fsync(self._open_descriptor())

    def sync_data(self) -> None:
        """Make written data durable (``fdatasync``: skips timestamps)."""
        self._files.fdatasync(self._open_descriptor())

    def close(self) -> None:
        """Release the file; idempotent. Call :meth:`flush` first for durability."""
        if self._descriptor >= 0:
            descriptor, self._descriptor = self._descriptor, -1
            os.close(descriptor)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VirtualDisk(path={str(self._path)!r}, size_bytes={self._size_bytes}, "
            f"block_bytes={self._block_bytes})"
        )

    def _open_descriptor(self) -> int:
        if self._descriptor < 0:
            msg = f"disk {str(self._path)!r} is closed; open it again to use it"
            raise InvalidConfiguration(msg)
        return self._descriptor
