"""Unit tests for engine.replica.undo_blocks: the blocks an undo image restores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import DamagedState, InvalidConfiguration
from engine.replica.store import ReplicaStore
from engine.replica.undo_blocks import blocks_in_undo_image
from engine.storage.block_set import BlockSet
from engine.testing import CycleSource, ManualClock

BLOCK = 4096
DISKS = {"os": 64 * BLOCK, "data": 32 * BLOCK}


def apply(store: ReplicaStore, source: CycleSource) -> None:
    """Cut the source's next cycle and apply it to the store."""
    cycle = source.cut()
    store.apply_cycle(
        cycle.cycle_id,
        dict(cycle.logs),
        epoch=cycle.epoch,
        app_consistent=False,
        expected_last_sequences=cycle.last_sequences,
    )


@pytest.fixture
def undo(tmp_path: Path) -> Path:
    """undo/1.undo of a store at point 2: it restores point 1 from cycle 2's writes."""
    store = ReplicaStore.create(tmp_path / "replicas", "vm-1", DISKS, 3, ManualClock())
    source = CycleSource(tmp_path / "inbox", DISKS)
    source.write("os", 0, b"first" * 1000)  # blocks 0-1, cycle 1
    apply(store, source)
    source.write("os", BLOCK + 10, b"over")  # block 1 again: pre-cycle data
    source.write("os", 10 * BLOCK - 1, b"xy")  # blocks 9 and 10: zeros before
    source.write("os", 40 * BLOCK, b"z" * (3 * BLOCK))  # blocks 40-42
    source.write("data", 31 * BLOCK, b"d" * BLOCK)  # the last block of 'data'
    apply(store, source)
    source.close()
    path = store.directory / "undo" / "1.undo"
    assert path.exists()
    return path


def test_the_blocks_are_those_the_cycle_wrote(undo: Path) -> None:
    """Per disk: exactly the blocks cycle 2 wrote, over data or over zeros."""
    os_blocks = blocks_in_undo_image(undo, 2, "os", BLOCK, DISKS["os"])
    data_blocks = blocks_in_undo_image(undo, 2, "data", BLOCK, DISKS["data"])
    assert BlockSet.of(DISKS["os"], BLOCK, [1, 9, 10, 40, 41, 42]) == os_blocks
    assert BlockSet.of(DISKS["data"], BLOCK, [31]) == data_blocks


def test_larger_blocks_cover_the_same_bytes(undo: Path) -> None:
    """With 64 KiB blocks the same extents fall into blocks 0 and 2."""
    blocks = blocks_in_undo_image(undo, 2, "os", 65536, DISKS["os"])
    assert list(blocks) == [0, 2]


def test_a_disk_the_image_does_not_name_is_refused(undo: Path) -> None:
    """InvalidConfiguration lists the image's disks."""
    with pytest.raises(InvalidConfiguration, match=r"choices: \['data', 'os'\]"):
        blocks_in_undo_image(undo, 2, "swap", BLOCK, DISKS["os"])


@pytest.mark.parametrize(
    ("damage", "cycle_id", "disk_size", "match"),
    [
        (lambda p: p.unlink(), 2, DISKS["os"], "is missing"),
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), 2, DISKS["os"], "trailer"),
        (lambda p: p.write_bytes(p.read_bytes()[:-30]), 2, DISKS["os"], "truncated"),
        (lambda p: None, 3, DISKS["os"], "image is for cycle_id=2, expected 3"),
        (lambda p: None, 2, 32 * BLOCK, "past its 131072 bytes"),
    ],
)
def test_damage_is_damaged_state_naming_the_image(
    undo: Path,
    damage: Callable[[Path], object],
    cycle_id: int,
    disk_size: int,
    match: str,
) -> None:
    """A store file: its damage is DamagedState (never CorruptRecord), naming it."""
    damage(undo)
    with pytest.raises(DamagedState, match=r"undo image '.*1\.undo'") as info:
        blocks_in_undo_image(undo, cycle_id, "os", BLOCK, disk_size)
    assert match in str(info.value)


def test_a_flipped_byte_is_damage(undo: Path) -> None:
    """Any extent CRC mismatch refuses the whole image: no partial set."""
    data = bytearray(undo.read_bytes())
    data[len(data) // 2] ^= 0x40
    undo.write_bytes(bytes(data))
    with pytest.raises(DamagedState, match=r"CRC32C|out of range|outside"):
        blocks_in_undo_image(undo, 2, "os", BLOCK, DISKS["os"])
