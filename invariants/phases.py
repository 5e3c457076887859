"""What each phase says about the data: direction, protection, the failover job.

A phase is a claim about the VM's data: ``protected`` claims the primary runs the
workload and ships to the secondary, ``unprotected`` that no replica exists, a
failover phase that a job of a known kind is under way. These properties check the
claim against the data (active site, copies, the failover's records), so an edge
that lands on the wrong phase, or an effect that forgets to record or clear what
the phase claims, shows up as a phase and data that disagree.
"""

from __future__ import annotations

from invariants.kinds import Invariant, always, step
from model import Call, FailoverKind, LogHealth, ModelConfig, Phase, Site, SystemState

#: Phases in which a failover job is under way or not yet closed by reverse
#: replication: its kind is recorded there, and only there.
FAILOVER_PHASES = frozenset(
    {Phase.FAILOVER_PREPARED, Phase.FAILING_OVER, Phase.FAILED_OVER, Phase.COMMITTED}
)


@always(
    "a steady phase disagrees with the VM's direction of replication",
    reads=(
        "vm.phase",
        "vm.active",
    ),
)
def steady_phase_follows_the_direction(config: ModelConfig, state: SystemState) -> bool:
    """``protected`` replicates primary to secondary; ``reverse_replicating`` back.

    Rule: decision 1, "``protected`` replicates primary -> secondary,
    ``reverse_replicating`` replicates secondary -> primary ... Failback ends in
    ``protected`` with the primary active". Disaster: a VM shown replicating one
    way while its workload runs at the other site, so the operator fails over
    towards the copy that is live, or fails back to the one that is stale.
    Applies: the two steady phases.
    """
    del config
    for vm in state.vms:
        if vm.phase is Phase.PROTECTED and vm.active is not Site.PRIMARY:
            return False
        if vm.phase is Phase.REVERSE_REPLICATING and vm.active is not Site.SECONDARY:
            return False
    return True


@always(
    "an unprotected VM still has a replica, points, logs or a failover",
    reads=(
        "vm.phase",
        "vm.other",
        "vm.test_copy",
        "vm.failover_kind",
        "vm.chosen_point",
        "vm.last_failover",
        "vm.frozen_other",
        "vm.points",
        "vm.disks_copied",
        "vm.running",
        "vm.active",
    ),
)
def unprotected_vm_keeps_no_replica(config: ModelConfig, state: SystemState) -> bool:
    """An unprotected VM has no replica, no point, no log, no drill, no failover.

    Rule: decision 10, disable "deletes the replica's recovery points and the change
    logs, never the active copy"; before enable nothing is replicated (reference,
    Replication process [seed] 1). Disaster: points or a replica left behind by
    disable that a later enable or failover mistakes for current data, or a VM shown
    unprotected that still has a job running. Applies: ``unprotected``; the VM runs
    at most at its active site.
    """
    del config
    for vm in state.vms:
        if vm.phase is not Phase.UNPROTECTED:
            continue
        leftovers = (
            vm.other, vm.test_copy, vm.failover_kind, vm.chosen_point,
            vm.last_failover, vm.frozen_other,
        )  # fmt: skip
        if any(item is not None for item in leftovers) or vm.points:
            return False
        if vm.disks_copied or not vm.running <= {vm.active}:
            return False
    return True


@always(
    "a failover phase without its job's kind and records, or the reverse",
    reads=(
        "vm.phase",
        "vm.failover_kind",
        "vm.chosen_point",
        "vm.last_failover",
    ),
)
def failover_job_is_recorded(config: ModelConfig, state: SystemState) -> bool:
    """A failover's kind is known from its first step until reverse replication.

    Rule: decision 3, "a failover job is in progress from its first step ... until
    the replica VM runs"; decision 5, the recovery point depends on the kind
    (planned: the final sync's point; unplanned: a chosen one, which may change);
    a completed failover records its loss until reverse replication closes it
    (docs/model.md). Disaster: a failover whose kind is forgotten reports the loss
    and the protection status of the other kind, or lets the point of a planned
    failover change. Applies: ``failover_prepared`` (always planned), failing
    over, failed over and committed (the loss record open, of the job's kind);
    every other phase has no failover kind.
    """
    del config
    for vm in state.vms:
        in_failover = vm.phase in FAILOVER_PHASES
        if (vm.failover_kind is not None) != in_failover:
            return False
        if vm.phase is Phase.FAILOVER_PREPARED and (
            vm.failover_kind is not FailoverKind.PLANNED or vm.chosen_point is not None
        ):
            return False
        if vm.phase in (Phase.FAILED_OVER, Phase.COMMITTED):
            record = vm.last_failover
            if record is None or record.kind is not vm.failover_kind:
                return False
    return True


#: The steps whose outcome the change logs decide (decision 8; docs/model.md,
#: decision 10): a delta cycle, and the end of the initial copy.
LOG_CYCLES = frozenset({"replicate", "complete_initial_replication"})


@step(
    "a cycle over unusable change logs did not turn into a resynchronisation",
    reads=(
        "vm.log",
        "vm.phase",
    ),
)
def unusable_logs_lead_to_resynchronization(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """A cycle whose change logs are unusable resynchronises, or is refused.

    Rule: decision 8, "past the log limit, or when a log is damaged, the VM goes to
    ``resynchronizing`` at the next cycle"; decision 4, a drill forbids that
    resynchronisation, so the cycle is refused there; docs/model.md decision 10,
    an initial copy over unusable logs resynchronises instead of making a first
    point. Disaster: a VM shown steady, or a drill going on, over logs that can
    no longer carry its writes: every later point silently misses them. Applies:
    each delta cycle and the completion of the initial copy, from a state whose
    logs are overflowed or damaged.
    """
    del config
    if call.vm is None or call.action not in LOG_CYCLES:
        return True
    before, after = pre.vms[call.vm], post.vms[call.vm]
    if before.log is LogHealth.USABLE:
        return True
    return after.phase is Phase.RESYNCHRONIZING


@step(
    "replication paused, or resynchronised, with no one asking and no need",
    reads=(
        "vm.phase",
        "vm.log",
        "vm.other_trusted",
    ),
)
def pauses_and_resynchronizations_have_a_cause(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """Only the operator pauses; a resynchronisation starts only when needed or asked.

    Rule: decision 8, "failures during replication do not change the phase ...
    Operator pause is a separate action"; a resynchronisation starts when the
    operator asks (``resynchronize``), when the logs are unusable (decision 8), or
    when the other copy is not a known past state of the active one (after an
    unplanned failover, decision 6; an initial copy over unusable logs). Disaster:
    shipping stopped by a step that should have replicated, or a full comparison
    of every disk (hours of transfer, the VM unprotected meanwhile) when deltas
    would do. Applies: every step that enters ``replication_paused`` or
    ``resynchronizing``.
    """
    del config
    for before, after in zip(pre.vms, post.vms, strict=True):
        if after.phase is before.phase:
            continue
        if after.phase is Phase.REPLICATION_PAUSED and call.action != "pause":
            return False
        needed = before.log is not LogHealth.USABLE or not before.other_trusted
        if after.phase is Phase.RESYNCHRONIZING and not (
            needed or call.action == "resynchronize"
        ):
            return False
    return True


#: Phases in which the source VM is shut down on purpose (decision 4 of
#: docs/model.md: a recovered site does not restart it).
SHUT_DOWN_FOR_FAILOVER = frozenset({Phase.FAILOVER_PREPARED, Phase.FAILING_OVER})


@always(
    "a VM runs at a site that is down, or not at its own active site while up",
    reads=(
        "vm.phase",
        "vm.running",
        "vm.active",
        "site.up",
    ),
)
def the_vm_runs_where_it_is_active(config: ModelConfig, state: SystemState) -> bool:
    """A VM runs only at sites that are up, and at its active site whenever it can.

    Rule: a crashed host stops its VMs; a recovered site restarts the VMs active
    there, except one shut down for a failover in progress (docs/model.md,
    decision 4); a cancelled failover restarts the source VM (decision 3); a
    completed failover starts the replica VM ("the replica VM is created and
    started", decision 12). Disaster: a workload left stopped after its site came
    back or after a failover, with no one told, or shown running on a host that is
    down. Applies: every phase; the active site may be without the VM only while
    it is down or shut down for a failover.
    """
    del config
    for vm in state.vms:
        if any(not state.site(site).up for site in vm.running):
            return False
        shut_down = vm.phase in SHUT_DOWN_FOR_FAILOVER
        if state.site(vm.active).up and not shut_down and vm.active not in vm.running:
            return False
    return True


PHASE_INVARIANTS: tuple[Invariant, ...] = (
    the_vm_runs_where_it_is_active,
    unusable_logs_lead_to_resynchronization,
    pauses_and_resynchronizations_have_a_cause,
    steady_phase_follows_the_direction,
    unprotected_vm_keeps_no_replica,
    failover_job_is_recorded,
)
