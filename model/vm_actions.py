"""The operator's and the replication agent's actions on one VM: data effects only.

Each ``ActionSpec`` here names the lifecycle trigger it fires; its effect computes the
VM's new *data* and never sets the phase (the successor function takes that from
``LIFECYCLE``). The rules of docs/behaviour.md live in three places, and only there: the
lifecycle edges (which phase, which data guard), the guards below (sites, link, vault,
storage: decision 7) and these effects (what the copies hold afterwards).

Failover in three steps, as the product runs it. ``unplanned_failover`` stops
replication, tries the shutdown and the final sync when asked (each may fail without
stopping the failover: decision 9) and fixes the recovery point; ``planned_failover``
shuts the source down and ships every pending change, then ``failover`` fixes the final
sync's point (decision 5). ``complete_failover`` starts the replica VM: the active site
changes, every copy is re-expressed relative to the chosen point, and the loss is
recorded (``model.loss``). Until then the job can be cancelled, which stops replication
for good (decision 3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from model import loss
from model.action import (
    ActionSpec,
    Actor,
    Args,
    ChoiceLister,
    Context,
    Guard,
    Scope,
    VmEffect,
    no_choices,
)
from model.guards import (
    ACTIVE_REACHABLE,
    ACTIVE_STORAGE_FREE,
    BOTH_SITES_AND_LINK,
    OTHER_REACHABLE,
    OTHER_STORAGE_FREE,
    TRANSFER,
)
from model.state import (
    Copy,
    FailoverKind,
    FaultKind,
    LogHealth,
    RecoveryPoint,
    VmState,
)

POINT_LATEST = "latest"
POINT_LATEST_APP_CONSISTENT = "latest_app_consistent"

SHUTDOWN_SKIP = "skip"  # no shutdown tried: the source may keep running
SHUTDOWN_COMPLETE = "complete"  # shut down, and the final sync shipped everything
SHUTDOWN_SYNC_CUT = "sync_cut_short"  # shut down, but the final sync did not finish
SHUTDOWN_REFUSED = "refused"  # the guest refused: it keeps running, no final sync


def _ship(
    vm: VmState, points_max: int, *, app_consistent: bool, quiesced: bool = False
) -> VmState:
    """One delta cycle: the replica catches up and a recovery point is kept.

    A cycle with nothing to ship makes no point (app-consistent or not), as the
    engine does; the oldest points are merged away past ``points_max``.
    ``quiesced`` is the ghost mark of what happened in the guest (its writers
    flushed at the cut), kept apart from the point's claim ``app_consistent``.
    """
    assert vm.other is not None
    if not _cycle_adds_point(vm):
        return vm
    point = RecoveryPoint(Copy(), app_consistent=app_consistent, quiesced=quiesced)
    return replace(vm, other=Copy(), points=(point, *vm.points)[:points_max])


def _cycle_adds_point(vm: VmState) -> bool:
    """Whether a cycle now has changes to ship (or no point at the current state)."""
    assert vm.other is not None
    return vm.other.behind > 0 or not vm.points or vm.points[0].copy.behind > 0


def _cycle_choices(ctx: Context) -> Iterable[Args]:
    yield (("app_consistent", False),)
    if ctx.config.app_consistent_points:
        yield (("app_consistent", True),)


def _replicate(ctx: Context) -> VmState:
    if ctx.vm.log is not LogHealth.USABLE:
        return ctx.vm  # the lifecycle turns this cycle into a resynchronisation
    app_consistent = bool(ctx.call.arg("app_consistent"))
    return _ship(
        ctx.vm,
        ctx.config.recovery_points_max,
        app_consistent=app_consistent,
        quiesced=app_consistent and _guest_can_quiesce(ctx),
    )


def _guest_can_quiesce(ctx: Context) -> bool:
    """Whether the guest's writers can be quiesced for a cut: the VM runs at the
    source, whose host is up (the request goes to the guest's integration
    services there)."""
    source = ctx.vm.active
    return source in ctx.vm.running and ctx.state.site(source).up


def _fresh(vm: VmState, other: Copy | None) -> VmState:
    """``vm`` with no replication history: no points, logs, drill, failover or ghost."""
    return replace(
        vm,
        other=other,
        disks_copied=0,
        points=(),
        test_copy=None,
        log=LogHealth.USABLE,
        other_trusted=True,
        failover_kind=None,
        chosen_point=None,
        last_failover=None,
        frozen_other=None,
    )


def _enable(ctx: Context) -> VmState:
    # Tracking starts and the snapshot is fixed now: the replica-to-be is the active
    # copy as it is; writes from here on land in the logs (and make it lag).
    return _fresh(ctx.vm, other=Copy())


NO_DIVERGENT_COPY = Guard(
    "no_divergent_copy_running",
    lambda ctx: ctx.vm.running <= {ctx.vm.active},
    lambda ctx: (
        f"a divergent copy of the VM still runs at the "
        f"{ctx.vm.active.other.value} site "
        "(a failed shutdown): reverse replication reconciles and stops it"
    ),
)


def _copy_disk(ctx: Context) -> VmState:
    return replace(ctx.vm, disks_copied=ctx.vm.disks_copied + 1)


def _complete_initial(ctx: Context) -> VmState:
    # The disks were copied while the workload wrote; the changes logged since tracking
    # started are applied now, so the replica equals the source at this cut and
    # becomes the first recovery point. With unusable logs the copy cannot be made
    # consistent: no point, and the other copy is not a known past state until the
    # resynchronisation the lifecycle leads to.
    if ctx.vm.log is not LogHealth.USABLE:
        return replace(ctx.vm, other_trusted=False)
    return replace(ctx.vm, other=Copy(), points=(RecoveryPoint(Copy()),))


def _disable(ctx: Context) -> VmState:
    # Deletes the replica's recovery points and the logs; never the active copy. A
    # loss record still open (a divergent copy given up, decision 16) is closed as
    # abandoned: the writes known lost are what the target could say.
    vm = ctx.vm
    closed = None
    if vm.last_failover is not None:
        closed = replace(vm.last_failover, abandoned=True)
    fresh = _fresh(vm, other=None)
    return replace(fresh, running=frozenset({vm.active}), closed_report=closed)


def _unchanged(ctx: Context) -> VmState:
    return ctx.vm


def _complete_resync(ctx: Context) -> VmState:
    # Blocks are compared and the differing ones sent: the other copy becomes the
    # active copy, and a recovery point is made when anything was sent or none exists
    # (nothing sent: the newest point already is the source, as the engine finds; the
    # abstraction counts writes, so "differs" is "lags or diverges"). After an unplanned
    # failover this is the reconciliation: what the old source held beyond the new
    # source is counted from its change logs before it is overwritten (when they can
    # tell: model.loss).
    vm = ctx.vm
    assert vm.other is not None
    record = vm.last_failover
    closed = None
    if record is not None and record.logs_tell:
        closed = replace(record, reconciled_writes=vm.other.divergent)
    elif record is not None:
        closed = record  # its logs cannot count: it closes with the target's bound
    points = vm.points
    if vm.other != Copy() or not vm.points:
        points = (RecoveryPoint(Copy()), *vm.points)[: ctx.config.recovery_points_max]
    return replace(
        vm,
        other=Copy(),
        other_trusted=True,
        log=LogHealth.USABLE,
        points=points,
        last_failover=None,
        closed_report=closed,
    )


def _point_choices(ctx: Context) -> Iterable[Args]:
    return ((("point", index),) for index in range(len(ctx.vm.points)))


def _start_drill(ctx: Context) -> VmState:
    point = ctx.vm.points[int(ctx.call.arg("point"))]
    return replace(ctx.vm, test_copy=point.copy)


def _cleanup_drill(ctx: Context) -> VmState:
    return replace(ctx.vm, test_copy=None)


def _prepare_planned(ctx: Context) -> VmState:
    # The source VM is shut down, then every pending change is shipped and applied.
    vm = replace(ctx.vm, running=ctx.vm.running - {ctx.vm.active})
    vm = _ship(vm, ctx.config.recovery_points_max, app_consistent=False)
    return replace(vm, failover_kind=FailoverKind.PLANNED)


def _failover_planned(ctx: Context) -> VmState:
    # The final sync's point is the newest one, at zero lag (decision 5).
    return replace(ctx.vm, chosen_point=0)


def _unplanned_choices(ctx: Context) -> Iterable[Args]:
    points = ctx.vm.points
    targets: list[str | int] = [POINT_LATEST]
    if any(point.app_consistent for point in points):
        targets.append(POINT_LATEST_APP_CONSISTENT)
    targets += range(1, len(points))
    source = ctx.state.site(ctx.vm.active)
    runs_at_source = ctx.vm.active in ctx.vm.running and source.up
    outcomes = [SHUTDOWN_SKIP]
    if runs_at_source and source.connected:
        outcomes += [SHUTDOWN_COMPLETE, SHUTDOWN_SYNC_CUT, SHUTDOWN_REFUSED]
    elif runs_at_source:
        # Decision 14: the shutdown is ordered through the source's VMM; while it is
        # disconnected the shutdown fails (and the failover goes on).
        outcomes.append(SHUTDOWN_REFUSED)
    shift = int(_cycle_adds_point(ctx.vm))
    points_max = ctx.config.recovery_points_max
    for target in targets:
        index = _point_index(points, target)
        for outcome in outcomes:
            if (
                outcome == SHUTDOWN_COMPLETE
                and target != POINT_LATEST  # "latest" is then the final sync's point
                and index + shift >= points_max
            ):
                continue  # the final sync's point would merge the chosen one away
            yield (("point", target), ("shutdown", outcome))


def _point_index(points: tuple[RecoveryPoint, ...], target: str | int) -> int:
    """Where ``target`` (latest, latest app-consistent, an index) is in ``points``."""
    if target == POINT_LATEST:
        return 0
    if target == POINT_LATEST_APP_CONSISTENT:
        return next(i for i, point in enumerate(points) if point.app_consistent)
    assert isinstance(target, int)
    return target


def _unplanned_fault(ctx: Context) -> FaultKind | None:
    outcome = ctx.call.arg("shutdown")
    if outcome == SHUTDOWN_SYNC_CUT:
        return FaultKind.FINAL_SYNC_CUT
    if outcome == SHUTDOWN_REFUSED:
        return FaultKind.SHUTDOWN_REFUSED
    return None


def _final_sync_possible(ctx: Context) -> bool:
    if ctx.call.arg("shutdown") != SHUTDOWN_COMPLETE:
        return True
    if ctx.vm.log is not LogHealth.USABLE:
        return False
    # Nothing to ship: the final sync is done at once, with no transfer at all.
    return not _cycle_adds_point(ctx.vm) or all(guard.check(ctx) for guard in TRANSFER)


FINAL_SYNC_POSSIBLE = Guard(
    "final_sync_possible",
    _final_sync_possible,
    lambda ctx: (
        "a complete final sync needs both sites up, the link, room at the target and "
        "usable logs; choose shutdown=sync_cut_short or skip"
    ),
)


def _start_unplanned(ctx: Context) -> VmState:
    vm = ctx.vm
    outcome = ctx.call.arg("shutdown")
    if outcome in (SHUTDOWN_COMPLETE, SHUTDOWN_SYNC_CUT):
        vm = replace(vm, running=vm.running - {vm.active})
    shift = 0
    if outcome == SHUTDOWN_COMPLETE:
        shift = int(_cycle_adds_point(vm))
        vm = _ship(vm, ctx.config.recovery_points_max, app_consistent=False)
    target = ctx.call.arg("point")
    assert not isinstance(target, bool)
    # "latest" means after the final sync; an older point keeps its identity.
    chosen = (
        0 if target == POINT_LATEST else _point_index(ctx.vm.points, target) + shift
    )
    return replace(
        vm,
        failover_kind=FailoverKind.UNPLANNED,
        chosen_point=chosen,
        other_trusted=False,
    )


def _complete_failover(ctx: Context) -> VmState:
    return loss.complete_failover(ctx.vm, ctx.state)


def _change_point_choices(ctx: Context) -> Iterable[Args]:
    return (
        (("point", index),)
        for index in range(len(ctx.vm.points))
        if index != ctx.vm.chosen_point
    )


def _change_point(ctx: Context) -> VmState:
    return loss.change_point(ctx.vm, ctx.state, int(ctx.call.arg("point")))


def _commit(ctx: Context) -> VmState:
    # Commit deletes every recovery point: the workload now lives on the new copy.
    return replace(ctx.vm, points=(), chosen_point=None)


def _cancel(ctx: Context) -> VmState:
    # The failover stops; the VM stays where it was (restarted there if the failover
    # had shut it down and its site is up). Replication never resumes.
    vm = ctx.vm
    running = vm.running
    if ctx.state.site(vm.active).up:
        running = running | {vm.active}
    return replace(
        vm,
        running=running,
        chosen_point=None,
        failover_kind=None,
        frozen_other=vm.other,
        points=(),  # unusable from here on; only disable (which deletes them) leaves
        log=LogHealth.USABLE,  # tracking stops: the logs are gone
    )


def _reverse(ctx: Context) -> VmState:
    # The active site stays; the other copy becomes the replica. A divergent copy still
    # running there is stopped: its writes are reported at reconciliation. After a
    # planned failover the report was exact from the start and closes here.
    vm = replace(ctx.vm, running=ctx.vm.running & {ctx.vm.active}, failover_kind=None)
    if vm.other_trusted and vm.log is LogHealth.USABLE:
        # Decision 15: the copy reverse replication starts from is the first recovery
        # point (a first cycle ships what the new source wrote since commit); with
        # unusable logs the lifecycle resynchronises first instead.
        vm = _ship(vm, ctx.config.recovery_points_max, app_consistent=False)
    if vm.other_trusted and vm.last_failover is not None:
        closed = replace(
            vm.last_failover, reconciled_writes=vm.last_failover.lost_writes
        )
        vm = replace(vm, last_failover=None, closed_report=closed)
    return vm


def _vm(
    name: str,
    actor: Actor,
    doc: str,
    effect: VmEffect,
    guards: tuple[Guard, ...] = (),
    choices: ChoiceLister = no_choices,
    fault: Callable[[Context], FaultKind | None] | None = None,
) -> ActionSpec:
    """A VM action firing the lifecycle trigger of the same name."""
    return ActionSpec(
        name=name,
        scope=Scope.VM,
        actor=actor,
        doc=doc,
        guards=guards,
        choices=choices,
        trigger=name,
        fault=fault,
        vm_effect=effect,
    )


OP, AGENT = Actor.OPERATOR, Actor.AGENT

VM_ACTIONS: tuple[ActionSpec, ...] = (
    _vm("enable_protection", OP, "Enable replication: tracking starts, snapshot fixed.",
        _enable, (ACTIVE_REACHABLE, NO_DIVERGENT_COPY)),
    _vm("copy_disk", AGENT, "Copy the next disk of the initial replication.",
        _copy_disk, TRANSFER),
    _vm("complete_initial_replication", AGENT, "The initial copy is whole.",
        _complete_initial, TRANSFER),
    _vm("disable_protection", OP, "Disable replication: points and logs deleted.",
        _disable, (ACTIVE_REACHABLE,)),
    _vm("replicate", AGENT, "One delta cycle: seal, ship and apply the logs.",
        _replicate, TRANSFER, choices=_cycle_choices),
    _vm("pause", OP, "Suspend shipping; tracking goes on.", _unchanged,
        (ACTIVE_REACHABLE,)),
    _vm("resume", OP, "Resume shipping.", _unchanged, (ACTIVE_REACHABLE,)),
    _vm("resynchronize", OP, "Compare blocks on both sides and send differences.",
        _unchanged, (ACTIVE_REACHABLE,)),
    _vm("complete_resynchronization", AGENT, "Resynchronisation done: replica equal.",
        _complete_resync, TRANSFER),
    _vm("start_test_failover", OP, "Drill: a test VM from a point, isolated.",
        _start_drill, (OTHER_REACHABLE, OTHER_STORAGE_FREE), choices=_point_choices),
    _vm("cleanup_test_failover", OP, "End the drill: the test VM is deleted.",
        _cleanup_drill, (OTHER_REACHABLE,)),
    _vm("planned_failover", OP, "Shut the source down and ship every pending change.",
        _prepare_planned, (*BOTH_SITES_AND_LINK, OTHER_STORAGE_FREE)),
    _vm("failover", OP, "Planned failover, second half: fail over on the replica.",
        _failover_planned, (OTHER_REACHABLE,)),
    _vm("unplanned_failover", OP, "Stop replication and fail over from a chosen point.",
        _start_unplanned, (OTHER_REACHABLE, FINAL_SYNC_POSSIBLE),
        choices=_unplanned_choices, fault=_unplanned_fault),
    _vm("complete_failover", AGENT, "The replica VM starts: the failover completes.",
        _complete_failover, (OTHER_REACHABLE,)),
    _vm("change_recovery_point", OP, "Before commit: restart from another point.",
        _change_point, (ACTIVE_REACHABLE,), choices=_change_point_choices),
    _vm("commit", OP, "Commit the failover: every recovery point is deleted.",
        _commit, (ACTIVE_REACHABLE, ACTIVE_STORAGE_FREE)),
    _vm("cancel_failover", OP, "Cancel a failover in progress: replication stops.",
        _cancel, (OTHER_REACHABLE,)),
    _vm("reverse_replication", OP, "Replicate back towards the other site.",
        _reverse, (*BOTH_SITES_AND_LINK, OTHER_STORAGE_FREE)),
)  # fmt: skip
