"""A kill in the middle of a cut made by a failover operation, then a restart.

The planned failover's final sync and reverse replication's first cycle each cut the
disks; a kill between the seal of the logs and the cut record leaves a cycle with no
cut record. Right after the restart, before any write, that cut can still be
completed (as a restart of ``replicate`` does); if it is not, the next cycle refuses
the cycle as interrupted and the VM must resynchronise, although a kill lost nothing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from crash_sweep import run_child_text

from engine.orchestration.engine import ReplicationEngine
from engine.storage import files
from engine.testing import CountingFileSystem, KillingFileSystem, ManualClock

BLOCK = 4096
DISKS = {"os": 16 * BLOCK, "data": 16 * BLOCK}


def write(engine: ReplicationEngine, version: int) -> None:
    disk = "os" if version % 2 else "data"
    data = version.to_bytes(4, "little") * (BLOCK // 4)
    engine.write("web", disk, (version % 16) * BLOCK, data)


def contents(engine: ReplicationEngine) -> dict[str, bytes]:
    return {disk: engine.read("web", disk, 0, size) for disk, size in DISKS.items()}


def open_engine(sites: Path) -> ReplicationEngine:
    return ReplicationEngine.open(
        sites / "primary", sites / "secondary", clock=ManualClock()
    )


def to_planned_failover(engine: ReplicationEngine, mark: Callable[[], None]) -> None:
    engine.create_vm("web", DISKS)
    engine.enable_protection("web")
    write(engine, 1)
    engine.replicate("web")
    write(engine, 2)  # left for the final sync
    mark()
    engine.planned_failover("web", then_fail_over=False)


def to_reverse_replication(engine: ReplicationEngine, mark: Callable[[], None]) -> None:
    engine.create_vm("web", DISKS)
    engine.enable_protection("web")
    write(engine, 1)
    engine.planned_failover("web")
    engine.commit("web")
    write(engine, 2)  # at the secondary: the first reverse cycle ships it
    mark()
    engine.reverse_replication("web")


def first_cut_rename(sites: Path, plan: Callable[..., None]) -> int:
    """The index of the first rename of a cut record after ``mark()``."""
    counting = CountingFileSystem()
    marked: list[int] = []
    with files.use(counting):
        engine = open_engine(sites)
        plan(engine, lambda: marked.append(counting.operations))
        engine.close()
    return next(
        entry.index
        for entry in counting.trace
        if entry.index > marked[0]
        and entry.operation == "rename"
        and entry.path.endswith("cycle.json")
    )


@pytest.mark.parametrize(
    ("plan", "phase", "recovered"),
    [
        (to_planned_failover, "protected", "planned_failover interrupted: rolled back"),
        (
            to_reverse_replication,
            "reverse_replicating",
            "reverse_replication finished after the restart",
        ),
    ],
    ids=["planned_failover", "reverse_replication"],
)
def test_a_kill_before_the_cut_record_needs_no_resynchronisation(
    tmp_path: Path, plan: Callable[..., None], phase: str, recovered: str
) -> None:
    """Killed before the cut record: the restart finishes (or rolls back) the
    operation, and the lifecycle goes on by cycles, with no resynchronisation."""
    index = first_cut_rename(tmp_path / "count", plan)
    sites = tmp_path / "sites"

    def body(report: Callable[[str], None]) -> None:
        with files.use(KillingFileSystem(index, when="before")):
            plan(open_engine(sites), lambda: None)

    status, _ = run_child_text(body)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    with open_engine(sites) as engine:
        assert engine.recovered["web"].startswith(recovered), engine.recovered
        status_after = engine.status("web")
        assert (status_after.phase, status_after.log_problem) == (phase, None)
        write(engine, 3)
        engine.planned_failover("web")  # the final sync ships the completed cut
        engine.commit("web")
        engine.reverse_replication("web")
        write(engine, 4)
        assert engine.replicate("web") is not None
        assert engine.status("web").phase in ("protected", "reverse_replicating")
        active = engine.status("web").active_site
        other = "primary" if active == "secondary" else "secondary"
        replica = engine.transport_towards(other).store("web")  # type: ignore[attr-defined]
        copied = {d: replica.read(d, 0, s) for d, s in DISKS.items()}
        assert copied == contents(engine)
