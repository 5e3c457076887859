"""Fixtures for the orchestrator's tests: a real engine on small disks, a real job
store file, and a clock that moves one second at every reading (so step times show
the order in which steps ran, even across threads)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from engine.binding.protected_vm import CrashPoint, GuestShutdown
from engine.clock import Clock
from engine.orchestration.engine import ReplicationEngine
from engine.orchestration.jobs import JobStore
from engine.testing import ManualClock

BLOCK = 4096
DISKS = {"os": 4 * BLOCK}


class TickingClock:
    """A clock one second later at every reading (thread-safe)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            self._now += 1.0
            return self._now


@pytest.fixture
def ticking_clock() -> Clock:
    """A clock that moves one second at every reading."""
    return TickingClock()


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[Callable[..., ReplicationEngine]]:
    """Opens the engine at ``tmp_path`` with protected VMs ``vms`` (created and
    enabled), optionally ``unprotected`` ones, a ``guest_shutdown`` and a
    ``crash_point`` (the engine's seams); closed after the test."""
    opened: list[ReplicationEngine] = []

    def make(
        vms: Iterable[str] = (),
        *,
        unprotected: Iterable[str] = (),
        guest_shutdown: GuestShutdown | None = None,
        crash_point: CrashPoint | None = None,
    ) -> ReplicationEngine:
        engine = ReplicationEngine.open(
            tmp_path / "primary", tmp_path / "secondary", clock=ManualClock(),
            block_bytes=BLOCK, guest_shutdown=guest_shutdown, crash_point=crash_point,
        )  # fmt: skip
        opened.append(engine)
        for vm in [*vms, *unprotected]:
            engine.create_vm(vm, DISKS)
            engine.write(vm, "os", 0, vm.encode().ljust(BLOCK, b"."))
        for vm in vms:
            engine.enable_protection(vm)
        return engine

    yield make
    for engine in opened:
        engine.close()


@pytest.fixture
def jobs_path(tmp_path: Path) -> Path:
    """Where the job store lives: beside the orchestrator's (future) state."""
    folder = tmp_path / "orchestrator"
    folder.mkdir()
    return folder / "jobs.sqlite"


@pytest.fixture
def jobs(jobs_path: Path, ticking_clock: Clock) -> Iterator[JobStore]:
    """The job store at ``jobs_path``, open for the test."""
    with JobStore.open(jobs_path, clock=ticking_clock) as store:
        yield store
