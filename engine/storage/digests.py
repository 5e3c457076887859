"""Block digests: the one definition both sites use to find the blocks that differ.

A resynchronisation between hosts cannot compare the two copies byte for byte: the
target sends one digest per block of its replica, the source computes the digest of
the same block of its own disk, and only blocks whose digests differ travel. Both
sides must therefore compute exactly the same function, and it is defined here, once:

    block_digest(data) = BLAKE2b(data, digest_size=16)      (unkeyed, no salt/person)

the same value as ``b2sum -l 128`` of the block's bytes, so a digest can be checked by
hand on a bad day. Why not the CRC32C the change log uses: a CRC detects accidental
damage to a record whose CRC travels with it; here equal digests mean "skip this block",
and 32 bits make a collision, a differing block silently left behind, a matter of
chance across the ~10^9 blocks of a few TiB. 128 bits of a cryptographic hash make it
negligible, cost little more than reading (BLAKE2b runs near 1 GB/s per core), and
keep a digest list small (16 bytes per block: 4 MiB per GiB at 4 KiB blocks).

:func:`digest_file_blocks` digests a run of blocks of a disk image file, and
:func:`digest_blocks` the blocks a list names (a targeted resynchronisation's
candidates), both reading :data:`READ_CHUNK_BYTES` at a time over consecutive blocks
and giving the zero block's digest to every block of a chunk that lies wholly in a
hole (``SEEK_DATA``) without reading it: a mostly empty sparse image costs what it
holds. Reads go to ``os`` (a read changes nothing).
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

from engine.errors import DamagedState

DIGEST_BYTES: Final = 16
"""Length of one block digest (BLAKE2b-128)."""

READ_CHUNK_BYTES: Final = 1024 * 1024
"""Bytes read per system call; a multiple of every block size the engine allows."""

Buffer = bytes | bytearray | memoryview


def block_digest(data: Buffer) -> bytes:
    """Return the digest of one block's bytes (BLAKE2b, 16 bytes)."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


def digest_file_blocks(
    path: Path, *, block_bytes: int, first_block: int, block_count: int
) -> list[bytes]:
    """Return the digests of ``block_count`` blocks of ``path`` from ``first_block``.

    The caller validates the arguments (``block_bytes`` a power of two dividing
    :data:`READ_CHUNK_BYTES`); a file shorter than the run raises
    :class:`DamagedState` naming it, since its owner said it holds those blocks.
    """
    end = (first_block + block_count) * block_bytes
    runs = [(first_block, block_count)] if block_count else []
    return _digest_runs(path, block_bytes, runs, end=end, count=block_count)


def digest_blocks(path: Path, block_bytes: int, blocks: Sequence[int]) -> list[bytes]:
    """Return the digest of each block of ``path`` listed in ``blocks``, in that order.

    Consecutive ascending blocks are read together, :data:`READ_CHUNK_BYTES` at a
    time, and holes are not read, as for a whole disk. The caller validates the block
    numbers (each ``>= 0``) and ``block_bytes``; a file too short for the last block
    asked raises :class:`DamagedState` naming it.
    """
    end = (max(blocks) + 1) * block_bytes if blocks else 0
    return _digest_runs(path, block_bytes, _runs(blocks), end=end, count=len(blocks))


def _digest_runs(
    path: Path,
    block_bytes: int,
    runs: Iterable[tuple[int, int]],
    *,
    end: int,
    count: int,
) -> list[bytes]:
    """Digests of the blocks of each (first, count) run, in order; ``end`` is the
    furthest byte any run reaches, ``count`` the number of blocks in all."""
    assert block_bytes > 0, block_bytes
    assert READ_CHUNK_BYTES % block_bytes == 0, block_bytes
    zero = block_digest(bytes(block_bytes))
    digests: list[bytes] = []
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(descriptor).st_size
        if size < end:
            msg = f"{str(path)!r} is {size} bytes long, shorter than the {end} bytes "
            msg += "whose block digests were asked for: the image is damaged"
            raise DamagedState(msg)
        for first, blocks in runs:
            start = first * block_bytes
            digests += _digest_run(
                descriptor, path, block_bytes, start, start + blocks * block_bytes, zero
            )
    finally:
        os.close(descriptor)
    assert len(digests) == count, (len(digests), count)
    return digests


def _runs(blocks: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Split ``blocks`` into (first, count) runs of consecutive ascending blocks."""
    first = previous = -2
    count = 0
    for block in blocks:
        assert block >= 0, block
        if block == previous + 1:
            count += 1
        else:
            if count:
                yield first, count
            first, count = block, 1
        previous = block
    if count:
        yield first, count


def _digest_run(
    descriptor: int, path: Path, block_bytes: int, start: int, end: int, zero: bytes
) -> list[bytes]:
    """Digests of the blocks in bytes ``[start, end)``; holes are not read."""
    digests: list[bytes] = []
    position = start
    while position < end:
        data_at = _next_data(descriptor, position, end)
        hole_end = max(position, data_at - data_at % block_bytes)
        digests += [zero] * ((hole_end - position) // block_bytes)
        if hole_end == end:
            break
        length = min(READ_CHUNK_BYTES, end - hole_end)
        chunk = memoryview(_read_exactly(descriptor, path, hole_end, length))
        digests += [
            block_digest(chunk[offset : offset + block_bytes])
            for offset in range(0, length, block_bytes)
        ]
        position = hole_end + length
    return digests


def _next_data(descriptor: int, position: int, end: int) -> int:
    """The first byte at or after ``position`` that may hold data (``end`` if none)."""
    try:
        return min(os.lseek(descriptor, position, os.SEEK_DATA), end)
    except OSError as error:
        if error.errno == errno.ENXIO:  # only a hole from here to the end of the file
            return end
        if error.errno in {errno.EINVAL, errno.EOPNOTSUPP}:  # no SEEK_DATA: all data
            return position
        raise


def _read_exactly(descriptor: int, path: Path, offset: int, length: int) -> bytes:
    parts = []
    done = 0
    while done < length:
        part = os.pread(descriptor, length - done, offset + done)
        if not part:
            msg = f"{str(path)!r} ended at byte {offset + done} while reading its "
            msg += f"blocks up to byte {offset + length}: the image is damaged"
            raise DamagedState(msg)
        parts.append(part)
        done += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)
