"""The engine on real files, driven by the model: replication half."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import InvalidConfiguration, InvalidName, TransitionNotAllowed
from engine.orchestration.engine import ReplicationEngine
from engine.replica.store import ReplicaStore
from engine.testing import ManualClock

BLOCK = 4096
DISKS = {"os": 64 * BLOCK, "data": 32 * BLOCK}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ReplicationEngine]:
    """An engine on two fresh site roots, with one VM ``web`` of two disks."""
    with ReplicationEngine.open(
        tmp_path / "primary", tmp_path / "secondary", clock=ManualClock()
    ) as opened:
        opened.create_vm("web", DISKS)
        yield opened


def source_image(engine: ReplicationEngine, disk: str) -> bytes:
    """The whole active copy of ``disk`` of ``web``."""
    return engine.read("web", disk, 0, DISKS[disk])


def replica(engine: ReplicationEngine) -> ReplicaStore:
    """The replica store of ``web`` at the secondary."""
    return ReplicaStore.open(engine.secondary.replicas, "web", ManualClock())


def replica_image(engine: ReplicationEngine, disk: str) -> bytes:
    """The whole replica of ``disk`` (the newest recovery point)."""
    return replica(engine).read(disk, 0, DISKS[disk])


def random_writes(engine: ReplicationEngine, rng: random.Random, count: int) -> None:
    """``count`` block-sized writes at random places of random disks."""
    for _ in range(count):
        disk = rng.choice(sorted(DISKS))
        block = rng.randrange(DISKS[disk] // BLOCK)
        engine.write("web", disk, block * BLOCK, rng.randbytes(BLOCK))


def test_initial_replication_makes_a_byte_identical_first_point(
    engine: ReplicationEngine,
) -> None:
    """Enable: disks copied one by one, then the replica equals the source."""
    engine.write("web", "os", 0, b"boot" * 1024)
    progress: list[tuple[str, int, int]] = []
    engine.enable_protection("web", progress=lambda *seen: progress.append(seen))
    status = engine.status("web")
    assert (status.phase, status.protected, len(status.recovery_points)) == (
        "protected",
        True,
        1,
    )
    for disk in DISKS:
        assert source_image(engine, disk) == replica_image(engine, disk)
    assert {disk for disk, _, _ in progress} == set(DISKS)
    last_disk = list(DISKS)[-1]  # disks are copied in the VM's order
    assert progress[-1] == (last_disk, DISKS[last_disk], DISKS[last_disk])


def test_initial_replication_with_writes_during_the_copies_converges(
    engine: ReplicationEngine,
) -> None:
    """Writes made during the initial replication, after each disk's copy (behind
    the copy on the disks done, ahead of it on the others), land in the logs and
    reach the replica; the logs stay usable, so the VM is protected, not resyncing."""
    rng = random.Random(7)
    seen: list[tuple[str, str]] = []

    def write_during_copy(disk: str, done: int, total: int) -> None:
        # Called as each disk's copy goes on: the next disk is not copied yet.
        seen.append((disk, engine.status("web").phase))
        for target in sorted(DISKS):
            block = rng.randrange(DISKS[target] // BLOCK)
            engine.write("web", target, block * BLOCK, rng.randbytes(BLOCK))

    engine.enable_protection("web", progress=write_during_copy)
    assert {phase for _, phase in seen} == {"initial_replication"}
    assert {disk for disk, _ in seen} == set(DISKS)
    assert engine.status("web").phase == "protected"
    random_writes(engine, rng, 5)
    engine.replicate("web")
    for disk in DISKS:
        assert source_image(engine, disk) == replica_image(engine, disk)


def test_delta_cycles_keep_the_replica_equal_at_each_cut(
    engine: ReplicationEngine,
) -> None:
    """After every cycle the replica equals the source as it was at the cut."""
    engine.enable_protection("web")
    rng = random.Random(3)
    for _ in range(6):
        writes = rng.randrange(1, 12)
        random_writes(engine, rng, writes)
        report = engine.replicate("web")
        assert report is not None
        assert report.records == writes  # one log record per write, none dropped
        for disk in DISKS:
            assert source_image(engine, disk) == replica_image(engine, disk)


def test_a_cycle_with_nothing_to_ship_makes_no_point(engine: ReplicationEngine) -> None:
    """As in the model: no change, no new recovery point."""
    engine.enable_protection("web")
    assert engine.replicate("web") is None
    assert len(engine.status("web").recovery_points) == 1


def test_no_point_holds_a_later_write_on_one_disk_without_an_earlier_one(
    engine: ReplicationEngine, tmp_path: Path
) -> None:
    """Write A on os then B on data, cycles in between: every point is consistent."""
    engine.enable_protection("web")
    for step in range(1, 5):
        engine.write("web", "os", 0, bytes([step]) * BLOCK)
        engine.write("web", "data", 0, bytes([step]) * BLOCK)
        engine.replicate("web")
        engine.write("web", "os", 0, bytes([step + 100]) * BLOCK)  # A only, uncut
    store = replica(engine)
    seen = []
    for point in store.catalogue.points:
        point_id = point.recovery_point_id
        images = store.materialize(point_id, tmp_path / f"p{point_id}")
        pair = (images["os"].read_bytes()[0], images["data"].read_bytes()[0])
        seen.append(pair)
    # every point is a cut after B: os and data agree; A' (os+100) is never in one
    assert seen == [(step, step) for step in range(1, 5)]  # retention 4


def test_retention_merges_the_oldest_points(tmp_path: Path) -> None:
    """With retention 2, only the last two points remain and each is exact."""
    with ReplicationEngine.open(
        tmp_path / "p", tmp_path / "s", clock=ManualClock(), retention_count=2
    ) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        cuts: dict[int, bytes] = {}
        for step in range(1, 5):
            engine.write("web", "os", step * BLOCK, bytes([step]) * BLOCK)
            report = engine.replicate("web")
            assert report is not None
            cuts[report.recovery_point_id] = source_image(engine, "os")
        store = replica(engine)
        kept = [point.recovery_point_id for point in store.catalogue.points]
        assert kept == sorted(cuts)[-2:]
        for point_id in kept:
            images = store.materialize(point_id, tmp_path / f"m{point_id}")
            assert images["os"].read_bytes() == cuts[point_id]


def test_operations_the_model_forbids_raise_its_refusal(
    engine: ReplicationEngine,
) -> None:
    """Replicate before enable, resume while protected: the model's message."""
    with pytest.raises(
        TransitionNotAllowed, match="cannot replicate VM 'web' in phase unprotected"
    ):
        engine.replicate("web")
    engine.enable_protection("web")
    with pytest.raises(
        TransitionNotAllowed, match="resume is allowed only from: replication_paused"
    ):
        engine.resume("web")
    engine.pause("web")
    with pytest.raises(TransitionNotAllowed, match="replicate is allowed only from"):
        engine.replicate("web")
    engine.resume("web")
    assert engine.status("web").phase == "protected"


def test_link_down_refuses_the_cycle_and_keeps_the_changes(
    engine: ReplicationEngine,
) -> None:
    """Link down: the model refuses the cycle; the writes wait in the logs."""
    engine.enable_protection("web")
    engine.write("web", "data", 0, b"x" * BLOCK)
    engine.transport.link_up = False  # type: ignore[attr-defined]
    with pytest.raises(
        TransitionNotAllowed, match="the link between the sites is down"
    ):
        engine.replicate("web")
    status = engine.status("web")
    assert (status.phase, status.health) == ("protected", "warning")
    engine.transport.link_up = True  # type: ignore[attr-defined]
    engine.replicate("web")
    assert source_image(engine, "data") == replica_image(engine, "data")


def test_a_log_past_its_limit_turns_the_next_cycle_into_a_resync(
    engine: ReplicationEngine,
) -> None:
    """More than half a disk logged: replicate resynchronises instead."""
    engine.enable_protection("web")
    for block in range(DISKS["data"] // BLOCK // 2 + 1):
        engine.write("web", "data", block * BLOCK, b"y" * BLOCK)
    assert engine.replicate("web") is None
    assert engine.status("web").phase == "resynchronizing"
    assert engine.status("web").protected is False
    report = engine.resynchronize("web")
    assert report.blocks_sent == DISKS["data"] // BLOCK // 2 + 1
    assert engine.status("web").phase == "protected"
    engine.write("web", "os", 0, b"z" * BLOCK)
    engine.replicate("web")
    for disk in DISKS:
        assert source_image(engine, disk) == replica_image(engine, disk)


def test_resynchronisation_sends_only_differing_blocks(
    engine: ReplicationEngine,
) -> None:
    """An operator resync after two writes sends exactly those two blocks."""
    engine.enable_protection("web")
    engine.write("web", "os", 5 * BLOCK, b"q" * BLOCK)
    engine.write("web", "data", 9 * BLOCK, b"r" * BLOCK)
    report = engine.resynchronize("web")
    total_blocks = sum(DISKS.values()) // BLOCK
    assert (report.blocks_compared, report.blocks_sent) == (total_blocks, 2)
    for disk in DISKS:
        assert source_image(engine, disk) == replica_image(engine, disk)


def test_disable_deletes_the_replica_and_logs_but_keeps_the_disks(
    engine: ReplicationEngine,
) -> None:
    """Disable: no replica, no logs; the VM's data is untouched."""
    engine.enable_protection("web")
    engine.write("web", "os", 0, b"keep" * 1024)
    before = source_image(engine, "os")
    engine.disable("web")
    assert engine.status("web").phase == "unprotected"
    assert not (engine.secondary.replicas / "web").exists()
    assert list(engine.primary.vm_directory("web").glob("*.hrl")) == []
    assert source_image(engine, "os") == before


def test_reopen_resumes_where_it_was(tmp_path: Path) -> None:
    """Close and reopen: same phase, same points, replication goes on."""
    roots = (tmp_path / "p", tmp_path / "s")
    with ReplicationEngine.open(*roots, clock=ManualClock()) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        engine.write("web", "os", 0, b"1" * BLOCK)
        engine.replicate("web")
        engine.write("web", "os", BLOCK, b"2" * BLOCK)  # logged, not shipped
    with ReplicationEngine.open(*roots, clock=ManualClock()) as engine:
        assert engine.recovered == {}
        assert engine.status("web").phase == "protected"
        assert len(engine.status("web").recovery_points) == 2
        engine.replicate("web")
        assert source_image(engine, "os") == replica_image(engine, "os")


@pytest.mark.parametrize(
    "name", ["../escape", "a/b", "bad\x00name", ".hidden", "x" * 65]
)
def test_hostile_vm_names_are_refused(engine: ReplicationEngine, name: str) -> None:
    """Names that could escape a storage root never create anything."""
    with pytest.raises(InvalidName):
        engine.create_vm(name, {"os": BLOCK})


def test_bad_disk_sizes_are_refused(engine: ReplicationEngine) -> None:
    """A disk size that is not a positive multiple of the block size is refused."""
    with pytest.raises(InvalidConfiguration, match="multiple of block_bytes"):
        engine.create_vm("db", {"os": BLOCK + 1})
    with pytest.raises(InvalidConfiguration, match="positive int"):
        engine.create_vm("db", {"os": 0})
    assert engine.vm_names() == ("web",)


def test_control_state_mirrors_the_catalogue_and_log_positions(
    engine: ReplicationEngine,
) -> None:
    """After each cycle the site's SQLite state holds the points and positions."""
    engine.enable_protection("web")
    engine.write("web", "os", 0, b"m" * BLOCK)
    engine.write("web", "os", BLOCK, b"n" * BLOCK)
    engine.replicate("web")
    control = engine.primary.control
    assert control.recovery_points("web") == replica(engine).catalogue.points
    assert control.log_positions("web") == {"data": -1, "os": 1}
    assert control.pending_operation("web") is None
    engine.disable("web")
    assert control.recovery_points("web") == ()


def test_disable_then_enable_protects_afresh(engine: ReplicationEngine) -> None:
    """A new protection starts a new epoch with a fresh replica equal to the source."""
    engine.enable_protection("web")
    engine.write("web", "os", 0, b"o" * BLOCK)
    engine.replicate("web")
    engine.disable("web")
    engine.write("web", "data", 0, b"p" * BLOCK)
    engine.enable_protection("web")
    assert engine.primary.control.vm("web").epoch == 2
    assert len(engine.status("web").recovery_points) == 1
    for disk in DISKS:
        assert source_image(engine, disk) == replica_image(engine, disk)


def test_a_cycle_at_a_quiesce_point_makes_an_app_consistent_point(
    engine: ReplicationEngine,
) -> None:
    """replicate(app_consistent=True) flags its point; ordinary cycles do not."""
    engine.enable_protection("web")
    engine.write("web", "os", 0, b"q" * BLOCK)
    engine.replicate("web", app_consistent=True)
    engine.write("web", "os", 0, b"r" * BLOCK)
    engine.replicate("web")
    flags = [p.app_consistent for p in engine.status("web").recovery_points]
    assert flags == [False, True, False]


def test_initial_replication_over_an_untrusted_log_resynchronises(
    tmp_path: Path,
) -> None:
    """The log goes missing during the copy: no first point, then a resync makes one."""
    roots = (tmp_path / "p", tmp_path / "s")
    with ReplicationEngine.open(*roots, clock=ManualClock()) as engine:
        engine.create_vm("web", DISKS)
        engine.write("web", "os", 0, b"s" * BLOCK)
        # the logs become untrusted while the disks are being copied
        engine.enable_protection(
            "web",
            progress=lambda disk, done, total: engine.vm("web").disks.distrust(
                "test: tracking lost during the copy"
            ),
        )
        status = engine.status("web")
        assert (status.phase, status.recovery_points) == ("resynchronizing", ())
        report = engine.resynchronize("web")
        assert report.recovery_point_id is not None
        assert engine.status("web").phase == "protected"
        for disk in DISKS:
            assert source_image(engine, disk) == replica_image(engine, disk)


def test_a_resync_with_nothing_to_send_makes_no_point(
    engine: ReplicationEngine,
) -> None:
    """As in the model: the points stay as they were."""
    engine.enable_protection("web")
    engine.write("web", "os", 0, b"t" * BLOCK)
    engine.replicate("web")
    before = engine.status("web").recovery_points
    report = engine.resynchronize("web")
    assert (report.blocks_sent, report.recovery_point_id) == (0, None)
    assert engine.status("web").recovery_points == before
    engine.write("web", "data", 0, b"u" * BLOCK)
    engine.replicate("web")  # the new epoch's first cycle applies after the old point
    for disk in DISKS:
        assert source_image(engine, disk) == replica_image(engine, disk)
