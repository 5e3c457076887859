"""Unit tests for engine.replica.point_view: an old point read through undo images."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import (
    DamagedState,
    DiskRangeError,
    InvalidConfiguration,
    RecoveryPointNotFound,
    ReplicationError,
)
from engine.replica.point_view import PointView
from engine.replica.store import ReplicaStore
from engine.testing import CycleSource, ManualClock

DISKS = {"os": 48 * 1024, "data": 16 * 1024}


@pytest.fixture
def source(tmp_path: Path) -> Iterator[CycleSource]:
    cycle_source = CycleSource(tmp_path / "source", DISKS, epoch=1)
    yield cycle_source
    cycle_source.close()


def make_store(tmp_path: Path, retention_count: int) -> ReplicaStore:
    clock = ManualClock(1_000.0)
    return ReplicaStore.create(
        tmp_path / "target", "vm-1", DISKS, retention_count, clock
    )


def apply_cycles(
    store: ReplicaStore, source: CycleSource, count: int
) -> dict[int, dict[str, bytes]]:
    """Apply ``count`` cycles of dense, overlapping writes; return each point."""
    snapshots = {}
    for _ in range(count):
        generator = random.Random(source.cycles_cut)
        for disk, size in DISKS.items():
            for _ in range(6):
                length = generator.randrange(1, 6000)
                offset = generator.randrange(0, size - length)
                data = bytes(length) if generator.random() < 0.2 else None
                source.write(disk, offset, data or generator.randbytes(length))
        cycle = source.cut()
        point = store.apply_cycle(
            cycle.cycle_id, cycle.logs, epoch=cycle.epoch, app_consistent=False
        )
        snapshots[point.recovery_point_id] = cycle.snapshot
    return snapshots


def whole(view: PointView) -> dict[str, bytes]:
    return {disk: view.read(disk, 0, size) for disk, size in DISKS.items()}


def test_every_retained_point_reads_as_materialize_gives_it(
    tmp_path: Path, source: CycleSource
) -> None:
    """A view of each point equals materialize() of it and the source at its cut."""
    store = make_store(tmp_path, 8)
    snapshots = apply_cycles(store, source, 6)
    for point in store.catalogue.recovery_point_ids:
        images = store.materialize(point, tmp_path / f"rp-{point}")
        copied = {disk: path.read_bytes() for disk, path in images.items()}
        assert snapshots[point] == copied
        assert copied == whole(PointView(store, point))


def test_any_range_reads_the_point(tmp_path: Path, source: CycleSource) -> None:
    """Random ranges (inside pieces, across them, empty) are slices of the point."""
    store = make_store(tmp_path, 8)
    snapshots = apply_cycles(store, source, 5)
    view = PointView(store, 2)
    generator = random.Random(7)
    for _ in range(300):
        disk = generator.choice(sorted(DISKS))
        offset = generator.randrange(0, DISKS[disk] + 1)
        length = generator.randrange(0, DISKS[disk] - offset + 1)
        expected = snapshots[2][disk][offset : offset + length]
        assert expected == view.read(disk, offset, length), (disk, offset, length)


def test_view_stays_right_as_cycles_are_applied(
    tmp_path: Path, source: CycleSource
) -> None:
    """Cycles applied after the view was made change nothing it reads (pinned)."""
    store = make_store(tmp_path, 2)
    snapshots = apply_cycles(store, source, 2)
    store.pin(1)
    view = PointView(store, 1)
    for _ in range(3):
        snapshots |= apply_cycles(store, source, 1)
        assert snapshots[1] == whole(view)
    statistics = view.statistics()
    expected = (1, 4, 3)
    actual = (
        statistics.recovery_point_id,
        statistics.undo_images_indexed,
        statistics.refreshes,
    )
    assert expected == actual


def test_reads_index_nothing_again(tmp_path: Path, source: CycleSource) -> None:
    """Each undo image is indexed once: reads without a new point never refresh."""
    store = make_store(tmp_path, 8)
    apply_cycles(store, source, 4)
    view = PointView(store, 1)
    before = view.statistics()
    for _ in range(5):
        whole(view)
    expected = (3, 0)
    assert expected == (before.undo_images_indexed, view.statistics().refreshes)
    assert before == view.statistics()


def test_the_newest_point_reads_the_replica(
    tmp_path: Path, source: CycleSource
) -> None:
    """A view of the newest point needs no undo image: it is the replica."""
    store = make_store(tmp_path, 3)
    snapshots = apply_cycles(store, source, 3)
    view = PointView(store, 3)
    assert (snapshots[3], 0) == (whole(view), view.statistics().undo_images_indexed)


def test_a_point_merged_away_since_is_not_found(
    tmp_path: Path, source: CycleSource
) -> None:
    """Without a pin, retention may merge the point: the next read says so."""
    store = make_store(tmp_path, 2)
    apply_cycles(store, source, 2)
    view = PointView(store, 1)
    apply_cycles(store, source, 1)
    with pytest.raises(RecoveryPointNotFound) as raised:
        view.read("os", 0, 1)
    assert "merged away since this view was made" in "".join(raised.value.__notes__)


def test_a_damaged_undo_image_is_damaged_state(
    tmp_path: Path, source: CycleSource
) -> None:
    """A flipped byte in an undo image of the chain is DamagedState naming it."""
    store = make_store(tmp_path, 4)
    apply_cycles(store, source, 3)
    path = store.directory / "undo" / "2.undo"
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))
    with pytest.raises(DamagedState, match=r"2\.undo"):
        PointView(store, 1)
    PointView(store, 3)  # the chain from 3 does not need 2.undo


def test_a_missing_undo_image_is_damaged_state(
    tmp_path: Path, source: CycleSource
) -> None:
    """A deleted undo image of the chain is DamagedState naming it."""
    store = make_store(tmp_path, 4)
    apply_cycles(store, source, 3)
    (store.directory / "undo" / "1.undo").unlink()
    with pytest.raises(DamagedState, match=r"1\.undo.*missing"):
        PointView(store, 1)


def test_bad_disks_and_ranges_are_refused(tmp_path: Path, source: CycleSource) -> None:
    """An unknown disk names the choices; a range outside the disk is refused."""
    store = make_store(tmp_path, 3)
    apply_cycles(store, source, 2)
    view = PointView(store, 1)
    with pytest.raises(InvalidConfiguration, match=r"choices: \['data', 'os'\]"):
        view.read("swap", 0, 1)
    with pytest.raises(DiskRangeError):
        view.read("data", DISKS["data"] - 1, 2)
    with pytest.raises(DiskRangeError):
        view.read("data", -1, 1)
    with pytest.raises(InvalidConfiguration, match="must be an int"):
        view.read("data", 0, "1")  # type: ignore[arg-type]


def test_an_unknown_point_is_not_found(tmp_path: Path, source: CycleSource) -> None:
    """A view of a point the catalogue lacks names the points there are."""
    store = make_store(tmp_path, 3)
    apply_cycles(store, source, 1)
    with pytest.raises(RecoveryPointNotFound, match=r"available: \[1\]"):
        PointView(store, 5)


def test_reads_refuse_while_an_apply_is_pending(
    tmp_path: Path, source: CycleSource
) -> None:
    """After an interrupted apply the view refuses, as the store does."""
    store = make_store(tmp_path, 3)
    apply_cycles(store, source, 2)
    view = PointView(store, 1)
    source.write("os", 0, b"pending")
    cycle = source.cut()

    class Stop(Exception):
        """Stands for the process dying at a crash point."""

    def stop(step: str) -> None:
        if step == "intent_written":
            raise Stop

    with pytest.raises(Stop):
        store.apply_cycle(
            cycle.cycle_id,
            cycle.logs,
            epoch=1,
            app_consistent=False,
            crash_point=stop,
        )
    with pytest.raises(ReplicationError, match=r"recover\(\) first"):
        view.read("os", 0, 1)
