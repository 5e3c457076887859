"""A set of block numbers of one disk, one bit per block: which blocks may differ.

What it owns: the blocks a targeted resynchronisation must compare
(``engine.source.resync``), gathered from what the engine knows diverged (change logs
never shipped, undo images rolled back, writes since a failover), and the file that
keeps such a set across a restart. It knows nothing of logs, replicas or the lifecycle.

**Why a bitmap.** A set of block numbers of a disk of ``size_bytes`` in blocks of
``block_bytes`` is a bit string of ``size_bytes // block_bytes`` bits: bit ``b % 8`` of
byte ``b // 8`` (least significant first) is block ``b``. Its size is known up front
and never depends on how the blocks are scattered (1 GiB of 4 KiB blocks takes 32 KiB,
whatever is set); adding a block, a membership test and a union cost the same for the
first block and the millionth; iteration in block order, which is the order a disk is
read in, comes for free. A sorted list of ranges would be smaller for a few long
writes and far larger for scattered small ones; the bitmap bounds the worst case.

**Invariants.** ``size_bytes`` is a positive multiple of ``block_bytes`` (a power of
two from 512 B to 1 MiB, as for a disk, ``engine.storage.disk``); the bitmap holds
exactly ``ceil(block_count / 8)`` bytes; the bits past the last block are zero. Block
numbers and byte ranges outside the disk are refused with :class:`DiskRangeError`.

**The file** (``docs/block-set-format.md``), little-endian::

    block_set := magic[8] format_version:u16 flags:u16 block_bytes:u32
                 size_bytes:u64 bitmap[ceil(size_bytes / block_bytes / 8)] crc:u32

``crc`` is the CRC32C of every byte before it; ``flags`` is 0. :meth:`BlockSet.save`
writes it under a temporary name, fsyncs and renames it
(``durable_file.write_file_atomically``, through ``engine.storage.files``), so a
reader sees the old set or the new one. :meth:`BlockSet.load` checks the magic, the
version, the geometry (and the one the caller expects), the file's length before
reading the bitmap (a damaged header cannot make it allocate more than the file
holds), the CRC and the padding bits; any damage is :class:`DamagedState` naming the
file and what was wrong: a set that cannot be trusted cannot say which blocks may
differ, and the caller compares every block instead.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final, NoReturn, Self

import google_crc32c

from engine.errors import DamagedState, DiskRangeError, InvalidConfiguration
from engine.storage import durable_file
from engine.storage.disk import require_int, validate_block_bytes

MAGIC: Final = b"HVDR-BLK"
"""First 8 bytes of every block-set file."""

FORMAT_VERSION: Final = 1
"""Bumped on an incompatible layout change; the reader refuses versions it lacks."""

HEADER: Final = struct.Struct("<8sHHIQ")
"""magic, format_version, flags, block_bytes, size_bytes (24 bytes)."""

CRC: Final = struct.Struct("<I")
"""crc, after the bitmap, covering every byte before it."""

WHAT_TO_DO: Final = "it cannot say which blocks may differ: compare every block"

_NONZERO_RUNS: Final = re.compile(rb"[^\x00]+")
_BITS_OF_BYTE: Final = tuple(
    tuple(bit for bit in range(8) if value >> bit & 1) for value in range(256)
)


class BlockSet:
    """A mutable set of the block numbers of one disk, kept as a bitmap."""

    __slots__ = ("_bits", "_block_bytes", "_size_bytes")

    def __init__(self, size_bytes: int, block_bytes: int) -> None:
        """An empty set for a disk of ``size_bytes`` in blocks of ``block_bytes``."""
        block_bytes = validate_block_bytes(block_bytes)
        size_bytes = require_int(size_bytes, argument="size_bytes")
        if size_bytes <= 0 or size_bytes % block_bytes:
            msg = f"size_bytes={size_bytes!r} must be a positive multiple of "
            msg += f"block_bytes={block_bytes}"
            raise InvalidConfiguration(msg)
        self._size_bytes = size_bytes
        self._block_bytes = block_bytes
        self._bits = bytearray(_bitmap_bytes(size_bytes // block_bytes))

    @classmethod
    def of(cls, size_bytes: int, block_bytes: int, blocks: Iterable[int]) -> Self:
        """A set holding ``blocks`` (each checked as by :meth:`add`)."""
        found = cls(size_bytes, block_bytes)
        for block in blocks:
            found.add(block)
        return found

    @property
    def size_bytes(self) -> int:
        """Size of the disk the set describes."""
        return self._size_bytes

    @property
    def block_bytes(self) -> int:
        """Size of one block."""
        return self._block_bytes

    @property
    def block_count(self) -> int:
        """Blocks of the disk (``size_bytes // block_bytes``), not blocks in the set."""
        return self._size_bytes // self._block_bytes

    def add(self, block: int) -> None:
        """Add block number ``block`` (0 to ``block_count - 1``)."""
        block = require_int(block, argument="block")
        if not 0 <= block < self.block_count:
            msg = f"block={block} must lie within the {self.block_count} blocks of "
            msg += f"{self._block_bytes} bytes of a disk of {self._size_bytes} bytes"
            raise DiskRangeError(msg)
        self._bits[block >> 3] |= 1 << (block & 7)

    def add_range(self, offset: int, length: int) -> None:
        """Add every block that bytes ``[offset, offset + length)`` touch."""
        offset = require_int(offset, argument="offset")
        length = require_int(length, argument="length")
        if offset < 0 or length < 0 or offset + length > self._size_bytes:
            msg = f"offset={offset}, length={length} must satisfy 0 <= offset, "
            msg += f"0 <= length and offset + length <= {self._size_bytes} (the disk)"
            raise DiskRangeError(msg)
        if length:
            first = offset // self._block_bytes
            end = (offset + length - 1) // self._block_bytes + 1
            self._set_run(first, end)

    def union(self, other: BlockSet) -> BlockSet:
        """A new set of the blocks in either set (same disk geometry)."""
        self._check_same_disk(other, "union")
        return self._with_bits(_as_int(self._bits) | _as_int(other._bits))

    def difference(self, other: BlockSet) -> BlockSet:
        """A new set of the blocks in this set and not in ``other``."""
        self._check_same_disk(other, "difference")
        return self._with_bits(_as_int(self._bits) & ~_as_int(other._bits))

    def runs(self) -> Iterator[tuple[int, int]]:
        """Yield ``(first_block, block_count)`` of each run of consecutive blocks."""
        first = previous = -2
        for block in self:
            if block != previous + 1:
                if first >= 0:
                    yield first, previous - first + 1
                first = block
            previous = block
        if first >= 0:
            yield first, previous - first + 1

    def __contains__(self, block: object) -> bool:
        if isinstance(block, bool) or not isinstance(block, int):
            return False
        if not 0 <= block < self.block_count:
            return False
        return bool(self._bits[block >> 3] >> (block & 7) & 1)

    def __iter__(self) -> Iterator[int]:
        """The blocks in ascending order (runs of zero bytes are skipped in C)."""
        bits = self._bits
        for match in _NONZERO_RUNS.finditer(bits):
            for index in range(match.start(), match.end()):
                base = index << 3
                for bit in _BITS_OF_BYTE[bits[index]]:
                    yield base + bit

    def __len__(self) -> int:
        return _as_int(self._bits).bit_count()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BlockSet):
            return NotImplemented
        return (self._size_bytes, self._block_bytes, self._bits) == (
            other._size_bytes,
            other._block_bytes,
            other._bits,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        return (
            f"BlockSet(size_bytes={self._size_bytes}, "
            f"block_bytes={self._block_bytes}, blocks={len(self)})"
        )

    # -- the file ----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The file form (see the module's docstring)."""
        header = HEADER.pack(
            MAGIC, FORMAT_VERSION, 0, self._block_bytes, self._size_bytes
        )
        body = header + bytes(self._bits)
        return body + CRC.pack(google_crc32c.value(body))

    def save(self, path: Path) -> None:
        """Replace ``path`` with this set, durably (temporary file, fsync, rename)."""
        durable_file.write_file_atomically(Path(path), self.to_bytes())

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        size_bytes: int | None = None,
        block_bytes: int | None = None,
    ) -> Self:
        """Read the set saved at ``path``; any damage is :class:`DamagedState`.

        ``size_bytes`` and ``block_bytes``, when given, are the geometry the caller
        expects: a set for another disk geometry is damage too.
        """
        path = Path(path)
        try:
            body = path.read_bytes()
        except FileNotFoundError as error:
            _damaged(path, "it is missing", error)
        return cls.from_bytes(
            body, what=str(path), size_bytes=size_bytes, block_bytes=block_bytes
        )

    @classmethod
    def from_bytes(
        cls,
        body: bytes,
        *,
        what: str,
        size_bytes: int | None = None,
        block_bytes: int | None = None,
    ) -> Self:
        """The set whose file form is ``body`` (``what`` names it in errors), checked
        as :meth:`load` checks a file: any damage is :class:`DamagedState`."""
        found_size, found_block = _check_header(what, body[: HEADER.size], len(body))
        _check_expected(what, (found_size, found_block), (size_bytes, block_bytes))
        found = cls(found_size, found_block)
        bitmap = body[HEADER.size : -CRC.size]
        (stored,) = CRC.unpack(body[-CRC.size :])
        computed = google_crc32c.value(body[: -CRC.size])
        if stored != computed:
            detail = f"CRC32C mismatch (stored {stored:#010x}, "
            _damaged(what, detail + f"computed {computed:#010x})")
        found._bits[:] = bitmap
        padding = len(bitmap) * 8 - found.block_count
        if padding and bitmap[-1] >> (8 - padding):
            last = found.block_count - 1
            _damaged(what, f"bits past its last block ({last}) are set")
        return found

    # -- internals ---------------------------------------------------------------------

    def _set_run(self, first: int, end: int) -> None:
        """Set blocks ``[first, end)``: whole bytes at once, the edges bit by bit."""
        bits = self._bits
        while first < end and first & 7:
            bits[first >> 3] |= 1 << (first & 7)
            first += 1
        whole_end = end & ~7
        if first < whole_end:
            bits[first >> 3 : whole_end >> 3] = b"\xff" * ((whole_end - first) >> 3)
            first = whole_end
        while first < end:
            bits[first >> 3] |= 1 << (first & 7)
            first += 1

    def _check_same_disk(self, other: BlockSet, doing: str) -> None:
        mine = (self._size_bytes, self._block_bytes)
        theirs = (other._size_bytes, other._block_bytes)
        if mine != theirs:
            msg = f"cannot take the {doing} of sets for disks of (size_bytes, "
            msg += f"block_bytes) {mine} and {theirs}: a set describes one disk"
            raise InvalidConfiguration(msg)

    def _with_bits(self, value: int) -> BlockSet:
        result = BlockSet(self._size_bytes, self._block_bytes)
        result._bits[:] = value.to_bytes(len(self._bits), "little")
        return result


def _bitmap_bytes(block_count: int) -> int:
    return (block_count + 7) // 8


def _as_int(bits: bytearray) -> int:
    return int.from_bytes(bits, "little")


def _check_header(path: str | Path, header: bytes, file_bytes: int) -> tuple[int, int]:
    """Return (size_bytes, block_bytes) of a well-formed header of the right length."""
    if len(header) < HEADER.size:
        _damaged(path, f"it is {file_bytes} bytes, shorter than its header")
    magic, version, flags, block_bytes, size_bytes = HEADER.unpack(header)
    if magic != MAGIC:
        _damaged(path, f"it starts with {magic!r}, not {MAGIC!r}: not a block set")
    if version != FORMAT_VERSION:
        _damaged(path, f"format version {version}; this reader knows {FORMAT_VERSION}")
    if flags != 0:
        _damaged(path, f"its flags are {flags:#06x}, expected 0")
    try:
        validate_block_bytes(block_bytes)
    except InvalidConfiguration as error:
        detail = f"block size {block_bytes} is not a power of two, 512 B to 1 MiB"
        _damaged(path, detail, error)
    if size_bytes <= 0 or size_bytes % block_bytes:
        detail = f"disk size {size_bytes} is not a positive multiple of its block "
        _damaged(path, detail + f"size {block_bytes}")
    expected = HEADER.size + _bitmap_bytes(size_bytes // block_bytes) + CRC.size
    if file_bytes != expected:
        detail = f"it is {file_bytes} bytes long; a set of {size_bytes // block_bytes}"
        _damaged(path, detail + f" blocks takes {expected} (truncated or extended)")
    return size_bytes, block_bytes


def _check_expected(
    path: str | Path, found: tuple[int, int], expected: tuple[int | None, int | None]
) -> None:
    """Refuse a set for another geometry than the one the caller expects."""
    size_bytes, block_bytes = expected
    if (size_bytes is not None and size_bytes != found[0]) or (
        block_bytes is not None and block_bytes != found[1]
    ):
        detail = f"it describes a disk of {found[0]} bytes in blocks of {found[1]}, "
        detail += f"expected {size_bytes} bytes in blocks of {block_bytes}"
        _damaged(path, detail)


def _damaged(
    path: str | Path, what: str, cause: BaseException | None = None
) -> NoReturn:
    msg = f"block set {str(path)!r} is damaged: {what}; {WHAT_TO_DO}"
    raise DamagedState(msg) from cause
