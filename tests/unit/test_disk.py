"""Unit tests for engine/disk.py: the raw, sparse, bounds-checked virtual disk."""

from __future__ import annotations

import os

import pytest

from engine.errors import DiskRangeError, InvalidConfiguration, StorageFull
from engine.storage.disk import (
    BLOCK_BYTES_DEFAULT,
    BLOCK_BYTES_MAX,
    BLOCK_BYTES_MIN,
    VirtualDisk,
)

MIB = 1024 * 1024


@pytest.fixture
def disk(tmp_path):
    with VirtualDisk.create(tmp_path / "d.img", MIB) as opened:
        yield opened


def test_create_makes_a_sparse_zero_filled_file(tmp_path):
    """A new disk has its full size but allocates (almost) nothing."""
    path = tmp_path / "d.img"
    with VirtualDisk.create(path, 64 * MIB) as disk:
        expected = 64 * MIB
        assert expected == disk.size_bytes
        assert bytes(4096) == disk.read(32 * MIB, 4096)
    status = os.stat(path)
    expected = 64 * MIB
    assert expected == status.st_size
    assert status.st_blocks * 512 < MIB


def test_write_then_read_round_trips(disk):
    """Bytes written at an offset read back at that offset."""
    disk.write(1000, b"hello")
    expected = b"hello"
    assert expected == disk.read(1000, 5)
    expected = b"\0hello\0"
    assert expected == disk.read(999, 7)


def test_accepts_bytearray_and_memoryview(disk):
    """Any bytes-like buffer can be written."""
    disk.write(0, bytearray(b"ab"))
    disk.write(2, memoryview(b"cd"))
    expected = b"abcd"
    assert expected == disk.read(0, 4)


def test_open_takes_size_from_file_and_sees_data(tmp_path):
    """Reopening finds the size and the bytes written before."""
    path = tmp_path / "d.img"
    with VirtualDisk.create(path, MIB, block_bytes=512) as disk:
        disk.write(MIB - 3, b"end")
        disk.flush()
    with VirtualDisk.open(path, block_bytes=512) as disk:
        expected = (MIB, 512, 2048)
        assert expected == (disk.size_bytes, disk.block_bytes, disk.block_count)
        expected = b"end"
        assert expected == disk.read(MIB - 3, 3)


@pytest.mark.parametrize(
    "block_bytes",
    [0, 256, 1000, 4097, 2 * BLOCK_BYTES_MAX, -4096, True, "4096", 4096.0],
)
def test_block_bytes_must_be_a_power_of_two_in_range(tmp_path, block_bytes):
    """Block sizes outside 512..1 MiB or not powers of two are refused."""
    with pytest.raises(InvalidConfiguration, match="power of two between 512"):
        VirtualDisk.create(tmp_path / "d.img", MIB, block_bytes=block_bytes)
    assert not (tmp_path / "d.img").exists()


@pytest.mark.parametrize("block_bytes", [BLOCK_BYTES_MIN, BLOCK_BYTES_MAX])
def test_block_bytes_limits_are_accepted(tmp_path, block_bytes):
    """Both ends of the block size range are valid."""
    with VirtualDisk.create(tmp_path / "d.img", MIB, block_bytes=block_bytes) as disk:
        assert block_bytes == disk.block_bytes


@pytest.mark.parametrize("size_bytes", [0, -4096, 4095, MIB + 1])
def test_size_must_be_positive_multiple_of_block(tmp_path, size_bytes):
    """A size that is not a positive multiple of the block size is refused."""
    with pytest.raises(InvalidConfiguration, match="positive multiple"):
        VirtualDisk.create(tmp_path / "d.img", size_bytes)


def test_create_refuses_to_overwrite(tmp_path):
    """An existing file is never overwritten by create."""
    path = tmp_path / "d.img"
    path.write_bytes(b"precious")
    with pytest.raises(InvalidConfiguration, match="already exists"):
        VirtualDisk.create(path, MIB)
    expected = b"precious"
    assert expected == path.read_bytes()


def test_open_missing_file_is_refused(tmp_path):
    """Opening a disk that does not exist says so."""
    with pytest.raises(InvalidConfiguration, match="does not exist"):
        VirtualDisk.open(tmp_path / "missing.img")


def test_open_refuses_size_not_multiple_of_block(tmp_path):
    """An image whose size is not whole blocks is refused."""
    path = tmp_path / "odd.img"
    path.write_bytes(b"x" * 1000)
    with pytest.raises(InvalidConfiguration, match="size is 1000"):
        VirtualDisk.open(path)


@pytest.mark.parametrize(
    ("offset", "data"),
    [(-1, b"x"), (MIB, b"x"), (MIB - 1, b"xy"), (0, b"")],
)
def test_write_out_of_range_is_refused_and_changes_nothing(tmp_path, offset, data):
    """Writes outside the disk (or empty) raise DiskRangeError and leave the file."""
    path = tmp_path / "d.img"
    with (
        VirtualDisk.create(path, MIB) as disk,
        pytest.raises(DiskRangeError, match="offset \\+ length <= size_bytes"),
    ):
        disk.write(offset, data)
    expected = MIB
    assert expected == os.stat(path).st_size


@pytest.mark.parametrize(("offset", "length"), [(-1, 1), (0, 0), (0, -1), (MIB, 1)])
def test_read_out_of_range_is_refused(disk, offset, length):
    """Reads outside the disk, or of no bytes, raise DiskRangeError."""
    with pytest.raises(DiskRangeError):
        disk.read(offset, length)


@pytest.mark.parametrize("offset", ["0", 1.0, True, None])
def test_offset_must_be_an_int(disk, offset):
    """A non-int offset is refused with its type in the message."""
    with pytest.raises(InvalidConfiguration, match="must be an int"):
        disk.write(offset, b"x")


def test_data_must_be_bytes_like(disk):
    """A str is not data."""
    with pytest.raises(InvalidConfiguration, match="got str"):
        disk.write(0, "text")


def test_closed_disk_refuses_io_and_close_is_idempotent(tmp_path):
    """After close, I/O raises a typed error; closing twice is fine."""
    disk = VirtualDisk.create(tmp_path / "d.img", MIB)
    disk.close()
    disk.close()
    assert disk.closed
    with pytest.raises(InvalidConfiguration, match="is closed"):
        disk.read(0, 1)


def test_default_block_size_is_a_page(disk):
    """The default block is 4 KiB."""
    assert BLOCK_BYTES_DEFAULT == disk.block_bytes == 4096


def test_write_when_storage_is_full_raises_storage_full(tmp_path, file_size_limit):
    """A write the storage cannot hold raises StorageFull and writes nothing."""
    with VirtualDisk.create(tmp_path / "d.img", MIB) as disk:
        with file_size_limit(64 * 1024), pytest.raises(StorageFull, match="EFBIG"):
            disk.write(512 * 1024, b"x" * 4096)
        assert bytes(4096) == disk.read(512 * 1024, 4096)


def test_write_some_reports_a_partial_write(tmp_path, file_size_limit):
    """When the storage fills part-way, write_some says how much landed."""
    with VirtualDisk.create(tmp_path / "d.img", MIB) as disk:
        with file_size_limit(4096):
            written = disk.write_some(4000, b"y" * 200)
        expected = 96
        assert expected == written
        assert b"y" * 96 + bytes(104) == disk.read(4000, 200)


def test_write_raises_when_only_part_landed(tmp_path, file_size_limit):
    """write (all or raise) turns a partial write into StorageFull."""
    with (
        VirtualDisk.create(tmp_path / "d.img", MIB) as disk,
        file_size_limit(4096),
        pytest.raises(StorageFull, match="only 96"),
    ):
        disk.write(4000, b"y" * 200)
