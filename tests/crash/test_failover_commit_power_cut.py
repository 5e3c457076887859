"""A power cut at each rename and directory sync of a commit: the VM keeps its disks.

Commit moves the replica store into the VM's folder and the images out of it
(``engine/replica/promote.py``): renames from one directory to another. Under the
strict power-loss model (``PowerLossFileSystem``) a rename is durable in each
directory only once that directory is fsynced; after the cut, the reopened engine
must finish the commit on the chosen point's bytes, whatever was durable.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from crash_sweep import run_child_text, scratch_directory

from engine.orchestration.engine import ReplicationEngine
from engine.storage import files
from engine.testing import (
    CountingFileSystem,
    ManualClock,
    PowerCut,
    PowerLossFileSystem,
)

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
        sites / "primary", sites / "secondary", clock=ManualClock(),
        durable_writes=True,
    )  # fmt: skip


def failed_over(engine: ReplicationEngine, *, older: bool) -> Images:
    """Three points, then a failover (unplanned from the oldest when ``older``);
    return the bytes of the point the VM runs from."""
    engine.create_vm("web", DISKS)
    engine.enable_protection("web")
    states = {}
    for version in range(1, 4):
        write(engine, version)
        engine.replicate("web")
        states[engine.status("web").recovery_points[-1].recovery_point_id] = contents(
            engine
        )
    if older:
        engine.unplanned_failover("web", min(states))
        return states[min(states)]
    engine.planned_failover("web")
    return states[max(states)]


#: Where the order of durable steps matters: a cut before each sync of a directory
#: and each rename (the other operations are covered by the engine's own sweeps).
ORDERING = frozenset({"fsync_directory", "rename"})


def commit_operations(sites: Path, *, older: bool) -> list[int]:
    """The commit's renames and directory syncs, by index (``sites`` made first, as
    for a cut)."""
    sites.mkdir()
    counting = CountingFileSystem()
    with files.use(counting):
        engine = open_engine(sites)
        failed_over(engine, older=older)
        first = counting.operations + 1
        engine.commit("web")
        last = counting.operations
        engine.close()
    return [
        entry.index
        for entry in counting.trace
        if first <= entry.index <= last and entry.operation in ORDERING
    ]


def cut_before(sites: Path, crash_at: int, *, older: bool) -> None:
    """In a forked child: the failover, then the commit with the power cut before
    operation ``crash_at``."""

    def body(report: Callable[[str], None]) -> None:
        power = PowerLossFileSystem([sites], crash_at=crash_at)
        try:
            with files.use(power):
                engine = open_engine(sites)
                failed_over(engine, older=older)
                engine.commit("web")
        except PowerCut:
            power.power_cut()
            report("cut")

    status, text = run_child_text(body)
    assert (os.waitstatus_to_exitcode(status), text) == (0, "cut\n"), crash_at


@pytest.mark.parametrize("older", [True, False], ids=["older_point", "planned"])
def test_a_power_cut_in_commit_keeps_the_chosen_point(older: bool) -> None:
    """After a cut before each rename and directory sync of the commit, the reopened
    engine holds the chosen point's bytes, committed (finished by the restart) or
    not yet, and the commit then ends on them."""
    with scratch_directory() as tmp_path:
        check_every_cut(tmp_path, older=older)


def check_every_cut(tmp_path: Path, *, older: bool) -> None:
    """The body of the test, in a scratch directory (tmpfs where there is one)."""
    with open_engine(tmp_path / "reference") as reference:
        expected = failed_over(reference, older=older)
    operations = commit_operations(tmp_path / "count", older=older)
    assert len(operations) >= 5
    for crash_at in operations:
        sites = tmp_path / str(crash_at)
        sites.mkdir()
        cut_before(sites, crash_at, older=older)
        with open_engine(sites) as engine:
            assert engine.damaged == {}, crash_at
            phase = engine.status("web").phase
            assert phase in ("failed_over", "committed"), (crash_at, phase)
            assert contents(engine) == expected, crash_at
            if phase == "failed_over":
                engine.commit("web")
            assert contents(engine) == expected, crash_at
