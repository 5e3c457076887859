"""Model behaviours a review found wrong, each pinned by the trace that showed it."""

from __future__ import annotations

import pytest

from model import (
    ActionRefused,
    Call,
    ModelConfig,
    Phase,
    Site,
    SystemState,
    apply,
    initial_state,
)
from model.state import LogHealth, RecoveryPlan

NO_APP = (("app_consistent", False),)
ONE = ModelConfig(vm_count=1, disks_per_vm=1, write_lag_max=2, fault_budget=2)


def run(config: ModelConfig, state: SystemState, *calls: Call) -> SystemState:
    """Apply ``calls`` in order."""
    for call in calls:
        state = apply(config, state, call)
    return state


def vm(action: str, index: int = 0, *args: tuple[str, str | int | bool]) -> Call:
    """A call on VM ``index``."""
    return Call(action, vm=index, args=tuple(args))


def test_initial_replication_over_a_damaged_log_resynchronises() -> None:
    """Decision 8: unusable logs cannot make the copy consistent: no first point."""
    state = run(ONE, initial_state(ONE), vm("enable_protection"), vm("write"),
                vm("damage_log"), vm("copy_disk"),
                vm("complete_initial_replication"))  # fmt: skip
    assert (state.vms[0].phase, state.vms[0].points) == (Phase.RESYNCHRONIZING, ())
    state = run(ONE, state, vm("complete_resynchronization"))
    assert state.vms[0].phase is Phase.PROTECTED
    assert state.vms[0].log is LogHealth.USABLE
    assert len(state.vms[0].points) == 1


def test_a_plan_resumes_when_a_vm_that_succeeded_has_moved_on() -> None:
    """Decision 11: what already succeeded is skipped, even if committed meanwhile."""
    config = ModelConfig(
        vm_count=3, disks_per_vm=1, write_lag_max=2, fault_budget=2,
        plans=(RecoveryPlan("p", ((0, 1), (2,))),),
        plan_operations=("planned_failover",),
    )  # fmt: skip
    state = initial_state(config)
    for index in (0, 1):
        for action in (
            "enable_protection",
            "copy_disk",
            "complete_initial_replication",
        ):
            state = run(config, state, vm(action, index))
    state = run(config, state, vm("write", 1), vm("damage_log", 1),
                Call("run_plan", plan=0, args=(("operation", "planned_failover"),)),
                Call("plan_step", plan=0))  # fmt: skip
    assert [v.phase for v in state.vms[:2]] == [Phase.FAILED_OVER, Phase.PROTECTED]
    state = run(config, state, vm("commit", 0), vm("resynchronize", 1))
    state = run(config, state, vm("complete_resynchronization", 1))
    state = run(config, state, Call("plan_step", plan=0))
    assert state.vms[1].phase is Phase.FAILED_OVER
    run_ = state.plan_runs[0]
    assert run_ is not None
    assert run_.group == 1  # the first group is done; the second (vm2) runs next


def test_enable_needs_only_the_source_site() -> None:
    """Decision 7: enable is a source-side action; the copy itself needs the link."""
    state = run(ONE, initial_state(ONE), Call("disconnect_vault", site=Site.SECONDARY),
                vm("enable_protection"))  # fmt: skip
    assert state.vms[0].phase is Phase.INITIAL_REPLICATION
    with pytest.raises(ActionRefused, match="link between the sites is down"):
        run(ONE, state, Call("cut_link"), vm("copy_disk"))


def test_failing_back_needs_both_sites_connected() -> None:
    """Decision 7 and the seed: the failover back needs both VMM servers connected
    for its first half (shutdown and final sync); decision 13: its second half then
    needs only the target, so a source lost after the first half does not leave
    cancel as the only way on."""
    back = run(ONE, initial_state(ONE), vm("enable_protection"), vm("copy_disk"),
               vm("complete_initial_replication"), vm("planned_failover"),
               vm("failover"), vm("complete_failover"), vm("commit"),
               vm("reverse_replication"))  # fmt: skip
    source_lost = run(ONE, back, Call("disconnect_vault", site=Site.SECONDARY))
    with pytest.raises(ActionRefused, match="disconnected from the vault"):
        run(ONE, source_lost, vm("planned_failover"))
    prepared = run(ONE, back, vm("planned_failover"),
                   Call("disconnect_vault", site=Site.SECONDARY))  # fmt: skip
    done = run(ONE, prepared, vm("failover"), vm("complete_failover"))
    assert done.vms[0].phase is Phase.FAILED_OVER
    assert done.vms[0].active is Site.PRIMARY


def test_a_resync_that_sends_nothing_keeps_the_points() -> None:
    """No differing block, no new point: the older distinct point is not pushed out."""
    state = run(ONE, initial_state(ONE), vm("enable_protection"), vm("copy_disk"),
                vm("complete_initial_replication"), vm("write"),
                vm("replicate", 0, *NO_APP))  # fmt: skip
    before = state.vms[0].points
    assert len(before) == 2
    state = run(ONE, state, vm("resynchronize"), vm("complete_resynchronization"))
    assert state.vms[0].points == before


def test_a_cycle_with_nothing_to_ship_changes_no_point() -> None:
    """As the engine: no change since the last cut, no point and no flag change."""
    state = run(ONE, initial_state(ONE), vm("enable_protection"), vm("copy_disk"),
                vm("complete_initial_replication"))  # fmt: skip
    after = run(ONE, state, vm("replicate", 0, ("app_consistent", True)))
    assert after.vms[0].points == state.vms[0].points
