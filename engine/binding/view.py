"""The refinement mapping: one VM's real state as the model's abstract state.

The binding asks the model about a :class:`~model.SystemState` built here from what the
engine can observe *now*, and nothing else: the VM's authoritative control row (the
newest of the sites that are up), the replica's catalogue (from the target when it is
up, else the source's mirror of it), the pending change-log records, the logs' health,
and the sites, the vault connections and the link as :class:`~engine.binding.sites.
Sites` reports them. A site that is down is shown down and is not read.

What the mapping cannot tell the model, it fills with the neutral value the guards
need: copies are expressed by their lag in records (every retained point lags the
source by the records shipped after it plus what is pending), and a loss record is
present exactly while the VM's details hold a report, with the engine's own figures
kept in the report (``loss_report.py``), not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.binding.details import VmDetails
from engine.replica import recovery_point as engine_points
from model import (
    Copy,
    FailoverKind,
    LogHealth,
    LossRecord,
    Phase,
    RecoveryPoint,
    Site,
    SystemState,
    VmState,
)
from model.state import SiteState

#: Phases in which the VM has no recovery points to show (deleted or unusable).
_NO_POINTS = frozenset({Phase.UNPROTECTED, Phase.COMMITTED, Phase.REPLICATION_STOPPED})


@dataclass(frozen=True)
class Observed:
    """What the binding observed of one VM, site facts included."""

    phase: Phase
    active_site: str
    details: VmDetails
    replica_exists: bool
    points: tuple[engine_points.RecoveryPoint, ...]  # oldest first
    pending_records: int  # unshipped records at the active site (0 when unknown)
    disks_copied: int
    log: LogHealth
    up: dict[str, bool]
    connected: dict[str, bool]
    storage_full: dict[str, bool]
    link_up: bool
    retention_count: int


def abstract_state(seen: Observed) -> SystemState:
    """The model's state of a one-VM system as the engine observes it."""
    active = Site(seen.active_site)
    details = seen.details
    running = frozenset(
        Site(site) for site in details.running if seen.up.get(site, False)
    )
    behind = seen.pending_records
    shown = () if seen.phase in _NO_POINTS else seen.points[-seen.retention_count :]
    points = tuple(
        RecoveryPoint(Copy(behind=behind), app_consistent=point.app_consistent)
        for point in reversed(shown)
    )
    other: Copy | None = None
    # During the initial replication the replica-to-be exists from enable on (the
    # target may create it with the first disk copied).
    if seen.replica_exists or seen.phase is Phase.INITIAL_REPLICATION:
        other = Copy(behind=behind)
    if seen.phase in (Phase.FAILED_OVER, Phase.COMMITTED):
        points = tuple(RecoveryPoint(Copy(), p.app_consistent) for p in points)
        divergent = int(active.other in running)
        # After commit the new source logs its writes: the old copy lacks them.
        lag = behind if seen.phase is Phase.COMMITTED else 0
        other = None
        if details.old_site is not None:
            other = Copy(behind=lag, divergent=divergent)
    kind = None
    if details.failover_kind is not None:
        kind = FailoverKind(details.failover_kind)
    chosen = _chosen_index(shown, details.chosen_point_id)
    last_failover = None
    if details.loss is not None and _loss_open(seen):
        last_failover = LossRecord(
            kind=FailoverKind(details.loss.get("kind", "unplanned")),
            lost_writes=0,
            reported_writes=0,
            reported_exact=False,
        )
    vm = VmState(
        phase=seen.phase,
        active=active,
        running=running,
        other=other,
        disks_copied=seen.disks_copied,
        points=points,
        test_copy=Copy() if seen.phase is Phase.TEST_FAILOVER else None,
        log=seen.log,
        other_trusted=details.other_trusted,
        failover_kind=kind,
        chosen_point=chosen,
        last_failover=last_failover,
    )
    return SystemState(
        primary=_site(seen, "primary"),
        secondary=_site(seen, "secondary"),
        link_up=seen.link_up,
        vms=(vm,),
        plan_runs=(),
        faults_left=2**62,  # faults are real events here, not a budget
    )


def _loss_open(seen: Observed) -> bool:
    """Whether the last failover's loss is still open, as the model keeps it: from
    the failover's completion until reverse replication closes it (after a planned
    failover), or until its resynchronisation reconciles it (after an unplanned one,
    while the old copy is not trusted yet). A report kept after that is history."""
    if seen.phase in (Phase.FAILED_OVER, Phase.COMMITTED):
        return True
    return seen.phase is Phase.RESYNCHRONIZING and not seen.details.other_trusted


def _site(seen: Observed, name: str) -> SiteState:
    return SiteState(
        up=seen.up[name],
        connected=seen.connected[name],
        storage_full=seen.storage_full[name],
    )


def _chosen_index(
    shown: tuple[engine_points.RecoveryPoint, ...], point_id: int | None
) -> int | None:
    """Where the chosen point is in the model's newest-first list."""
    if point_id is None:
        return None
    newest_first = [point.recovery_point_id for point in reversed(shown)]
    return newest_first.index(point_id) if point_id in newest_first else 0


def model_point_index(
    points: tuple[engine_points.RecoveryPoint, ...],
    retention_count: int,
    recovery_point_id: int,
) -> int:
    """The model's index (newest first) of a retained point, or raise ValueError."""
    shown = points[-retention_count:]
    newest_first = [point.recovery_point_id for point in reversed(shown)]
    return newest_first.index(recovery_point_id)
