"""Properties of failover, loss reporting, protection status and failback.

A failover's truth is the ghost ``LossRecord.lost_writes``: the acknowledged writes
of the old source missing from the new active copy. The product can only *report*
(``reported_writes``: exact when the old source answered, a lower bound otherwise)
and later *reconcile* (``reconciled_writes``, measured against the old source's data
by reverse replication). These properties tie the three together, and tie the
derived status "protected" to the copies it claims to describe.

Step properties compare a VM before and after one call; a recovery plan step runs
several VM actions at once (``plan_step``), so the properties that name the action
accept it wherever one of its VM actions would be accepted.
"""

from __future__ import annotations

from invariants.kinds import Invariant, always, step
from model import (
    STEADY,
    Call,
    Copy,
    FailoverKind,
    ModelConfig,
    Phase,
    Site,
    SystemState,
    VmState,
    is_protected,
)

#: Phases after a failover completed and before reverse replication starts.
AFTER_FAILOVER = frozenset({Phase.FAILED_OVER, Phase.COMMITTED})

#: The recovery plan's composite step, which may run any VM action.
PLAN_STEP = "plan_step"


def _pairs(
    pre: SystemState, call: Call, post: SystemState
) -> list[tuple[VmState, VmState]]:
    """The (before, after) pairs of the VMs ``call`` may have changed."""
    if call.vm is not None:
        return [(pre.vms[call.vm], post.vms[call.vm])]
    return list(zip(pre.vms, post.vms, strict=True))


@always(
    "a planned failover lost an acknowledged write",
    reads=(
        "vm.last_failover",
        "vm.phase",
        "vm.other",
        "vm.points",
        "vm.active",
        "vm.running",
    ),
)
def planned_failover_loses_no_acknowledged_write(
    config: ModelConfig, state: SystemState
) -> bool:
    """A planned failover loses nothing: the final sync shipped every write.

    Rule: "the source VMs are shut down to avoid any data loss; the data not yet
    synchronised is synchronised; then the failover runs" (docs/traceability.md [seed]);
    decision 5 (the final sync's point, zero loss). Disaster: a maintenance
    failover that silently drops the last writes. Applies: from the final sync
    (``failover_prepared``: the replica and its newest point equal the source)
    until the loss record closes at reverse replication.
    """
    del config
    for vm in state.vms:
        record = vm.last_failover
        if (
            record is not None
            and record.kind is FailoverKind.PLANNED
            and (record.lost_writes != 0 or record.reported_writes != 0)
        ):
            return False
        if vm.phase is Phase.FAILOVER_PREPARED and (
            vm.other != Copy()
            or not vm.points
            or vm.points[0].copy != Copy()
            or vm.active in vm.running
        ):
            return False
    return True


@always(
    "the loss reported at failover time is not a bound of the true loss",
    reads=(
        "vm.last_failover",
        "vm.other",
    ),
)
def unplanned_failover_loss_is_exact(config: ModelConfig, state: SystemState) -> bool:
    """The reported loss never exceeds the truth, and equals it when marked exact.

    Rule: failovers report data loss honestly: at failover time what the target can
    know (a bound, labelled as such), exact figures after reconciliation (docs/model.md;
    decision 9). Disaster: an operator told
    "nothing lost" (or too much) chooses the wrong recovery point or skips the
    reconciliation. Applies: while a loss record is open (failed over, committed,
    reconciling); the old copy then holds exactly the lost writes.
    """
    del config
    for vm in state.vms:
        record = vm.last_failover
        if record is None:
            continue
        if record.lost_writes < 0 or record.reported_writes > record.lost_writes:
            return False
        if record.reported_exact and record.reported_writes != record.lost_writes:
            return False
        if vm.other is not None and vm.other.divergent != record.lost_writes:
            return False
    return True


@step(
    "the reconciled loss differs from the writes actually lost",
    reads=("vm.closed_report",),
)
def reconciled_loss_is_exact(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """A closed loss report's reconciled figure equals the writes actually lost.

    Rule: exact figures after reconciliation with the old source (docs/verification.md,
    "unplanned_failover_loss_is_exact"); a second running copy's writes "are
    reported lost at reconciliation, never merged silently". Disaster: a
    reconciliation that under-reports, so the operator never recovers the writes
    from the old copy. Applies: the step that closes the record (reverse
    replication after a planned failover, resynchronisation after an unplanned one);
    when the old source's change logs could not count (damaged or overflowed as it
    failed over) there is no reconciled figure: the record closes with the target's
    bound, which never claims more than was lost.
    """
    del config, pre, call
    for vm in post.vms:
        report = vm.closed_report
        if report is None:
            continue
        if report.abandoned:
            # Disable gave the old copy up (decision 16): no reconciliation, but the
            # figure it closes with never claims more than was really lost.
            if report.reported_writes > report.lost_writes:
                return False
            continue
        if not report.logs_tell:
            # Its change logs could not count (damaged or overflowed when it failed
            # over): the record closes with the target's bound, never more.
            if report.reconciled_writes is not None or report.reported_exact:
                return False
            if report.reported_writes > report.lost_writes:
                return False
            continue
        if report.reconciled_writes != report.lost_writes:
            return False
        if report.kind is FailoverKind.PLANNED and report.lost_writes != 0:
            return False
    return True


@always(
    "after a planned failover the target is not protected",
    reads=(
        "vm.last_failover",
        "vm.phase",
        "vm.other",
        "vm.other_trusted",
    ),
)
def planned_failover_leaves_it_protected(
    config: ModelConfig, state: SystemState
) -> bool:
    """After a planned failover the old source is exactly the new source's start.

    Rule: "after a planned failover completes, the machines at the secondary site
    are protected" (docs/traceability.md [seed]); as data: the old source copy equals
    the point the new source started from, so reverse replication ships deltas only
    (decisions 2 and 6). Disaster: a resynchronisation of every disk after a
    maintenance failover, or deltas applied onto a copy that is not their base.
    Applies: failed over and committed, after a planned failover.
    """
    del config
    for vm in state.vms:
        record = vm.last_failover
        if record is None or record.kind is not FailoverKind.PLANNED:
            continue
        if vm.phase not in AFTER_FAILOVER or not is_protected(vm):
            return False
        if vm.phase is Phase.FAILED_OVER and vm.other != Copy():
            return False
    return True


@always(
    "after an unplanned failover the target is shown protected",
    reads=(
        "vm.last_failover",
        "vm.phase",
        "vm.other",
        "vm.other_trusted",
    ),
)
def unplanned_failover_leaves_the_target_unprotected(
    config: ModelConfig, state: SystemState
) -> bool:
    """After an unplanned failover the VM is not protected until resynchronised.

    Rule: "after it completes, the machines at the secondary site are not
    protected" (docs/traceability.md [seed]); decision 6 (reverse replication
    resynchronises first). As data: the old source may hold writes the new source
    lacks, so it cannot serve as a delta base. Disaster: deltas shipped onto a diverged
    copy, silently merging two histories. Applies: from the unplanned failover's
    completion until the reconciliation closes its loss record.
    """
    del config
    for vm in state.vms:
        record = vm.last_failover
        unplanned = record is not None and record.kind is FailoverKind.UNPLANNED
        if unplanned and (is_protected(vm) or vm.other_trusted):
            return False
    return True


@always(
    "the VM runs from a copy other than the chosen recovery point",
    reads=(
        "vm.phase",
        "vm.chosen_point",
        "vm.points",
    ),
)
def failover_starts_from_the_chosen_point(
    config: ModelConfig, state: SystemState
) -> bool:
    """A failed-over VM runs exactly the chosen recovery point's data.

    Rule: the replica VM starts "from the chosen recovery point"; another point may
    be chosen before commit (decisions 3 and 5; Start-VMFailover, docs/traceability.md
    [docs]). Disaster: a VM started from a different point than the one the
    operator picked and the loss report describes. Applies: failing over (the
    chosen point exists) and failed over (it is now the active copy).
    """
    del config
    for vm in state.vms:
        if vm.phase not in (Phase.FAILING_OVER, Phase.FAILED_OVER):
            continue
        index = vm.chosen_point
        if index is None or not 0 <= index < len(vm.points):
            return False
        if vm.phase is Phase.FAILED_OVER and vm.points[index].copy != Copy():
            return False
    return True


@step(
    "the active site moved without a replica VM starting",
    reads=("vm.active",),
)
def reverse_replication_keeps_the_active_site(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """The active site changes only when a failover completes; reverse keeps it.

    Rule: "reverse replication puts the VMs in the protected state, but the active
    location is still the secondary site" (docs/traceability.md [seed], Failback;
    decision 6). Disaster: replication reversed onto the live workload: the copy taking
    writes overwritten by the stale one. Applies: every step; the active site may move
    on ``complete_failover`` only (or a plan step running it).
    """
    del config
    if call.action in ("complete_failover", PLAN_STEP):
        return True
    return all(
        before.active is after.active for before, after in _pairs(pre, call, post)
    )


@step(
    "failback or reverse replication started without both sites connected",
    reads=(
        "vm.phase",
        "site.up",
        "site.connected",
        "link_up",
    ),
)
def failback_needs_both_sites_connected(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """Replication restarts after a failover, or fails back, only with both sites.

    Rule: "for failback, both VMM servers must be connected to Site Recovery"
    (docs/traceability.md [seed]; decisions 6 and 7). Disaster: a reverse replication or
    failback started against a disconnected site, whose state the vault cannot
    know, shipping to or from the wrong copy. Applies: a step that takes a VM from
    ``committed`` back to replicating, or prepares a planned failover back to the
    primary.
    """
    del config
    both = all(pre.reachable(site) for site in Site) and pre.link_up
    for before, after in _pairs(pre, call, post):
        restarts = before.phase is Phase.COMMITTED and after.phase is not (
            Phase.COMMITTED
        )
        restarts = restarts and after.phase is not Phase.UNPROTECTED
        fails_back = (
            before.phase is Phase.REVERSE_REPLICATING
            and after.phase is Phase.FAILOVER_PREPARED
        )
        if (restarts or fails_back) and not both:
            return False
    return True


@step(
    "an acknowledged write is missing from the tracking of some copy",
    reads=(
        "vm.other",
        "vm.test_copy",
        "vm.frozen_other",
        "vm.points",
    ),
)
def writes_during_initial_replication_are_never_lost(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """Every write makes every other copy lag one more: none escapes the logs.

    Rule: changes made while initial replication runs are tracked (docs/traceability.md,
    Replication process [seed] 3-4: the tracker records every change in the
    logs), and so are all later ones; a write to a drill's test VM or to a
    divergent copy left running stays in that copy. Disaster: a write absent from
    the logs never reaches the replica, and no figure ever reports it lost.
    Applies: every ``write`` step, during initial replication above all (the test
    copy lags one more too: it is a past point, not the source), and every write
    a test VM or a divergent copy takes (one more write of its own).
    """
    del config
    if call.action in _OWN_WRITES:
        return all(
            _took_own_write(call.action, before, after)
            for before, after in _pairs(pre, call, post)
        )
    if call.action != "write":
        return True
    for before, after in _pairs(pre, call, post):
        was = [before.other, before.test_copy, before.frozen_other]
        was += [p.copy for p in before.points]
        now = [after.other, after.test_copy, after.frozen_other]
        now += [p.copy for p in after.points]
        if len(was) != len(now):
            return False
        for old, new in zip(was, now, strict=True):
            if (old is None) != (new is None):
                return False
            if old is not None and new is not None and new.behind != old.behind + 1:
                return False
    return True


#: Writes a copy other than the active one takes: its own, one more divergent.
_OWN_WRITES = {"write_test_vm": "test_copy", "write_stale_copy": "other"}


def _took_own_write(action: str, before: VmState, after: VmState) -> bool:
    """Whether the copy that took a write of its own holds one more of them."""
    old, new = getattr(before, _OWN_WRITES[action]), getattr(after, _OWN_WRITES[action])
    return old is not None and new is not None and new.divergent == old.divergent + 1


@always(
    "a VM shown protected has no recovery point to fail over to",
    reads=(
        "vm.phase",
        "vm.other",
        "vm.other_trusted",
        "vm.points",
    ),
)
def protected_vm_has_a_recovery_point(config: ModelConfig, state: SystemState) -> bool:
    """A VM whose status is protected can be failed over: a recovery point exists.

    Rule: decision 15, "the copy reverse replication starts from is a recovery point
    ... a VM shown protected can always be failed over again". Disaster: after
    failback the VM shows protected, and the failover the operator then needs is
    refused because no point exists. Applies: the steady phases and while paused.
    """
    del config
    for vm in state.vms:
        steady = vm.phase in (*STEADY, Phase.REPLICATION_PAUSED)
        if steady and is_protected(vm) and not vm.points:
            return False
    return True


FAILOVER_INVARIANTS: tuple[Invariant, ...] = (
    protected_vm_has_a_recovery_point,
    planned_failover_loses_no_acknowledged_write,
    unplanned_failover_loss_is_exact,
    reconciled_loss_is_exact,
    planned_failover_leaves_it_protected,
    unplanned_failover_leaves_the_target_unprotected,
    failover_starts_from_the_chosen_point,
    reverse_replication_keeps_the_active_site,
    failback_needs_both_sites_connected,
    writes_during_initial_replication_are_never_lost,
)
