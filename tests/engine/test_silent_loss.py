"""Regression tests for the ways the engine could lose or invent data without a word."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.errors import (
    CorruptRecord,
    DamagedState,
    InvalidConfiguration,
    SiteLocked,
    StorageFull,
    TransitionNotAllowed,
    TransportError,
)
from engine.log.format import RECORD_HEADER
from engine.orchestration.engine import ReplicationEngine
from engine.storage import files
from engine.testing import LossyTransport, ManualClock
from engine.transport.in_process import InProcessReplica

BLOCK = 4096
DISKS = {"a": 16 * BLOCK, "b": 16 * BLOCK}


def open_engine(root: Path, **options: Any) -> ReplicationEngine:
    """The engine on the two roots under ``root``."""
    return ReplicationEngine.open(
        root / "primary", root / "secondary", clock=ManualClock(), **options
    )


def protected(root: Path, **options: object) -> ReplicationEngine:
    """An engine with VM ``web`` protected (one point)."""
    engine = open_engine(root, **options)
    engine.create_vm("web", DISKS)
    engine.enable_protection("web")
    return engine


def target(engine: ReplicationEngine) -> InProcessReplica:
    """The in-process replica interface of the engine."""
    replica = engine.transport
    while not isinstance(replica, InProcessReplica):
        replica = replica.inner  # type: ignore[attr-defined]
    return replica


def assert_replica_equals_source(engine: ReplicationEngine) -> None:
    """Every replica disk holds exactly the source's bytes."""
    store = target(engine).store("web")
    for disk, size in DISKS.items():
        assert store.read(disk, 0, size) == engine.read("web", disk, 0, size)


class Recording(files.FileSystem):
    """The real file operations, with a trace of the renames and tree removals."""

    def __init__(self) -> None:
        super().__init__()
        self.trace: list[tuple[str, str]] = []

    def rename(self, source: Path, target: Path) -> None:
        self.trace.append(("rename", str(target)))
        super().rename(source, target)

    def remove_tree(self, path: Path) -> None:
        self.trace.append(("remove_tree", str(path)))
        super().remove_tree(path)


class FullAt(files.FileSystem):
    """Real operations, except a rename onto a name ending in ``suffix``: ENOSPC."""

    def __init__(self, suffix: str) -> None:
        super().__init__()
        self.suffix = suffix

    def rename(self, source: Path, target: Path) -> None:
        if str(target).endswith(self.suffix):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        super().rename(source, target)


def damage_outbox_log(engine: ReplicationEngine) -> None:
    """Cut the last record off disk a's sealed log waiting in the outbox."""
    (cycle,) = (engine.primary.root / "outbox" / "web").iterdir()
    log = cycle / "a.hrl"
    data = log.read_bytes()
    last = len(data) - (RECORD_HEADER.size + BLOCK)
    log.write_bytes(data[:last])


def seal_one_cycle_that_fails_to_ship(engine: ReplicationEngine) -> None:
    """A cycle sealed into the outbox whose shipment the link loses."""
    engine.transport.drops = 1  # type: ignore[attr-defined]
    with pytest.raises(TransportError):
        engine.replicate("web")


def test_a_log_cut_at_a_record_boundary_is_refused(tmp_path: Path) -> None:
    """A log one whole record short passes every CRC; the cut record refuses it."""
    with protected(tmp_path, wrap_transport=LossyTransport) as engine:
        before = target(engine).store("web").read("a", 0, 2 * BLOCK)
        engine.write("web", "a", 0, b"1" * BLOCK)
        engine.write("web", "a", BLOCK, b"2" * BLOCK)
        seal_one_cycle_that_fails_to_ship(engine)
        damage_outbox_log(engine)
        with pytest.raises(CorruptRecord, match=r"last sequence|ends at"):
            engine.replicate("web")
        assert target(engine).store("web").read("a", 0, 2 * BLOCK) == before
        assert engine.status("web").log_problem is not None
        assert engine.replicate("web") is None  # the model sends it to resync
        engine.resynchronize("web")
        assert_replica_equals_source(engine)


def test_the_verdict_is_durable_before_the_damaged_cycle_is_discarded(
    tmp_path: Path,
) -> None:
    """'Logs untrusted' is renamed into place before the outbox cycle is deleted."""
    with protected(tmp_path, wrap_transport=LossyTransport) as engine:
        engine.write("web", "a", 0, b"1" * BLOCK)
        engine.write("web", "a", BLOCK, b"2" * BLOCK)
        seal_one_cycle_that_fails_to_ship(engine)
        damage_outbox_log(engine)
        recording = Recording()
        with files.use(recording), pytest.raises(CorruptRecord):
            engine.replicate("web")
    outbox = str(tmp_path / "primary" / "outbox")
    events = [
        kind + ":" + ("outbox" if path.startswith(outbox) else Path(path).name)
        for kind, path in recording.trace
    ]
    assert "remove_tree:outbox" in events
    assert events.index("rename:logs-untrusted.txt") < events.index(
        "remove_tree:outbox"
    )


def test_a_verdict_that_cannot_be_written_keeps_the_damaged_cycle(
    tmp_path: Path,
) -> None:
    """No room for the verdict: StorageFull, the cycle stays; refused again later."""
    with protected(tmp_path, wrap_transport=LossyTransport) as engine:
        engine.write("web", "a", 0, b"1" * BLOCK)
        engine.write("web", "a", BLOCK, b"2" * BLOCK)
        seal_one_cycle_that_fails_to_ship(engine)
        damage_outbox_log(engine)
        with files.use(FullAt("logs-untrusted.txt")), pytest.raises(StorageFull):
            engine.replicate("web")
        assert engine.statistics().vms["web"].cycles_waiting == 1
        assert engine.status("web").log_problem is None
        with pytest.raises(CorruptRecord):
            engine.replicate("web")
        assert engine.status("web").log_problem is not None
        assert engine.statistics().vms["web"].cycles_waiting == 0


def test_a_full_disk_while_a_failure_is_recorded_does_not_wedge_the_vm(
    tmp_path: Path, small_filesystem: Any
) -> None:
    """The disk fills before a cycle: the model refuses it, naming the full storage
    (the engine sees the replica folder out of room: ``Sites.storage_full``), or the
    cycle fails with a typed StorageFull; after freeing, cycles run."""
    with protected(small_filesystem.root) as engine:
        engine.write("web", "a", 0, b"1" * BLOCK)
        small_filesystem.fill()
        with pytest.raises((StorageFull, TransitionNotAllowed), match="full"):
            engine.replicate("web")
        small_filesystem.free()
        engine.write("web", "b", 0, b"2" * BLOCK)
        engine.replicate("web")
        assert engine.status("web").phase == "protected"
        assert_replica_equals_source(engine)


def test_an_applied_cycle_restored_into_the_outbox_is_dropped(tmp_path: Path) -> None:
    """A backup brings back an applied cycle: it is recognised, dropped and counted."""
    saved = tmp_path / "saved"

    def keep_a_copy(step: str) -> None:
        if step == "sealed" and not saved.exists():
            (cycle,) = (tmp_path / "primary" / "outbox" / "web").iterdir()
            shutil.copytree(cycle, saved / cycle.name)

    with protected(tmp_path, crash_point=keep_a_copy) as engine:
        engine.write("web", "a", 0, b"1" * BLOCK)
        engine.replicate("web")
        (restored,) = saved.iterdir()
        shutil.copytree(
            restored, tmp_path / "primary" / "outbox" / "web" / restored.name
        )
        engine.write("web", "a", BLOCK, b"2" * BLOCK)
        engine.replicate("web")
        assert engine.status("web").health == "normal"
        assert engine.statistics().vms["web"].cycles_dropped == 1
        assert engine.statistics().vms["web"].cycles_waiting == 0
        assert_replica_equals_source(engine)


def test_no_inbox_folder_is_left_per_cycle(tmp_path: Path) -> None:
    """After three cycles the target's inbox holds nothing for the VM."""
    with protected(tmp_path) as engine:
        for step in range(3):
            engine.write("web", "a", 0, bytes([step + 1]) * BLOCK)
            engine.replicate("web")
        inbox = tmp_path / "secondary" / "inbox" / "web"
        left = sorted(p.name for p in inbox.iterdir()) if inbox.exists() else []
        assert left == []


def test_a_disk_size_the_filesystem_refuses_leaves_nothing_behind(
    disk_path: Path,
) -> None:
    """create_vm fails (EFBIG: 32 TiB on ext4; tmpfs takes it, so a disk file
    system): no folder, no row, the name reusable."""
    tmp_path = disk_path
    with open_engine(tmp_path) as engine:
        with pytest.raises(InvalidConfiguration, match="refuses a disk that large"):
            engine.create_vm("big", {"a": BLOCK, "huge": 32 * 1024**4})
        assert not (tmp_path / "primary" / "vms" / "big").exists()
        assert engine.vm_names() == ()
        engine.create_vm("big", {"a": BLOCK})
        assert engine.vm_names() == ("big",)


def test_a_create_killed_half_way_is_rolled_back(tmp_path: Path) -> None:
    """SIGKILL after the first disk of a create: reopen rolls it back; name reusable."""
    child = """
import os, signal, sys
from pathlib import Path
from engine.orchestration.engine import ReplicationEngine
from engine.storage import files

class KillOnSecondDisk(files.FileSystem):
    def open(self, path, flags, mode=0o600):
        if str(path).endswith("b.img"):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().open(path, flags, mode)

engine = ReplicationEngine.open(Path(sys.argv[1]), Path(sys.argv[2]))
with files.use(KillOnSecondDisk()):
    engine.create_vm("web", {"a": 65536, "b": 65536})
"""
    roots = [str(tmp_path / "primary"), str(tmp_path / "secondary")]
    result = subprocess.run([sys.executable, "-c", child, *roots], check=False)
    assert result.returncode == -9
    with open_engine(tmp_path) as engine:
        assert engine.recovered == {"web": "create_vm rolled back: create the VM again"}
        assert not (tmp_path / "primary" / "vms" / "web").exists()
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        assert engine.status("web").phase == "protected"


def test_a_missing_vm_folder_is_a_typed_error_and_other_vms_work(
    tmp_path: Path,
) -> None:
    """One VM's folder deleted: DamagedState naming it; the other VM is untouched."""
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
        engine.create_vm("db", DISKS)
    shutil.rmtree(tmp_path / "primary" / "vms" / "web")
    with open_engine(tmp_path) as engine:
        with pytest.raises(DamagedState, match="vms/web"):
            engine.status("web")
        assert sorted(engine.damaged) == ["web"]
        engine.enable_protection("db")
        assert engine.status("db").phase == "protected"


def test_a_deleted_replica_never_reads_as_protected(tmp_path: Path) -> None:
    """The target's replica folder deleted: status raises DamagedState, not 'normal'."""
    with protected(tmp_path):
        pass
    shutil.rmtree(tmp_path / "secondary" / "replicas" / "web")
    with open_engine(tmp_path) as engine, pytest.raises(DamagedState, match="replica"):
        engine.status("web")


def test_a_deleted_replica_catalogue_never_reads_as_protected(tmp_path: Path) -> None:
    """store.json deleted: DamagedState naming the catalogue, not 'normal'."""
    with protected(tmp_path):
        pass
    (tmp_path / "secondary" / "replicas" / "web" / "store.json").unlink()
    with (
        open_engine(tmp_path) as engine,
        pytest.raises(DamagedState, match=r"store\.json|catalogue"),
    ):
        engine.status("web")


def test_a_stray_file_in_the_vm_folder_is_ignored(tmp_path: Path) -> None:
    """A stray disk-looking file beside the disks changes nothing: disks are data."""
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
    (tmp_path / "primary" / "vms" / "web" / "stray.img").write_bytes(b"\0" * BLOCK)
    with open_engine(tmp_path) as engine:
        assert engine.disk_sizes("web") == DISKS
        engine.enable_protection("web")
        assert sorted(target(engine).store("web").disks) == sorted(DISKS)


KILL_DURING_RESYNC = """
import os, signal, sys
from pathlib import Path
from engine.orchestration.engine import ReplicationEngine

def crash(step):
    if step == sys.argv[3] and armed:
        os.kill(os.getpid(), signal.SIGKILL)

armed = False
engine = ReplicationEngine.open(Path(sys.argv[1]), Path(sys.argv[2]), crash_point=crash)
for offset in range(0, 16 * 4096, 4096):
    engine.write("web", "a", offset, b"x" * 4096)  # past half the disk: resync
assert engine.replicate("web") is None
armed = True
engine.resynchronize("web")
print("not killed")
"""


@pytest.mark.parametrize("step", ["sealed", "applied", "outbox_removed"])
def test_a_kill_during_a_resynchronisation_does_not_compare_twice(
    tmp_path: Path, step: str
) -> None:
    """SIGKILL after the comparison: the restart finishes it, no second comparison."""
    with protected(tmp_path):
        pass
    roots = [str(tmp_path / "primary"), str(tmp_path / "secondary")]
    result = subprocess.run(
        [sys.executable, "-c", KILL_DURING_RESYNC, *roots, step],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == -9, result.stdout + result.stderr
    with open_engine(tmp_path) as engine:
        assert engine.recovered["web"] == (
            "complete_resynchronization finished after the restart"
        )
        assert engine.status("web").phase == "protected"
        assert_replica_equals_source(engine)
        engine.write("web", "b", 0, b"after" * 800)
        engine.replicate("web")
        assert_replica_equals_source(engine)


def test_operations_work_from_another_thread(tmp_path: Path) -> None:
    """Enable and cycles run on a worker thread; the main thread reads status."""
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                engine.enable_protection("web")
                engine.write("web", "a", 0, b"t" * BLOCK)
                engine.replicate("web")
            except BaseException as error:  # reported below
                errors.append(error)

        worker = threading.Thread(target=work)
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive()
        assert errors == []
        assert engine.status("web").phase == "protected"
        assert_replica_equals_source(engine)


def write_from_another_thread(engine: ReplicationEngine, disk: str) -> bool:
    """Write from a second thread; return whether it completed within 10 s."""
    done = threading.Event()

    def writer() -> None:
        engine.write("web", disk, 5 * BLOCK, b"w" * BLOCK)
        done.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    return done.wait(timeout=10)


def test_guest_writes_do_not_wait_for_a_ship_and_apply(tmp_path: Path) -> None:
    """While a cycle is being applied at the target, a guest write completes."""
    completed: list[bool] = []
    holder: list[ReplicationEngine] = []

    def during_apply(step: str) -> None:
        if step == "shipped" and holder and not completed:
            completed.append(write_from_another_thread(holder[0], "b"))

    with protected(tmp_path, crash_point=during_apply) as engine:
        holder.append(engine)
        engine.write("web", "a", 0, b"1" * BLOCK)
        engine.replicate("web")
        assert completed == [True]
        engine.replicate("web")  # the write made during the apply ships next
        assert_replica_equals_source(engine)


def test_guest_writes_do_not_wait_for_the_initial_copy(tmp_path: Path) -> None:
    """Half-way through copying a disk, a write from another thread completes, and
    the replica gets it (it went through the log, not around it)."""
    completed: list[bool] = []
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
        for offset in range(0, DISKS["a"], BLOCK):
            engine.write("web", "a", offset, bytes([offset // BLOCK + 1]) * BLOCK)

        def progress(disk: str, done: int, total: int) -> None:
            if disk == "a" and done >= total // 2 and not completed:
                completed.append(write_from_another_thread(engine, "a"))

        engine.enable_protection("web", progress=progress)
        assert completed == [True]
        assert_replica_equals_source(engine)


def test_a_write_during_the_copy_reaches_the_replica(tmp_path: Path) -> None:
    """A write to a region already copied, during the copy, is in the first point."""
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
        engine.write("web", "a", 0, b"before" * 600)

        def progress(disk: str, done: int, total: int) -> None:
            if disk == "b" and done == total:
                engine.write("web", "a", 0, b"during" * 600)

        engine.enable_protection("web", progress=progress)
        assert target(engine).store("web").read("a", 0, 6) == b"during"
        assert_replica_equals_source(engine)


class WriteBetweenSeals(files.FileSystem):
    """When disk a's log is sealed (renamed into the outbox), try a VM-consistent
    pair of writes (b then a) from another thread; record whether it got in."""

    def __init__(self, engine: ReplicationEngine) -> None:
        super().__init__()
        self.engine = engine
        self.got_in: list[bool] = []

    def rename(self, source: Path, target: Path) -> None:
        super().rename(source, target)
        if target.name == "a.hrl" and "outbox" in target.parts and not self.got_in:
            done = threading.Event()

            def pair() -> None:
                self.engine.write("web", "b", 0, b"9" * BLOCK)
                self.engine.write("web", "a", 0, b"9" * BLOCK)
                done.set()

            threading.Thread(target=pair, daemon=True).start()
            self.got_in.append(done.wait(timeout=0.5))


def test_the_cut_is_atomic_across_disks(tmp_path: Path) -> None:
    """A pair of writes attempted between two disks' seals lands wholly after the cut:
    in every recovery point disk a and disk b hold the same step."""
    with protected(tmp_path) as engine:
        engine.write("web", "a", 0, b"1" * BLOCK)
        engine.write("web", "b", 0, b"1" * BLOCK)
        between = WriteBetweenSeals(engine)
        with files.use(between):
            engine.replicate("web")
        assert between.got_in == [False]  # the writer waited for the whole cut
        engine.replicate("web")
        store = target(engine).store("web")
        for point in store.catalogue.points:
            images = store.materialize(
                point.recovery_point_id, tmp_path / f"p{point.recovery_point_id}"
            )
            assert images["a"].read_bytes()[:1] == images["b"].read_bytes()[:1]
        assert_replica_equals_source(engine)


KILL_AFTER_AN_EMPTY_COMPARISON = """
import os, signal, sys
from pathlib import Path
from engine.orchestration.engine import ReplicationEngine
from engine.storage import files

class KillAfterCutRecord(files.FileSystem):
    def rename(self, source, target):
        super().rename(source, target)
        if Path(target).name == "cycle.json":
            os.kill(os.getpid(), signal.SIGKILL)

engine = ReplicationEngine.open(Path(sys.argv[1]), Path(sys.argv[2]))
engine.pause("web")
engine.resume("web")
with files.use(KillAfterCutRecord()):
    engine.resynchronize("web")
print("not killed")
"""


def test_a_kill_after_a_comparison_that_found_nothing_finishes_it(
    tmp_path: Path,
) -> None:
    """Nothing differed, killed before the phase moved: finished, no new point."""
    with protected(tmp_path) as engine:
        engine.write("web", "a", 0, b"1" * BLOCK)
        engine.replicate("web")
        points = [p.recovery_point_id for p in engine.status("web").recovery_points]
    roots = [str(tmp_path / "primary"), str(tmp_path / "secondary")]
    result = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_AN_EMPTY_COMPARISON, *roots],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == -9, result.stdout + result.stderr
    with open_engine(tmp_path) as engine:
        assert engine.recovered["web"] == (
            "complete_resynchronization finished after the restart"
        )
        status = engine.status("web")
        assert status.phase == "protected"
        assert [p.recovery_point_id for p in status.recovery_points] == points
        engine.write("web", "b", 0, b"2" * BLOCK)
        engine.replicate("web")  # the new epoch's first cycle
        assert_replica_equals_source(engine)


def test_an_operation_left_pending_by_a_full_disk_is_settled_by_the_next(
    small_filesystem: Any,
) -> None:
    """The disk fills mid-cycle, so even the failure cannot be recorded: the next
    operation finishes the pending one instead of being refused until a restart."""
    fill_now: list[bool] = []

    def fill_after_the_seal(step: str) -> None:
        if step == "sealed" and fill_now and fill_now.pop():
            small_filesystem.fill()

    with protected(small_filesystem.root, crash_point=fill_after_the_seal) as engine:
        engine.write("web", "a", 0, b"1" * BLOCK)
        fill_now.append(True)
        with pytest.raises(StorageFull):
            engine.replicate("web")
        pending = engine.primary.control.pending_operation("web")
        assert pending is not None  # the abandon could not be written either
        assert pending.name == "replicate"
        small_filesystem.free()
        engine.write("web", "b", 0, b"2" * BLOCK)
        engine.replicate("web")
        assert engine.primary.control.pending_operation("web") is None
        assert engine.status("web").phase == "protected"
        assert_replica_equals_source(engine)


HOLD_THE_SITES = """
import sys
from pathlib import Path
from engine.orchestration.engine import ReplicationEngine
engine = ReplicationEngine.open(Path(sys.argv[1]), Path(sys.argv[2]))
print("open", flush=True)
sys.stdin.read()
"""


def test_a_second_engine_on_the_same_sites_is_refused(tmp_path: Path) -> None:
    """Another process holds the sites: SiteLocked names its pid; free once it dies."""
    roots = [str(tmp_path / "primary"), str(tmp_path / "secondary")]
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_SITES, *roots],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as holder:  # fmt: skip
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(SiteLocked, match=f"pid {holder.pid}"):
            open_engine(tmp_path)
        holder.kill()
    with open_engine(tmp_path) as engine:
        assert engine.vm_names() == ()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: size and modification time (ns).

    SQLite's shared-memory index (``-shm``) is left out: readers take their read
    locks there by design; it holds no data.
    """
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if not path.name.endswith("-shm")
    }


def test_reads_change_nothing_on_disk(tmp_path: Path) -> None:
    """status(), statistics(), read() and the interface's status write nothing, even
    with a cycle waiting in the outbox."""
    with protected(tmp_path, wrap_transport=LossyTransport) as engine:
        engine.write("web", "a", 0, b"1" * BLOCK)
        seal_one_cycle_that_fails_to_ship(engine)
        before = snapshot(tmp_path)
        engine.status("web")
        engine.statistics()
        engine.read("web", "a", 0, BLOCK)
        engine.transport.status("web")
        assert snapshot(tmp_path) == before


class WriteDuringComparison(files.FileSystem):
    """When the comparison starts its log of differing blocks for disk b, write from
    another thread to disk a; record whether the write got through."""

    def __init__(self, engine: ReplicationEngine) -> None:
        super().__init__()
        self.engine = engine
        self.got_in: list[bool] = []

    def open(self, path: Path, flags: int, mode: int = 0o600) -> int:
        if str(path).endswith("b.resync.new") and not self.got_in:
            self.got_in.append(write_from_another_thread(self.engine, "a"))
        return super().open(path, flags, mode)


def test_guest_writes_do_not_wait_for_a_resynchronisation(tmp_path: Path) -> None:
    """During the block comparison a write completes, and the resynchronised point
    plus the next cycle bring the replica to the source."""
    with protected(tmp_path) as engine:
        for offset in range(0, DISKS["a"], BLOCK):
            engine.write("web", "a", offset, b"x" * BLOCK)  # past half: resync
        assert engine.replicate("web") is None
        during = WriteDuringComparison(engine)
        with files.use(during):
            report = engine.resynchronize("web")
        assert during.got_in == [True]
        assert report.blocks_sent == 16
        assert engine.status("web").phase == "protected"
        assert_replica_equals_source(engine)  # the write during it is in the point


class FullForTheSecondFreshLog(files.FileSystem):
    """ENOSPC when disk b's fresh log is written at a cut (disk a's went through)."""

    def pwrite(self, descriptor: int, data: Any, offset: int) -> int:
        if os.readlink(f"/proc/self/fd/{descriptor}").endswith("b.img.hrl.new"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "b.img.hrl.new")
        return super().pwrite(descriptor, data, offset)


def test_a_full_disk_at_the_second_disks_seal_refuses_the_whole_cut(
    tmp_path: Path,
) -> None:
    """No room for disk b's fresh log: StorageFull, no log moved, nothing distrusted;
    the next cycle ships everything, no resynchronisation needed."""
    with protected(tmp_path) as engine:
        engine.write("web", "a", 0, b"1" * BLOCK)
        engine.write("web", "b", 0, b"1" * BLOCK)
        with files.use(FullForTheSecondFreshLog()), pytest.raises(StorageFull):
            engine.replicate("web")
        assert engine.status("web").log_problem is None
        assert engine.statistics().vms["web"].cycles_waiting == 0
        engine.replicate("web")
        assert engine.status("web").phase == "protected"
        assert_replica_equals_source(engine)
