"""Unit tests for engine.storage.block_set: the bitmap of blocks that may differ."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import DamagedState, DiskRangeError, InvalidConfiguration
from engine.storage import files
from engine.storage.block_set import CRC, HEADER, MAGIC, BlockSet
from engine.testing import PowerCut, PowerLossFileSystem

BLOCK = 4096
GIB = 1 << 30


def test_one_gib_of_4k_blocks_takes_32_kib() -> None:
    """One bit per block: 262,144 blocks in 32 KiB, plus header and CRC."""
    blocks = BlockSet(GIB, BLOCK)
    assert (262_144, 32 * 1024 + HEADER.size + CRC.size) == (
        blocks.block_count,
        len(blocks.to_bytes()),
    )


def test_add_and_iterate_in_order() -> None:
    """Blocks come back ascending, once each, whatever the order they were added."""
    blocks = BlockSet(64 * BLOCK, BLOCK)
    for block in (63, 0, 9, 8, 7, 9, 16):
        blocks.add(block)
    assert (list(blocks), len(blocks)) == ([0, 7, 8, 9, 16, 63], 6)
    assert 9 in blocks
    assert 10 not in blocks
    assert 64 not in blocks
    assert "9" not in blocks


def test_add_range_covers_every_block_the_bytes_touch() -> None:
    """A byte range adds each block it touches, partial blocks included."""
    blocks = BlockSet(64 * BLOCK, BLOCK)
    blocks.add_range(BLOCK - 1, 2)  # the last byte of block 0, the first of block 1
    blocks.add_range(5 * BLOCK, BLOCK)  # exactly block 5
    blocks.add_range(9 * BLOCK + 100, 0)  # nothing
    blocks.add_range(10 * BLOCK + 1, 30 * BLOCK)  # blocks 10 to 40, whole bytes inside
    assert [0, 1, 5, *range(10, 41)] == list(blocks)


def test_runs_group_consecutive_blocks() -> None:
    """runs() yields (first block, count) of each run."""
    blocks = BlockSet.of(64 * BLOCK, BLOCK, [0, 1, 2, 7, 9, 10, 63])
    assert list(blocks.runs()) == [(0, 3), (7, 1), (9, 2), (63, 1)]
    assert list(BlockSet(BLOCK, BLOCK).runs()) == []


def test_union_difference_and_equality() -> None:
    """union and difference make new sets; equality is geometry and members."""
    first = BlockSet.of(16 * BLOCK, BLOCK, [1, 2, 3])
    second = BlockSet.of(16 * BLOCK, BLOCK, [3, 4])
    assert BlockSet.of(16 * BLOCK, BLOCK, [1, 2, 3, 4]) == first.union(second)
    assert BlockSet.of(16 * BLOCK, BLOCK, [1, 2]) == first.difference(second)
    assert list(first) == [1, 2, 3]  # unchanged
    assert BlockSet(16 * BLOCK, BLOCK) != BlockSet(32 * BLOCK, BLOCK)
    assert BlockSet(16 * BLOCK, BLOCK) != BlockSet(32 * BLOCK, 2 * BLOCK)
    assert first != [1, 2, 3]
    with pytest.raises(InvalidConfiguration, match="a set describes one disk"):
        first.union(BlockSet(32 * BLOCK, BLOCK))


@given(
    block_count=st.integers(min_value=1, max_value=300),
    picks=st.lists(st.integers(min_value=0), max_size=40),
    ranges=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 5000))),
)
def test_a_set_is_the_set_of_its_blocks(
    block_count: int, picks: list[int], ranges: list[tuple[int, int]]
) -> None:
    """Against Python's set: the members, their order, the length and the runs."""
    size = block_count * 512
    blocks = BlockSet(size, 512)
    expected: set[int] = set()
    for pick in picks:
        blocks.add(pick % block_count)
        expected.add(pick % block_count)
    for start, length in ranges:
        offset = start % size
        length = min(length, size - offset)
        blocks.add_range(offset, length)
        if length:
            expected.update(range(offset // 512, (offset + length - 1) // 512 + 1))
    assert (sorted(expected), len(expected)) == (list(blocks), len(blocks))
    from_runs = [
        b for first, count in blocks.runs() for b in range(first, first + count)
    ]
    assert sorted(expected) == from_runs


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    """What save writes, load reads back equal; no temporary file is left."""
    blocks = BlockSet.of(GIB, BLOCK, [0, 1, 4095, 262_143])
    blocks.add_range(100 * BLOCK, 64 * BLOCK)
    path = tmp_path / "os.blocks"
    blocks.save(path)
    assert blocks == BlockSet.load(path, size_bytes=GIB, block_bytes=BLOCK)
    assert blocks == BlockSet.load(path)
    assert [p.name for p in tmp_path.iterdir()] == ["os.blocks"]
    BlockSet(GIB, BLOCK).save(path)  # replaced whole
    assert len(BlockSet.load(path)) == 0


def test_a_power_cut_during_save_leaves_the_old_set_or_the_new(tmp_path: Path) -> None:
    """At every operation of a save, a power cut keeps the old set or the new one."""
    path = tmp_path / "os.blocks"
    old = BlockSet.of(64 * BLOCK, BLOCK, [1])
    new = BlockSet.of(64 * BLOCK, BLOCK, [2, 3])
    found = []
    for crash_at in range(1, 6):
        old.save(path)
        simulation = PowerLossFileSystem([tmp_path], crash_at=crash_at)
        with files.use(simulation):
            with contextlib.suppress(PowerCut):
                new.save(path)
            simulation.power_cut()
        found.append(BlockSet.load(path))
    assert [old, old, old, new, new] == found


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ((0, BLOCK), InvalidConfiguration, "positive multiple"),
        ((BLOCK + 1, BLOCK), InvalidConfiguration, "positive multiple"),
        ((BLOCK, 1000), InvalidConfiguration, "power of two"),
        ((True, 512), InvalidConfiguration, "must be an int"),
    ],
)
def test_the_geometry_is_validated(
    arguments: tuple[int, int], error: type[Exception], match: str
) -> None:
    """The disk size is a positive multiple of a valid block size."""
    with pytest.raises(error, match=match):
        BlockSet(*arguments)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda s: s.add(16), DiskRangeError, "block=16 must lie within the 16 blocks"),
        (lambda s: s.add(-1), DiskRangeError, "block=-1"),
        (lambda s: s.add(1.0), InvalidConfiguration, "block=1.0 must be an int"),
        (lambda s: s.add_range(-1, 1), DiskRangeError, "offset=-1"),
        (lambda s: s.add_range(0, -1), DiskRangeError, "length=-1"),
        (lambda s: s.add_range(BLOCK, 16 * BLOCK), DiskRangeError, "<= 65536"),
    ],
)
def test_blocks_outside_the_disk_are_refused(
    change: Callable[[BlockSet], None], error: type[Exception], match: str
) -> None:
    """A block or byte range outside the disk is DiskRangeError; nothing is added."""
    blocks = BlockSet(16 * BLOCK, BLOCK)
    with pytest.raises(error, match=match):
        change(blocks)
    assert len(blocks) == 0


# -- damage --------------------------------------------------------------------------


def rewrite(path: Path, change: Callable[[bytearray], bytes | bytearray]) -> None:
    """Apply ``change`` to the file's bytes and give it a correct CRC again."""
    data = bytearray(path.read_bytes())
    body = bytes(change(data))[: -CRC.size]
    path.write_bytes(body + CRC.pack(google_crc32c.value(body)))


def header(**fields: int | bytes) -> Callable[[bytearray], bytes]:
    """A change that replaces some header fields."""
    names = ("magic", "format_version", "flags", "block_bytes", "size_bytes")

    def change(data: bytearray) -> bytes:
        values = dict(zip(names, HEADER.unpack_from(data), strict=True))
        values.update(fields)
        return HEADER.pack(*(values[n] for n in names)) + bytes(data[HEADER.size :])

    return change


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: p.unlink(), "it is missing"),
        (lambda p: p.write_bytes(b"HVDR-BLK\x01"), "9 bytes, shorter than its header"),
        (lambda p: p.write_bytes(b""), "0 bytes, shorter than its header"),
        (lambda p: rewrite(p, header(magic=b"HVDR-HRL")), "not a block set"),
        (lambda p: rewrite(p, header(format_version=2)), "format version 2; this"),
        (lambda p: rewrite(p, header(flags=1)), "flags are 0x0001, expected 0"),
        (lambda p: rewrite(p, header(block_bytes=1000)), "block size 1000 is not"),
        (lambda p: rewrite(p, header(block_bytes=0)), "block size 0 is not"),
        (lambda p: rewrite(p, header(size_bytes=0)), "disk size 0 is not a positive"),
        (lambda p: rewrite(p, header(size_bytes=BLOCK + 1)), "disk size 4097"),
        (
            lambda p: rewrite(p, header(size_bytes=1 << 50)),
            "a set of 274877906944 blocks takes",
        ),
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), "truncated or extended"),
        (lambda p: p.write_bytes(p.read_bytes() + b"\0"), "truncated or extended"),
        (lambda p: flip(p, HEADER.size), "CRC32C mismatch"),
        (lambda p: flip(p, -1), "CRC32C mismatch"),
        (lambda p: rewrite(p, set_last_bitmap_bit), "bits past its last block (11)"),
    ],
)
def test_damage_is_damaged_state_naming_the_file(
    tmp_path: Path, damage: Callable[[Path], None], match: str
) -> None:
    """Each kind of damage raises DamagedState naming the file and what was wrong."""
    path = tmp_path / "os.blocks"
    BlockSet.of(12 * BLOCK, BLOCK, [0, 5, 11]).save(path)  # 12 blocks: 4 padding bits
    damage(path)
    with pytest.raises(
        DamagedState, match=r"block set '.*os\.blocks' is damaged"
    ) as info:
        BlockSet.load(path)
    assert match in str(info.value)
    assert "compare every block" in str(info.value)


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x10
    path.write_bytes(data)


def set_last_bitmap_bit(data: bytearray) -> bytearray:
    data[-CRC.size - 1] |= 0x80
    return data


@pytest.mark.parametrize(
    ("expected", "match"),
    [
        ({"size_bytes": 24 * BLOCK}, "expected 98304 bytes in blocks of None"),
        (
            {"block_bytes": 512},
            "in blocks of 4096, expected None bytes in blocks of 512",
        ),
    ],
)
def test_a_set_for_another_disk_geometry_is_damage(
    tmp_path: Path, expected: dict[str, int], match: str
) -> None:
    """load() given the geometry it expects refuses a set for another one."""
    path = tmp_path / "os.blocks"
    BlockSet(12 * BLOCK, BLOCK).save(path)
    with pytest.raises(DamagedState, match=match):
        BlockSet.load(path, **expected)


def test_the_header_layout_is_the_documented_one(tmp_path: Path) -> None:
    """The worked example of docs/block-set-format.md, byte for byte."""
    blocks = BlockSet(65536, 4096)
    blocks.add(0)
    blocks.add(3)
    blocks.add_range(9 * 4096 + 100, 8192)
    expected = bytes.fromhex(
        "48564452 2d424c4b 0100 0000 00100000 0000010000000000 090e d477761f"
    )
    assert expected[:8] == MAGIC
    assert ([0, 3, 9, 10, 11], expected) == (list(blocks), blocks.to_bytes())
    assert struct.unpack("<I", expected[-4:])[0] == google_crc32c.value(expected[:-4])
