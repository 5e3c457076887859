"""The seed's procedures, end to end on the model, checked step by step."""

from __future__ import annotations

import pytest

from model import (
    ActionRefused,
    Call,
    FailoverKind,
    Phase,
    Site,
    SystemState,
    apply,
    enabled,
    initial_state,
    is_protected,
)
from model.scenarios import (
    CANCELLED_FAILOVER,
    DRILL,
    FAILOVER_AND_FAILBACK,
    RECOVERY_PLAN,
    SCENARIOS,
    UNPLANNED_FAILOVER,
    Scenario,
)


def walk(scenario: Scenario) -> list[SystemState]:
    """Every state the scenario passes through, the initial one first."""
    states = [initial_state(scenario.config)]
    for call in scenario.calls:
        states.append(apply(scenario.config, states[-1], call))
    return states


def after(scenario: Scenario, action: str, nth: int = 0) -> SystemState:
    """The state right after the ``nth`` call of ``action``."""
    states = walk(scenario)
    indices = [i for i, call in enumerate(scenario.calls) if call.action == action]
    return states[indices[nth] + 1]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_scenario_is_accepted(scenario: Scenario) -> None:
    """Every step of every seed procedure is one the model offers (``enabled``, which
    the explorer and the fuzzer follow), not only one ``apply`` accepts."""
    states = walk(scenario)  # apply raises on a refused step
    for state, call in zip(states, scenario.calls, strict=False):
        assert call in enabled(scenario.config, state), call


def test_failback_ends_protected_with_the_primary_active() -> None:
    """After failback the VM is protected, primary active, status protected."""
    vm = walk(FAILOVER_AND_FAILBACK)[-1].vms[0]
    assert (vm.phase, vm.active, is_protected(vm)) == (
        Phase.PROTECTED,
        Site.PRIMARY,
        True,
    )


def test_reverse_replication_keeps_the_active_site_on_the_secondary() -> None:
    """Reverse replication protects the VM while the secondary stays active."""
    vm = after(FAILOVER_AND_FAILBACK, "reverse_replication").vms[0]
    assert (vm.phase, vm.active, is_protected(vm)) == (
        Phase.REVERSE_REPLICATING,
        Site.SECONDARY,
        True,
    )


def test_planned_failover_loses_nothing_and_leaves_the_target_protected() -> None:
    """Shut down, sync, fail over: zero loss, exact, and the old copy is the start."""
    vm = after(FAILOVER_AND_FAILBACK, "complete_failover").vms[0]
    assert vm.last_failover is not None
    assert (vm.last_failover.kind, vm.last_failover.lost_writes) == (
        FailoverKind.PLANNED,
        0,
    )
    assert (vm.last_failover.reported_writes, vm.last_failover.reported_exact) == (
        0,
        True,
    )
    assert vm.other is not None
    assert (vm.other.behind, vm.other.divergent) == (0, 0)
    assert is_protected(vm)


def test_commit_deletes_every_recovery_point() -> None:
    """Commit deletes all available recovery points (the seed)."""
    before = after(FAILOVER_AND_FAILBACK, "complete_failover").vms[0]
    committed = after(FAILOVER_AND_FAILBACK, "commit").vms[0]
    assert len(before.points) == 2  # the last delta cycle's and the final sync's
    assert committed.points == ()


def test_unplanned_failover_reports_a_bound_then_the_reconciled_loss() -> None:
    """Primary down: a lower bound at failover, the exact loss at reconciliation."""
    failed = after(UNPLANNED_FAILOVER, "complete_failover").vms[0]
    assert failed.last_failover is not None
    assert (
        failed.last_failover.reported_writes,
        failed.last_failover.reported_exact,
    ) == (
        0,
        False,
    )
    assert not is_protected(failed)
    reversing = after(UNPLANNED_FAILOVER, "reverse_replication").vms[0]
    assert reversing.phase is Phase.RESYNCHRONIZING
    reconciled = after(UNPLANNED_FAILOVER, "complete_resynchronization").vms[0]
    assert reconciled.closed_report is not None
    assert reconciled.closed_report.reconciled_writes == 1
    assert (reconciled.phase, is_protected(reconciled)) == (
        Phase.REVERSE_REPLICATING,
        True,
    )


def test_unplanned_failover_with_a_refused_shutdown_leaves_two_copies_running() -> None:
    """The failover goes on even if the shutdown fails (the seed): split brain."""
    config = UNPLANNED_FAILOVER.config
    state = walk(DRILL)[6]  # protected, after the first delta cycle
    state = apply(config, state, Call("write", vm=0))
    state = apply(
        config,
        state,
        Call("unplanned_failover", vm=0,
             args=(("point", "latest"), ("shutdown", "refused"))),
    )  # fmt: skip
    state = apply(config, state, Call("complete_failover", vm=0))
    vm = state.vms[0]
    assert vm.running == frozenset(Site)
    assert vm.last_failover is not None
    assert vm.last_failover.reported_exact is False  # the old copy still writes


def test_a_drill_never_reaches_the_replica() -> None:
    """The test VM's writes stay in its copy; cycles continue; cleanup returns."""
    states = walk(DRILL)
    during = after(DRILL, "replicate", nth=1).vms[0]
    assert during.phase is Phase.TEST_FAILOVER
    assert during.test_copy is not None
    assert during.test_copy.from_test
    assert during.other is not None
    assert not during.other.from_test
    assert states[-1].vms[0].phase is Phase.PROTECTED


def test_a_cancelled_failover_needs_disable_and_enable() -> None:
    """Cancel stops replication for good; disable + enable protects afresh."""
    stopped = after(CANCELLED_FAILOVER, "cancel_failover").vms[0]
    assert stopped.phase is Phase.REPLICATION_STOPPED
    assert Site.PRIMARY in stopped.running
    assert walk(CANCELLED_FAILOVER)[-1].vms[0].phase is Phase.PROTECTED


def test_a_recovery_plan_runs_group_by_group() -> None:
    """vm1's group goes first; after one step vm0 has not moved yet."""
    first = after(RECOVERY_PLAN, "plan_step")
    assert (first.vms[1].phase, first.vms[0].phase) == (
        Phase.FAILED_OVER,
        Phase.PROTECTED,
    )
    final = walk(RECOVERY_PLAN)[-1]
    assert [vm.phase for vm in final.vms] == [Phase.REVERSE_REPLICATING] * 2
    assert final.plan_runs == (None,)


def test_a_blocked_plan_resumes_after_the_fix_skipping_what_succeeded() -> None:
    """A VM that cannot fail over stops the plan; after the fix it resumes."""
    config = RECOVERY_PLAN.config
    first_run = [c.action for c in RECOVERY_PLAN.calls].index("run_plan")
    state = walk(RECOVERY_PLAN)[first_run]  # both protected, no plan running
    assert [vm.phase for vm in state.vms] == [Phase.PROTECTED] * 2
    state = apply(config, state,
                  Call("start_test_failover", vm=0, args=(("point", 0),)))  # fmt: skip
    run_plan = Call("run_plan", plan=0, args=(("operation", "planned_failover"),))
    state = apply(config, state, run_plan)
    state = apply(config, state, Call("plan_step", plan=0))  # vm1 done
    blocked = state
    assert blocked.plan_runs[0] is not None
    assert blocked.plan_runs[0].group == 1
    with pytest.raises(ActionRefused, match="no VM of the current group"):
        apply(config, blocked, Call("plan_step", plan=0))
    fixed = apply(config, blocked, Call("cleanup_test_failover", vm=0))
    done = apply(config, fixed, Call("plan_step", plan=0))
    assert [vm.phase for vm in done.vms] == [Phase.FAILED_OVER] * 2
    assert done.plan_runs == (None,)


def test_every_phase_is_reachable(small_states: list[SystemState]) -> None:
    """From unprotected, every phase of the lifecycle is reachable."""
    assert {state.vms[0].phase for state in small_states} == set(Phase)
