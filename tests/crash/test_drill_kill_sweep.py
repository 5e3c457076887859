"""A kill or a power cut at every operation of starting and cleaning up a drill.

Kills: one child interpreter (``CHILD``) forks a process per kill point; each copies
a prepared site, runs ``start_drill`` or ``cleanup_drill`` under
``KillingFileSystem`` and dies there. Power cuts: ``PowerLossFileSystem`` in this
process, which keeps only what was fsynced. Every site is then reopened: the store
opens, a drill either opens and reads its point exactly or is refused as never
started, and ``cleanup_drill`` then leaves no area, no pin and every retained point
exact.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import InvalidConfiguration
from engine.replica.drill import cleanup_drill, open_drill, start_drill
from engine.replica.store import ReplicaStore
from engine.storage import files
from engine.testing import (
    CountingFileSystem,
    CycleSource,
    ManualClock,
    PowerCut,
    PowerLossFileSystem,
)

REPOSITORY = Path(__file__).resolve().parents[2]
BLOCK = 4096
DISKS = {"os": 16 * BLOCK, "data": 8 * BLOCK}

CHILD = """
import json, os, shutil, signal, sys
from pathlib import Path
from engine.replica.drill import cleanup_drill, start_drill
from engine.replica.store import ReplicaStore
from engine.storage import files
from engine.testing import KillingFileSystem, ManualClock

template, work, operation, count, point = sys.argv[1:6]
outcomes = []
for when in ("before", "after"):
    for index in range(1, int(count) + 1):
        site = Path(work) / f"{when}-{index}"
        shutil.copytree(template, site)
        pid = os.fork()
        if pid == 0:
            store = ReplicaStore.open(site / "replicas", "vm-1", ManualClock())
            with files.use(KillingFileSystem(index, when=when)):
                if operation == "start":
                    start_drill(store, int(point), site / "drill", 4096)
                else:
                    cleanup_drill(store, site / "drill")
            os._exit(3)
        _, status = os.waitpid(pid, 0)
        outcomes.append([str(site), os.WIFSIGNALED(status) and os.WTERMSIG(status)])
print(json.dumps(outcomes))
"""


def prepare(site: Path, *, drill: bool) -> dict[int, dict[str, bytes]]:
    """A store with points 1..4 (retention 2, point 1 pinned by a drill when
    ``drill``, else 3 and 4); return each retained point's bytes."""
    source = CycleSource(site / "source", DISKS, epoch=1)
    store = ReplicaStore.create(site / "replicas", "vm-1", DISKS, 2, ManualClock())
    snapshots = {}
    try:
        for number in range(4):
            generator = random.Random(number)
            for disk, size in DISKS.items():
                offset = generator.randrange(0, size - BLOCK)
                source.write(disk, offset, generator.randbytes(BLOCK))
            cycle = source.cut()
            store.apply_cycle(cycle.cycle_id, cycle.logs, epoch=1, app_consistent=False)
            snapshots[number + 1] = cycle.snapshot
            if drill and number == 0:
                with start_drill(store, 1, site / "drill", BLOCK) as vm:
                    vm.write("os", 5, b"test VM")
    finally:
        source.close()
    return snapshots


def run(operation: str, store: ReplicaStore, area: Path, point: int) -> None:
    """Start a drill of ``point`` in ``area``, or clean up the one there."""
    if operation == "start":
        start_drill(store, point, area, BLOCK)
    else:
        cleanup_drill(store, area)


def count_operations(template: Path, scratch: Path, operation: str, point: int) -> int:
    shutil.copytree(template, scratch)
    store = ReplicaStore.open(scratch / "replicas", "vm-1", ManualClock())
    counter = CountingFileSystem()
    with files.use(counter):
        if operation == "start":
            vm = start_drill(store, point, scratch / "drill", BLOCK)
            operations = counter.operations  # closing the test VM is not part of it
            vm.close()
            return operations
        cleanup_drill(store, scratch / "drill")
    return counter.operations


def point_bytes(store: ReplicaStore, point: int, directory: Path) -> dict[str, bytes]:
    images = store.materialize(point, directory / f"rp-{point}")
    return {disk: path.read_bytes() for disk, path in images.items()}


def check_site(
    site: Path, operation: str, point: int, snapshots: dict[int, dict[str, bytes]]
) -> None:
    """The store opens; the drill opens exactly or is refused as never started;
    cleanup_drill then leaves no area, no pin and every retained point exact."""
    store = ReplicaStore.open(site / "replicas", "vm-1", ManualClock())
    store.recover()
    if (site / "drill" / "drill.json").exists():
        with open_drill(store, site / "drill") as vm:
            expected = bytearray(snapshots[point]["os"])
            if operation == "cleanup":
                expected[5:12] = b"test VM"
            assert bytes(expected) == vm.read("os", 0, DISKS["os"]), site.name
    elif (site / "drill").exists() or store.pinned is not None:
        with pytest.raises(InvalidConfiguration, match="holds no drill"):
            open_drill(store, site / "drill")
    cleanup_drill(store, site / "drill")
    reopened = ReplicaStore.open(site / "replicas", "vm-1", ManualClock())
    expected_state = (False, None, (3, 4))
    actual_state = (
        (site / "drill").exists(),
        reopened.pinned,
        reopened.catalogue.recovery_point_ids,
    )
    assert expected_state == actual_state, site.name
    for retained in (3, 4):
        found = point_bytes(reopened, retained, site / "points")
        assert snapshots[retained] == found, (site.name, retained)


@pytest.mark.slow
@pytest.mark.parametrize("operation", ["start", "cleanup"])
def test_a_kill_at_any_step_leaves_a_drill_cleanup_can_finish(
    tmp_path: Path, operation: str
) -> None:
    """After each kill (before and after every operation): see check_site."""
    template = tmp_path / "template"
    snapshots = prepare(template, drill=operation == "cleanup")
    point = 1 if operation == "cleanup" else 3  # cleanup: the prepared drill's
    count = count_operations(template, tmp_path / "count", operation, point)
    assert count >= 5
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(template), str(tmp_path), operation,
         str(count), str(point)],
        cwd=REPOSITORY, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (child.returncode, child.stderr) == (0, "")
    outcomes = json.loads(child.stdout)
    assert len(outcomes) == 2 * count
    for site_name, signal_number in outcomes:
        assert signal_number == 9, site_name
        check_site(Path(site_name), operation, point, snapshots)


@pytest.mark.parametrize("operation", ["start", "cleanup"])
def test_a_power_cut_at_any_step_leaves_a_drill_cleanup_can_finish(
    tmp_path: Path, operation: str
) -> None:
    """After power is lost before each operation (only what was fsynced stays):
    see check_site."""
    template = tmp_path / "template"
    snapshots = prepare(template, drill=operation == "cleanup")
    point = 1 if operation == "cleanup" else 3
    count = count_operations(template, tmp_path / "count", operation, point)
    for crash_at in range(1, count + 1):
        site = tmp_path / f"cut-{crash_at}"
        shutil.copytree(template, site)
        store = ReplicaStore.open(site / "replicas", "vm-1", ManualClock())
        power = PowerLossFileSystem([site], crash_at=crash_at)
        with files.use(power), pytest.raises(PowerCut):
            run(operation, store, site / "drill", point)
        power.power_cut()
        check_site(site, operation, point, snapshots)
