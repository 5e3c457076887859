"""Reverse replication when the new source's change logs cannot vouch for its disks.

After a planned failover the old copy is the new source's starting point, so reverse
replication ships deltas: a first cycle of what the new source logged since commit
(decision 15). That is right only while the logs hold every write since commit. A
log whose tail was torn (a record lost, its write on the disk) is marked untrusted
on reopen, and the model then sends the next cycle to a resynchronisation; the first
cycle must not ship those logs as if they were whole.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.orchestration.engine import ReplicationEngine
from engine.testing import ManualClock

BLOCK = 4096
DISKS = {"os": 16 * BLOCK, "data": 16 * BLOCK}


def write(engine: ReplicationEngine, version: int) -> None:
    disk = "os" if version % 2 else "data"
    data = version.to_bytes(4, "little") * (BLOCK // 4)
    engine.write("web", disk, (version % 16) * BLOCK, data)


def contents(engine: ReplicationEngine) -> dict[str, bytes]:
    return {disk: engine.read("web", disk, 0, size) for disk, size in DISKS.items()}


def open_engine(tmp_path: Path) -> ReplicationEngine:
    return ReplicationEngine.open(tmp_path / "p", tmp_path / "s", clock=ManualClock())


def test_reverse_replication_ships_no_cycle_from_untrusted_logs(
    tmp_path: Path,
) -> None:
    """A torn log tail at the new source: no point from those logs; the
    resynchronisation the model asks for makes the replica equal the source."""
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        write(engine, 1)
        engine.planned_failover("web")
        engine.commit("web")
        write(engine, 2)  # data: its record is torn below, the write stays
        write(engine, 3)  # os
    log = tmp_path / "s" / "vms" / "web" / "data.img.hrl"
    os.truncate(log, log.stat().st_size - 7)  # the last record loses its end
    with open_engine(tmp_path) as engine:
        status = engine.status("web")
        assert (status.phase, status.log_problem is not None) == ("committed", True)
        source = contents(engine)
        engine.reverse_replication("web")
        replica = engine.transport_towards("primary")
        for point in replica.status("web").points:
            reader = replica.point_reader("web", point.recovery_point_id)
            held = {disk: reader.read(disk, 0, size) for disk, size in DISKS.items()}
            assert held == source, point.recovery_point_id
        status = engine.status("web")
        assert status.phase in ("reverse_replicating", "resynchronizing")
        if status.phase == "reverse_replicating":
            assert "resynchronize" in status.allowed
            assert engine.replicate("web") is None  # the model: resynchronise
        engine.resynchronize("web")
        points = replica.status("web").points
        reader = replica.point_reader("web", points[-1].recovery_point_id)
        held = {disk: reader.read(disk, 0, size) for disk, size in DISKS.items()}
        assert held == source
        assert engine.status("web").phase == "reverse_replicating"
