"""Properties of the replica and its recovery points, stated over the copies' data.

The abstract state keeps every copy as a lag relative to the active copy
(``model.state``): ``behind`` writes it lacks, ``divergent`` writes it holds that the
active copy never had. Each property below reads those figures and the ghosts
(``frozen_other``, ``Copy.from_test``), never a guard, so a broken effect or a
missing guard shows up as data that cannot be right.

"Replicating" phases are those in which the other copy is a replica of the active
one: it must never hold a write the active copy lacks. After a failover the other
copy is the *old source* instead, which may well hold such writes (the loss), until
reverse replication resynchronises it.
"""

from __future__ import annotations

from itertools import pairwise

from invariants.kinds import Invariant, always
from model import Copy, ModelConfig, Phase, SystemState, VmState
from model.lifecycle import STEADY

#: Phases in which the other copy is the replica of the active copy.
REPLICATING = frozenset(
    {
        Phase.INITIAL_REPLICATION,
        *STEADY,
        Phase.REPLICATION_PAUSED,
        Phase.TEST_FAILOVER,
        Phase.FAILOVER_PREPARED,
        Phase.FAILING_OVER,
        Phase.REPLICATION_STOPPED,
    }
)

#: Phases in which delta cycles or a resynchronisation may ship data to the replica.
SHIPPING = frozenset({*STEADY, Phase.RESYNCHRONIZING, Phase.TEST_FAILOVER})


def _replica_phase(vm: VmState) -> bool:
    """The other copy is a replica (not an old source awaiting reconciliation)."""
    return vm.phase in REPLICATING or (
        vm.phase is Phase.RESYNCHRONIZING and vm.other_trusted
    )


def _copies(vm: VmState) -> list[Copy]:
    found = [vm.other, vm.test_copy, vm.frozen_other]
    found += [point.copy for point in vm.points]
    return [copy for copy in found if copy is not None]


@always(
    "the replica holds a write the active copy never had, or lacks its copy",
    reads=(
        "vm.phase",
        "vm.other_trusted",
        "vm.other",
        "vm.disks_copied",
    ),
)
def replica_is_a_past_source_state(config: ModelConfig, state: SystemState) -> bool:
    """While replicating, the replica is a past state of the source.

    Rule: delta logs ship whole and in order, all disks of a VM cut at one point and
    applied together (docs/outbox-format.md; docs/traceability.md,
    S6-S7). Disaster: a replica holding writes the source never made (a log
    applied twice, a divergent copy shipped) is a failover target no one can trust.
    Applies: from enable to a failover's completion, and in a resynchronisation that
    is not a reconciliation.
    """
    for vm in state.vms:
        if not _replica_phase(vm):
            continue
        if vm.other is None or vm.other.divergent != 0 or vm.other.from_test:
            return False
        if vm.disks_copied > config.disks_per_vm:
            return False
    return True


@always(
    "recovery points are not past states of the replica, newest first",
    reads=(
        "vm.points",
        "vm.phase",
        "vm.other_trusted",
        "vm.other",
    ),
)
def recovery_points_are_past_states_in_order(
    config: ModelConfig, state: SystemState
) -> bool:
    """Recovery points are past states of the replica, newest first, bounded.

    Rule: a recovery point is a state the replica held ("additional recovery points
    ... up to 24 hours back", docs/traceability.md [docs]); the catalogue is ordered
    and older points are merged away past the configured count. Disaster: a point newer
    than the replica (or out of order) starts a failover from data that never arrived.
    Applies: every phase; before a failover completes the points lie behind the
    replica, after it they lie on the old source's line in order.
    """
    for vm in state.vms:
        if len(vm.points) > config.recovery_points_max:
            return False
        positions = [point.copy.divergent - point.copy.behind for point in vm.points]
        if any(newer < older for newer, older in pairwise(positions)):
            return False
        if any(point.copy.from_test for point in vm.points):
            return False
        if _replica_phase(vm) and vm.points:
            newest = vm.points[0].copy
            if newest.divergent != 0 or vm.other is None:
                return False
            if newest.behind < vm.other.behind:
                return False
    return True


@always(
    "the replica changed after a failover was cancelled",
    reads=(
        "vm.phase",
        "vm.frozen_other",
        "vm.other",
        "vm.points",
    ),
)
def no_replication_after_cancelled_failover(
    config: ModelConfig, state: SystemState
) -> bool:
    """After a cancelled failover the replica never changes and no point is made.

    Rule: "if the failover is cancelled, it stops, but the VM will not be
    replicated again" (docs/traceability.md, Failover and failback [seed]; decision 3).
    Disaster: replication silently resuming after a cancel, on a replica the
    operator believes frozen, overwriting the copy a recovery may depend on.
    Applies: ``replication_stopped``, which a cancelled failover never leaves but by
    disable (the ghost ``frozen_other`` exists exactly there and follows the replica
    from the cancel, lagging one more for every write, as it should).
    """
    del config
    for vm in state.vms:
        stopped = vm.phase is Phase.REPLICATION_STOPPED
        if (vm.frozen_other is not None) != stopped:
            return False  # a cancelled failover left replication_stopped
        if stopped and (vm.other != vm.frozen_other or vm.points):
            return False
    return True


@always(
    "a recovery point survived commit",
    reads=(
        "vm.phase",
        "vm.points",
        "vm.chosen_point",
    ),
)
def commit_discards_every_recovery_point(
    config: ModelConfig, state: SystemState
) -> bool:
    """A committed failover holds no recovery point.

    Rule: committing the failover "deletes all available recovery points"
    (docs/traceability.md, Failover and failback [seed]). Disaster: a stale point
    offered after commit would start the VM from the other line of history. Applies:
    ``committed``.
    """
    del config
    return all(
        not vm.points and vm.chosen_point is None
        for vm in state.vms
        if vm.phase is Phase.COMMITTED
    )


@always(
    "a delta cycle ran before the initial copy was whole",
    reads=(
        "vm.phase",
        "vm.points",
        "vm.other",
        "vm.disks_copied",
    ),
)
def delta_replication_only_after_initial_copy(
    config: ModelConfig, state: SystemState
) -> bool:
    """No recovery point before the initial copy completes; every disk copied after.

    Rule: "when initial replication finishes, delta replication starts"; the disks
    are replicated one by one (docs/traceability.md, Replication process [seed] 2, 4).
    Disaster: a recovery point over a half-copied VM (some disks missing) fails
    over to a machine that does not boot. Applies: ``initial_replication`` (no
    point yet, the replica-to-be lags by exactly the writes tracked since the
    snapshot) and every phase after it until disable (all disks copied).
    """
    for vm in state.vms:
        if vm.phase is Phase.UNPROTECTED:
            continue
        if vm.phase is Phase.INITIAL_REPLICATION:
            if vm.points or vm.other is None:
                return False
        elif vm.disks_copied != config.disks_per_vm:
            return False
    return True


@always(
    "a write made in a drill's test VM reached another copy",
    reads=(
        "vm.phase",
        "vm.test_copy",
        "vm.other",
        "vm.frozen_other",
        "vm.points",
    ),
)
def test_failover_writes_never_reach_the_replica(
    config: ModelConfig, state: SystemState
) -> bool:
    """The drill's writes stay in the test copy, and the test copy ends with it.

    Rule: a test failover runs the test VM "in an isolated network, while
    replication continues; cleanup deletes the test VM" (docs/traceability.md [docs];
    decision 4). Disaster: drill data leaking into the replica or its recovery
    points corrupts the copy a real failover would start from. Applies: every
    phase (the ghost ``Copy.from_test`` marks the test VM's writes); a test copy
    exists only during ``test_failover``.
    """
    del config
    for vm in state.vms:
        if (vm.test_copy is not None) != (vm.phase is Phase.TEST_FAILOVER):
            return False
        others = [copy for copy in _copies(vm) if copy is not vm.test_copy]
        if any(copy.from_test for copy in others):
            return False
    return True


@always(
    "a divergent copy runs while replication ships from the active copy",
    reads=(
        "vm.phase",
        "vm.running",
        "vm.active",
    ),
)
def only_the_active_copy_is_replicated(config: ModelConfig, state: SystemState) -> bool:
    """While replication ships, only the active copy runs; the replica is not a source.

    Rule: a failed shutdown leaves two running copies (docs/traceability.md: "the
    failover goes on even if the shutdown fails"); the second copy is divergent, and its
    writes are reported lost at reconciliation, never merged silently
    (docs/verification.md, "Properties"). Disaster: two writers to one replication
    stream (split brain).
    Applies: the shipping phases (steady, resynchronising, drill) and pause.
    """
    del config
    for vm in state.vms:
        shipping = vm.phase in SHIPPING or vm.phase is Phase.REPLICATION_PAUSED
        if shipping and not vm.running <= {vm.active}:
            return False
    return True


@always(
    "a recovery point is marked app-consistent but the guest was not quiesced",
    reads=("vm.points",),
)
def app_consistent_points_were_quiesced(
    config: ModelConfig, state: SystemState
) -> bool:
    """Every app-consistent recovery point was cut while the guest was quiesced.

    Rule: an application-consistent point is one the guest's applications were
    asked to flush and hold for (docs/behaviour.md, "What the product says"); only
    a delta cycle that quiesced the running guest makes one. The ghost mark
    ``RecoveryPoint.quiesced`` records what happened in the guest, apart from the
    point's claim. Disaster: an operator fails over to "the latest app-consistent
    point" and the database starts from a torn state, needing the crash recovery
    the choice was meant to avoid. Applies: every recovery point of every VM.
    """
    del config
    return all(
        point.quiesced
        for vm in state.vms
        for point in vm.points
        if point.app_consistent
    )


REPLICA_INVARIANTS: tuple[Invariant, ...] = (
    replica_is_a_past_source_state,
    recovery_points_are_past_states_in_order,
    no_replication_after_cancelled_failover,
    commit_discards_every_recovery_point,
    delta_replication_only_after_initial_copy,
    test_failover_writes_never_reach_the_replica,
    only_the_active_copy_is_replicated,
    app_consistent_points_were_quiesced,
)
