"""Failures between the steps of a cut or of a recovery never mix moments or wedge."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import TransportError
from engine.orchestration.engine import ReplicationEngine
from engine.replica.store import ReplicaStore
from engine.testing import LossyTransport, ManualClock

BLOCK = 4096
DISKS = {"a": 16 * BLOCK, "b": 16 * BLOCK}


def open_engine(tmp_path: Path, **options: Any) -> ReplicationEngine:
    """The engine on the two roots under ``tmp_path``."""
    return ReplicationEngine.open(
        tmp_path / "primary", tmp_path / "secondary", clock=ManualClock(), **options
    )


def replica(engine: ReplicationEngine) -> ReplicaStore:
    """The replica store of ``web``."""
    return ReplicaStore.open(engine.secondary.replicas, "web", ManualClock())


def assert_equal(engine: ReplicationEngine) -> None:
    """The replica of every disk equals the source."""
    store = replica(engine)
    for disk, size in DISKS.items():
        assert store.read(disk, 0, size) == engine.read("web", disk, 0, size)


def assert_points_consistent(engine: ReplicationEngine, tmp_path: Path) -> None:
    """In every retained point, disk a and disk b hold the same step (A then B)."""
    store = replica(engine)
    for point in store.catalogue.points:
        images = store.materialize(
            point.recovery_point_id, tmp_path / f"m{point.recovery_point_id}"
        )
        assert images["a"].read_bytes()[0] == images["b"].read_bytes()[0], point


def write_step(engine: ReplicationEngine, step: int) -> None:
    """Write ``step`` to disk a, then to disk b (a VM-consistent pair)."""
    engine.write("web", "a", 0, bytes([step]) * BLOCK)
    engine.write("web", "b", 0, bytes([step]) * BLOCK)


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files made immutable with chattr during a test (real EPERM), undone after."""
    made: list[Path] = []
    yield made
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def make_immutable(path: Path, made: list[Path]) -> None:
    """chattr +i ``path``, or skip when the filesystem does not support it."""
    result = subprocess.run(
        ["chattr", "+i", str(path)], capture_output=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"chattr +i not supported here: {result.stderr!r}")
    made.append(path)


def test_a_cut_that_fails_half_way_is_dropped_and_resynchronised(
    tmp_path: Path, immutable: list[Path]
) -> None:
    """Disk b's log cannot be sealed (EPERM) after a's was: no point mixes moments."""
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        write_step(engine, 1)
        engine.replicate("web")
        write_step(engine, 2)
        make_immutable(engine.primary.vm_directory("web") / "b.img.hrl", immutable)
        with pytest.raises(OSError, match="Operation not permitted"):
            engine.replicate("web")
        subprocess.run(["chattr", "-i", str(immutable.pop())], check=True)
        status = engine.status("web")
        assert status.phase == "protected"
        assert status.health == "critical"
        assert status.log_problem is not None
        assert "cut failed" in status.log_problem
        assert engine.primary.control.pending_operation("web") is None
        write_step(engine, 3)
        assert engine.replicate("web") is None  # resynchronisation instead
        engine.resynchronize("web")
        assert_equal(engine)
        assert_points_consistent(engine, tmp_path)


def test_untrusted_logs_stay_untrusted_across_a_restart(tmp_path: Path) -> None:
    """A missing log is noticed on reopen, and the verdict survives another reopen."""
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        write_step(engine, 1)
    (tmp_path / "primary" / "vms" / "web" / "b.img.hrl").unlink()
    with open_engine(tmp_path) as engine:
        assert "missing" in (engine.status("web").log_problem or "")
    with open_engine(tmp_path) as engine:
        assert "missing" in (engine.status("web").log_problem or "")
        assert engine.replicate("web") is None
        engine.resynchronize("web")
        assert engine.status("web").log_problem is None
        assert_equal(engine)
    with open_engine(tmp_path) as engine:
        assert engine.status("web").log_problem is None


def test_a_log_left_under_its_fresh_name_is_still_tracked(tmp_path: Path) -> None:
    """A seal cut between its renames leaves ``.hrl.new``: reopen finishes it."""
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        write_step(engine, 1)
    log = tmp_path / "primary" / "vms" / "web" / "b.img.hrl"
    log.rename(log.with_name(log.name + ".new"))
    with open_engine(tmp_path) as engine:
        assert engine.status("web").log_problem is None
        engine.write("web", "b", BLOCK, b"x" * BLOCK)
        engine.replicate("web")
        assert_equal(engine)


def test_an_app_consistent_cycle_keeps_its_flag_when_shipped_again(
    tmp_path: Path,
) -> None:
    """Dropped in transit, then shipped by the next cycle: still app-consistent."""
    with open_engine(tmp_path, wrap_transport=LossyTransport) as engine:
        lossy = engine.transport
        assert isinstance(lossy, LossyTransport)
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        write_step(engine, 1)
        lossy.drops = 1
        with pytest.raises(TransportError, match="link lost"):
            engine.replicate("web", app_consistent=True)
        assert [p.app_consistent for p in engine.status("web").recovery_points] == [
            False
        ]  # the dropped cycle made no point
        engine.replicate("web", app_consistent=True)
        flags = [p.app_consistent for p in engine.status("web").recovery_points]
        assert flags == [False, True]


def test_reopen_after_a_kill_does_not_need_the_link(tmp_path: Path) -> None:
    """Recovery commits the verdict recorded with the intent, link up or not."""
    script = """
import os, signal, sys
from pathlib import Path
from engine.orchestration.engine import ReplicationEngine
def crash(step):
    if step == "outbox_removed":
        os.kill(os.getpid(), signal.SIGKILL)
engine = ReplicationEngine.open(Path(sys.argv[1]), Path(sys.argv[2]), crash_point=crash)
engine.write("web", "a", 0, b"k" * 4096)
engine.replicate("web")
"""
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
    roots = [str(tmp_path / "primary"), str(tmp_path / "secondary")]
    child = subprocess.run([sys.executable, "-c", script, *roots], check=False)
    assert child.returncode == -9
    with open_engine(tmp_path, link_up=False) as engine:
        assert engine.recovered == {"web": "replicate finished after the restart"}
        assert engine.status("web").phase == "protected"
        assert replica(engine).read("a", 0, 1) == b"k"
