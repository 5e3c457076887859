"""The storage full at each step of a commit that needs space: nothing is lost.

Commit consumes the replica store (``engine/replica/promote.py``) and starts tracking
the new source. A full disk at any of its steps must surface as ``StorageFull`` and
leave the replica VM reading its chosen point, byte for byte, until the commit is
retried (in this process, or after a reopen); another point chosen meanwhile must
read its own bytes, or be refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import StorageFull, TransitionNotAllowed
from engine.orchestration.engine import ReplicationEngine
from engine.storage import files
from engine.storage.simulation import SPACE_OPERATIONS
from engine.testing import CountingFileSystem, FullDiskFileSystem, ManualClock

BLOCK = 4096
DISKS = {"os": 16 * BLOCK, "data": 16 * BLOCK}

Images = dict[str, bytes]


def write(engine: ReplicationEngine, version: int) -> None:
    disk = "os" if version % 2 else "data"
    data = version.to_bytes(4, "little") * (BLOCK // 4)
    engine.write("web", disk, (version % 16) * BLOCK, data)


def contents(engine: ReplicationEngine) -> Images:
    return {disk: engine.read("web", disk, 0, size) for disk, size in DISKS.items()}


def open_engine(sites: Path) -> ReplicationEngine:
    return ReplicationEngine.open(
        sites / "primary", sites / "secondary", clock=ManualClock()
    )


def failed_over(engine: ReplicationEngine, *, older: bool) -> dict[int, Images]:
    """Protect, four points, fail over (unplanned from the second when ``older``,
    else planned); return the bytes of each point."""
    engine.create_vm("web", DISKS)
    engine.enable_protection("web")
    first = engine.status("web").recovery_points[-1].recovery_point_id
    states = {first: contents(engine)}
    for version in range(1, 4):
        write(engine, version)
        engine.replicate("web")
        point = engine.status("web").recovery_points[-1].recovery_point_id
        states[point] = contents(engine)
    if older:
        engine.unplanned_failover("web", sorted(states)[1])
    else:
        engine.planned_failover("web")
    return states


def commit_space_operations(sites: Path, *, older: bool) -> list[int]:
    """The operations of the commit that need space, by index (``sites`` made first,
    as for a full disk)."""
    sites.mkdir()
    counting = CountingFileSystem()
    with files.use(counting):
        engine = open_engine(sites)
        failed_over(engine, older=older)
        first = counting.operations + 1
        engine.commit("web")
        engine.close()
    return [
        entry.index
        for entry in counting.trace
        if entry.index >= first and entry.operation in SPACE_OPERATIONS
    ]


def check_points_shown(
    engine: ReplicationEngine, states: dict[int, Images], full_at: int
) -> None:
    """Every recovery point the engine shows reads its own bytes."""
    target = engine.transport_towards("secondary")
    for point in engine.status("web").recovery_points:
        reader = target.point_reader("web", point.recovery_point_id)
        held = {disk: reader.read(disk, 0, size) for disk, size in DISKS.items()}
        assert held == states[point.recovery_point_id], (full_at, point)


def check_full_at(sites: Path, full_at: int, *, older: bool, reopen: bool) -> None:
    """StorageFull; the VM reads its point and every point shown reads its own
    bytes; (after a reopen, when ``reopen``)
    another point reads its own bytes or is refused; commit again, then a reopen,
    ends on the point's bytes."""
    with files.use(FullDiskFileSystem(full_at)):
        engine = open_engine(sites)
        states = failed_over(engine, older=older)
        with pytest.raises(StorageFull):
            engine.commit("web")
    expected = states[sorted(states)[1] if older else max(states)]
    assert contents(engine) == expected, full_at
    check_points_shown(engine, states, full_at)
    if reopen:  # the restart finishes the commit (or rolls back what had not begun)
        engine.close()
        engine = open_engine(sites)
        assert contents(engine) == expected, full_at
    if older:
        try:
            engine.change_recovery_point("web", max(states))
        except TransitionNotAllowed:
            pass
        else:
            expected = states[max(states)]
            assert contents(engine) == expected, full_at
    if engine.status("web").phase == "failed_over":
        engine.commit("web")
    assert engine.status("web").phase == "committed", full_at
    assert contents(engine) == expected, full_at
    engine.close()
    with open_engine(sites) as reopened:
        assert reopened.status("web").phase == "committed", full_at
        assert contents(reopened) == expected, full_at
        reopened.reverse_replication("web")
        write(reopened, 9)
        assert reopened.replicate("web") is not None


@pytest.mark.parametrize("older", [True, False], ids=["older_point", "planned"])
def test_a_full_disk_in_commit_keeps_the_chosen_point(
    tmp_path: Path,
    older: bool,
) -> None:
    """At each space-needing operation of the commit (every other one followed by a
    reopen): see check_full_at."""
    indexes = commit_space_operations(tmp_path / "count", older=older)
    assert len(indexes) >= 5
    for full_at in indexes:
        (tmp_path / str(full_at)).mkdir()
        reopen = full_at % 2 == 1
        check_full_at(tmp_path / str(full_at), full_at, older=older, reopen=reopen)
