"""Crash tests for ReplicaStore.apply_cycle: SIGKILL at every step, then recover."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from engine.replica.store import CRASH_POINTS, RecoveryAction, ReplicaStore
from engine.testing import Cycle, CycleSource, ManualClock

DISKS = {"os": 64 * 1024, "data": 32 * 1024}
REPOSITORY = Path(__file__).resolve().parents[2]

# The child opens the store and recovers it (mode "recover": and nothing else) or also
# applies cycle 2 (mode "apply"), killing itself with SIGKILL (no cleanup, no flush, no
# finally) when the store reaches the named step.
CHILD = """
import json, os, signal, sys
from pathlib import Path
from engine.replica.store import ReplicaStore
from engine.testing import ManualClock

root, kill_at, logs = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
mode = sys.argv[4]

def crash_point(step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

store = ReplicaStore.open(root, "vm-1", ManualClock(2000.0))
store.recover(crash_point=crash_point)
if mode == "apply":
    store.apply_cycle(
        2,
        {disk: Path(path) for disk, path in logs.items()},
        epoch=1,
        app_consistent=True,
        crash_point=crash_point,
    )
"""

# What recover() must do after a kill at each step (disks are applied in name order).
EXPECTED_ACTION = {
    "verified": RecoveryAction.NONE,
    "undo_written": RecoveryAction.NONE,
    "intent_written": RecoveryAction.ROLLED_FORWARD,
    "disk_applied:data": RecoveryAction.ROLLED_FORWARD,
    "disk_applied:os": RecoveryAction.ROLLED_FORWARD,
    "before_commit": RecoveryAction.ROLLED_FORWARD,
    "after_commit": RecoveryAction.CLEANED_UP,
    "before_log_delete": RecoveryAction.CLEANED_UP,
    "after_log_delete": RecoveryAction.CLEANED_UP,
}


def kill_points() -> list[str]:
    """Every crash point the store declares, with ``*`` expanded to each disk."""
    points = []
    for point in CRASH_POINTS:
        if point.endswith("*"):
            points += [point[:-1] + disk for disk in sorted(DISKS)]
        else:
            points.append(point)
    return points


def prepare(directory: Path) -> tuple[Cycle, Cycle]:
    """Build a target with cycle 1 applied and cycle 2 cut and waiting in the inbox."""
    source = CycleSource(directory / "source", DISKS)
    try:
        store = ReplicaStore.create(
            directory / "target", "vm-1", DISKS, 3, ManualClock()
        )
        source.write("os", 0, b"A" * 5000)
        source.write("data", 100, b"B" * 3000)
        first = source.cut()
        store.apply_cycle(1, first.logs, epoch=1, app_consistent=False)
        source.write("os", 2000, b"C" * 9000)
        source.write("os", 30_000, b"D" * 100)
        source.write("data", 0, b"E" * 32 * 1024)
        return first, source.cut()
    finally:
        source.close()


def replica_bytes(store: ReplicaStore) -> dict[str, bytes]:
    return {disk: store.read(disk, 0, size) for disk, size in DISKS.items()}


def run_child_killed_at(
    directory: Path, kill_at: str, cycle: Cycle, mode: str = "apply"
) -> int:
    logs = json.dumps({disk: str(path) for disk, path in cycle.logs.items()})
    target = str(directory / "target")
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, target, kill_at, logs, mode],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=False,
    )
    expected = ""
    assert expected == completed.stderr
    return completed.returncode


def test_every_kill_point_recovers_to_a_whole_point(tmp_path: Path) -> None:
    """After SIGKILL at each step, recover() gives the old or the new point."""
    covered = []
    for kill_at in kill_points():
        directory = tmp_path / kill_at.replace(":", "-")
        first, second = prepare(directory)
        killed = -signal.SIGKILL
        assert killed == run_child_killed_at(directory, kill_at, second)
        covered.append(kill_at)

        store = ReplicaStore.open(directory / "target", "vm-1", ManualClock(3000.0))
        report = store.recover()
        assert (kill_at, EXPECTED_ACTION[kill_at]) == (kill_at, report.action)
        recovered = replica_bytes(store)
        assert recovered in (first.snapshot, second.snapshot), kill_at
        rolled_on = report.action is not RecoveryAction.NONE
        assert (kill_at, rolled_on) == (kill_at, recovered == second.snapshot)

        point = store.apply_cycle(2, second.logs, epoch=1, app_consistent=True)
        assert (kill_at, 2) == (kill_at, point.recovery_point_id)
        assert second.snapshot == replica_bytes(store), kill_at
        images = store.materialize(1, directory / "materialized")
        assert first.snapshot == {d: p.read_bytes() for d, p in images.items()}
        expected = ((1, 2), ["1.undo"], ["replica", "store.json", "undo"])
        actual = (
            store.catalogue.recovery_point_ids,
            os.listdir(store.directory / "undo"),
            sorted(os.listdir(store.directory)),
        )
        assert expected == actual
        assert not any(path.exists() for path in second.logs.values())
    print(f"kill points covered: {len(covered)}: {', '.join(covered)}")
    assert sorted(EXPECTED_ACTION) == sorted(covered)


def test_kill_during_the_roll_forward_of_a_kill_recovers(tmp_path: Path) -> None:
    """A second SIGKILL while recover() rolls forward still ends at the new point."""
    first, second = prepare(tmp_path)
    killed = -signal.SIGKILL
    assert killed == run_child_killed_at(tmp_path, "disk_applied:data", second)
    assert killed == run_child_killed_at(tmp_path, "disk_applied:os", second, "recover")
    store = ReplicaStore.open(tmp_path / "target", "vm-1", ManualClock(3000.0))
    expected_state = (RecoveryAction.ROLLED_FORWARD, (1, 2), second.snapshot)
    actual_state = (
        store.recover().action,
        store.catalogue.recovery_point_ids,
        replica_bytes(store),
    )
    assert expected_state == actual_state
    images = store.materialize(1, tmp_path / "materialized")
    assert first.snapshot == {d: p.read_bytes() for d, p in images.items()}
