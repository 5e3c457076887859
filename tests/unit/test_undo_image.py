"""Unit tests for engine.replica.undo_image: round trip, zeros, strict reading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import CorruptRecord
from engine.replica.undo_image import (
    KIND_DATA,
    KIND_ZEROS,
    UndoExtent,
    UndoExtentLocation,
    apply_undo_image,
    locate_undo_extents,
    merge_regions,
    read_undo_image,
    verify_undo_image,
    write_undo_image,
)

EXTENTS = [("data", 4096, bytes(512)), ("os", 0, b"MBR!"), ("os", 100, b"x" * 300)]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "5.undo"
    with path.open("wb") as target:
        write_undo_image(target, cycle_id=7, disks=["data", "os"], extents=EXTENTS)
    return path


def test_round_trip(image: Path) -> None:
    """Extents read back equal those written, zeros included."""
    expected = EXTENTS
    actual = [
        (extent.disk, extent.offset, extent.payload())
        for extent in read_undo_image(image, cycle_id=7)
    ]
    assert expected == actual


def test_zero_extent_is_stored_without_data(image: Path) -> None:
    """A region of zeros is stored as a length only."""
    expected = UndoExtent("data", 4096, 512, None)
    assert expected == next(read_undo_image(image, cycle_id=7))


def test_verify_counts_the_bytes_covered(image: Path) -> None:
    """verify_undo_image() returns the bytes the extents cover."""
    expected = 512 + 4 + 300
    assert expected == verify_undo_image(image, cycle_id=7)


def test_apply_writes_every_extent(image: Path, tmp_path: Path) -> None:
    """apply_undo_image() writes the pre-cycle bytes into each disk image."""
    disks = {"data": tmp_path / "data.img", "os": tmp_path / "os.img"}
    disks["data"].write_bytes(b"\xff" * 8192)
    disks["os"].write_bytes(b"\xff" * 1024)
    apply_undo_image(image, cycle_id=7, images=disks)
    expected_os = b"MBR!" + b"\xff" * 96 + b"x" * 300 + b"\xff" * 624
    expected = (b"\xff" * 4096 + bytes(512) + b"\xff" * 3584, expected_os)
    assert expected == (disks["data"].read_bytes(), disks["os"].read_bytes())


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda data: data[:-1], "truncated trailer"),
        (lambda data: data[:60], "truncated|cut short"),
        (lambda data: data + b"\0", "after the trailer"),
        (lambda data: data[:72] + bytes([data[72] ^ 1]) + data[73:], "CRC32C"),
        (lambda data: b"NOTUNDO!" + data[8:], "magic"),
    ],
)
def test_damaged_image_is_refused(
    image: Path, damage: Callable[[bytes], bytes], match: str
) -> None:
    """Every kind of damage raises CorruptRecord naming the reason."""
    image.write_bytes(damage(image.read_bytes()))
    with pytest.raises(CorruptRecord, match=match):
        verify_undo_image(image, cycle_id=7)


def test_damaged_image_writes_nothing(image: Path, tmp_path: Path) -> None:
    """A damaged image is refused before any byte reaches the disks."""
    disks = {"data": tmp_path / "data.img", "os": tmp_path / "os.img"}
    for path in disks.values():
        path.write_bytes(b"\xff" * 8192)
    image.write_bytes(image.read_bytes()[:-1])
    with pytest.raises(CorruptRecord):
        apply_undo_image(image, cycle_id=7, images=disks)
    expected = b"\xff" * 8192
    assert [expected, expected] == [path.read_bytes() for path in disks.values()]


def test_locate_gives_where_each_extent_is(image: Path) -> None:
    """locate_undo_extents() names each extent and where its bytes lie (the
    worked example's offsets: data after each 23-byte extent head)."""
    expected = [
        UndoExtentLocation("data", 4096, 512, KIND_ZEROS, None),
        UndoExtentLocation("os", 0, 4, KIND_DATA, 0x35 + 19),
        UndoExtentLocation("os", 100, 300, KIND_DATA, 0x35 + 19 + 4 + 19),
    ]
    locations = locate_undo_extents(image, cycle_id=7)
    assert expected == locations
    position = 0x35 + 19
    expected_data = b"MBR!"
    assert expected_data == image.read_bytes()[position : position + 4]


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda data: data[:-1], "truncated trailer"),
        (lambda data: data[:72] + bytes([data[72] ^ 1]) + data[73:], "CRC32C"),
    ],
)
def test_locate_checks_every_crc_and_the_trailer(
    image: Path, damage: Callable[[bytes], bytes], match: str
) -> None:
    """A damaged image gives no locations: CorruptRecord naming the reason."""
    image.write_bytes(damage(image.read_bytes()))
    with pytest.raises(CorruptRecord, match=match):
        locate_undo_extents(image, cycle_id=7)


def test_image_of_another_cycle_is_refused(image: Path) -> None:
    """Reading an image for the wrong cycle names both cycles."""
    with pytest.raises(CorruptRecord, match="cycle_id=7, expected 8"):
        verify_undo_image(image, cycle_id=8)


def test_merge_regions_unions_overlaps() -> None:
    """Overlapping and touching regions merge; disjoint ones stay apart."""
    expected = [(0, 30), (40, 50)]
    assert expected == merge_regions([(20, 30), (0, 10), (10, 25), (40, 50)])
