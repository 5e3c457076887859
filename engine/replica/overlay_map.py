"""The map of a differencing disk: which blocks its overlay holds.

A differencing disk (``engine/replica/differencing.py``) reads a block from its
overlay when the map names it and from its base otherwise. The map is one small file
replaced whole at each flush (temporary file, fsync, rename), after the overlay was
fsynced, so the durable map only names blocks whose overlay bytes are durable.

Layout, little-endian, with the CRC32C of the change log and the undo image
(``docs/drill-format.md`` has a worked example)::

    map := magic "HVDRDMAP" format_version:u16 block_bytes:u32 size_bytes:u64
           run_count:u64 (first_block:u64 block_count:u64){run_count} crc:u32

Runs are sorted, non-empty, apart (a run never starts where the previous one ends:
the writer merges them) and inside the disk; ``crc`` covers every byte before it.
Runs, not a bitmap: the map costs what the test VM wrote, not what the disk could
hold, and a drill writes little. Reading is strict: a short or long file, a bad magic,
version or CRC, a size other than the disk's, a block size outside 512 B..1 MiB, or a
run out of order is :class:`DamagedState` naming the file, never a healthy look.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import google_crc32c

from engine.errors import DamagedState, InvalidConfiguration
from engine.storage.disk import validate_block_bytes

MAP_MAGIC: Final = b"HVDRDMAP"
MAP_FORMAT_VERSION: Final = 1
MAP_HEADER: Final = struct.Struct("<8sHIQQ")
MAP_RUN: Final = struct.Struct("<QQ")
CRC: Final = struct.Struct("<I")


def encode_map(block_bytes: int, size_bytes: int, present: Iterable[int]) -> bytes:
    """Return the map file's bytes for the blocks ``present`` (any order)."""
    runs: list[list[int]] = []
    for number in sorted(present):
        if runs and runs[-1][0] + runs[-1][1] == number:
            runs[-1][1] += 1
        else:
            runs.append([number, 1])
    encoded = MAP_HEADER.pack(
        MAP_MAGIC, MAP_FORMAT_VERSION, block_bytes, size_bytes, len(runs)
    )
    encoded += b"".join(MAP_RUN.pack(first, count) for first, count in runs)
    return encoded + CRC.pack(google_crc32c.value(encoded))


def load_map(path: Path, size_bytes: int) -> tuple[int, set[int]]:
    """Return the block size and the present blocks of the map at ``path``.

    DamagedState naming the file when it is missing, unreadable or damaged, or
    describes a disk of another size than ``size_bytes``.
    """
    try:
        with path.open("rb") as source:
            header = source.read(MAP_HEADER.size)
            file_bytes = os.fstat(source.fileno()).st_size
            body = b""
            if len(header) == MAP_HEADER.size:
                run_count = MAP_HEADER.unpack(header)[4]
                expected = MAP_HEADER.size + run_count * MAP_RUN.size + CRC.size
                if file_bytes == expected:  # else a damaged count: read no more
                    body = source.read(expected - MAP_HEADER.size)
    except OSError as error:
        raise _damaged(path, f"missing or unreadable ({error})") from error
    problem = _header_problem(header, body, file_bytes, size_bytes)
    if problem is not None:
        raise _damaged(path, problem)
    block_bytes = MAP_HEADER.unpack(header)[2]
    try:
        validate_block_bytes(block_bytes)
    except InvalidConfiguration as error:
        raise _damaged(path, str(error)) from error
    block_count = -(-size_bytes // block_bytes)
    present: set[int] = set()
    previous_end = -1
    for first, count in MAP_RUN.iter_unpack(body[: -CRC.size]):
        if count < 1 or first <= previous_end or first + count > block_count:
            reason = f"run ({first}, {count}) is empty, out of order or past the "
            reason += f"disk's {block_count} blocks"
            raise _damaged(path, reason)
        present.update(range(first, first + count))
        previous_end = first + count
    return block_bytes, present


def _header_problem(
    header: bytes, body: bytes, file_bytes: int, size_bytes: int
) -> str | None:
    """Say what is wrong with a map's header and framing (None when nothing)."""
    if len(header) != MAP_HEADER.size:
        return f"{file_bytes} bytes, shorter than its {MAP_HEADER.size}-byte header"
    magic, version, _, found_size, run_count = MAP_HEADER.unpack(header)
    if not body:
        expected = MAP_HEADER.size + run_count * MAP_RUN.size + CRC.size
        return f"{file_bytes} bytes, not the {expected} its {run_count} runs need"
    if magic != MAP_MAGIC or version != MAP_FORMAT_VERSION:
        return f"magic={magic!r} version={version}, expected {MAP_MAGIC!r} version 1"
    (crc,) = CRC.unpack(body[-CRC.size :])
    if crc != google_crc32c.value(header + body[: -CRC.size]):
        return "CRC32C mismatch"
    if found_size != size_bytes:
        return f"size_bytes={found_size}, but the disk has {size_bytes}"
    return None


def _damaged(path: Path, reason: str) -> DamagedState:
    msg = f"map {str(path)!r} of a differencing disk is damaged: {reason}; the test "
    msg += "VM's writes cannot be told from the base: restore the file, or clean up "
    msg += "the drill (cleanup_drill) and start another"
    return DamagedState(msg)
