"""A targeted resynchronisation that fails after it restarted tracking, then again.

After an unplanned failover, reverse replication's resynchronisation compares only the
blocks that may differ: the saved block sets and the blocks of the new source's logs.
Its first step restarts tracking (the old logs go); if it fails after that (the link
cut, a full disk, a crash), the writes logged before the restart are in no log any
more, and a second, targeted attempt would not compare them: every block must be.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import TransportError
from engine.orchestration.engine import ReplicationEngine
from engine.testing import LossyTransport, ManualClock
from engine.transport.interface import ReplicaTarget

BLOCK = 4096
DISKS = {"os": 16 * BLOCK, "data": 16 * BLOCK}


def write(engine: ReplicationEngine, version: int) -> None:
    disk = "os" if version % 2 else "data"
    data = version.to_bytes(4, "little") * (BLOCK // 4)
    engine.write("web", disk, (version % 16) * BLOCK, data)


def contents(engine: ReplicationEngine) -> dict[str, bytes]:
    return {disk: engine.read("web", disk, 0, size) for disk, size in DISKS.items()}


def test_a_second_attempt_compares_what_the_first_one_took_from_the_logs(
    tmp_path: Path,
) -> None:
    """The first attempt's cycle is lost in transit; the second one still brings
    the writes made since commit to the replica."""
    lossy: dict[str, LossyTransport] = {}

    def wrap(inner: ReplicaTarget) -> ReplicaTarget:
        lossy[inner.site_name] = LossyTransport(inner)
        return lossy[inner.site_name]

    roots = (tmp_path / "p", tmp_path / "s")
    with ReplicationEngine.open(
        *roots, clock=ManualClock(), wrap_transport=wrap
    ) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        for version in range(1, 4):
            write(engine, version)
        engine.replicate("web")
        write(engine, 4)  # never shipped: lost by the failover
        engine.unplanned_failover("web")
        engine.commit("web")
        write(engine, 5)  # at the secondary, logged since commit
        write(engine, 6)
        lossy["primary"].drops = 1  # the resynchronisation's cycle is lost
        with pytest.raises(TransportError):
            engine.reverse_replication("web")
        assert engine.status("web").phase == "resynchronizing"
        engine.resynchronize("web")
        assert engine.status("web").phase == "reverse_replicating"
        replica = engine.transport_towards("primary")
        newest = replica.status("web").points[-1].recovery_point_id
        reader = replica.point_reader("web", newest)
        held = {disk: reader.read(disk, 0, size) for disk, size in DISKS.items()}
        assert held == contents(engine)
