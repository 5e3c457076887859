"""Public fakes for tests and deterministic runs, as ``trio.testing`` offers them.

These are real implementations of the engine's small protocols, not mocks: a test
drives them by hand (advance the clock, cut the link) and the engine under test cannot
tell them from production ones. Embedders may use them in their own tests.

- :class:`ManualClock`: a clock that moves only when told to.
- :class:`CycleSource`: the source side of one VM reduced to what a target needs: disks
  held in memory (the oracle a test compares the replica against) whose writes go to
  *real* change logs, cut into cycles of sealed logs (all disks at one point), each
  with a snapshot of the source at the cut.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.change_log import ChangeLog
from engine.errors import DiskRangeError, InvalidConfiguration
from engine.names import safe_child, validate_disk_name


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
