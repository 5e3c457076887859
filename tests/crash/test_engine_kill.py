"""The engine SIGKILLed at every step of a cycle reopens at a valid recovery point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.binding.protected_vm import CYCLE_CRASH_POINTS, STEP_CRASH_POINTS
from engine.orchestration.engine import ReplicationEngine
from engine.replica.store import CRASH_POINTS, ReplicaStore
from engine.testing import ManualClock

BLOCK = 4096
DISKS = {"os": 16 * BLOCK, "data": 16 * BLOCK}
STORE_POINTS = [
    point.replace("*", disk)  # "*": one point per disk
    for point in CRASH_POINTS
    for disk in (sorted(DISKS) if "*" in point else [""])
]
KILL_POINTS = [*CYCLE_CRASH_POINTS, *STORE_POINTS]

CHILD = """
import os, signal, sys
from pathlib import Path
from engine.orchestration.engine import ReplicationEngine

def crash(step):
    if step == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)

engine = ReplicationEngine.open(Path(sys.argv[1]), Path(sys.argv[2]), crash_point=crash)
engine.write("web", "os", 0, bytes([2]) * 4096)
engine.write("web", "data", 0, bytes([2]) * 4096)
engine.replicate("web")
print("not killed")
"""


def first_bytes(store: ReplicaStore) -> tuple[int, int]:
    """(os, data) first byte of the replica: the step the newest point holds."""
    return store.read("os", 0, 1)[0], store.read("data", 0, 1)[0]


@pytest.mark.parametrize("kill_point", KILL_POINTS)
def test_killed_mid_cycle_reopens_valid_and_resumes(
    kill_point: str, tmp_path: Path
) -> None:
    """SIGKILL at the step; reopen: a valid point, then replication resumes."""
    roots = (tmp_path / "primary", tmp_path / "secondary")
    with ReplicationEngine.open(*roots, clock=ManualClock()) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        engine.write("web", "os", 0, bytes([1]) * BLOCK)
        engine.write("web", "data", 0, bytes([1]) * BLOCK)
        engine.replicate("web")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, roots), kill_point],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert child.returncode == -9, child.stdout + child.stderr
    with ReplicationEngine.open(*roots, clock=ManualClock()) as engine:
        assert engine.recovered == {"web": "replicate finished after the restart"}
        store = ReplicaStore.open(engine.secondary.replicas, "web", ManualClock())
        assert first_bytes(store) == (2, 2)  # the interrupted cycle was finished
        assert engine.status("web").phase == "protected"
        engine.replicate("web")
        store = ReplicaStore.open(engine.secondary.replicas, "web", ManualClock())
        assert first_bytes(store) == (2, 2)
        for disk, size in DISKS.items():
            assert store.read(disk, 0, size) == engine.read("web", disk, 0, size)


def test_every_kill_point_is_covered(tmp_path: Path) -> None:
    """The steps a cycle really passes through are the kill points the sweep above
    kills at, each once: none missed, none named that no cycle reaches. (The two
    steps every operation has, ``STEP_CRASH_POINTS``, change only SQLite and are
    swept by file operation in ``test_kill_sweep.py``.)"""
    steps: list[str] = []
    roots = (tmp_path / "primary", tmp_path / "secondary")
    with ReplicationEngine.open(*roots, clock=ManualClock()) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
    with ReplicationEngine.open(
        *roots, clock=ManualClock(), crash_point=steps.append
    ) as engine:
        engine.write("web", "os", 0, bytes([2]) * BLOCK)
        engine.write("web", "data", 0, bytes([2]) * BLOCK)
        engine.replicate("web")
    assert (steps[0], steps[-1]) == STEP_CRASH_POINTS
    assert sorted(steps[1:-1]) == sorted(KILL_POINTS)


CHILD_COPY = """
import os, signal, sys
from pathlib import Path
from engine.orchestration.engine import ReplicationEngine

def progress(disk, done, total):
    if disk == sys.argv[3] and done >= total // 2:
        os.kill(os.getpid(), signal.SIGKILL)

engine = ReplicationEngine.open(Path(sys.argv[1]), Path(sys.argv[2]))
engine.enable_protection("web", progress=progress)
print("not killed")
"""


@pytest.mark.parametrize("disk", sorted(DISKS))
def test_killed_during_the_initial_copy_resumes_it(disk: str, tmp_path: Path) -> None:
    """SIGKILL while a disk is being copied: reopen in initial replication, finish."""
    roots = (tmp_path / "primary", tmp_path / "secondary")
    with ReplicationEngine.open(*roots, clock=ManualClock()) as engine:
        engine.create_vm("web", DISKS)
        for offset in range(0, DISKS[disk], BLOCK):
            engine.write(
                "web", disk, offset, bytes([offset // BLOCK % 251 + 1]) * BLOCK
            )
    child = subprocess.run(
        [sys.executable, "-c", CHILD_COPY, *map(str, roots), disk],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert child.returncode == -9, child.stdout + child.stderr
    with ReplicationEngine.open(*roots, clock=ManualClock()) as engine:
        assert engine.recovered["web"].startswith("copy_disk interrupted")
        assert engine.status("web").phase == "initial_replication"
        engine.write("web", "os", 0, b"after the crash" * 16)
        engine.continue_initial_replication("web")
        assert engine.status("web").phase == "protected"
        store = ReplicaStore.open(engine.secondary.replicas, "web", ManualClock())
        for name, size in DISKS.items():
            assert store.read(name, 0, size) == engine.read("web", name, 0, size)


CHILD_ENABLE = """
import os, signal, sys
from pathlib import Path
from engine.orchestration.engine import ReplicationEngine

def crash(step):
    if step == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)

engine = ReplicationEngine.open(Path(sys.argv[1]), Path(sys.argv[2]), crash_point=crash)
engine.enable_protection("web")
print("not killed")
"""


@pytest.mark.parametrize("kill_point", KILL_POINTS)
def test_killed_in_the_first_cycle_of_initial_replication_finishes_it(
    kill_point: str, tmp_path: Path
) -> None:
    """SIGKILL while the initial copy's logs are applied: reopen finishes it."""
    roots = (tmp_path / "primary", tmp_path / "secondary")
    with ReplicationEngine.open(*roots, clock=ManualClock()) as engine:
        engine.create_vm("web", DISKS)
        engine.write("web", "os", 0, bytes([7]) * BLOCK)
    child = subprocess.run(
        [sys.executable, "-c", CHILD_ENABLE, *map(str, roots), kill_point],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert child.returncode == -9, child.stdout + child.stderr
    with ReplicationEngine.open(*roots, clock=ManualClock()) as engine:
        assert engine.recovered == {
            "web": "complete_initial_replication finished after the restart"
        }
        assert engine.status("web").phase == "protected"
        store = ReplicaStore.open(engine.secondary.replicas, "web", ManualClock())
        for disk, size in DISKS.items():
            assert store.read(disk, 0, size) == engine.read("web", disk, 0, size)
        engine.write("web", "data", 0, b"after" * 800)
        engine.replicate("web")
