"""Unit tests for engine.replica.overlay_map: runs of blocks, strict reading."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import pytest

from engine.errors import DamagedState
from engine.replica.overlay_map import encode_map, load_map

SIZE = 10 * 4096

WORKED_EXAMPLE = bytes.fromhex(
    "4856445244 4d4150 0100 00100000 00a0000000000000 0200000000000000"
    "0000000000000000 0200000000000000"
    "0500000000000000 0100000000000000"
)


@pytest.mark.parametrize(
    "present", [set(), {0}, {9}, {0, 1, 2, 5, 9}, set(range(10)), {3, 7}]
)
def test_round_trip(tmp_path: Path, present: set[int]) -> None:
    """The blocks written are the blocks read, with the block size."""
    path = tmp_path / "os.map"
    path.write_bytes(encode_map(4096, SIZE, present))
    assert (4096, present) == load_map(path, SIZE)


def test_worked_example(tmp_path: Path) -> None:
    """Blocks 0, 1 and 5 of a 40 KiB disk in 4 KiB blocks: docs/drill-format.md."""
    encoded = encode_map(4096, SIZE, {5, 0, 1})
    expected = (WORKED_EXAMPLE, "c833080c")
    assert expected == (encoded[:-4], encoded[-4:].hex())


def corrupt_run(data: bytes) -> bytes:
    """Make the first run start past the disk, with a valid CRC."""
    body = bytearray(data[:-4])
    body[30:38] = struct.pack("<Q", 10)
    return bytes(body) + struct.pack("<I", google_crc32c.value(bytes(body)))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda data: data[:-1], "runs need"),
        (lambda data: data[:10], "shorter than its"),
        (lambda data: data + b"\0", "runs need"),
        (lambda data: data[:40] + bytes([data[40] ^ 1]) + data[41:], "CRC32C"),
        (lambda data: b"NOTAMAP!" + data[8:], "magic"),
        (corrupt_run, "past the disk"),
    ],
)
def test_damage_is_refused_naming_the_file(
    tmp_path: Path, damage: Callable[[bytes], bytes], match: str
) -> None:
    """Every kind of damage is DamagedState naming the map and the reason."""
    path = tmp_path / "os.map"
    path.write_bytes(damage(encode_map(4096, SIZE, {0, 1, 5})))
    with pytest.raises(DamagedState, match=rf"os\.map.*{match}"):
        load_map(path, SIZE)


def test_a_map_of_another_size_is_refused(tmp_path: Path) -> None:
    """A map for a disk of another size is damage, naming both sizes."""
    path = tmp_path / "os.map"
    path.write_bytes(encode_map(4096, SIZE, {1}))
    with pytest.raises(DamagedState, match=f"size_bytes={SIZE}, but the disk has 8"):
        load_map(path, 8)


def test_a_missing_map_is_damaged_state(tmp_path: Path) -> None:
    """No map file: DamagedState naming it."""
    with pytest.raises(DamagedState, match=r"os\.map.*missing"):
        load_map(tmp_path / "os.map", SIZE)
