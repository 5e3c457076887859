"""Unit tests for pinning a recovery point in engine.replica.store (drills)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import DamagedState, InvalidConfiguration, RecoveryPointNotFound
from engine.replica.store import ReplicaStore
from engine.storage import files
from engine.testing import (
    CountingFileSystem,
    CycleSource,
    ManualClock,
    PowerCut,
    PowerLossFileSystem,
)

DISKS = {"os": 64 * 1024, "data": 32 * 1024}
RETENTION = 2


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000.0)


@pytest.fixture
def source(tmp_path: Path) -> Iterator[CycleSource]:
    cycle_source = CycleSource(tmp_path / "source", DISKS, epoch=1)
    yield cycle_source
    cycle_source.close()


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> ReplicaStore:
    return ReplicaStore.create(tmp_path / "target", "vm-1", DISKS, RETENTION, clock)


def apply_cycles(
    store: ReplicaStore, source: CycleSource, count: int
) -> dict[int, dict[str, bytes]]:
    """Apply ``count`` cycles of random writes; return each new point's bytes."""
    snapshots = {}
    for _ in range(count):
        generator = random.Random(source.cycles_cut)
        for disk, size in DISKS.items():
            for _ in range(4):
                length = generator.randrange(1, 4096)
                offset = generator.randrange(0, size - length)
                source.write(disk, offset, generator.randbytes(length))
        cycle = source.cut()
        point = store.apply_cycle(
            cycle.cycle_id, cycle.logs, epoch=cycle.epoch, app_consistent=False
        )
        snapshots[point.recovery_point_id] = cycle.snapshot
    return snapshots


def undo_names(store: ReplicaStore) -> list[str]:
    return sorted(os.listdir(store.directory / "undo"))


def test_pinned_point_and_newer_survive_retention(
    store: ReplicaStore, source: CycleSource
) -> None:
    """While pinned, applies keep the pinned point and every newer one."""
    apply_cycles(store, source, 2)
    store.pin(1)
    apply_cycles(store, source, 3)
    expected = ((1, 2, 3, 4, 5), ["1.undo", "2.undo", "3.undo", "4.undo"])
    assert expected == (store.catalogue.recovery_point_ids, undo_names(store))


def test_points_older_than_the_pin_still_merge(
    store: ReplicaStore, source: CycleSource
) -> None:
    """Only the pinned point and newer are kept: older ones merge as before."""
    apply_cycles(store, source, 2)
    store.pin(2)
    apply_cycles(store, source, 3)
    expected = (2, 3, 4, 5)
    assert expected == store.catalogue.recovery_point_ids


def test_unpin_merges_back_to_the_retention_count(
    store: ReplicaStore, source: CycleSource, tmp_path: Path
) -> None:
    """unpin() merges down to the retention count and deletes their undo images."""
    snapshots = apply_cycles(store, source, 2)
    store.pin(1)
    snapshots |= apply_cycles(store, source, 3)
    store.unpin()
    expected = (None, (4, 5), ["4.undo"])
    actual = (store.pinned, store.catalogue.recovery_point_ids, undo_names(store))
    assert expected == actual
    images = store.materialize(4, tmp_path / "rp-4")
    assert snapshots[4] == {disk: path.read_bytes() for disk, path in images.items()}


def test_pin_is_durable_and_written_only_when_set(
    store: ReplicaStore, source: CycleSource, tmp_path: Path, clock: ManualClock
) -> None:
    """The pin is in store.json (reopen sees it); without one the field is absent."""
    apply_cycles(store, source, 1)
    path = store.directory / "store.json"
    assert "pinned_recovery_point_id" not in json.loads(path.read_bytes())
    store.pin(1)
    assert json.loads(path.read_bytes())["pinned_recovery_point_id"] == 1
    reopened = ReplicaStore.open(tmp_path / "target", "vm-1", clock)
    assert reopened.pinned == 1
    reopened.unpin()
    again = ReplicaStore.open(tmp_path / "target", "vm-1", clock)
    assert again.pinned is None
    assert "pinned_recovery_point_id" not in json.loads(path.read_bytes())


def test_a_null_pin_loads_as_none(
    store: ReplicaStore, source: CycleSource, tmp_path: Path, clock: ManualClock
) -> None:
    """A store.json whose pin is null is an unpinned store."""
    apply_cycles(store, source, 1)
    path = store.directory / "store.json"
    document = json.loads(path.read_bytes())
    document["pinned_recovery_point_id"] = None
    path.write_text(json.dumps(document))
    assert ReplicaStore.open(tmp_path / "target", "vm-1", clock).pinned is None


@pytest.mark.parametrize("pin", [7, 0, "1", True, 1.0, [1]])
def test_a_pin_naming_no_retained_point_is_damage(
    store: ReplicaStore,
    source: CycleSource,
    tmp_path: Path,
    clock: ManualClock,
    pin: object,
) -> None:
    """A pin that is not the id of a catalogued point is DamagedState on open."""
    apply_cycles(store, source, 1)
    path = store.directory / "store.json"
    document = json.loads(path.read_bytes())
    document["pinned_recovery_point_id"] = pin
    path.write_text(json.dumps(document))
    with pytest.raises(DamagedState, match="pinned_recovery_point_id"):
        ReplicaStore.open(tmp_path / "target", "vm-1", clock)


def test_pin_refuses_an_unknown_point(store: ReplicaStore, source: CycleSource) -> None:
    """Pinning a point the catalogue lacks names the points there are."""
    apply_cycles(store, source, 1)
    with pytest.raises(RecoveryPointNotFound, match=r"available: \[1\]"):
        store.pin(9)
    assert store.pinned is None


def test_one_pin_at_a_time(store: ReplicaStore, source: CycleSource) -> None:
    """Pinning the pinned point again is a no-op; another point is refused."""
    apply_cycles(store, source, 2)
    store.pin(1)
    store.pin(1)
    with pytest.raises(InvalidConfiguration, match="already has recovery point 1"):
        store.pin(2)
    assert store.pinned == 1


def test_discard_is_refused_while_pinned(
    store: ReplicaStore, source: CycleSource
) -> None:
    """discard_recovery_points names the pin and says to clean up the drill."""
    apply_cycles(store, source, 2)
    store.pin(1)
    with pytest.raises(InvalidConfiguration, match=r"point 1 is pinned.*clean up"):
        store.discard_recovery_points()
    expected = (1, 2)
    assert expected == store.catalogue.recovery_point_ids


def test_unpin_without_a_pin_changes_nothing(
    store: ReplicaStore, source: CycleSource
) -> None:
    """unpin() is idempotent: without a pin the catalogue stays."""
    apply_cycles(store, source, 3)
    store.unpin()
    store.unpin()
    expected = ((2, 3), ["2.undo"])
    assert expected == (store.catalogue.recovery_point_ids, undo_names(store))


def test_undo_chain_lists_the_images_oldest_first(
    store: ReplicaStore, source: CycleSource
) -> None:
    """undo_chain(P) names undo(P) .. undo(newest - 1) with their cycles."""
    apply_cycles(store, source, 2)
    store.pin(1)
    apply_cycles(store, source, 2)
    chain = store.undo_chain(2)
    expected = [(2, 3, "2.undo"), (3, 4, "3.undo")]
    actual = [(s.recovery_point_id, s.cycle_id, s.path.name) for s in chain]
    assert expected == actual
    assert store.undo_chain(4) == ()


def pinned_store(root: Path, clock: ManualClock) -> ReplicaStore:
    """A store at ``root`` with point 1 pinned and 4 points (retention 2)."""
    source = CycleSource(root / "source", DISKS, epoch=1)
    try:
        store = ReplicaStore.create(root / "target", "vm-1", DISKS, RETENTION, clock)
        apply_cycles(store, source, 1)
        store.pin(1)
        apply_cycles(store, source, 3)
    finally:
        source.close()
    return store


def point_bytes(store: ReplicaStore, directory: Path) -> dict[int, dict[str, bytes]]:
    """Materialize every retained point under ``directory``; return its bytes."""
    result = {}
    for point in store.catalogue.recovery_point_ids:
        images = store.materialize(point, directory / f"rp-{point}")
        result[point] = {disk: path.read_bytes() for disk, path in images.items()}
    return result


def test_unpin_survives_a_power_cut_at_every_operation(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Power lost before each operation of unpin(): the store opens pinned with
    every point, or unpinned and merged, and each retained point is exact."""
    counted = pinned_store(tmp_path / "count", clock)
    counter = CountingFileSystem()
    with files.use(counter):
        counted.unpin()
    assert counter.operations >= 3
    for crash_at in range(1, counter.operations + 1):
        root = tmp_path / f"cut-{crash_at}"
        store = pinned_store(root, clock)
        before = point_bytes(store, root / "before")
        power = PowerLossFileSystem([root / "target"], crash_at=crash_at)
        with files.use(power), pytest.raises(PowerCut):
            store.unpin()
        power.power_cut()
        reopened = ReplicaStore.open(root / "target", "vm-1", clock)
        reopened.recover()
        ids = reopened.catalogue.recovery_point_ids
        assert (reopened.pinned, ids) in {(1, (1, 2, 3, 4)), (None, (3, 4))}, crash_at
        after = point_bytes(reopened, root / "after")
        assert {point: before[point] for point in ids} == after, crash_at
        reopened.unpin()
        assert reopened.catalogue.recovery_point_ids == (3, 4)
