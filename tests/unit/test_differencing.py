"""Unit tests for engine.replica.differencing: overlay writes over a read-only base."""

from __future__ import annotations

import array
import os
import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from engine.errors import (
    DamagedState,
    DiskRangeError,
    InvalidConfiguration,
    StorageFull,
)
from engine.replica.differencing import DifferencingDisk
from engine.storage import files
from engine.testing import CountingFileSystem, PowerCut, PowerLossFileSystem

BLOCK = 512
SIZE = 20 * BLOCK + 100  # a partial last block too
BASE = random.Random(1).randbytes(SIZE)


def base_read(offset: int, length: int) -> bytes:
    return BASE[offset : offset + length]


def create(
    tmp_path: Path, base: Callable[[int, int], bytes] = base_read
) -> DifferencingDisk:
    return DifferencingDisk.create(
        tmp_path / "os.overlay",
        tmp_path / "os.map",
        size_bytes=SIZE,
        block_bytes=BLOCK,
        base=base,
    )


def reopen(tmp_path: Path) -> DifferencingDisk:
    return DifferencingDisk.open(
        tmp_path / "os.overlay", tmp_path / "os.map", size_bytes=SIZE, base=base_read
    )


def test_a_new_disk_reads_its_base(tmp_path: Path) -> None:
    """Before any write, every byte is the base's."""
    with create(tmp_path) as disk:
        assert disk.read(0, SIZE) == BASE


def test_random_writes_read_back_over_the_base(tmp_path: Path) -> None:
    """Random writes and reads agree with a byte-array oracle; the base is kept."""
    oracle = bytearray(BASE)
    generator = random.Random(2)
    with create(tmp_path) as disk:
        for _ in range(400):
            offset = generator.randrange(0, SIZE)
            length = generator.randrange(0, min(3 * BLOCK, SIZE - offset) + 1)
            if generator.random() < 0.5:
                data = generator.randbytes(length)
                disk.write(offset, data)
                oracle[offset : offset + length] = data
            else:
                expected = bytes(oracle[offset : offset + length])
                assert expected == disk.read(offset, length), (offset, length)
        assert bytes(oracle) == disk.read(0, SIZE)
    assert base_read(0, SIZE) == BASE


def test_a_partial_write_copies_the_rest_of_its_block(tmp_path: Path) -> None:
    """Writing 3 bytes into a block copies its other bytes from the base first."""
    calls: list[tuple[int, int]] = []

    def counting_base(offset: int, length: int) -> bytes:
        calls.append((offset, length))
        return base_read(offset, length)

    with create(tmp_path, counting_base) as disk:
        disk.write(BLOCK + 10, b"abc")
        expected = [(BLOCK, BLOCK)]
        assert expected == calls
        block = BASE[BLOCK : BLOCK + 10] + b"abc" + BASE[BLOCK + 13 : 2 * BLOCK]
        calls.clear()
        assert block == disk.read(BLOCK, BLOCK)
        assert not calls  # the block is whole in the overlay now
        disk.write(2 * BLOCK, bytes(BLOCK))  # a whole block: nothing to copy
        assert not calls
        statistics = disk.statistics()
        expected_counts = (2, 1)
        assert expected_counts == (
            statistics.blocks_present,
            statistics.blocks_copied_from_base,
        )


def test_a_memoryview_of_wide_items_is_written_as_its_bytes(tmp_path: Path) -> None:
    """A buffer of 4-byte items writes all its bytes, not one per item."""
    words = array.array("I", [1, 2, 3])
    with create(tmp_path) as disk:
        disk.write(BLOCK - 4, memoryview(words))
        assert words.tobytes() == disk.read(BLOCK - 4, 12)


def test_the_partial_last_block_is_handled(tmp_path: Path) -> None:
    """The disk's last block is shorter than the others; writes there stay in it."""
    with create(tmp_path) as disk:
        disk.write(SIZE - 5, b"12345")
        expected = BASE[20 * BLOCK : SIZE - 5] + b"12345"
        assert expected == disk.read(20 * BLOCK, 100)


def test_close_then_open_keeps_the_writes(tmp_path: Path) -> None:
    """Flushed writes, and writes before close (it flushes), are there on reopen."""
    with create(tmp_path) as disk:
        disk.write(0, b"flushed")
        disk.flush()
        disk.write(5 * BLOCK + 1, b"closed")
    with reopen(tmp_path) as disk:
        expected = (b"flushed", b"closed")
        assert expected == (disk.read(0, 7), disk.read(5 * BLOCK + 1, 6))


def test_writes_to_new_blocks_after_the_last_flush_are_not_durable(
    tmp_path: Path,
) -> None:
    """What another opener (a restart) sees: only the blocks of the last flush."""
    disk = create(tmp_path)
    disk.write(0, b"flushed")
    disk.flush()
    disk.write(3 * BLOCK, b"not flushed")
    with reopen(tmp_path) as restarted:
        expected = (b"flushed", BASE[3 * BLOCK : 3 * BLOCK + 11])
        assert expected == (restarted.read(0, 7), restarted.read(3 * BLOCK, 11))
    disk.close()


def test_the_overlay_stays_sparse(tmp_path: Path) -> None:
    """Only written blocks are allocated in the overlay, not the disk's size."""
    size = 256 * 4096
    with DifferencingDisk.create(
        tmp_path / "big.overlay",
        tmp_path / "big.map",
        size_bytes=size,
        block_bytes=4096,
        base=lambda offset, length: bytes(length),
    ) as disk:
        disk.write(100 * 4096 + 7, b"x")
        disk.write(200 * 4096, b"y" * 4096)
    allocated = (tmp_path / "big.overlay").stat().st_blocks * 512
    if allocated > size // 2:
        pytest.skip(f"{tmp_path} does not keep files sparse ({allocated} bytes)")
    assert allocated <= 4 * 4096


@pytest.mark.parametrize(
    ("offset", "length"), [(-1, 1), (0, SIZE + 1), (SIZE, 1), (5, -1)]
)
def test_ranges_outside_the_disk_are_refused(
    tmp_path: Path, offset: int, length: int
) -> None:
    """Reads and writes outside the disk raise DiskRangeError, writing nothing."""
    with create(tmp_path) as disk:
        with pytest.raises(DiskRangeError):
            disk.read(offset, length)
        if length >= 0:
            with pytest.raises(DiskRangeError):
                disk.write(offset, b"z" * length)
        assert disk.statistics().blocks_present == 0


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    """Non-int offsets, non-bytes data and bad block sizes name the argument."""
    with create(tmp_path) as disk:
        with pytest.raises(InvalidConfiguration, match="offset"):
            disk.read("0", 1)  # type: ignore[arg-type]
        with pytest.raises(InvalidConfiguration, match="data"):
            disk.write(0, "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfiguration, match="block_bytes"):
        DifferencingDisk.create(
            tmp_path / "b.overlay",
            tmp_path / "b.map",
            size_bytes=SIZE,
            block_bytes=1000,
            base=base_read,
        )


def test_create_never_overwrites(tmp_path: Path) -> None:
    """Creating where an overlay or map exists is refused, naming them."""
    create(tmp_path).close()
    with pytest.raises(InvalidConfiguration, match="already exist"):
        create(tmp_path)


def test_a_closed_disk_refuses_io(tmp_path: Path) -> None:
    """After close, reads and writes say the disk is closed; close again is fine."""
    disk = create(tmp_path)
    disk.close()
    disk.close()
    with pytest.raises(InvalidConfiguration, match="closed"):
        disk.read(0, 1)


def test_a_damaged_map_is_damaged_state(tmp_path: Path) -> None:
    """A flipped byte in the map: reopening is DamagedState naming the map."""
    with create(tmp_path) as disk:
        disk.write(0, b"x")
    path = tmp_path / "os.map"
    content = bytearray(path.read_bytes())
    content[12] ^= 0x40
    path.write_bytes(bytes(content))
    with pytest.raises(DamagedState, match=r"os\.map"):
        reopen(tmp_path)


@pytest.mark.parametrize("size", [0, SIZE - 1, SIZE + 1])
def test_a_mis_sized_or_missing_overlay_is_damaged_state(
    tmp_path: Path, size: int
) -> None:
    """An overlay missing or of another size than the disk is DamagedState."""
    create(tmp_path).close()
    overlay = tmp_path / "os.overlay"
    if size == 0:
        overlay.unlink()
    else:
        os.truncate(overlay, size)
    with pytest.raises(DamagedState, match=r"os\.overlay"):
        reopen(tmp_path)


def test_a_full_disk_is_storage_full(
    tmp_path: Path, file_size_limit: Callable[[int], AbstractContextManager[None]]
) -> None:
    """A write the filesystem refuses (EFBIG, as a full disk) is StorageFull; the
    blocks it aimed at still read the base."""
    with create(tmp_path) as disk:
        with file_size_limit(4 * BLOCK), pytest.raises(StorageFull):
            disk.write(10 * BLOCK, b"q" * BLOCK)
        assert BASE[10 * BLOCK : 11 * BLOCK] == disk.read(10 * BLOCK, BLOCK)


FIRST = {0: b"a" * BLOCK, 3: b"b" * 10}
SECOND = {1: b"c" * 20, 3: b"d" * BLOCK, 7: b"e" * 3}


def written(*steps: dict[int, bytes]) -> bytes:
    """The base with each step's writes (block -> data at its start) applied."""
    image = bytearray(BASE)
    for step in steps:
        for block, data in step.items():
            image[block * BLOCK : block * BLOCK + len(data)] = data
    return bytes(image)


def write_and_flush(disk: DifferencingDisk, step: dict[int, bytes]) -> None:
    for block, data in step.items():
        disk.write(block * BLOCK, data)
    disk.flush()


def test_flush_survives_a_power_cut_at_every_operation(tmp_path: Path) -> None:
    """Power lost before each operation of reopen, writes and flush: every block
    reads as the previous flush left it or as this one did, never otherwise."""
    counter = CountingFileSystem()
    (tmp_path / "count").mkdir()
    with create(tmp_path / "count") as disk:
        write_and_flush(disk, FIRST)
    with files.use(counter):
        disk = reopen(tmp_path / "count")
        write_and_flush(disk, SECOND)
    operations = counter.operations
    disk.close()
    assert operations >= 4
    before, after = written(FIRST), written(FIRST, SECOND)
    for crash_at in range(1, operations + 1):
        directory = tmp_path / f"cut-{crash_at}"
        directory.mkdir()
        with create(directory) as disk:
            write_and_flush(disk, FIRST)
        power = PowerLossFileSystem([directory], crash_at=crash_at)
        with files.use(power), pytest.raises(PowerCut):
            write_and_flush(reopen(directory), SECOND)  # never closed: power is off
        power.power_cut()
        with reopen(directory) as disk:
            found = disk.read(0, SIZE)
        for block in range(SIZE // BLOCK + 1):
            part = slice(block * BLOCK, (block + 1) * BLOCK)
            assert found[part] in (before[part], after[part]), (crash_at, block)
