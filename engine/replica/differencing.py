"""A differencing disk: reads fall through to a base, writes land in an overlay.

What it owns: one **overlay** file (raw and sparse, the size of the disk, byte ``n``
of the disk at byte ``n`` of the file, only the written blocks allocated) and one
**map** file listing the blocks the overlay holds. A block in the map reads from the
overlay; any other block reads from the base, a ``read(offset, length)`` callable
(for a drill, a recovery point seen through ``engine/replica/point_view.py``). Writes
never reach the base. A write that covers only part of a block the overlay does not
hold yet first copies that block from the base, so a block in the map is whole.

**Durability.** :meth:`DifferencingDisk.flush` fsyncs the overlay, then replaces the
map (temporary file, fsync, rename, fsync of the directory: one atomic switch), so the
durable map only ever names blocks whose overlay bytes are durable. A reopen after a
close, a kill or a power cut keeps every write a flush acknowledged. A write after the
last flush may or may not be there, as with any disk: to a block the map did not
hold, it is gone (the block reads from the base again); to one it held, the bytes may
be there. Every step goes through the file-operation layer (``files.current()``), so
the crash harness can kill or cut power at any of them.

The map's format is ``engine/replica/overlay_map.py``'s (runs of blocks, CRC32C). In
memory the present blocks are a set of block numbers, so memory grows with what the
test VM wrote, not with the disk's size.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from engine.errors import DamagedState, DiskRangeError, InvalidConfiguration
from engine.replica.overlay_map import encode_map, load_map
from engine.storage import durable_file, files
from engine.storage.disk import (
    require_buffer,
    require_int,
    storage_error,
    validate_block_bytes,
)
from engine.storage.files import Buffer, fsync_directory

BaseRead = Callable[[int, int], bytes]
"""``read(offset, length) -> bytes``: exactly ``length`` bytes of the base disk."""


@dataclass(frozen=True, slots=True)
class DifferencingDiskStatistics:
    """Counters of one differencing disk (blocks now, the rest since it was opened)."""

    blocks_present: int
    blocks_copied_from_base: int  # partial writes that filled a block from the base
    bytes_written: int
    flushes: int


class DifferencingDisk:
    """A disk whose writes go to a sparse overlay and whose other reads to a base."""

    def __init__(
        self,
        overlay: Path,
        map_path: Path,
        descriptor: int,
        *,
        size_bytes: int,
        block_bytes: int,
        base: BaseRead,
        present: set[int],
    ) -> None:
        """Use :meth:`create` or :meth:`open`; this only binds an opened overlay."""
        self.overlay_path = overlay
        self.map_path = map_path
        self._descriptor: int | None = descriptor
        self._files = files.current()
        self._size_bytes = size_bytes
        self._block_bytes = block_bytes
        self._base = base
        self._present = present
        self._map_changed = False
        self._copied = 0
        self._written = 0
        self._flushes = 0

    @classmethod
    def create(
        cls,
        overlay: Path,
        map_path: Path,
        *,
        size_bytes: int,
        block_bytes: int,
        base: BaseRead,
    ) -> Self:
        """Create an empty overlay and map (durable); every block reads the base.

        Existing files are never overwritten (InvalidConfiguration).
        """
        size_bytes = require_int(size_bytes, argument="size_bytes")
        block_bytes = validate_block_bytes(block_bytes)
        if size_bytes <= 0:
            msg = f"size_bytes={size_bytes} must be > 0"
            raise InvalidConfiguration(msg)
        taken = [str(p) for p in (overlay, map_path) if p.exists() or p.is_symlink()]
        if taken:
            msg = f"{taken} already exist; a differencing disk is created only where "
            msg += "none is: open it, or delete it to start over"
            raise InvalidConfiguration(msg)
        fs = files.current()
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            descriptor = fs.open(overlay, flags)
        except OSError as error:
            raise storage_error(error, f"creating {str(overlay)!r}") from error
        try:
            fs.ftruncate(descriptor, size_bytes)
            fs.fsync(descriptor)
            fsync_directory(overlay.parent)
            durable_file.write_file_atomically(
                map_path, encode_map(block_bytes, size_bytes, set())
            )
        except OSError as error:
            os.close(descriptor)
            raise storage_error(error, f"creating {str(overlay)!r}") from error
        return cls(
            overlay,
            map_path,
            descriptor,
            size_bytes=size_bytes,
            block_bytes=block_bytes,
            base=base,
            present=set(),
        )

    @classmethod
    def open(
        cls, overlay: Path, map_path: Path, *, size_bytes: int, base: BaseRead
    ) -> Self:
        """Open an overlay and its map; the block size is the map's.

        DamagedState when either is missing or damaged, or they do not describe a
        disk of ``size_bytes``.
        """
        block_bytes, present = load_map(map_path, size_bytes)
        try:
            found = overlay.lstat()
        except OSError as error:
            msg = f"overlay {str(overlay)!r} is missing or unreadable ({error}); its "
            msg += f"map {str(map_path)!r} is there: the differencing disk is damaged"
            raise DamagedState(msg) from error
        if not stat.S_ISREG(found.st_mode) or found.st_size != size_bytes:
            msg = f"overlay {str(overlay)!r} is not a regular file of {size_bytes} "
            msg += f"bytes (found {found.st_size}): the differencing disk is damaged"
            raise DamagedState(msg)
        descriptor = files.current().open(overlay, os.O_RDWR | os.O_CLOEXEC)
        return cls(
            overlay,
            map_path,
            descriptor,
            size_bytes=size_bytes,
            block_bytes=block_bytes,
            base=base,
            present=present,
        )

    @property
    def size_bytes(self) -> int:
        """The disk's size in bytes."""
        return self._size_bytes

    @property
    def block_bytes(self) -> int:
        """The unit the map counts in (a partial write copies the rest of it)."""
        return self._block_bytes

    def read(self, offset: int, length: int) -> bytes:
        """Return ``length`` bytes from ``offset``: overlay blocks, else the base."""
        descriptor = self._open_descriptor()
        self._check_range(offset, length)
        block = self._block_bytes
        data = bytearray()
        position, end = offset, offset + length
        while position < end:
            present = position // block in self._present
            stop = min(end, (position // block + 1) * block)
            while stop < end and (stop // block in self._present) == present:
                stop = min(end, stop + block)
            if present:
                chunk = os.pread(descriptor, stop - position, position)
                if len(chunk) != stop - position:
                    msg = f"overlay {str(self.overlay_path)!r} ended before byte "
                    msg += f"{position + len(chunk)} of {self._size_bytes}: the "
                    msg += "differencing disk is damaged"
                    raise DamagedState(msg)
            else:
                chunk = self._read_base(position, stop - position)
            data += chunk
            position = stop
        return bytes(data)

    def write(self, offset: int, data: Buffer) -> None:
        """Write ``data`` at ``offset`` into the overlay (durable at :meth:`flush`)."""
        descriptor = self._open_descriptor()
        view = memoryview(require_buffer(data, argument="data")).cast("B")
        self._check_range(offset, len(view))
        if not view:
            return
        end = offset + len(view)
        block = self._block_bytes
        blocks = range(offset // block, (end - 1) // block + 1)
        try:
            for number in dict.fromkeys((blocks[0], blocks[-1])):  # first, last
                start, stop = (
                    number * block,
                    min((number + 1) * block, self._size_bytes),
                )
                if number not in self._present and (offset > start or end < stop):
                    self._write_all(
                        descriptor, self._read_base(start, stop - start), start
                    )
                    self._copied += 1
            self._write_all(descriptor, view, offset)
        except OSError as error:
            raise storage_error(error, f"writing {str(self.overlay_path)!r}") from error
        self._written += len(view)
        if not self._present.issuperset(blocks):
            self._present.update(blocks)
            self._map_changed = True

    def flush(self) -> None:
        """Make every write so far durable: fsync the overlay, then replace the map."""
        descriptor = self._open_descriptor()
        try:
            self._files.fsync(descriptor)
            if self._map_changed:
                encoded = encode_map(self._block_bytes, self._size_bytes, self._present)
                durable_file.write_file_atomically(self.map_path, encoded)
                self._map_changed = False
        except OSError as error:
            raise storage_error(
                error, f"flushing {str(self.overlay_path)!r}"
            ) from error
        self._flushes += 1

    def close(self, *, keep: bool = True) -> None:
        """Flush, then release the overlay; closing again does nothing.
        ``keep=False``: the overlay is about to be deleted, so it is not flushed
        (a full disk must not stop the cleanup that frees it)."""
        if self._descriptor is None:
            return
        try:
            if keep:
                self.flush()
        finally:
            os.close(self._descriptor)
            self._descriptor = None

    def statistics(self) -> DifferencingDiskStatistics:
        """Return the disk's counters."""
        return DifferencingDiskStatistics(
            blocks_present=len(self._present),
            blocks_copied_from_base=self._copied,
            bytes_written=self._written,
            flushes=self._flushes,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------------------

    def _open_descriptor(self) -> int:
        if self._descriptor is None:
            msg = f"the differencing disk {str(self.overlay_path)!r} is closed; "
            msg += "open it again (DifferencingDisk.open)"
            raise InvalidConfiguration(msg)
        return self._descriptor

    def _check_range(self, offset: object, length: object) -> None:
        offset = require_int(offset, argument="offset")
        length = require_int(length, argument="length")
        if offset < 0 or length < 0 or offset + length > self._size_bytes:
            msg = f"offset={offset}, length={length} must satisfy 0 <= offset and "
            msg += f"offset + length <= {self._size_bytes} (the disk's size)"
            raise DiskRangeError(msg)

    def _read_base(self, offset: int, length: int) -> bytes:
        data = self._base(offset, length)
        if len(data) != length:
            msg = f"the base of {str(self.overlay_path)!r} returned {len(data)} bytes "
            msg += f"for read({offset}, {length}); it must return exactly {length}"
            raise InvalidConfiguration(msg)
        return data

    def _write_all(self, descriptor: int, data: Buffer, offset: int) -> None:
        view = memoryview(data).cast("B")
        while view:
            written = self._files.pwrite(descriptor, view, offset)
            assert written > 0, (offset, len(view))
            view, offset = view[written:], offset + written
