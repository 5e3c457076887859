"""The loss report of a failover: what the target could know, then what was lost.

A failover starts the replica VM from a recovery point; every write the old source
acknowledged after that point is lost to the new active copy. Who can count them:

- **the target** knows the points it holds: the writes (and payload bytes) of the
  cycles newer than the chosen point, which the failover rolls back
  (``RecoveryPoint.record_count``/``payload_bytes``), and when the source last shipped
  (the newest point's time): that is "the source's last reported state";
- **the old source** alone knows what it never shipped: the records in its change logs
  (the active log and the sealed cycles waiting in its outbox), and, when its copy kept
  running after a failed shutdown, what it wrote since.

So at failover time the report is **exact** only when the target could ask a stopped,
reachable old source (a planned failover; an unplanned one whose shutdown worked and
whose site and link were up); otherwise it is a **lower bound**, labelled so: the
rolled-back writes, with the unshipped ones unknown. When the old source comes back,
**reconciliation** reads its logs and makes the figure exact (writes, payload bytes,
and the window from the chosen point's time to its last acknowledged write, the
modification time of its newest log file). No figure here is ever read from a site the
engine could not reach: the binding calls :func:`reconciled` only with the old source
up and open.

This module is pure: the binding gathers the counts and passes them in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Self

from engine.errors import DamagedState
from engine.replica.recovery_point import RecoveryPoint


@dataclass(frozen=True)
class LogCounts:
    """What the old source's change logs hold that the target never applied."""

    records: int
    payload_bytes: int
    last_write_at: float | None  # the newest log file's modification time


@dataclass(frozen=True)
class LossReport:
    """The loss of the last failover, as known when it was last updated."""

    kind: str  # planned | unplanned
    failed_over_at: float
    old_site: str
    recovery_point_id: int
    point_created_at: float
    point_app_consistent: bool
    source_last_shipped_at: float | None  # the newest point the target held
    writes_rolled_back: int  # held by the target beyond the chosen point
    bytes_rolled_back: int | None  # None: a point older than these counts
    exact: bool
    writes_lost: int | None  # exact figure when known
    bytes_lost: int | None
    writes_lost_at_least: int  # the bound the target could give
    window_start: float | None = None
    window_end: float | None = None  # the old source's last acknowledged write
    old_copy_kept_running: bool = False  # a failed shutdown left a divergent copy
    reconciled_at: float | None = None
    abandoned: bool = False  # disable gave the divergent copy up (not reconciled)
    note: str = ""
    newest_cycle_id: int | None = None  # the newest cycle the target had applied
    rolled_back_countable: bool = True  # False: a resynchronisation's point is in it
    unshipped_writes: int | None = None  # what the old source's logs held
    unshipped_bytes: int | None = None
    exact_at_failover: bool = False  # exact when the replica VM started (or rechosen)

    def to_json(self) -> dict[str, Any]:
        """The report as stored in the control row's details."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Read a stored report; damage is :class:`DamagedState`."""
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{key: value for key, value in data.items() if key in known})
        except TypeError as error:
            msg = f"the stored loss report {data!r} is unreadable ({error}): the "
            msg += "control file is damaged; restore it from a backup"
            raise DamagedState(msg) from error

    def summary(self) -> str:
        """One line a person reads."""
        if self.exact and self.writes_lost is not None:
            size = "unknown" if self.bytes_lost is None else str(self.bytes_lost)
            text = f"{self.writes_lost} writes ({size} bytes) lost"
        else:
            text = f"at least {self.writes_lost_at_least} writes lost"
        head = f"{self.kind} failover from recovery point {self.recovery_point_id}"
        return f"{head}: {text} ({self.note})" if self.note else f"{head}: {text}"


def rolled_back(
    points: tuple[RecoveryPoint, ...], chosen: RecoveryPoint
) -> tuple[int, int | None]:
    """Writes and payload bytes of the delta cycles newer than ``chosen``.

    A resynchronisation's point counts blocks that differed, not writes: it is left
    out, so the figure is never more than the truth (``_countable`` says whether it
    is all of it). Bytes are None when unknown.
    """
    writes = 0
    sizes: list[int | None] = []
    for point in points:
        if point.recovery_point_id <= chosen.recovery_point_id:
            continue
        if point.resync:
            sizes.append(None)
            continue
        writes += point.record_count or 0
        sizes.append(point.payload_bytes)
    known = None if any(size is None for size in sizes) else sum(s or 0 for s in sizes)
    return writes, known


def at_failover(
    *,
    kind: str,
    now: float,
    old_site: str,
    points: tuple[RecoveryPoint, ...],
    chosen: RecoveryPoint,
    source: LogCounts | None,
    old_copy_running: bool,
) -> LossReport:
    """The report when the replica VM starts.

    ``source`` is what a reachable, stopped old source said of its unshipped records
    (None: it could not be asked, or it still runs).
    """
    writes, size = rolled_back(points, chosen)
    newest = points[-1] if points else chosen
    report = LossReport(
        kind=kind,
        failed_over_at=now,
        old_site=old_site,
        recovery_point_id=chosen.recovery_point_id,
        point_created_at=chosen.created_at,
        point_app_consistent=chosen.app_consistent,
        source_last_shipped_at=newest.created_at,
        writes_rolled_back=writes,
        bytes_rolled_back=size,
        exact=False,
        writes_lost=None,
        bytes_lost=None,
        writes_lost_at_least=writes,
        old_copy_kept_running=old_copy_running,
        newest_cycle_id=newest.cycle_id,
        rolled_back_countable=_countable(points, chosen),
    )
    if source is None or old_copy_running:
        why = "still running" if old_copy_running else "unreachable or untrusted"
        note = f"lower bound: the old source at the {old_site} site is {why}; its "
        note += "unshipped writes are counted when it is reconciled"
        return replace(report, note=note)
    found = _exact(report, source, now=None)
    return replace(found, exact_at_failover=found.exact)


_UNCOUNTABLE = (
    "lower bound: the points rolled back include a resynchronisation's, which "
    "carries the blocks that differed, not the writes that made them"
)


def _countable(points: tuple[RecoveryPoint, ...], chosen: RecoveryPoint) -> bool:
    """Whether the writes of the points newer than ``chosen`` can be counted: none
    was made by a resynchronisation (whose records are blocks that differed) and each
    recorded its counts."""
    newer = [p for p in points if p.recovery_point_id > chosen.recovery_point_id]
    return all(not p.resync and p.record_count is not None for p in newer)


def rechosen(
    report: LossReport,
    points: tuple[RecoveryPoint, ...],
    chosen: RecoveryPoint,
    *,
    still_running: bool,
) -> LossReport:
    """The report after another point was chosen before commit. While the old copy
    still runs it may write more, so the figure stays the target's bound: the writes
    it discards by choosing this point."""
    writes, size = rolled_back(points, chosen)
    moved = replace(
        report,
        recovery_point_id=chosen.recovery_point_id,
        point_created_at=chosen.created_at,
        point_app_consistent=chosen.app_consistent,
        writes_rolled_back=writes,
        bytes_rolled_back=size,
        writes_lost_at_least=writes,
        rolled_back_countable=_countable(points, chosen),
        exact=False,
        writes_lost=None,
        bytes_lost=None,
    )
    if report.unshipped_writes is None or still_running:
        # Never asked, or asked while it still runs: still a bound.
        return replace(moved, exact_at_failover=False)
    counts = LogCounts(
        report.unshipped_writes, report.unshipped_bytes or 0, report.window_end
    )
    found = _exact(moved, counts, now=report.reconciled_at)
    return replace(found, exact_at_failover=found.exact)


def reconciled(
    report: LossReport,
    source: LogCounts,
    *,
    now: float,
    still_running: bool = False,
) -> LossReport:
    """The exact report, once the old source's logs could be read; a lower bound
    while its copy still runs (it may write more until it is stopped)."""
    exact = _exact(report, source, now=now)
    if not still_running or not exact.exact:
        return exact
    note = "lower bound: counted from the old source's logs while its copy still "
    note += "runs; reverse replication or disable stops it and closes the figure"
    return replace(
        exact,
        exact=False,
        writes_lost=None,
        bytes_lost=None,
        writes_lost_at_least=exact.writes_lost or 0,
        note=note,
    )


def abandoned(report: LossReport, *, now: float) -> LossReport:
    """Disable gave a divergent old copy up: the known figure is final (decision 16)."""
    note = "disable gave the old copy up: its writes since the last reconciliation "
    note += "were abandoned"
    if report.exact:
        note += f"; {report.writes_lost} writes are known lost"
    else:
        note += f"; at least {report.writes_lost_at_least} writes are known lost"
    return replace(report, abandoned=True, reconciled_at=now, note=note)


def _exact(report: LossReport, source: LogCounts, *, now: float | None) -> LossReport:
    if not report.rolled_back_countable:
        return replace(
            report,
            exact=False,
            writes_lost=None,
            bytes_lost=None,
            writes_lost_at_least=report.writes_rolled_back + source.records,
            unshipped_writes=source.records,
            unshipped_bytes=source.payload_bytes,
            reconciled_at=now if now is not None else report.reconciled_at,
            note=_UNCOUNTABLE,
        )
    writes = report.writes_rolled_back + source.records
    size = None
    if report.bytes_rolled_back is not None:
        size = report.bytes_rolled_back + source.payload_bytes
    window_end = None
    if writes:
        window_end = source.last_write_at or report.source_last_shipped_at
    note = "exact: counted from the old source's change logs"
    if now is None:
        note = "exact: the old source was reachable and stopped"
    return replace(
        report,
        exact=True,
        unshipped_writes=source.records,
        unshipped_bytes=source.payload_bytes,
        writes_lost=writes,
        bytes_lost=size,
        window_start=report.point_created_at if writes else None,
        window_end=window_end,
        reconciled_at=now if now is not None else report.reconciled_at,
        note=note,
    )
