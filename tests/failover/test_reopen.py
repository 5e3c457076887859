"""A restarted engine reopens a VM where every failover step left it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.orchestration.engine import ReplicationEngine

BLOCK = 4096
DISKS = {"os": 16 * BLOCK, "data": 16 * BLOCK}


def write(engine: ReplicationEngine, version: int) -> None:
    disk = "os" if version % 2 else "data"
    data = version.to_bytes(4, "little") * (BLOCK // 4)
    engine.write("web", disk, (version % 16) * BLOCK, data)


def contents(engine: ReplicationEngine) -> dict[str, bytes]:
    return {disk: engine.read("web", disk, 0, size) for disk, size in DISKS.items()}


STEPS: list[tuple[str, Callable[[ReplicationEngine], object]]] = [
    ("drill", lambda e: e.start_test_failover("web")),
    ("cleanup", lambda e: e.cleanup_test_failover("web")),
    ("prepared", lambda e: e.planned_failover("web", then_fail_over=False)),
    ("failed_over", lambda e: e.failover("web")),
    ("committed", lambda e: e.commit("web")),
    ("reversed", lambda e: e.reverse_replication("web")),
    ("back_prepared", lambda e: e.planned_failover("web", then_fail_over=False)),
    ("back_failed_over", lambda e: e.failover("web")),
    ("back_committed", lambda e: e.commit("web")),
    ("protected_again", lambda e: e.reverse_replication("web")),
]


@pytest.mark.parametrize("stop", range(len(STEPS)), ids=[name for name, _ in STEPS])
def test_every_step_survives_a_restart(tmp_path: Path, stop: int) -> None:
    """Run the lifecycle to ``stop``, close, reopen: same phase, same contents, and
    the rest of the lifecycle still runs to a byte-identical failback."""
    roots = (tmp_path / "p", tmp_path / "s")
    engine = ReplicationEngine.open(*roots)
    engine.create_vm("web", DISKS)
    engine.enable_protection("web")
    version = 0
    for version in range(1, 6):
        write(engine, version)
    engine.replicate("web")
    for _, step in STEPS[: stop + 1]:
        step(engine)
        if engine.status("web").phase in ("protected", "reverse_replicating"):
            version += 1
            write(engine, version)
            engine.replicate("web")
    before = (engine.status("web").phase, contents(engine))
    engine.close()
    engine = ReplicationEngine.open(*roots)
    with engine:
        assert engine.damaged == {}
        assert (engine.status("web").phase, contents(engine)) == before
        for _, step in STEPS[stop + 1 :]:
            step(engine)
        status = engine.status("web")
        assert (status.phase, status.active_site) == ("protected", "primary")
        last = contents(engine)
        image = {d: (roots[0] / "vms" / "web" / f"{d}.img").read_bytes() for d in DISKS}
        assert image == last
        write(engine, 99)
        engine.replicate("web")
        replica = engine.transport.store("web")  # type: ignore[attr-defined]
        assert {d: replica.read(d, 0, s) for d, s in DISKS.items()} == contents(engine)
