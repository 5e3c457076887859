"""Every failover kind on real disk images, through the model, to failback.

Each write carries its version (a distinct byte pattern per write, on its own block),
so a test knows exactly which writes each copy holds and which a failover lost.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import (
    RecoveryPointNotFound,
    TransitionNotAllowed,
)
from engine.orchestration.engine import ReplicationEngine

BLOCK = 4096
BLOCKS = 64
DISKS = {"os": BLOCKS * BLOCK, "data": BLOCKS * BLOCK}


class Workload:
    """Versioned writes: write ``n`` puts pattern ``n`` on a block of its own."""

    def __init__(self, engine: ReplicationEngine, vm: str = "web") -> None:
        self.engine = engine
        self.vm = vm
        self.version = 0
        self.written: list[tuple[str, int, bytes]] = []

    def write(self, count: int = 1, *, site: str | None = None) -> list[int]:
        versions = []
        for _ in range(count):
            self.version += 1
            disk = "os" if self.version % 2 else "data"
            block = self.version % BLOCKS
            data = self.version.to_bytes(4, "little") * (BLOCK // 4)
            self.engine.write(self.vm, disk, block * BLOCK, data, site=site)
            self.written.append((disk, block * BLOCK, data))
            versions.append(self.version)
        return versions


def image(root: Path, vm: str, disk: str) -> bytes:
    return (root / "vms" / vm / f"{disk}.img").read_bytes()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ReplicationEngine]:
    opened = ReplicationEngine.open(tmp_path / "p", tmp_path / "s")
    opened.create_vm("web", DISKS)
    opened.enable_protection("web")
    yield opened
    opened.close()


def snapshot(engine: ReplicationEngine) -> dict[str, bytes]:
    return {disk: engine.read("web", disk, 0, size) for disk, size in DISKS.items()}


def test_a_drill_reads_its_point_and_never_touches_the_replica(
    engine: ReplicationEngine, tmp_path: Path
) -> None:
    """Test failover from an older point: its bytes, cycles go on, writes stay."""
    work = Workload(engine)
    work.write(3)
    engine.replicate("web")
    older = snapshot(engine)
    point = engine.status("web").recovery_points[-1].recovery_point_id
    work.write(3)
    engine.replicate("web")
    drill = engine.start_test_failover("web", point)
    assert drill.recovery_point_id == point
    test_vm = engine.test_vm("web")
    assert {d: test_vm.read(d, 0, s) for d, s in DISKS.items()} == older
    test_vm.write("os", 0, b"T" * BLOCK)
    work.write(2)
    assert engine.replicate("web") is not None  # cycles go on during the drill
    assert test_vm.read("os", 0, BLOCK) == b"T" * BLOCK
    replica = engine.transport.store("web")  # type: ignore[attr-defined]
    assert replica.read("os", 0, BLOCK) != b"T" * BLOCK
    assert {d: replica.read(d, 0, s) for d, s in DISKS.items()} == snapshot(engine)
    assert engine.status("web").phase == "test_failover"
    with pytest.raises(TransitionNotAllowed, match="clean it up first"):
        engine.planned_failover("web")
    engine.cleanup_test_failover("web")
    assert not (tmp_path / "s" / "drills" / "web").exists()
    assert engine.status("web").phase == "protected"
    with pytest.raises(TransitionNotAllowed):
        engine.test_vm("web")


def test_planned_failover_commit_reverse_and_failback_lose_nothing(
    engine: ReplicationEngine, tmp_path: Path
) -> None:
    """Zero loss byte for byte; reverse ships deltas only; failback ends on the
    primary holding exactly what the VM last wrote."""
    work = Workload(engine)
    work.write(5)
    engine.replicate("web")
    work.write(4)  # left for the final sync
    before = snapshot(engine)
    report = engine.planned_failover("web")
    assert report.phase == "failed_over"
    assert report.loss is not None
    assert report.loss.exact
    assert report.loss.writes_lost == 0
    with pytest.raises(TransitionNotAllowed):
        work.write()  # the workload reaches the replica VM only after commit
    with pytest.raises(TransitionNotAllowed, match="planned"):
        engine.change_recovery_point("web", 1)
    assert snapshot(engine) == before  # the replica VM reads the final point
    commit = engine.commit("web")
    assert commit.active_site == "secondary"
    assert {d: image(tmp_path / "s", "web", d) for d in DISKS} == before
    assert engine.status("web").recovery_points == ()
    work.write(3)  # the workload now writes at the secondary (tracked)
    reverse = engine.reverse_replication("web")
    assert reverse.phase == "reverse_replicating"
    assert reverse.resync is None  # deltas only: no block compared
    assert reverse.first_recovery_point_id is not None  # decision 15
    status = engine.status("web")
    assert status.protected
    assert status.active_site == "secondary"
    work.write(2)
    engine.replicate("web")
    last = snapshot(engine)
    primary_replica = engine.transport_towards("primary").store("web")  # type: ignore[attr-defined]
    assert {d: primary_replica.read(d, 0, s) for d, s in DISKS.items()} == last
    # Failback: planned failover back, commit, reverse replication again.
    engine.planned_failover("web")
    engine.commit("web")
    back = engine.reverse_replication("web")
    assert back.phase == "protected"
    assert back.resync is None
    assert engine.status("web").active_site == "primary"
    assert {d: image(tmp_path / "p", "web", d) for d in DISKS} == last
    work.write(1)
    engine.replicate("web")
    replica = engine.transport.store("web")  # type: ignore[attr-defined]
    assert {d: replica.read(d, 0, s) for d, s in DISKS.items()} == snapshot(engine)


def lost_versions(work: Workload, engine: ReplicationEngine) -> int:
    """The writes (versions) the active copy does not hold."""
    lost = 0
    for disk, offset, data in work.written:
        if engine.read("web", disk, offset, BLOCK) != data:
            lost += 1
    return lost


def test_unplanned_failover_with_the_source_down_reports_a_bound_then_the_exact_loss(
    engine: ReplicationEngine, tmp_path: Path
) -> None:
    """Source down: a lower bound, read from nothing at the source (its root is moved
    away during the failover); back, reconciliation counts the exact loss, which
    equals the writes really lost; reverse resynchronises only what diverged."""
    work = Workload(engine)
    work.write(4)
    engine.replicate("web")
    engine.flush()
    unshipped = work.write(3)
    engine.flush()
    engine.crash_site("primary")
    hidden = tmp_path / "p-unreachable"
    (tmp_path / "p").rename(hidden)  # any read of the primary would now fail
    try:
        report = engine.unplanned_failover("web")
        assert report.phase == "failed_over"
        assert report.loss is not None
        assert not report.loss.exact
        assert report.loss.writes_lost is None
        assert report.loss.writes_lost_at_least == 0
        assert "lower bound" in report.loss.note
        engine.commit("web")
        status = engine.status("web")
        assert status.active_site == "secondary"
        assert not status.protected
    finally:
        hidden.rename(tmp_path / "p")
    recovered = engine.recover_site("primary")
    assert "loss reconciled" in recovered["web"]
    loss = engine.status("web").loss
    assert loss is not None
    assert loss.exact
    really_lost = lost_versions(work, engine)
    assert really_lost == len(unshipped) == loss.writes_lost
    assert loss.bytes_lost == len(unshipped) * BLOCK
    assert loss.window_start is not None
    assert loss.window_end is not None
    reverse = engine.reverse_replication("web")
    assert reverse.resync is not None
    assert reverse.phase == "reverse_replicating"
    # Only the candidate blocks travelled (a handful, not the disks).
    assert reverse.resync.blocks_sent == len(unshipped)  # each on a block of its own
    assert not reverse.resync.full_comparison
    assert reverse.resync.blocks_compared < 2 * BLOCKS // 4
    primary_replica = engine.transport_towards("primary").store("web")  # type: ignore[attr-defined]
    assert {d: primary_replica.read(d, 0, s) for d, s in DISKS.items()} == snapshot(
        engine
    )


def test_an_older_point_rolls_back_and_the_report_counts_it(
    engine: ReplicationEngine,
) -> None:
    """Failover from an older point: the rolled-back writes are known at once (the
    target holds them); change of point before commit moves the figure."""
    work = Workload(engine)
    work.write(2)
    engine.replicate("web")
    first = engine.status("web").recovery_points[-1].recovery_point_id
    work.write(3)
    engine.replicate("web")
    report = engine.unplanned_failover("web", first)
    assert report.recovery_point_id == first
    assert report.loss is not None
    # Source reachable but still running (no shutdown asked): a bound.
    assert report.loss.writes_lost_at_least == 3
    assert not report.loss.exact
    newest = engine.status("web").recovery_points[-1].recovery_point_id
    moved = engine.change_recovery_point("web", newest)
    assert moved.loss is not None
    assert moved.loss.writes_lost_at_least == 0
    with pytest.raises(RecoveryPointNotFound):
        engine.change_recovery_point("web", 999)


def test_a_failed_shutdown_leaves_two_copies_and_the_old_ones_writes_are_lost(
    tmp_path: Path,
) -> None:
    """The guest refuses: the failover goes on, the old copy keeps writing; its
    writes are counted lost at reconciliation and never merged."""
    refuse: dict[str, Any] = {"refuse": True}
    engine = ReplicationEngine.open(
        tmp_path / "p", tmp_path / "s",
        guest_shutdown=lambda vm, site: not refuse["refuse"],
    )  # fmt: skip
    with engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        work = Workload(engine)
        work.write(3)
        engine.replicate("web")
        report = engine.unplanned_failover("web", shut_down_first=True)
        assert report.shutdown == "refused"
        assert report.loss is not None
        assert not report.loss.exact
        assert engine.status("web").running_at == ("primary", "secondary")
        stale = work.write(2, site="primary")  # the divergent copy takes writes
        engine.commit("web")
        reverse = engine.reverse_replication("web")
        assert reverse.loss is not None
        assert reverse.loss.exact
        assert reverse.loss.writes_lost == len(stale) == lost_versions(work, engine)
        assert engine.status("web").running_at == ("secondary",)
        with pytest.raises(TransitionNotAllowed):
            work.write(site="primary")


def test_unplanned_failover_with_a_shutdown_and_final_sync_loses_nothing(
    engine: ReplicationEngine,
) -> None:
    """Shutdown and final sync both work: exact, zero loss; still unplanned (the
    VM is not protected after it, and reverse resynchronises)."""
    work = Workload(engine)
    work.write(3)
    engine.replicate("web")
    work.write(2)
    before = snapshot(engine)
    report = engine.unplanned_failover("web", shut_down_first=True)
    assert report.shutdown == "complete"
    assert report.loss is not None
    assert report.loss.exact
    assert report.loss.writes_lost == 0
    assert snapshot(engine) == before
    engine.commit("web")
    assert not engine.status("web").protected


def test_cancel_stops_replication_for_good_until_disable_and_enable(
    engine: ReplicationEngine,
) -> None:
    """A cancelled failover: every replicate or resume is refused with the model's
    message; disable then enable starts afresh."""
    work = Workload(engine)
    work.write(2)
    engine.replicate("web")
    prepared = engine.planned_failover("web", then_fail_over=False)
    assert prepared.phase == "failover_prepared"
    with pytest.raises(TransitionNotAllowed):
        work.write()  # shut down for the failover
    engine.cancel_failover("web")
    status = engine.status("web")
    assert status.phase == "replication_stopped"
    work.write()  # the VM runs again where it was
    for attempt in (engine.replicate, engine.resume, engine.resynchronize):
        with pytest.raises(TransitionNotAllowed, match="stopped replication for good"):
            attempt("web")
    assert set(status.allowed) == {"disable"}
    engine.disable("web")
    engine.enable_protection("web")
    assert engine.status("web").phase == "protected"
    work.write()
    assert engine.replicate("web") is not None


def test_commit_deletes_every_recovery_point(
    engine: ReplicationEngine, tmp_path: Path
) -> None:
    """After commit no point is left at the target, and the store is gone."""
    work = Workload(engine)
    for _ in range(3):
        work.write()
        engine.replicate("web")
    engine.unplanned_failover("web")
    engine.commit("web")
    assert engine.status("web").recovery_points == ()
    assert not (tmp_path / "s" / "replicas" / "web").exists()
    assert shutil.disk_usage(tmp_path).free > 0


def test_a_planned_failover_under_a_running_writer_loses_no_acknowledged_write(
    tmp_path: Path,
) -> None:
    """A writer thread keeps writing until the shutdown refuses it: every write it saw
    acknowledged is on the new active copy, byte for byte."""
    big = {"os": 1024 * BLOCK, "data": 1024 * BLOCK}  # logs far from their limit
    acknowledged: dict[tuple[str, int], bytes] = {}
    stopped = threading.Event()
    with ReplicationEngine.open(tmp_path / "p", tmp_path / "s") as engine:
        engine.create_vm("web", big)
        engine.enable_protection("web")

        def writer() -> None:
            version = 0
            while version < 100_000:
                version += 1
                disk = "os" if version % 2 else "data"
                offset = (version % 1024) * BLOCK
                data = version.to_bytes(4, "little") * (BLOCK // 4)
                try:
                    engine.write("web", disk, offset, data)
                except TransitionNotAllowed:
                    stopped.set()
                    return
                acknowledged[(disk, offset)] = data
                time.sleep(0.0005)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            time.sleep(0.05)
            engine.replicate("web")
            time.sleep(0.05)
            report = engine.planned_failover("web")
        finally:
            thread.join(timeout=60)
        assert stopped.is_set()
        assert len(acknowledged) > 10
        assert report.loss is not None
        assert report.loss.writes_lost == 0
        for (disk, offset), data in acknowledged.items():
            assert engine.read("web", disk, offset, BLOCK) == data


def test_disable_gives_a_divergent_old_copy_up_keeping_its_disks(
    tmp_path: Path,
) -> None:
    """Decision 16: disable from committed while the old copy still runs is allowed;
    the loss report is closed as abandoned, the old copy stops, its change logs are
    deleted and its disks kept."""
    with ReplicationEngine.open(
        tmp_path / "p", tmp_path / "s", guest_shutdown=lambda vm, site: False
    ) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        work = Workload(engine)
        work.write(2)
        engine.replicate("web")
        engine.unplanned_failover("web", shut_down_first=True)
        engine.commit("web")
        work.write(1, site="primary")
        engine.disable("web")
        status = engine.status("web")
        assert status.phase == "unprotected"
        assert status.running_at == ("secondary",)
        assert status.loss is not None
        assert status.loss.abandoned
        old = tmp_path / "p" / "vms" / "web"
        assert sorted(path.name for path in old.glob("*.img")) == ["data.img", "os.img"]
        assert not list(old.glob("*.hrl"))
        with pytest.raises(TransitionNotAllowed):
            work.write(site="primary")
        engine.enable_protection("web")  # afresh, from where the VM now runs
        assert engine.status("web").phase == "reverse_replicating"
