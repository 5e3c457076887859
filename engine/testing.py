"""Public fakes for tests and deterministic runs, as ``trio.testing`` offers them.

These are real implementations of the engine's small protocols, not mocks: a test
drives them by hand (advance the clock, cut the link) and the engine under test cannot
tell them from production ones. Embedders may use them in their own tests.

- :class:`ManualClock`: a clock that moves only when told to (or waited on: it jumps
  to the deadline at once).
- :class:`CycleSource`: the source side of one VM reduced to what a target needs: disks
  held in memory (the oracle a test compares the replica against) whose writes go to
  *real* change logs, cut into cycles of sealed logs (all disks at one point), each
  with a snapshot of the source at the cut.
- :class:`LossyTransport`: wraps the replica interface and drops the next N transfers
  (the link failing in the middle of a cycle, after the model allowed it).
- :class:`PowerLossFileSystem`, :class:`KillingFileSystem`,
  :class:`FullDiskFileSystem`, :class:`CountingFileSystem` and :class:`PowerCut` (from
  ``engine.storage.simulation``): file-operation layers that lose power, SIGKILL the
  process, fill the disk, or only count, at a chosen operation.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from engine.errors import DiskRangeError, InvalidConfiguration, TransportError
from engine.log.writer import ChangeLog
from engine.names import safe_child, validate_disk_name
from engine.replica.recovery_point import RecoveryPoint
from engine.storage.block_set import BlockSet
from engine.storage.simulation import (
    CountingFileSystem,
    FullDiskFileSystem,
    KillingFileSystem,
    PowerCut,
    PowerLossFileSystem,
)
from engine.transport.interface import (
    CycleShipment,
    DiskReader,
    Progress,
    ReplicaStatus,
    ReplicaTarget,
    TestVmDisks,
)

__all__ = [
    "CountingFileSystem",
    "Cycle",
    "CycleSource",
    "FullDiskFileSystem",
    "KillingFileSystem",
    "LossyTransport",
    "ManualClock",
    "PowerCut",
    "PowerLossFileSystem",
]


class ManualClock:
    """A :class:`~engine.clock.Clock` that moves only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        """Start at ``start`` seconds since the Unix epoch."""
        self._now = _finite("start", start)

    def now(self) -> float:
        """Return the time set by the last :meth:`advance` or :meth:`set`."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0); return the new time."""
        seconds = _finite("seconds", seconds)
        if seconds < 0:
            msg = f"seconds={seconds!r} must be >= 0: a clock never runs backwards"
            raise InvalidConfiguration(msg)
        self._now += seconds
        return self._now

    def set(self, now: float) -> None:
        """Jump to ``now`` (may go backwards, as a stepped wall clock does)."""
        self._now = _finite("now", now)

    def wait_until(self, deadline: float, stop: threading.Event) -> bool:
        """Jump to ``deadline`` at once (never backwards) unless ``stop`` is set
        already (True then, the time unchanged); a waiting loop never sleeps."""
        deadline = _finite("deadline", deadline)
        if stop.is_set():
            return True
        self._now = max(self._now, deadline)
        return False


@dataclass(frozen=True, slots=True)
class Cycle:
    """One cut of every disk: sealed logs, their last sequences, the source bytes."""

    cycle_id: int
    epoch: int
    logs: dict[str, Path]
    last_sequences: dict[str, int]
    snapshot: dict[str, bytes]


class CycleSource:
    """A source VM: disks in memory, every write also appended to a real change log."""

    def __init__(
        self,
        directory: Path,
        disks: Mapping[str, int],
        *,
        epoch: int = 1,
        first_sequence: int = 0,
    ) -> None:
        """Track ``disks`` (name -> size in bytes, all zero); logs in ``directory``."""
        self.directory = directory
        self.epoch = epoch
        self.images = {validate_disk_name(d): bytearray(n) for d, n in disks.items()}
        self.cycles_cut = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._logs = {
            disk: ChangeLog.create(
                safe_child(directory, disk + ".hrl"),
                disk_id=disk,
                epoch=epoch,
                first_sequence=first_sequence,
            )
            for disk in self.images
        }

    def write(self, disk: str, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` of ``disk``: log first, then the image."""
        image = self.images[disk]
        if offset < 0 or offset + len(data) > len(image):
            msg = f"offset={offset}, length={len(data)} must lie within disk "
            msg += f"{disk!r} of {len(image)} bytes"
            raise DiskRangeError(msg)
        sequence = self._logs[disk].append(offset, data)
        image[offset : offset + len(data)] = data
        return sequence

    def cut(self) -> Cycle:
        """Seal every disk's log at this point into ``cycle-<n>/``; return the cycle."""
        self.cycles_cut += 1
        cycle_directory = safe_child(self.directory, f"cycle-{self.cycles_cut}")
        cycle_directory.mkdir()
        logs = {}
        last_sequences = {}
        for disk, log in self._logs.items():
            sealed = log.seal(safe_child(cycle_directory, disk + ".hrl"))
            logs[disk] = sealed.path
            last_sequences[disk] = sealed.last_sequence
        snapshot = {disk: bytes(image) for disk, image in self.images.items()}
        return Cycle(self.cycles_cut, self.epoch, logs, last_sequences, snapshot)

    def close(self) -> None:
        """Close every change log."""
        for log in self._logs.values():
            log.close()


def _finite(argument: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{argument}={value!r} must be a number (got {type(value).__name__})"
        raise InvalidConfiguration(msg)
    if not math.isfinite(value):
        msg = f"{argument}={value!r} must be finite"
        raise InvalidConfiguration(msg)
    return float(value)


class LossyTransport:
    """A replica interface that drops, delays or cuts the replies of transfers.

    - ``drops``: the next transfers (disk images, cycles) fail mid-way. The link
      reports itself up (so the model allows the cycle) and the transfer is lost:
      :class:`TransportError`, nothing delivered, exactly as a link cut during it.
    - ``lose_reply``: cycles for which it returns true are delivered and applied,
      then the link is cut before the reply: :class:`TransportError` although the
      target holds the point (``replies_lost`` counts them).
    - ``delay``: every transfer takes that many seconds of ``clock`` (a
      :class:`ManualClock`) before it is delivered.

    Everything else is the wrapped interface's. Use it as
    ``ReplicationEngine.open(..., wrap_transport=LossyTransport)``.
    """

    def __init__(
        self,
        inner: ReplicaTarget,
        drops: int = 0,
        *,
        lose_reply: Callable[[CycleShipment], bool] | None = None,
        delay: float = 0.0,
        clock: ManualClock | None = None,
    ) -> None:
        if delay and clock is None:
            msg = f"delay={delay!r} needs the ManualClock it advances (clock=None)"
            raise InvalidConfiguration(msg)
        self.inner = inner
        self.drops = drops
        self.dropped = 0
        self.lose_reply = lose_reply
        self.replies_lost = 0
        self.delay = _finite("delay", delay)
        self.clock = clock

    @property
    def site_name(self) -> str:
        """The wrapped target's site."""
        return self.inner.site_name

    def reachable(self) -> bool:
        """Whatever the wrapped interface says."""
        return self.inner.reachable()

    def memoised(self) -> AbstractContextManager[None]:
        """The wrapped interface's."""
        return self.inner.memoised()

    def create_replica(
        self, vm_name: str, disks: Mapping[str, int], retention_count: int
    ) -> None:
        """Passed through."""
        self.inner.create_replica(vm_name, disks, retention_count)

    def remove_replica(self, vm_name: str) -> None:
        """Passed through."""
        self.inner.remove_replica(vm_name)

    def send_disk_image(
        self,
        vm_name: str,
        disk: str,
        image: Path,
        *,
        progress: Progress | None = None,
    ) -> None:
        """Drop the disk image while drops remain; else deliver it."""
        self._maybe_drop(f"disk {disk!r} of VM {vm_name!r}")
        self._wait()
        self.inner.send_disk_image(vm_name, disk, image, progress=progress)

    def install_initial_copy(self, vm_name: str) -> None:
        """Passed through."""
        self.inner.install_initial_copy(vm_name)

    def apply_cycle(self, vm_name: str, shipment: CycleShipment) -> RecoveryPoint:
        """Drop the cycle while drops remain; else deliver and apply it (and lose
        the reply when ``lose_reply`` says so)."""
        self._maybe_drop(f"cycle {shipment.cycle_id} of VM {vm_name!r}")
        self._wait()
        point = self.inner.apply_cycle(vm_name, shipment)
        if self.lose_reply is not None and self.lose_reply(shipment):
            self.replies_lost += 1
            msg = f"link lost before the reply to cycle {shipment.cycle_id} of VM "
            msg += f"{vm_name!r} (its point {point.recovery_point_id} was committed; "
            msg += "reply lost by LossyTransport)"
            raise TransportError(msg)
        return point

    def block_digests(
        self,
        vm_name: str,
        disk: str,
        block_bytes: int,
        *,
        blocks: Sequence[int] | None = None,
    ) -> list[bytes]:
        """Passed through."""
        return self.inner.block_digests(vm_name, disk, block_bytes, blocks=blocks)

    def status(self, vm_name: str, *, quick: bool = False) -> ReplicaStatus:
        """Passed through."""
        return self.inner.status(vm_name, quick=quick)

    def start_test_failover(self, vm_name: str, recovery_point_id: int) -> None:
        self.inner.start_test_failover(vm_name, recovery_point_id)

    def test_vm(self, vm_name: str) -> TestVmDisks:
        return self.inner.test_vm(vm_name)

    def cleanup_test_failover(self, vm_name: str) -> None:
        self.inner.cleanup_test_failover(vm_name)

    def point_reader(self, vm_name: str, recovery_point_id: int) -> DiskReader:
        return self.inner.point_reader(vm_name, recovery_point_id)

    def promote_replica(
        self, vm_name: str, recovery_point_id: int, block_bytes: int
    ) -> Mapping[str, BlockSet]:
        return self.inner.promote_replica(vm_name, recovery_point_id, block_bytes)

    def adopt_copy(
        self, vm_name: str, disks: Mapping[str, int], retention_count: int
    ) -> None:
        self.inner.adopt_copy(vm_name, disks, retention_count)

    def statistics(self) -> object:
        """The wrapped interface's counters, when it keeps any."""
        counters = getattr(self.inner, "statistics", None)
        return counters() if callable(counters) else None

    def _wait(self) -> None:
        if self.delay and self.clock is not None:
            self.clock.advance(self.delay)

    def _maybe_drop(self, what: str) -> None:
        if self.dropped < self.drops:
            self.dropped += 1
            msg = f"link lost while shipping {what} (dropped by LossyTransport)"
            raise TransportError(msg)
