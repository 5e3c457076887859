"""Recovery points and their catalogue: the past states of a VM the target can restore.

A **recovery point** names one consistent state of all disks of a VM on the target: the
state right after a replication cycle (all disks cut at one point on the source) was
applied whole. It records the cycle it came from, the replication epoch, when the target
committed it (seconds from the injected clock), whether the source took it with
application consistency (VSS), and, per disk, the sequence number of the last change-log
record it contains, so the next cycle can be checked for a gap.

The **catalogue** is the ordered list of points a replica store keeps, oldest first. It
is an immutable value: every change returns a new catalogue, so the store can build the
next one, write it durably, and only then swap it in. Its invariants, asserted on
construction:

- recovery point ids strictly increase, and so do cycle ids; ids are never reused, even
  after every point was merged away or deleted (the catalogue keeps the high-water
  marks);
- retention keeps the newest ``retention_count`` points: merging away always takes the
  oldest, so the retained points are a contiguous run of cycles. A *pinned* point (a
  drill reads it, ``ReplicaStore.pin``) stops the merge: neither it nor any newer
  point is merged away, so the catalogue may hold more than ``retention_count`` points
  while the pin lasts.

Ordering is by id, never by ``created_at``: a wall clock may step backwards, a counter
does not. Lookups that fail raise :class:`RecoveryPointNotFound` naming the ids there
are.

The JSON form (``to_json``/``from_json``) is what the replica store writes in its
catalogue file; reading validates every field and raises :class:`DamagedState` naming
the field, since that file comes from disk and may be damaged (the store adds the file's
name). Not :class:`CorruptRecord`: that one means a change log failed its checks, and
is answered by distrusting the source's logs, which a damaged catalogue does not call
for.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from engine.errors import DamagedState, InvalidConfiguration, RecoveryPointNotFound

# 24 hours of 30-second cycles is 2880 points (the product keeps hourly points up to
# 24 hours back; we keep per-cycle points). The bound keeps the catalogue file small
# and the undo chain a failover replays (newest first, one image per point) short.
RETENTION_COUNT_MAX = 4096


@dataclass(frozen=True, slots=True)
class RecoveryPoint:
    """One committed, VM-consistent state of the replica (all disks at one cut)."""

    recovery_point_id: int
    cycle_id: int
    epoch: int
    created_at: float
    app_consistent: bool
    # (disk name, sequence of the last change-log record applied), sorted by disk name.
    last_sequences: tuple[tuple[str, int], ...]
    # What the cycle carried (all disks): a failover to an older point reports the
    # writes and bytes it rolls back from these. None in catalogues written before
    # (and in the control state's mirror, which keeps the identity only).
    record_count: int | None = field(default=None, compare=False)
    payload_bytes: int | None = field(default=None, compare=False)
    # A resynchronisation made it: its records are blocks that differed, not writes.
    resync: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        disks = [disk for disk, _ in self.last_sequences]
        assert disks == sorted(disks), disks
        assert len(set(disks)) == len(disks), disks
        assert self.recovery_point_id >= 1, self.recovery_point_id

    def last_sequence(self, disk: str) -> int:
        """Return the sequence of the last record of ``disk`` this point contains."""
        for name, sequence in self.last_sequences:
            if name == disk:
                return sequence
        known = [name for name, _ in self.last_sequences]
        msg = f"disk={disk!r} is not part of recovery point "
        msg += f"{self.recovery_point_id}; disks there: {known}"
        raise InvalidConfiguration(msg)

    def to_json(self) -> dict[str, object]:
        """Return this point as a JSON-ready dict (the catalogue file's row)."""
        return {
            "recovery_point_id": self.recovery_point_id,
            "cycle_id": self.cycle_id,
            "epoch": self.epoch,
            "created_at": self.created_at,
            "app_consistent": self.app_consistent,
            "last_sequences": dict(self.last_sequences),
            "record_count": self.record_count,
            "payload_bytes": self.payload_bytes,
            "resync": self.resync,
        }

    @classmethod
    def from_json(cls, data: object) -> RecoveryPoint:
        """Parse a catalogue row; raise :class:`DamagedState` naming a bad field."""
        row = _mapping(data, "recovery point")
        sequences = _mapping(row.get("last_sequences"), "last_sequences")
        return cls(
            recovery_point_id=_int(row, "recovery_point_id", minimum=1),
            cycle_id=_int(row, "cycle_id", minimum=0),
            epoch=_int(row, "epoch", minimum=0),
            created_at=_float(row, "created_at"),
            app_consistent=_bool(row, "app_consistent"),
            last_sequences=tuple(
                (disk, _int(sequences, disk, minimum=-1)) for disk in sorted(sequences)
            ),
            record_count=_optional_int(row, "record_count"),
            payload_bytes=_optional_int(row, "payload_bytes"),
            resync=_bool(row, "resync") if "resync" in row else False,
        )


def _optional_int(row: Mapping[str, object], name: str) -> int | None:
    """An optional count (absent or null in catalogues written before it existed)."""
    if row.get(name) is None:
        return None
    return _int(row, name, minimum=0)


def make_last_sequences(positions: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    """Return ``positions`` in the sorted pair form :class:`RecoveryPoint` stores."""
    return tuple(sorted(positions.items()))


def validate_retention_count(retention_count: object) -> int:
    """Return ``retention_count`` when an int in 1..RETENTION_COUNT_MAX; else raise."""
    if (
        isinstance(retention_count, bool)
        or not isinstance(retention_count, int)
        or not 1 <= retention_count <= RETENTION_COUNT_MAX
    ):
        msg = f"retention_count={retention_count!r} must be an int from 1 to "
        msg += f"{RETENTION_COUNT_MAX} (got {type(retention_count).__name__})"
        raise InvalidConfiguration(msg)
    return retention_count


@dataclass(frozen=True, slots=True)
class RecoveryPointCatalogue:
    """The retained recovery points of one VM, oldest first, and id high-water marks."""

    points: tuple[RecoveryPoint, ...] = ()
    last_recovery_point_id: int = 0
    last_cycle_id: int = field(default=-1)

    def __post_init__(self) -> None:
        ids = [point.recovery_point_id for point in self.points]
        cycles = [point.cycle_id for point in self.points]
        assert all(a < b for a, b in itertools.pairwise(ids)), ids
        assert all(a < b for a, b in itertools.pairwise(cycles)), cycles
        assert not ids or ids[-1] <= self.last_recovery_point_id, ids
        assert not cycles or cycles[-1] <= self.last_cycle_id, cycles

    @property
    def recovery_point_ids(self) -> tuple[int, ...]:
        """Return the retained ids, oldest first."""
        return tuple(point.recovery_point_id for point in self.points)

    def next_recovery_point_id(self) -> int:
        """Return the id the next committed point gets (ids are never reused)."""
        return self.last_recovery_point_id + 1

    def with_point(self, point: RecoveryPoint) -> RecoveryPointCatalogue:
        """Return a catalogue with ``point`` appended as the newest."""
        assert point.recovery_point_id == self.next_recovery_point_id(), point
        assert point.cycle_id > self.last_cycle_id, point
        return RecoveryPointCatalogue(
            points=(*self.points, point),
            last_recovery_point_id=point.recovery_point_id,
            last_cycle_id=point.cycle_id,
        )

    def merge_candidates(
        self, retention_count: int, *, pinned: int | None = None
    ) -> tuple[RecoveryPoint, ...]:
        """Return the oldest points beyond ``retention_count``, oldest first.

        With ``pinned`` (a retained point's id) only points older than it are
        candidates: the pinned point and every newer one stay.
        """
        validate_retention_count(retention_count)
        excess = max(0, len(self.points) - retention_count)
        if pinned is not None:
            assert pinned in self.recovery_point_ids, (pinned, self.recovery_point_ids)
            excess = min(excess, self.recovery_point_ids.index(pinned))
        return self.points[:excess]

    def retained(
        self, retention_count: int, *, pinned: int | None = None
    ) -> RecoveryPointCatalogue:
        """Return the catalogue without its merge candidates (the newest kept)."""
        excess = len(self.merge_candidates(retention_count, pinned=pinned))
        return RecoveryPointCatalogue(
            points=self.points[excess:],
            last_recovery_point_id=self.last_recovery_point_id,
            last_cycle_id=self.last_cycle_id,
        )

    def without_points(self) -> RecoveryPointCatalogue:
        """Return an empty catalogue that still remembers the id high-water marks."""
        return RecoveryPointCatalogue(
            points=(),
            last_recovery_point_id=self.last_recovery_point_id,
            last_cycle_id=self.last_cycle_id,
        )

    def get(self, recovery_point_id: int) -> RecoveryPoint:
        """Return the point ``recovery_point_id``, or raise RecoveryPointNotFound."""
        for point in self.points:
            if point.recovery_point_id == recovery_point_id:
                return point
        msg = f"recovery_point_id={recovery_point_id!r} is not in the catalogue; "
        msg += f"available: {list(self.recovery_point_ids)}"
        raise RecoveryPointNotFound(msg)

    def find_cycle(self, cycle_id: int) -> RecoveryPoint | None:
        """Return the retained point made by ``cycle_id``, if any."""
        for point in self.points:
            if point.cycle_id == cycle_id:
                return point
        return None

    def latest(self) -> RecoveryPoint:
        """Return the newest point, or raise RecoveryPointNotFound if there is none."""
        if not self.points:
            msg = "no recovery point yet: the catalogue is empty (no cycle applied "
            msg += "since the initial copy, or the points were deleted by a commit)"
            raise RecoveryPointNotFound(msg)
        return self.points[-1]

    def latest_app_consistent(self) -> RecoveryPoint:
        """Return the newest app-consistent point, or raise RecoveryPointNotFound."""
        for point in reversed(self.points):
            if point.app_consistent:
                return point
        msg = "no app-consistent recovery point in the catalogue; "
        msg += f"available (crash-consistent): {list(self.recovery_point_ids)}"
        raise RecoveryPointNotFound(msg)

    def newer_than(self, recovery_point_id: int) -> tuple[RecoveryPoint, ...]:
        """Return the points newer than ``recovery_point_id``, newest first."""
        self.get(recovery_point_id)
        return tuple(
            point
            for point in reversed(self.points)
            if point.recovery_point_id > recovery_point_id
        )

    def to_json(self) -> dict[str, object]:
        """Return the catalogue as a JSON-ready dict."""
        return {
            "last_recovery_point_id": self.last_recovery_point_id,
            "last_cycle_id": self.last_cycle_id,
            "points": [point.to_json() for point in self.points],
        }

    @classmethod
    def from_json(cls, data: object) -> RecoveryPointCatalogue:
        """Parse a catalogue; raise :class:`DamagedState` when it is malformed."""
        row = _mapping(data, "catalogue")
        rows = row.get("points")
        if not isinstance(rows, list):
            msg = f"catalogue field 'points' must be a list, got {type(rows).__name__}"
            raise DamagedState(msg)
        points = tuple(RecoveryPoint.from_json(item) for item in rows)
        last_id = _int(row, "last_recovery_point_id", minimum=0)
        last_cycle = _int(row, "last_cycle_id", minimum=-1)
        ids = [point.recovery_point_id for point in points]
        cycles = [point.cycle_id for point in points]
        ordered = ids == sorted(set(ids)) and cycles == sorted(set(cycles))
        if (
            not ordered
            or any(i > last_id for i in ids)
            or any(c > last_cycle for c in cycles)
        ):
            msg = "catalogue points are out of order or past the high-water marks: "
            msg += f"ids={ids} cycles={cycles} last_recovery_point_id={last_id} "
            msg += f"last_cycle_id={last_cycle}"
            raise DamagedState(msg)
        return cls(points, last_id, last_cycle)


def _mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        msg = f"{what} must be a JSON object, got {type(value).__name__}"
        raise DamagedState(msg)
    return value


#: The largest id or count a catalogue may hold: far beyond any real count, and with
#: room below SQLite's 64-bit limit for the control state's next id.
ID_MAX: Final = 2**62


def _int(row: Mapping[str, object], name: str, *, minimum: int) -> int:
    value = row.get(name)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not minimum <= value <= ID_MAX
    ):
        msg = f"catalogue field {name!r}={value!r} must be an int from {minimum} to "
        msg += f"{ID_MAX}"
        raise DamagedState(msg)
    return value


def _float(row: Mapping[str, object], name: str) -> float:
    value = row.get(name)
    number = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an int past the float range
            number = float(value)
    if not math.isfinite(number):
        msg = f"catalogue field {name!r}={value!r} must be a finite number"
        raise DamagedState(msg)
    return number


def _bool(row: Mapping[str, object], name: str) -> bool:
    value = row.get(name)
    if not isinstance(value, bool):
        msg = f"catalogue field {name!r}={value!r} must be true or false"
        raise DamagedState(msg)
    return value
