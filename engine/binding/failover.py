"""Drills, failovers, a change of recovery point, commit and cancel, on real files.

Each operation runs the binding's four steps (``protected_vm.py``: ask the model,
record the intent, run the idempotent effect, commit the predicted phase), at the site
the action acts on. What each effect does:

- **start_test_failover**: the target pins the chosen point and opens a test VM on
  differencing disks in its isolated area (reads fall through to the point, writes
  land in an overlay; no copy of the disks). Cycles go on; the test VM's writes never
  reach the replica. **cleanup_test_failover** deletes the overlay and unpins.
- **planned_failover** (first half, at the source): the guest is shut down (writes are
  refused from then on, under the cut lock), every change is shipped and applied by a
  final cycle, and nothing may be left unshipped; any failure restarts the VM and
  leaves the phase. **failover** (second half, at the target) fixes the final sync's
  point, then **complete_failover** starts the replica VM.
- **unplanned_failover** (at the target): when asked, the shutdown and then the final
  sync are each tried and may fail (decision 9); the model is asked with what
  happened, against the state from before the attempt (the final sync's point is then
  "latest"), and the chosen point is fixed. **complete_failover** follows.
- **complete_failover**: the replica VM runs from the chosen point (reads go through a
  view of that point; the workload writes only after commit) and the loss report is
  made from what the target can know (``loss_report.py``).
- **change_recovery_point**: another point before commit (unplanned failovers only).
- **commit**: the chosen point becomes the VM's disks at the new active site (the
  replica images are rolled back in place with the undo images, then moved: nothing
  is copied), every recovery point is deleted with the store, and tracking starts on
  the new source at a new epoch, so reverse replication knows what it wrote. A commit
  that fails (a full disk) is never abandoned: it stays pending, the failed-over VM
  reads its point meanwhile (the newer points, perhaps rolled back already, are no
  longer shown), and the next call (or a restart) finishes it.
- **cancel_failover**: the VM restarts where it was (if its site is up), tracking
  stops and the waiting cycles go; the replica stays as it was, frozen: replication
  never resumes (decision 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from engine.binding import loss_report, reverse
from engine.binding.details import VmDetails
from engine.binding.sites import other_site
from engine.binding.view import model_point_index
from engine.errors import (
    InvalidConfiguration,
    RecoveryPointNotFound,
    ReplicationError,
    ShutdownRefused,
    TransitionNotAllowed,
)
from engine.replica import promote
from engine.replica.recovery_point import RecoveryPoint
from engine.source.disks import LogState, SourceDisks
from engine.source.shipping import CycleReport
from model import Phase

if TYPE_CHECKING:
    from engine.binding.protected_vm import ProtectedVm

CRASH_POINTS: Final = (
    "shut_down",
    "final_sync_done",
    "promoted",
    "tracking_started",
)
"""Steps of the failover operations the ``crash_point`` seam is called at."""

LATEST: Final = "latest"
LATEST_APP_CONSISTENT: Final = "latest_app_consistent"

SHUTDOWN_SKIP: Final = "skip"
SHUTDOWN_COMPLETE: Final = "complete"
SHUTDOWN_SYNC_CUT: Final = "sync_cut_short"
SHUTDOWN_REFUSED: Final = "refused"


@dataclass(frozen=True)
class DrillReport:
    """A test failover started: the point its test VM runs from."""

    recovery_point_id: int
    point_created_at: float
    app_consistent: bool


@dataclass(frozen=True)
class FailoverReport:
    """Where a failover stands after the call, and what it lost (if it completed)."""

    kind: str
    phase: str
    recovery_point_id: int | None
    shutdown: str | None  # skip, complete, sync_cut_short, refused (None: planned)
    final_sync: CycleReport | None
    waiting: str | None  # why the job waits in its phase (None: it did not)
    loss: loss_report.LossReport | None


@dataclass(frozen=True)
class CommitReport:
    """A committed failover: the recovery points deleted, tracking on the new source."""

    recovery_points_deleted: int
    blocks_rolled_back: int
    active_site: str
    epoch: int


# -- drills ----------------------------------------------------------------------------


def start_test_failover(vm: ProtectedVm, point: int | None) -> DrillReport:
    """Start a drill from ``point`` (default: the latest)."""
    if point is not None and (isinstance(point, bool) or not isinstance(point, int)):
        msg = f"point={point!r} must be a recovery point id (int) or None (the latest)"
        raise InvalidConfiguration(msg)
    with vm.operating():
        vm.ask_first("start_test_failover")
        target = other_site(vm.control().active_site)
        points = _points_at(vm, target)
        chosen = _point(points, point, vm)
        index = _model_index(vm, points, chosen)
        replica = vm.sites.towards(target)
        vm.step(
            "start_test_failover",
            lambda: replica.start_test_failover(vm.name, chosen.recovery_point_id),
            model_args={"point": index},
            details=lambda: vm.details().with_(drill_point_id=chosen.recovery_point_id),
            point_id=chosen.recovery_point_id,
        )
        return DrillReport(
            chosen.recovery_point_id, chosen.created_at, chosen.app_consistent
        )


def cleanup_test_failover(vm: ProtectedVm) -> None:
    """End the drill: its test VM and overlay are deleted, the point unpinned."""
    with vm.operating():
        vm.step(
            "cleanup_test_failover",
            lambda: _cleanup_effect(vm),
            details=lambda: vm.details().with_(drill_point_id=None),
        )


def _cleanup_effect(vm: ProtectedVm) -> None:
    target = other_site(vm.control().active_site)
    vm.sites.towards(target).cleanup_test_failover(vm.name)


def finish_cleanup(vm: ProtectedVm, params: dict[str, object]) -> VmDetails:
    """A cleanup a crash interrupted: delete what is left (idempotent)."""
    _cleanup_effect(vm)
    return vm.details().with_(drill_point_id=None)


# -- the shutdown and the final sync ---------------------------------------------------


def shut_down(vm: ProtectedVm, disks: SourceDisks, site: str) -> None:
    """Shut the guest down through its VMM (decision 14); refuse writes from now."""
    if not vm.sites.connected(site):
        msg = f"the VMM server of site {site!r} is disconnected from the vault: the "
        msg += f"shutdown of VM {vm.name!r} cannot be ordered"
        raise ShutdownRefused(msg)
    if not vm.guest_shutdown(vm.name, site):
        msg = f"the guest of VM {vm.name!r} at site {site!r} refused to shut down"
        raise ShutdownRefused(msg)
    disks.halt(f"VM {vm.name!r} is shut down at site {site!r} for a failover")
    disks.flush()
    vm.crash("shut_down")


def final_sync(vm: ProtectedVm) -> CycleReport | None:
    """Ship every change the VM made: afterwards nothing is left unshipped."""
    reports = vm.run_cycles(app_consistent=False)
    left = vm.disks.pending().records + len(vm.outbox.waiting())
    if left:
        msg = f"VM {vm.name!r}: the final sync left {left} changes unshipped"
        raise ReplicationError(msg)
    vm.crash("final_sync_done")
    return reports[-1] if reports else None


# -- planned failover ------------------------------------------------------------------


def planned_failover(vm: ProtectedVm, *, then_fail_over: bool = True) -> FailoverReport:
    """The planned failover's first half (shut down, final sync); by default the
    second half follows and the replica VM starts (``then_fail_over=False`` stops in
    ``failover_prepared``, as ``Start-VMFailover -Prepare`` does)."""
    if not isinstance(then_fail_over, bool):  # caller input: checked at run time
        msg = f"then_fail_over={then_fail_over!r} must be True or False"  # type: ignore[unreachable]
        raise InvalidConfiguration(msg)
    with vm.operating():
        synced = _prepare(vm)
    if not then_fail_over:
        report = _report(vm, waiting=None)
        return FailoverReport(
            kind="planned", phase=report.phase, recovery_point_id=None,
            shutdown=SHUTDOWN_COMPLETE, final_sync=synced[0] if synced else None,
            waiting=None, loss=None,
        )  # fmt: skip
    report = failover_prepared(vm)
    return FailoverReport(
        kind="planned", phase=report.phase,
        recovery_point_id=report.recovery_point_id, shutdown=SHUTDOWN_COMPLETE,
        final_sync=synced[0] if synced else None, waiting=report.waiting,
        loss=report.loss,
    )  # fmt: skip


def _prepare(vm: ProtectedVm) -> list[CycleReport | None]:
    active = vm.control().active_site
    synced: list[CycleReport | None] = []

    def effect() -> None:
        disks = vm.disks
        shut_down(vm, disks, active)
        try:
            synced.append(final_sync(vm))
        except BaseException:
            disks.restart()  # the failover did not start: the VM runs on
            raise

    vm.step(
        "planned_failover",
        effect,
        details=lambda: vm.details().with_(
            running=vm.details().running - {active},
            failover_kind="planned",
            shutdown=SHUTDOWN_COMPLETE,
        ),
    )
    return synced


def failover_prepared(vm: ProtectedVm) -> FailoverReport:
    """The planned failover's second half at the target, then the replica VM."""
    with vm.operating():
        control = vm.control()
        if Phase(control.phase) is not Phase.FAILING_OVER:
            vm.ask_first("failover")
        if Phase(control.phase) is Phase.FAILOVER_PREPARED:
            target = other_site(control.active_site)
            newest = _points_at(vm, target)[-1]
            vm.step(
                "failover",
                lambda: None,
                details=lambda: vm.details().with_(
                    chosen_point_id=newest.recovery_point_id
                ),
            )
    return complete_failover(vm)


# -- unplanned failover ----------------------------------------------------------------


def unplanned_failover(
    vm: ProtectedVm, point: int | str, *, shut_down_first: bool
) -> FailoverReport:
    """Stop replication, optionally try a shutdown and a final sync, fix the point."""
    if isinstance(point, bool) or not isinstance(point, int | str):
        msg = f"point={point!r} must be a recovery point id (int), {LATEST!r} or "
        msg += f"{LATEST_APP_CONSISTENT!r}"
        raise InvalidConfiguration(msg)
    if point not in (LATEST, LATEST_APP_CONSISTENT) and isinstance(point, str):
        msg = f"point={point!r} must be a recovery point id (int), {LATEST!r} or "
        msg += f"{LATEST_APP_CONSISTENT!r}"
        raise InvalidConfiguration(msg)
    if not isinstance(shut_down_first, bool):
        msg = f"shut_down_first={shut_down_first!r} must be True or False"  # type: ignore[unreachable]
        raise InvalidConfiguration(msg)
    with vm.operating():
        vm.ask_first("unplanned_failover")
        control = vm.control()
        active = control.active_site
        target = other_site(active)
        points = _points_at(vm, target)
        model_point = _unplanned_point_argument(vm, points, point)
        outcome: list[str] = [SHUTDOWN_SKIP]
        synced: list[CycleReport | None] = []

        def effect() -> None:
            if shut_down_first:
                outcome[0] = _try_shutdown_and_sync(vm, active, synced)

        def details() -> VmDetails:
            after = _points_at(vm, target)
            chosen = _resolve_chosen(after, point)
            running = vm.details().running
            if outcome[0] in (SHUTDOWN_COMPLETE, SHUTDOWN_SYNC_CUT):
                running = running - {active}
            return vm.details().with_(
                running=running,
                failover_kind="unplanned",
                chosen_point_id=chosen,
                shutdown=outcome[0],
                other_trusted=False,
            )

        vm.step(
            "unplanned_failover",
            effect,
            model_args={"point": model_point, "shutdown": SHUTDOWN_SKIP},
            final_args=lambda: {"point": model_point, "shutdown": outcome[0]},
            details=details,
            shut_down_first=shut_down_first,
        )
        sync = synced[0] if synced else None
    report = complete_failover(vm)
    return FailoverReport(
        kind="unplanned",
        phase=report.phase,
        recovery_point_id=report.recovery_point_id,
        shutdown=outcome[0],
        final_sync=sync,
        waiting=report.waiting,
        loss=report.loss,
    )


def _try_shutdown_and_sync(
    vm: ProtectedVm, active: str, synced: list[CycleReport | None]
) -> str:
    """Each step may fail; the failover goes on (decision 9). Returns the outcome."""
    if not vm.sites.up(active) or active not in vm.details().running:
        return SHUTDOWN_SKIP  # nothing to shut down: the source is down or stopped
    try:
        disks = vm.disks
        shut_down(vm, disks, active)
    except ShutdownRefused:
        return SHUTDOWN_REFUSED
    if disks.log_state is not LogState.USABLE:
        # Logs past their limit or untrusted cannot make a final cycle the replica
        # could trust (decision 8): no final sync; the failover goes on.
        return SHUTDOWN_SYNC_CUT
    try:
        synced.append(final_sync(vm))
    except (ReplicationError, OSError):
        return SHUTDOWN_SYNC_CUT
    return SHUTDOWN_COMPLETE


def _unplanned_point_argument(
    vm: ProtectedVm, points: tuple[RecoveryPoint, ...], point: int | str
) -> str | int:
    """The model's argument for ``point``: a name, or an older point's index."""
    if point == LATEST_APP_CONSISTENT and not any(p.app_consistent for p in points):
        ids = [found.recovery_point_id for found in points]
        msg = f"VM {vm.name!r} keeps no app-consistent recovery point (its points "
        msg += f"{ids} are crash-consistent): fail over from 'latest' or a point's id"
        raise RecoveryPointNotFound(msg)
    if isinstance(point, str):
        return point
    chosen = _point(points, point, vm)
    index = _model_index(vm, points, chosen)
    return LATEST if index == 0 else index


def _resolve_chosen(
    points: tuple[RecoveryPoint, ...],
    point: int | str,
) -> int:
    """The chosen point's id once the final sync (if any) is done."""
    if point == LATEST:
        return points[-1].recovery_point_id
    if point == LATEST_APP_CONSISTENT:
        consistent = [p for p in points if p.app_consistent]
        return consistent[-1].recovery_point_id
    assert isinstance(point, int)
    return point  # an older point keeps its identity


# -- completing, changing the point ----------------------------------------------------


def complete_failover(vm: ProtectedVm, *, asked: bool = False) -> FailoverReport:
    """Start the replica VM from the chosen point; record what was lost.

    ``asked``: the operator called it (outside a failing-over phase the model's
    refusal is raised); a failover's own last step returns the report instead.
    """
    with vm.operating():
        control = vm.control()
        details = vm.details(control)
        phase = Phase(control.phase)
        if phase is not Phase.FAILING_OVER:
            if asked:
                vm.ask_first("complete_failover")
            return _report(vm, waiting=None)
        old = control.active_site
        target = other_site(old)
        try:
            vm.decide("complete_failover")
        except TransitionNotAllowed as refusal:
            return _report(vm, waiting=str(refusal))
        points = _points_at(vm, target)
        assert details.chosen_point_id is not None
        chosen = _find(points, details.chosen_point_id)
        counts = None
        still_runs = old in details.running
        reachable = not still_runs and vm.sites.up(old) and vm.sites.link_up
        if reachable and vm.disks.log_state is LogState.USABLE:
            # Asked only when its logs can say what it never shipped: after a reopen
            # that found them damaged, or a final cycle refused and discarded, they
            # cannot (LogState.UNTRUSTED), nor past their limit (OVER_LIMIT: they are
            # given up for a resynchronisation, decision 8); the figure stays a bound.
            counts = reverse.old_source_counts(vm, vm.disks, vm.outbox, points)
        report = loss_report.at_failover(
            kind=details.failover_kind or "unplanned",
            now=vm.clock.now(),
            old_site=old,
            points=points,
            chosen=chosen,
            source=counts,
            old_copy_running=still_runs,
        )
        vm.step(
            "complete_failover",
            lambda: _open_point(vm, target, chosen.recovery_point_id),
            details=lambda: vm.details().with_(
                running=vm.details().running | {target},
                old_site=old,
                old_epoch=vm.control().epoch,
                loss=report.to_json(),
            ),
            active_site=target,
        )
        vm.open_disks()
        return _report(vm, waiting=None)


def change_recovery_point(vm: ProtectedVm, point: int) -> FailoverReport:
    """Restart the replica VM from another point before commit."""
    if isinstance(point, bool) or not isinstance(point, int):
        msg = f"point={point!r} must be a recovery point id (int)"
        raise InvalidConfiguration(msg)
    with vm.operating():
        vm.ask_first("change_recovery_point")
        control = vm.control()
        points = _points_at(vm, control.active_site)
        chosen = _point(points, point, vm)
        details = vm.details(control)
        if details.chosen_point_id == chosen.recovery_point_id:
            msg = f"VM {vm.name!r} already runs from recovery point {point}; choose "
            others = [p.recovery_point_id for p in points if p is not chosen]
            msg += f"another: {others}"
            raise InvalidConfiguration(msg)
        index = _model_index(vm, points, chosen)
        old = loss_report.LossReport.from_json(_report_fields(details.loss))
        site = details.old_site
        running = reverse.old_copy_runs(vm, details)
        if (
            old.unshipped_writes is None
            and site is not None
            and not running
            and vm.sites.up(site)
        ):
            # Never asked at failover time, and reachable now: ask it first, so the
            # figure for the new point is exact if its logs can tell.
            reverse.reconcile(vm)
            details = vm.details()
            old = loss_report.LossReport.from_json(_report_fields(details.loss))
        report = loss_report.rechosen(old, points, chosen, still_running=running)
        vm.step(
            "change_recovery_point",
            lambda: _open_point(vm, control.active_site, chosen.recovery_point_id),
            model_args={"point": index},
            details=lambda: vm.details().with_(
                chosen_point_id=chosen.recovery_point_id,
                loss={**(details.loss or {}), **report.to_json()},
            ),
            point_id=chosen.recovery_point_id,
        )
        return _report(vm, waiting=None)


# -- commit and cancel -----------------------------------------------------------------


def commit(vm: ProtectedVm) -> CommitReport:
    """Commit: the chosen point becomes the VM's disks; every point is deleted."""
    with vm.operating():
        vm.ask_first("commit")
        control = vm.control()
        active = control.active_site
        details = vm.details(control)
        points = _points_at(vm, active) if vm.sites.up(active) else ()
        if vm.finish_pending("commit"):  # a failure (a full disk) left it pending
            return CommitReport(
                recovery_points_deleted=len(points),
                blocks_rolled_back=_rolled_back(vm, active),
                active_site=active,
                epoch=vm.control().epoch,
            )
        epoch = vm.next_epoch()
        rolled: list[int] = []

        def effect() -> None:
            rolled.append(_commit_effect(vm, epoch))

        del details
        vm.step(
            "commit",
            effect,
            epoch=epoch,
            details=lambda: vm.details().with_(chosen_point_id=None),
            undoable=False,  # the promotion consumes the store: finished, never undone
        )
        vm.open_disks()
        return CommitReport(
            recovery_points_deleted=len(points),
            blocks_rolled_back=rolled[0] if rolled else 0,
            active_site=active,
            epoch=epoch,
        )


def _commit_effect(vm: ProtectedVm, epoch: int) -> int:
    """Promote the chosen point at the active site, track the new source."""
    control = vm.control()
    active = control.active_site
    point = vm.details(control).chosen_point_id
    assert point is not None
    blocks = vm.sites.towards(active).promote_replica(vm.name, point, vm.block_bytes)
    vm.crash("promoted")
    reverse.forget_candidates(vm, unshipped_only=True)  # left by an older failover
    vm.start_new_source(active, epoch)
    vm.crash("tracking_started")
    return sum(len(found) for found in blocks.values())


def _rolled_back(vm: ProtectedVm, site: str) -> int:
    """The blocks a finished promotion rolled back (its saved sets)."""
    storage = vm.sites.storage(site)
    saved = promote.saved_blocks(
        storage.vm_directory(vm.name), vm.disk_sizes, vm.block_bytes
    )
    return sum(len(found) for found in saved.values())


def finish_commit(vm: ProtectedVm, params: dict[str, object]) -> VmDetails:
    """A commit a crash interrupted: promote (idempotent), track, then the phase."""
    epoch = params.get("epoch")
    assert isinstance(epoch, int), params
    _commit_effect(vm, epoch)
    return vm.details().with_(chosen_point_id=None)


def cancel_failover(vm: ProtectedVm) -> None:
    """Cancel the failover in progress: replication stops for good (decision 3)."""
    with vm.operating():
        vm.ask_first("cancel_failover")
        vm.step(
            "cancel_failover",
            lambda: _cancel_effect(vm),
            details=lambda: _cancel_details(vm),
        )


def _cancel_effect(vm: ProtectedVm) -> None:
    """Tracking stops, waiting cycles go, the VM restarts where it was (if up)."""
    if vm.sites.up(vm.control().active_site):
        disks = vm.disks
        disks.stop_tracking()
        vm.outbox.discard()
        disks.restart()


def _cancel_details(vm: ProtectedVm) -> VmDetails:
    active = vm.control().active_site
    running = vm.details().running
    if vm.sites.up(active):
        running = running | {active}
    return vm.details().with_(
        running=running, failover_kind=None, chosen_point_id=None, shutdown=None,
    )  # fmt: skip


def finish_cancel(vm: ProtectedVm, params: dict[str, object]) -> VmDetails:
    """A cancel a crash interrupted: finish it (replication stops for good)."""
    _cancel_effect(vm)
    return _cancel_details(vm)


# -- helpers ---------------------------------------------------------------------------


def _open_point(vm: ProtectedVm, site: str, recovery_point_id: int) -> None:
    """The replica VM starts: its point must be readable (the view checks it)."""
    vm.sites.towards(site).point_reader(vm.name, recovery_point_id)


def _points_at(vm: ProtectedVm, site: str) -> tuple[RecoveryPoint, ...]:
    """The recovery points the replica at ``site`` holds, oldest first."""
    return vm.sites.towards(site).status(vm.name).points


def _point(
    points: tuple[RecoveryPoint, ...], point: int | None, vm: ProtectedVm
) -> RecoveryPoint:
    if not points:
        msg = f"VM {vm.name!r} has no recovery point yet: the initial copy must "
        msg += "complete first"
        raise TransitionNotAllowed(msg)
    if point is None:
        return points[-1]
    return _find(points, point)


def _find(points: tuple[RecoveryPoint, ...], point: int) -> RecoveryPoint:
    for found in points:
        if found.recovery_point_id == point:
            return found
    ids = [found.recovery_point_id for found in points]
    msg = f"recovery point {point} is not retained; the points are {ids}"
    raise RecoveryPointNotFound(msg)


def _model_index(
    vm: ProtectedVm, points: tuple[RecoveryPoint, ...], chosen: RecoveryPoint
) -> int:
    try:
        return model_point_index(points, vm.retention_count, chosen.recovery_point_id)
    except ValueError:
        shown = [p.recovery_point_id for p in points[-vm.retention_count :]]
        msg = f"recovery point {chosen.recovery_point_id} is kept only while a drill "
        msg += f"pins it; choose one of {shown}"
        raise RecoveryPointNotFound(msg) from None


def _report_fields(loss: dict[str, object] | None) -> dict[str, object]:
    return dict(loss or {})


def _report(vm: ProtectedVm, *, waiting: str | None) -> FailoverReport:
    control = vm.control()
    details = vm.details(control)
    loss = None
    if details.loss is not None and Phase(control.phase) in (
        Phase.FAILED_OVER, Phase.COMMITTED,
    ):  # fmt: skip
        loss = loss_report.LossReport.from_json(_report_fields(details.loss))
    return FailoverReport(
        kind=details.failover_kind or "unplanned",
        phase=control.phase,
        recovery_point_id=details.chosen_point_id,
        shutdown=details.shutdown,
        final_sync=None,
        waiting=waiting,
        loss=loss,
    )
