"""Undo images: the replica bytes one cycle overwrote, so the replica can step back.

Before a replica store applies a cycle it reads, from the replica, the current bytes of
every extent the cycle will write (all disks) and writes them here, durably, before the
first replica byte changes. The image then serves twice: to roll an interrupted or
failed apply back to the previous recovery point, and, once the cycle is committed, to
*materialize* that previous point on a copy of the replica (test failover, failover to
an older point). Every byte in an image is a pre-cycle byte, so extents may be applied
in any order and more than once: the result is the same.

Layout, little-endian (a small cousin of the change-log format, with the same CRC32C)::

    image   := header extent* trailer
    header  := magic[8] format_version:u16 disk_count:u16 cycle_id:u64
               (name_bytes:u16 name[name_bytes])*disk_count header_crc:u32
    extent  := kind:u8 disk_index:u16 length:u32 offset:u64 extent_crc:u32 data
    trailer := end_magic[8] extent_count:u64 trailer_crc:u32

``kind`` is DATA (``data`` is ``length`` bytes) or ZEROS (no ``data``: the region read
as zeros, which is what a sparse replica mostly holds before its first cycles; storing
it as a length keeps the undo image of a fresh replica tiny). ``extent_crc`` covers the
23 bytes before it and the data; ``trailer_crc`` covers the running CRC of every extent
CRC and the count, so a truncated image (no trailer) or a dropped extent is refused.

Why not reuse the change-log format: a log is append-only with a torn tail cut on
reopen, an undo image is written once and must be complete or nothing, and it carries
several disks. Reading is strict: any mismatch raises :class:`CorruptRecord` naming the
offset in the file; :func:`verify_undo_image` is a full pass done before applying one.
:func:`locate_undo_extents` is that same full pass keeping, instead of the bytes, where
each extent's bytes lie in the file: an index a reader of an old point
(``engine/replica/point_view.py``) builds once and then reads from with ``pread``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, NoReturn

import google_crc32c

from engine.errors import CorruptRecord
from engine.storage import files

MAGIC: Final = b"HVDRUNDO"
END_MAGIC: Final = b"UNDO-END"
FORMAT_VERSION: Final = 1
HEADER_FIXED: Final = struct.Struct("<8sHHQ")
NAME_LENGTH: Final = struct.Struct("<H")
CRC: Final = struct.Struct("<I")
EXTENT_COVERED: Final = struct.Struct("<BHIQ")
TRAILER_COVERED: Final = struct.Struct("<8sQ")
KIND_DATA: Final = 0
KIND_ZEROS: Final = 1

EXTENT_BYTES_MAX: Final = 1024 * 1024
"""Largest extent in an image: callers split longer regions, so reading one extent
never holds more than this in memory, and a damaged length field cannot ask for more."""

DISK_COUNT_MAX: Final = 256
"""A Hyper-V VM has at most 256 SCSI disks (4 controllers x 64): bounds a bad header."""


@dataclass(frozen=True, slots=True)
class UndoExtent:
    """Pre-cycle bytes of one region of one disk (``data`` is None for zeros)."""

    disk: str
    offset: int
    length: int
    data: bytes | None

    def payload(self) -> bytes:
        """Return the region's bytes (materializing zeros)."""
        return bytes(self.length) if self.data is None else self.data


@dataclass(frozen=True, slots=True)
class UndoExtentLocation:
    """Where one extent's pre-cycle bytes are: ``data_position`` in the image file
    (``length`` bytes there), or None for a ZEROS extent (no bytes stored)."""

    disk: str
    offset: int
    length: int
    kind: int  # KIND_DATA or KIND_ZEROS
    data_position: int | None


def write_undo_image(
    target: BinaryIO,
    *,
    cycle_id: int,
    disks: Sequence[str],
    extents: Iterable[tuple[str, int, bytes]],
) -> int:
    """Write a complete image to ``target``; return the extent count (caller fsyncs)."""
    assert 0 < len(disks) <= DISK_COUNT_MAX, disks
    index = {disk: position for position, disk in enumerate(disks)}
    header = HEADER_FIXED.pack(MAGIC, FORMAT_VERSION, len(disks), cycle_id)
    for disk in disks:
        encoded = disk.encode()
        header += NAME_LENGTH.pack(len(encoded)) + encoded
    target.write(header + CRC.pack(google_crc32c.value(header)))
    running = 0
    count = 0
    for disk, offset, data in extents:
        assert 0 < len(data) <= EXTENT_BYTES_MAX, len(data)
        zeros = data.count(0) == len(data)
        kind = KIND_ZEROS if zeros else KIND_DATA
        covered = EXTENT_COVERED.pack(kind, index[disk], len(data), offset)
        payload = b"" if zeros else data
        crc = google_crc32c.extend(google_crc32c.value(covered), payload)
        target.write(covered + CRC.pack(crc) + payload)
        running = google_crc32c.extend(running, CRC.pack(crc))
        count += 1
    covered = TRAILER_COVERED.pack(END_MAGIC, count)
    trailer_crc = google_crc32c.extend(running, covered)
    target.write(covered + CRC.pack(trailer_crc))
    return count


def read_undo_image(path: Path, *, cycle_id: int) -> Iterator[UndoExtent]:
    """Yield the extents of the image at ``path``; raise CorruptRecord on any damage.

    The trailer is checked only after the last extent: call :func:`verify_undo_image`
    first when a partial image must not be applied.
    """
    for extent, _ in _scan(path, cycle_id):
        yield extent


def locate_undo_extents(path: Path, *, cycle_id: int) -> list[UndoExtentLocation]:
    """Read the whole image at ``path`` (every CRC and the trailer); return where
    each extent's bytes lie, in file order. Raise CorruptRecord on any damage."""
    locations = []
    for extent, position in _scan(path, cycle_id):
        stored = extent.data is not None
        locations.append(
            UndoExtentLocation(
                extent.disk,
                extent.offset,
                extent.length,
                KIND_DATA if stored else KIND_ZEROS,
                position + EXTENT_COVERED.size + CRC.size if stored else None,
            )
        )
    return locations


def _scan(path: Path, cycle_id: int) -> Iterator[tuple[UndoExtent, int]]:
    """Yield each extent with its position in the file; check the trailer last."""
    with path.open("rb") as source:
        disks = _read_header(source, path, cycle_id)
        running = 0
        count = 0
        while True:
            position = source.tell()
            head = source.read(EXTENT_COVERED.size)
            if head[: len(END_MAGIC)] == END_MAGIC:
                break
            extent, crc = _read_extent(source, path, position, head, disks)
            running = google_crc32c.extend(running, CRC.pack(crc))
            count += 1
            yield extent, position
        _check_trailer(source, path, position, head, running=running, count=count)


def verify_undo_image(path: Path, *, cycle_id: int) -> int:
    """Read the whole image at ``path``; return its byte count covered by extents."""
    return sum(extent.length for extent in read_undo_image(path, cycle_id=cycle_id))


def undo_image_disks(path: Path, *, cycle_id: int) -> list[str]:
    """Return the disks the image's header names (header checked, extents not)."""
    with path.open("rb") as source:
        return _read_header(source, path, cycle_id)


def apply_undo_image(path: Path, *, cycle_id: int, images: Mapping[str, Path]) -> int:
    """Verify the image, then write its extents into ``images`` (disk -> file); fsync.

    Returns the bytes written. A damaged image raises before any byte is written.
    """
    verify_undo_image(path, cycle_id=cycle_id)
    descriptors = {disk: os.open(image, os.O_WRONLY) for disk, image in images.items()}
    written = 0
    fs = files.current()
    try:
        for extent in read_undo_image(path, cycle_id=cycle_id):
            fs.pwrite(descriptors[extent.disk], extent.payload(), extent.offset)
            written += extent.length
        for descriptor in descriptors.values():
            fs.fsync(descriptor)
    finally:
        for descriptor in descriptors.values():
            os.close(descriptor)
    return written


def merge_regions(regions: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Return the union of ``(start, end)`` regions as sorted, disjoint regions."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(regions):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def capture_extents(
    images: Mapping[str, Path], regions: Mapping[str, list[tuple[int, int]]]
) -> Iterator[tuple[str, int, bytes]]:
    """Yield ``(disk, offset, bytes)`` of each region, in chunks of EXTENT_BYTES_MAX."""
    for disk in sorted(regions):
        with images[disk].open("rb") as image:
            for start, end in regions[disk]:
                for chunk_start in range(start, end, EXTENT_BYTES_MAX):
                    length = min(EXTENT_BYTES_MAX, end - chunk_start)
                    image.seek(chunk_start)
                    data = image.read(length)
                    assert len(data) == length, (disk, chunk_start, len(data))
                    yield disk, chunk_start, data


def _read_header(source: BinaryIO, path: Path, cycle_id: int) -> list[str]:
    fixed = source.read(HEADER_FIXED.size)
    if len(fixed) < HEADER_FIXED.size:
        _corrupt(path, 0, "file shorter than an undo-image header")
    magic, version, disk_count, found_cycle = HEADER_FIXED.unpack(fixed)
    if magic != MAGIC or version != FORMAT_VERSION:
        _corrupt(path, 0, f"magic={magic!r} version={version}, expected {MAGIC!r} v1")
    if not 0 < disk_count <= DISK_COUNT_MAX:
        _corrupt(path, 0, f"disk_count={disk_count} outside 1..{DISK_COUNT_MAX}")
    header = fixed
    disks = []
    for _ in range(disk_count):
        length_bytes = source.read(NAME_LENGTH.size)
        (length,) = NAME_LENGTH.unpack(length_bytes.ljust(NAME_LENGTH.size, b"\0"))
        name = source.read(length)
        header += length_bytes + name
        disks.append(name.decode(errors="replace"))
    (crc,) = CRC.unpack(source.read(CRC.size).ljust(CRC.size, b"\0"))
    if crc != google_crc32c.value(header):
        _corrupt(path, 0, "header CRC32C mismatch")
    if found_cycle != cycle_id:
        _corrupt(path, 0, f"image is for cycle_id={found_cycle}, expected {cycle_id}")
    return disks


def _read_extent(
    source: BinaryIO, path: Path, position: int, head: bytes, disks: list[str]
) -> tuple[UndoExtent, int]:
    crc_bytes = source.read(CRC.size)
    if len(head) < EXTENT_COVERED.size or len(crc_bytes) < CRC.size:
        _corrupt(path, position, "truncated extent header (no trailer)")
    kind, disk_index, length, offset = EXTENT_COVERED.unpack(head)
    if kind not in (KIND_DATA, KIND_ZEROS) or disk_index >= len(disks):
        _corrupt(path, position, f"kind={kind} disk_index={disk_index} out of range")
    if not 0 < length <= EXTENT_BYTES_MAX:
        _corrupt(path, position, f"length={length} outside 1..{EXTENT_BYTES_MAX}")
    data = source.read(length) if kind == KIND_DATA else b""
    if kind == KIND_DATA and len(data) < length:
        _corrupt(path, position, f"extent data cut short ({len(data)} of {length})")
    (crc,) = CRC.unpack(crc_bytes)
    if crc != google_crc32c.extend(google_crc32c.value(head), data):
        _corrupt(path, position, "extent CRC32C mismatch")
    payload = data if kind == KIND_DATA else None
    return UndoExtent(disks[disk_index], offset, length, payload), crc


def _check_trailer(
    source: BinaryIO,
    path: Path,
    position: int,
    head: bytes,
    *,
    running: int,
    count: int,
) -> None:
    rest = source.read(TRAILER_COVERED.size + CRC.size - len(head))
    trailer = head + rest
    if len(trailer) != TRAILER_COVERED.size + CRC.size:
        _corrupt(path, position, "truncated trailer")
    covered = trailer[: TRAILER_COVERED.size]
    _, found_count = TRAILER_COVERED.unpack(covered)
    (crc,) = CRC.unpack(trailer[TRAILER_COVERED.size :])
    if found_count != count or crc != google_crc32c.extend(running, covered):
        _corrupt(path, position, f"trailer mismatch: {found_count} extents claimed")
    if source.read(1):
        _corrupt(path, source.tell() - 1, "bytes after the trailer")


def _corrupt(path: Path, position: int, reason: str) -> NoReturn:
    msg = f"undo image {str(path)!r} is damaged at byte {position}: {reason}; "
    msg += "the replica was left as it is (resynchronise if a rollback needed it)"
    raise CorruptRecord(msg)
