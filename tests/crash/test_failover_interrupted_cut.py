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
from crash_sweep import run_child_text, scratch_directory

from engine.orchestration.engine import ReplicationEngine
from engine.storage import files
from engine.storage.simulation import TracedOperation
from engine.testing import (
    CountingFileSystem,
    KillingFileSystem,
    ManualClock,
    PowerCut,
    PowerLossFileSystem,
)

BLOCK = 4096
DISKS = {"os": 16 * BLOCK, "data": 16 * BLOCK}


def write(engine: ReplicationEngine, version: int) -> None:
    disk = "os" if version % 2 else "data"
    data = version.to_bytes(4, "little") * (BLOCK // 4)
    engine.write("web", disk, (version % 16) * BLOCK, data)


def contents(engine: ReplicationEngine) -> dict[str, bytes]:
    return {disk: engine.read("web", disk, 0, size) for disk, size in DISKS.items()}


def open_engine(sites: Path, *, durable: bool = False) -> ReplicationEngine:
    return ReplicationEngine.open(
        sites / "primary", sites / "secondary", clock=ManualClock(),
        durable_writes=durable,
    )  # fmt: skip


def expected_after(versions: range) -> dict[str, bytes]:
    """The disks once ``versions`` were written in order (from zeros)."""
    images = {disk: bytearray(size) for disk, size in DISKS.items()}
    for version in versions:
        disk = "os" if version % 2 else "data"
        start = (version % 16) * BLOCK
        images[disk][start : start + BLOCK] = version.to_bytes(4, "little") * (
            BLOCK // 4
        )
    return {disk: bytes(image) for disk, image in images.items()}


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


def traced(
    sites: Path, plan: Callable[..., None], *, durable: bool = False
) -> tuple[int, int, list[TracedOperation]]:
    """A counting run of ``plan``: the operations from ``mark()`` to the plan's end
    (first, last) and the trace."""
    sites.mkdir(parents=True)
    counting = CountingFileSystem()
    marked: list[int] = []
    with files.use(counting):
        engine = open_engine(sites, durable=durable)
        plan(engine, lambda: marked.append(counting.operations))
        last = counting.operations
        engine.close()
    return marked[0] + 1, last, list(counting.trace)


def first_cut_rename(sites: Path, plan: Callable[..., None]) -> int:
    """The index of the first rename of a cut record after ``mark()``."""
    first, _, trace = traced(sites, plan)
    return next(
        entry.index
        for entry in trace
        if entry.index >= first
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


@pytest.mark.parametrize(
    "plan",
    [to_planned_failover, to_reverse_replication],
    ids=["planned_failover", "reverse_replication"],
)
def test_a_power_cut_in_a_failover_cut_loses_no_sealed_log(
    plan: Callable[..., None],
) -> None:
    """With durable writes, a power cut before each rename and directory sync of
    the operation: nothing is lost, so no resynchronisation is needed, and the
    lifecycle ends on exactly the versions written."""
    with scratch_directory() as directory:
        first, last, trace = traced(directory / "count", plan, durable=True)
        ordering = [
            entry.index
            for entry in trace
            if first <= entry.index <= last
            and entry.operation in ("rename", "fsync_directory")
        ]
        assert len(ordering) >= 5
        for crash_at in ordering:
            check_power_cut(directory / str(crash_at), plan, crash_at)


def check_power_cut(sites: Path, plan: Callable[..., None], crash_at: int) -> None:
    """Cut the power before ``crash_at``; reopen; drive to failback; compare."""
    sites.mkdir()

    def body(report: Callable[[str], None]) -> None:
        power = PowerLossFileSystem([sites], crash_at=crash_at)
        try:
            with files.use(power):
                plan(open_engine(sites, durable=True), lambda: None)
        except PowerCut:
            power.power_cut()
            report("cut")

    status, text = run_child_text(body)
    assert (os.waitstatus_to_exitcode(status), text) == (0, "cut\n"), crash_at
    with open_engine(sites, durable=True) as engine:
        assert engine.status("web").log_problem is None, crash_at
        if engine.status("web").phase == "committed":
            engine.reverse_replication("web")  # rolled back, or not finished
        write(engine, 3)
        engine.planned_failover("web")
        engine.commit("web")
        engine.reverse_replication("web")
        write(engine, 4)
        assert engine.replicate("web") is not None, crash_at
        assert contents(engine) == expected_after(range(1, 5)), crash_at
        active = engine.status("web").active_site
        other = "primary" if active == "secondary" else "secondary"
        replica = engine.transport_towards(other).store("web")  # type: ignore[attr-defined]
        copied = {d: replica.read(d, 0, s) for d, s in DISKS.items()}
        assert copied == contents(engine), crash_at
