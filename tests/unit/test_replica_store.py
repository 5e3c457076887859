"""Unit tests for engine.replica.store: all-or-nothing cycles, points, retention."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import (
    CorruptRecord,
    DamagedState,
    DiskRangeError,
    InvalidConfiguration,
    InvalidName,
    LogMismatch,
    RecoveryPointNotFound,
    StorageFull,
)
from engine.replica.store import RecoveryAction, ReplicaStore
from engine.testing import Cycle, CycleSource, ManualClock

DISKS = {"os": 64 * 1024, "data": 32 * 1024}


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
    return ReplicaStore.create(tmp_path / "target", "vm-1", DISKS, 3, clock)


def write_some(source: CycleSource, seed: int) -> None:
    """Write a few random, overlapping extents to every disk of the source."""
    generator = random.Random(seed)
    for disk, size in DISKS.items():
        for _ in range(5):
            length = generator.randrange(1, 4096)
            offset = generator.randrange(0, size - length)
            source.write(disk, offset, generator.randbytes(length))


def replica_bytes(store: ReplicaStore) -> dict[str, bytes]:
    return {disk: store.read(disk, 0, size) for disk, size in DISKS.items()}


def apply(store: ReplicaStore, cycle: Cycle, **options: bool) -> int:
    point = store.apply_cycle(
        cycle.cycle_id,
        cycle.logs,
        epoch=cycle.epoch,
        app_consistent=options.get("app_consistent", False),
    )
    return point.recovery_point_id


def test_new_store_is_zero_and_has_no_point(store: ReplicaStore) -> None:
    """A created store holds zero-filled disks and an empty catalogue."""
    assert {d: bytes(n) for d, n in DISKS.items()} == replica_bytes(store)
    expected = ()
    assert expected == store.catalogue.points


def test_cycle_makes_every_disk_equal_the_source_cut(
    store: ReplicaStore, source: CycleSource, clock: ManualClock
) -> None:
    """Applying a cycle brings every disk to the source's bytes at the cut."""
    write_some(source, seed=1)
    cycle = source.cut()
    source.write("os", 0, b"after the cut")
    clock.advance(30)
    point = store.apply_cycle(1, cycle.logs, epoch=1, app_consistent=True)
    assert cycle.snapshot == replica_bytes(store)
    expected = (1, 1, 1_030.0, True)
    assert expected == (
        point.recovery_point_id,
        point.cycle_id,
        point.created_at,
        point.app_consistent,
    )
    assert cycle.last_sequences == dict(point.last_sequences)


def test_applied_logs_are_deleted(store: ReplicaStore, source: CycleSource) -> None:
    """A committed cycle's logs are removed from the inbox."""
    write_some(source, seed=2)
    cycle = source.cut()
    apply(store, cycle)
    assert not any(path.exists() for path in cycle.logs.values())


def test_damaged_log_on_one_disk_changes_no_disk(
    store: ReplicaStore, source: CycleSource
) -> None:
    """A damaged log on one disk refuses the cycle with every disk unchanged."""
    write_some(source, seed=3)
    first = source.cut()
    apply(store, first)
    write_some(source, seed=4)
    second = source.cut()
    damaged = bytearray(second.logs["data"].read_bytes())
    damaged[-1] ^= 0xFF
    second.logs["data"].write_bytes(damaged)
    with pytest.raises(CorruptRecord):
        apply(store, second)
    assert first.snapshot == replica_bytes(store)
    expected = (1,)
    assert expected == store.catalogue.recovery_point_ids
    assert all(path.exists() for path in second.logs.values())
    assert not os.listdir(store.directory / "undo")
    assert not (store.directory / "intent.json").exists()


def test_log_of_another_epoch_is_refused(
    store: ReplicaStore, source: CycleSource
) -> None:
    """A log from another replication epoch raises LogMismatch; nothing changes."""
    write_some(source, seed=5)
    cycle = source.cut()
    with pytest.raises(LogMismatch):
        store.apply_cycle(1, cycle.logs, epoch=2, app_consistent=False)
    assert {d: bytes(n) for d, n in DISKS.items()} == replica_bytes(store)


def test_cycle_must_name_every_disk(store: ReplicaStore, source: CycleSource) -> None:
    """A cycle without a log for each disk is refused, naming the disks."""
    cycle = source.cut()
    with pytest.raises(InvalidConfiguration, match=r"\['data', 'os'\]"):
        store.apply_cycle(1, {"os": cycle.logs["os"]}, epoch=1, app_consistent=False)


def test_skipped_cycle_is_refused_as_a_sequence_gap(
    store: ReplicaStore, source: CycleSource
) -> None:
    """A cycle whose logs do not start after the newest point's is refused."""
    write_some(source, seed=6)
    apply(store, source.cut())
    write_some(source, seed=7)
    source.cut()
    write_some(source, seed=8)
    third = source.cut()
    with pytest.raises(LogMismatch, match="expected"):
        apply(store, third)
    expected = (1,)
    assert expected == store.catalogue.recovery_point_ids


def test_log_cut_short_is_refused_with_expected_sequences(
    store: ReplicaStore, source: CycleSource
) -> None:
    """Expected last sequences catch a log cut at a record boundary."""
    source.write("os", 0, b"one")
    source.write("os", 10, b"two")
    cycle = source.cut()
    expected = dict(cycle.last_sequences)
    expected["os"] += 1
    with pytest.raises(CorruptRecord):
        store.apply_cycle(
            1,
            cycle.logs,
            epoch=1,
            app_consistent=False,
            expected_last_sequences=expected,
        )


def test_reapplying_a_committed_cycle_is_idempotent(
    store: ReplicaStore, source: CycleSource
) -> None:
    """Re-applying a committed cycle returns its point and changes no byte."""
    write_some(source, seed=9)
    cycle = source.cut()
    first = store.apply_cycle(1, cycle.logs, epoch=1, app_consistent=False)
    again = store.apply_cycle(1, cycle.logs, epoch=1, app_consistent=False)
    assert first == again
    assert cycle.snapshot == replica_bytes(store)
    expected = (1,)
    assert expected == store.catalogue.recovery_point_ids


def test_stale_cycle_no_longer_retained_is_refused(
    tmp_path: Path, source: CycleSource, clock: ManualClock
) -> None:
    """A cycle older than the newest that was merged away is refused."""
    store = ReplicaStore.create(tmp_path / "target", "vm-1", DISKS, 1, clock)
    first = source.cut()
    apply(store, first)
    apply(store, source.cut())
    with pytest.raises(InvalidConfiguration, match="cycle_id=1"):
        apply(store, first)


def test_retention_merges_the_oldest_points_away(
    store: ReplicaStore, source: CycleSource
) -> None:
    """Past the retention count the oldest points go, with their undo images."""
    for seed in range(5):
        write_some(source, seed=seed)
        apply(store, source.cut())
    expected = ((3, 4, 5), ["3.undo", "4.undo"])
    actual = (
        store.catalogue.recovery_point_ids,
        sorted(os.listdir(store.directory / "undo")),
    )
    assert expected == actual


def test_materialize_gives_each_retained_point(
    store: ReplicaStore, source: CycleSource, tmp_path: Path
) -> None:
    """Materializing each retained point gives the source's bytes at its cut."""
    snapshots = {}
    for seed in range(5):
        write_some(source, seed=seed)
        cycle = source.cut()
        snapshots[apply(store, cycle)] = cycle.snapshot
    newest = replica_bytes(store)
    for recovery_point_id in store.catalogue.recovery_point_ids:
        images = store.materialize(
            recovery_point_id, tmp_path / f"rp-{recovery_point_id}"
        )
        actual = {disk: path.read_bytes() for disk, path in images.items()}
        assert snapshots[recovery_point_id] == actual
    assert newest == replica_bytes(store)


def test_materialize_refuses_a_merged_point(
    store: ReplicaStore, source: CycleSource, tmp_path: Path
) -> None:
    """Asking for a merged-away point names the points available."""
    for seed in range(4):
        write_some(source, seed=seed)
        apply(store, source.cut())
    with pytest.raises(RecoveryPointNotFound, match=r"available: \[2, 3, 4\]"):
        store.materialize(1, tmp_path / "out")


def test_materialize_never_overwrites(
    store: ReplicaStore, source: CycleSource, tmp_path: Path
) -> None:
    """Materializing into a directory that holds the images is refused."""
    apply(store, source.cut())
    store.materialize(1, tmp_path / "out")
    with pytest.raises(InvalidConfiguration, match="already holds"):
        store.materialize(1, tmp_path / "out")


def test_reopen_keeps_the_catalogue(
    store: ReplicaStore, source: CycleSource, tmp_path: Path, clock: ManualClock
) -> None:
    """A reopened store has the same points and reports nothing to recover."""
    for seed in range(2):
        write_some(source, seed=seed)
        apply(store, source.cut(), app_consistent=seed == 0)
    reopened = ReplicaStore.open(tmp_path / "target", "vm-1", clock)
    assert store.catalogue == reopened.catalogue
    expected = (False, RecoveryAction.NONE, 1)
    actual = (
        reopened.pending_recovery,
        reopened.recover().action,
        reopened.catalogue.latest_app_consistent().recovery_point_id,
    )
    assert expected == actual


def test_interrupted_apply_with_intact_logs_rolls_forward(
    store: ReplicaStore, source: CycleSource, tmp_path: Path, clock: ManualClock
) -> None:
    """An apply stopped after its intent is finished by recover() (roll forward)."""
    write_some(source, seed=11)
    cycle = source.cut()

    class Stop(Exception):
        """Stands for the process dying at a crash point."""

    def stop_after_first_disk(step: str) -> None:
        if step == "disk_applied:data":
            raise Stop

    with pytest.raises(Stop):
        store.apply_cycle(
            1,
            cycle.logs,
            epoch=1,
            app_consistent=False,
            crash_point=stop_after_first_disk,
        )
    reopened = ReplicaStore.open(tmp_path / "target", "vm-1", clock)
    report = reopened.recover()
    expected = (RecoveryAction.ROLLED_FORWARD, 1)
    assert expected == (report.action, report.cycle_id)
    assert cycle.snapshot == replica_bytes(reopened)


def test_interrupted_apply_with_lost_log_rolls_back(
    store: ReplicaStore, source: CycleSource, tmp_path: Path, clock: ManualClock
) -> None:
    """An apply whose log vanished before restart is rolled back with the undo."""
    write_some(source, seed=12)
    first = source.cut()
    apply(store, first)
    write_some(source, seed=13)
    second = source.cut()

    class Stop(Exception):
        """Stands for the process dying at a crash point."""

    def stop_after_first_disk(step: str) -> None:
        if step == "disk_applied:data":
            raise Stop

    with pytest.raises(Stop):
        store.apply_cycle(
            2,
            second.logs,
            epoch=1,
            app_consistent=False,
            crash_point=stop_after_first_disk,
        )
    second.logs["os"].unlink()
    reopened = ReplicaStore.open(tmp_path / "target", "vm-1", clock)
    report = reopened.recover()
    assert first.snapshot == replica_bytes(reopened)
    expected = (RecoveryAction.ROLLED_BACK, (1,))
    actual = (report.action, reopened.catalogue.recovery_point_ids)
    assert expected == actual
    assert not os.listdir(reopened.directory / "undo")


def test_discard_recovery_points_keeps_the_replica(
    store: ReplicaStore, source: CycleSource
) -> None:
    """Discarding every point (a commit) keeps the replica and never reuses ids."""
    for seed in range(2):
        write_some(source, seed=seed)
        apply(store, source.cut())
    before = replica_bytes(store)
    store.discard_recovery_points()
    assert ((), before) == (store.catalogue.points, replica_bytes(store))
    write_some(source, seed=3)
    expected = 3
    assert expected == apply(store, source.cut())


def test_initial_copy_seeds_the_replica(
    store: ReplicaStore, source: CycleSource, tmp_path: Path
) -> None:
    """Installed initial-copy images become the replica the first cycle builds on."""
    write_some(source, seed=20)
    images = {}
    for disk, image in source.images.items():
        images[disk] = tmp_path / f"{disk}.img"
        images[disk].write_bytes(image)
    source.cut()
    store.install_initial_copy(images)
    write_some(source, seed=21)
    cycle = source.cut()
    store.apply_cycle(2, cycle.logs, epoch=1, app_consistent=False)
    assert cycle.snapshot == replica_bytes(store)


def test_initial_copy_of_the_wrong_size_is_refused(
    store: ReplicaStore, tmp_path: Path
) -> None:
    """An initial copy whose sizes differ from the disks is refused, naming both."""
    image = tmp_path / "os.img"
    image.write_bytes(b"short")
    with pytest.raises(InvalidConfiguration, match="must match the disks"):
        store.install_initial_copy({"os": image})


def test_statistics_count_points_and_bytes(
    store: ReplicaStore, source: CycleSource
) -> None:
    """statistics() reports points, retention and applied bytes."""
    source.write("os", 0, b"x" * 100)
    source.write("data", 0, b"y" * 50)
    apply(store, source.cut())
    statistics = store.statistics()
    expected = (2, 1, 1, 3, 1, 150)
    assert expected == (
        statistics.disk_count,
        statistics.recovery_point_count,
        statistics.latest_recovery_point_id,
        statistics.retention_count,
        statistics.cycles_applied,
        statistics.bytes_applied,
    )


def test_read_outside_the_disk_is_refused(store: ReplicaStore) -> None:
    """read() past the end of a disk raises DiskRangeError naming the size."""
    with pytest.raises(DiskRangeError, match=str(DISKS["data"])):
        store.read("data", DISKS["data"] - 1, 2)


def test_unknown_disk_names_the_choices(store: ReplicaStore) -> None:
    """read() of an unknown disk lists the disks there are."""
    with pytest.raises(InvalidConfiguration, match=r"choices: \['data', 'os'\]"):
        store.read("swap", 0, 1)


def test_create_refuses_an_existing_store(
    store: ReplicaStore, tmp_path: Path, clock: ManualClock
) -> None:
    """Creating a store twice is refused."""
    with pytest.raises(InvalidConfiguration, match="already exists"):
        ReplicaStore.create(tmp_path / "target", "vm-1", DISKS, 3, clock)


@pytest.mark.parametrize(
    ("disks", "retention_count", "match"),
    [
        ({}, 3, "at least one disk"),
        ({"os": 0}, 3, "from 1 to"),
        ({"os": True}, 3, "must be an int"),
        ({"os": 4096}, 0, "retention_count=0"),
    ],
)
def test_create_validates_its_arguments(
    tmp_path: Path,
    clock: ManualClock,
    disks: dict[str, int],
    retention_count: int,
    match: str,
) -> None:
    """Bad disks or retention are refused with a message naming the argument."""
    with pytest.raises(InvalidConfiguration, match=match):
        ReplicaStore.create(tmp_path, "vm-1", disks, retention_count, clock)


def test_hostile_vm_name_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    """A VM name that could escape the storage root is refused."""
    with pytest.raises(InvalidName):
        ReplicaStore.create(tmp_path, "../escape", DISKS, 3, clock)


def test_open_refuses_a_damaged_store_file(
    store: ReplicaStore, tmp_path: Path, clock: ManualClock
) -> None:
    """A store file that is not JSON raises DamagedState naming the file."""
    (store.directory / "store.json").write_bytes(b"\x00garbage")
    with pytest.raises(DamagedState, match=r"store\.json"):
        ReplicaStore.open(tmp_path / "target", "vm-1", clock)


def test_open_refuses_a_newer_store_format(
    store: ReplicaStore, tmp_path: Path, clock: ManualClock
) -> None:
    """A store written by a newer format version is refused, naming both versions."""
    path = store.directory / "store.json"
    document = json.loads(path.read_bytes())
    document["format_version"] = 99
    path.write_text(json.dumps(document))
    with pytest.raises(DamagedState, match="format_version=99"):
        ReplicaStore.open(tmp_path / "target", "vm-1", clock)


# -- storage full, on a real 1 MiB tmpfs -----------------------------------------------


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """Mount a 1 MiB tmpfs for the test, or skip when mounting is not permitted."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot build a small filesystem")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"mount -t tmpfs not permitted here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def free_bytes(path: Path) -> int:
    status = os.statvfs(path)
    return status.f_bavail * status.f_frsize


def make_two_cycles(
    store_root: Path, source_directory: Path, clock: ManualClock
) -> tuple[ReplicaStore, Cycle, Cycle]:
    """Create a store on ``store_root`` with cycle 1 applied and cycle 2 cut."""
    disks = {"os": 256 * 1024, "data": 128 * 1024}
    source = CycleSource(source_directory, disks)
    try:
        store = ReplicaStore.create(store_root, "vm-1", disks, 3, clock)
        generator = random.Random(7)
        source.write("os", 0, generator.randbytes(64 * 1024))
        first = source.cut()
        store.apply_cycle(1, first.logs, epoch=1, app_consistent=False)
        source.write("os", 32 * 1024, generator.randbytes(96 * 1024))
        source.write("data", 4096, generator.randbytes(100 * 1024))
        return store, first, source.cut()
    finally:
        source.close()


def current_bytes(store: ReplicaStore) -> dict[str, bytes]:
    return {disk: store.read(disk, 0, size) for disk, size in store.disks.items()}


def fill(filesystem: Path, pages_left: int) -> Path:
    """Allocate a filler file leaving ``pages_left`` pages of 4 KiB free."""
    filler = filesystem / "filler"
    with filler.open("ab") as handle:
        size = free_bytes(filesystem) - pages_left * 4096
        if size > 0:
            os.posix_fallocate(handle.fileno(), handle.tell(), size)
    return filler


def test_storage_full_while_preparing_leaves_the_previous_point(
    small_filesystem: Path, tmp_path: Path, clock: ManualClock
) -> None:
    """With the target full before an apply, at every size, the replica stays put."""
    store, first, second = make_two_cycles(small_filesystem, tmp_path / "src", clock)
    refusals = 0
    for pages_left in range(256):
        filler = fill(small_filesystem, pages_left)
        try:
            store.apply_cycle(2, second.logs, epoch=1, app_consistent=False)
        except StorageFull:
            refusals += 1
            assert first.snapshot == current_bytes(store)
            expected = (1,)
            assert expected == store.catalogue.recovery_point_ids
            assert not (store.directory / "intent.json").exists()
            assert not os.listdir(store.directory / "undo")
        else:
            break
        finally:
            filler.unlink()
    assert second.snapshot == current_bytes(store)
    assert refusals > 10


@pytest.mark.parametrize(
    "step",
    ["verified", "undo_written", "intent_written", "disk_applied:os", "before_commit"],
)
def test_storage_full_during_an_apply_rolls_back(
    small_filesystem: Path, tmp_path: Path, clock: ManualClock, step: str
) -> None:
    """The target filling up at any step of an apply leaves the previous point."""
    store, first, second = make_two_cycles(small_filesystem, tmp_path / "src", clock)

    def fill_up(reached: str) -> None:
        if reached == step:
            fill(small_filesystem, pages_left=0)

    with pytest.raises(StorageFull, match="previous recovery point"):
        store.apply_cycle(
            2, second.logs, epoch=1, app_consistent=False, crash_point=fill_up
        )
    assert first.snapshot == current_bytes(store)
    expected = (1,)
    assert expected == store.catalogue.recovery_point_ids
    assert not (store.directory / "intent.json").exists()
    (small_filesystem / "filler").unlink()
    store.apply_cycle(2, second.logs, epoch=1, app_consistent=False)
    assert second.snapshot == current_bytes(store)
