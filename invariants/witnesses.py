"""Reachability witnesses (SOMETIMES): the model is not vacuous.

An invariant over states the model never reaches checks nothing. Each witness here
names a situation docs/behaviour.md describes and the explorer must reach in the full
configuration (every fault enabled): every phase of the lifecycle, both directions,
a failover that loses writes, one whose report is only a bound, two copies running
after a refused shutdown, a reconciled loss report, a drill write, a change of
recovery point, a resynchronisation forced by an unusable log. Witnesses are
evaluated on the fresh post-state of every step, so they see its observations.
"""

from __future__ import annotations

from collections.abc import Callable

from invariants.kinds import Invariant, Kind, sometimes
from model import FailoverKind, LogHealth, ModelConfig, Phase, Site, SystemState


def _phase_witness(phase: Phase) -> Invariant:
    def reached(config: ModelConfig, state: SystemState) -> bool:
        del config
        return any(vm.phase is phase for vm in state.vms)

    reached.__doc__ = f"Some VM reaches phase {phase.value}."
    return Invariant(
        f"reaches_{phase.value}",
        Kind.SOMETIMES,
        f"no VM ever reaches {phase.value}",
        state=reached,
        reads=frozenset({"vm.phase"}),
    )


PHASE_WITNESSES: tuple[Invariant, ...] = tuple(_phase_witness(p) for p in Phase)


@sometimes(
    "no failover ever loses an acknowledged write",
    reads=("vm.last_failover",),
)
def failover_with_loss(config: ModelConfig, state: SystemState) -> bool:
    """An unplanned failover loses writes ("data may be lost", docs/traceability.md
    [seed])."""
    del config
    return any(
        vm.last_failover is not None and vm.last_failover.lost_writes > 0
        for vm in state.vms
    )


@sometimes(
    "no failover report is ever only a bound",
    reads=("vm.last_failover",),
)
def failover_report_is_a_bound(config: ModelConfig, state: SystemState) -> bool:
    """A failover whose old source is unreachable reports a labelled lower bound."""
    del config
    return any(
        vm.last_failover is not None and not vm.last_failover.reported_exact
        for vm in state.vms
    )


@sometimes(
    "two copies of a VM never run at once",
    reads=("vm.running",),
)
def two_copies_running(config: ModelConfig, state: SystemState) -> bool:
    """A refused shutdown leaves the old copy running beside the replica VM."""
    del config
    return any(vm.running == frozenset(Site) for vm in state.vms)


@sometimes(
    "the stale copy never takes a write after a failover",
    reads=(
        "vm.last_failover",
        "vm.other",
    ),
)
def stale_copy_write(config: ModelConfig, state: SystemState) -> bool:
    """The old copy, still running, acknowledges writes after the failover."""
    del config
    return any(
        vm.last_failover is not None
        and vm.other is not None
        and vm.other.divergent > vm.last_failover.reported_writes
        and not vm.last_failover.reported_exact
        for vm in state.vms
    )


@sometimes(
    "no loss report is ever reconciled with a loss",
    reads=("vm.closed_report",),
)
def reconciled_loss_report(config: ModelConfig, state: SystemState) -> bool:
    """Reverse replication reconciles an unplanned failover's loss (> 0)."""
    del config
    return any(
        vm.closed_report is not None
        and vm.closed_report.kind is FailoverKind.UNPLANNED
        and (vm.closed_report.reconciled_writes or 0) > 0
        for vm in state.vms
    )


@sometimes(
    "no planned failover's report is ever closed",
    reads=("vm.closed_report",),
)
def planned_report_closed(config: ModelConfig, state: SystemState) -> bool:
    """Reverse replication after a planned failover closes its (zero) report."""
    del config
    return any(
        vm.closed_report is not None and vm.closed_report.kind is FailoverKind.PLANNED
        for vm in state.vms
    )


@sometimes(
    "the drill's test VM never takes a write",
    reads=("vm.test_copy",),
)
def drill_write(config: ModelConfig, state: SystemState) -> bool:
    """The test VM takes writes during a drill, isolated from the replica."""
    del config
    return any(
        vm.test_copy is not None and vm.test_copy.divergent > 0 for vm in state.vms
    )


@sometimes(
    "the replica never lags the source during initial replication",
    reads=(
        "vm.phase",
        "vm.other",
    ),
)
def write_during_initial_copy(config: ModelConfig, state: SystemState) -> bool:
    """Writes land in the logs while the disks are copied."""
    del config
    return any(
        vm.phase is Phase.INITIAL_REPLICATION
        and vm.other is not None
        and vm.other.behind > 0
        for vm in state.vms
    )


@sometimes(
    "no failover ever starts from an older recovery point",
    reads=(
        "vm.phase",
        "vm.chosen_point",
    ),
)
def older_point_chosen(config: ModelConfig, state: SystemState) -> bool:
    """An unplanned failover (or a change of point) picks an older point."""
    del config
    return any(
        vm.phase is Phase.FAILED_OVER and vm.chosen_point not in (None, 0)
        for vm in state.vms
    )


@sometimes(
    "a change log never becomes unusable",
    reads=("vm.log",),
)
def log_unusable(config: ModelConfig, state: SystemState) -> bool:
    """A change log overflows or is damaged and forces a resynchronisation."""
    del config
    return any(vm.log is not LogHealth.USABLE for vm in state.vms)


def _environment(
    name: str, holds: Callable[[SystemState], bool], reads: str
) -> Invariant:
    def reached(config: ModelConfig, state: SystemState) -> bool:
        del config
        return holds(state)

    reached.__doc__ = f"The environment reaches: {name.replace('_', ' ')}."
    return Invariant(
        name, Kind.SOMETIMES, f"never: {name}", state=reached, reads=frozenset({reads})
    )


ENVIRONMENT_WITNESSES: tuple[Invariant, ...] = (
    _environment(
        "a_site_down", lambda s: not (s.primary.up and s.secondary.up), "site.up"
    ),
    _environment("the_link_down", lambda s: not s.link_up, "link_up"),
)


WITNESSES: tuple[Invariant, ...] = (
    *PHASE_WITNESSES,
    failover_with_loss,
    failover_report_is_a_bound,
    two_copies_running,
    stale_copy_write,
    reconciled_loss_report,
    planned_report_closed,
    drill_write,
    write_during_initial_copy,
    older_point_chosen,
    log_unusable,
    *ENVIRONMENT_WITNESSES,
)
