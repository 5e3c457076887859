"""The behaviours decisions 12-16 of docs/behaviour.md (2026-12-01) ask of the model.

Each test failed before the model followed its decision.
"""

from __future__ import annotations

import pytest

from model import ActionRefused, Call, ModelConfig, Phase, Site, SystemState, apply
from model import initial_state as start
from model.state import FaultKind

ONE = ModelConfig(vm_count=1, disks_per_vm=1, write_lag_max=2, fault_budget=3)
PROTECT = ("enable_protection", "copy_disk", "complete_initial_replication")


def run(state: SystemState, *calls: Call | str) -> SystemState:
    for call in calls:
        step = Call(call, vm=0) if isinstance(call, str) else call
        state = apply(ONE, state, step)
    return state


def unplanned(point: str | int = "latest", shutdown: str = "skip") -> Call:
    return Call(
        "unplanned_failover", vm=0, args=(("point", point), ("shutdown", shutdown))
    )


def protected() -> SystemState:
    return run(start(ONE), *PROTECT)


def test_decision_16_disable_gives_a_divergent_copy_up_from_committed() -> None:
    """A refused shutdown leaves the old copy running; disable is still allowed from
    committed and closes the loss record as abandoned, never over-reporting."""
    state = run(protected(), "write", unplanned(shutdown="refused"),
                "complete_failover", "commit", "write_stale_copy")  # fmt: skip
    assert state.vms[0].running == {Site.PRIMARY, Site.SECONDARY}
    state = run(state, "disable_protection")
    vm = state.vms[0]
    assert vm.phase is Phase.UNPROTECTED
    assert vm.running == {Site.SECONDARY}
    assert vm.closed_report is not None
    assert vm.closed_report.abandoned
    assert vm.closed_report.reported_writes <= vm.closed_report.lost_writes
    assert run(state, "enable_protection").vms[0].phase is Phase.INITIAL_REPLICATION


def test_decision_15_reverse_replication_starts_from_a_recovery_point() -> None:
    """After failback's deltas-only reverse replication the VM shown protected has a
    point, so a failover is not refused with "the initial copy must complete"."""
    state = run(protected(), "planned_failover", "failover", "complete_failover",
                "commit", "write", "reverse_replication")  # fmt: skip
    vm = state.vms[0]
    assert vm.phase is Phase.REVERSE_REPLICATING
    assert len(vm.points) == 1
    assert run(state, unplanned()).vms[0].phase is Phase.FAILING_OVER


def test_decision_12_the_replica_vm_waits_for_the_target_vmm() -> None:
    """Creating and starting the replica VM is ordered through the target's VMM: the
    job waits in failing_over while it is disconnected, then goes on."""
    state = run(protected(), unplanned(),
                Call("disconnect_vault", site=Site.SECONDARY))  # fmt: skip
    with pytest.raises(ActionRefused, match="disconnected from the vault"):
        run(state, "complete_failover")
    assert state.vms[0].phase is Phase.FAILING_OVER
    done = run(state, Call("reconnect_vault", site=Site.SECONDARY), "complete_failover")
    assert done.vms[0].phase is Phase.FAILED_OVER


def test_decision_12_data_moves_without_the_vault() -> None:
    """A delta cycle needs hosts and the link, not the VMM servers' connection."""
    state = run(protected(), Call("disconnect_vault", site=Site.PRIMARY),
                Call("disconnect_vault", site=Site.SECONDARY), "write")  # fmt: skip
    cycle = Call("replicate", vm=0, args=(("app_consistent", False),))
    assert run(state, cycle).vms[0].other.behind == 0  # type: ignore[union-attr]


def test_decision_13_the_second_half_needs_the_target_only() -> None:
    """Source VMM lost after the planned failover's first half: fail over anyway."""
    state = run(protected(), "planned_failover",
                Call("disconnect_vault", site=Site.PRIMARY),
                "failover", "complete_failover")  # fmt: skip
    assert state.vms[0].phase is Phase.FAILED_OVER
    assert state.vms[0].active is Site.SECONDARY


def test_decision_14_a_disconnected_source_vmm_cannot_shut_down() -> None:
    """Unplanned failover with "shut down first" through a disconnected source VMM:
    the shutdown fails (only "refused" is possible) and the loss is not exact."""
    state = run(protected(), "write", Call("disconnect_vault", site=Site.PRIMARY))
    for outcome in ("complete", "sync_cut_short"):
        with pytest.raises(ActionRefused, match="not one of"):
            run(state, unplanned(shutdown=outcome))
    failed = run(state, unplanned(shutdown="refused"), "complete_failover")
    record = failed.vms[0].last_failover
    assert record is not None
    assert not record.reported_exact
    assert FaultKind.SHUTDOWN_REFUSED in ONE.faults


def test_decision_4_unusable_logs_in_a_drill_say_to_clean_it_up_first() -> None:
    """A cycle refused during a drill because the logs are unusable names the way on
    the drill allows: its cleanup, not a resynchronisation it forbids."""
    state = run(protected(), "write",
                Call("replicate", vm=0, args=(("app_consistent", False),)), "write",
                Call("start_test_failover", vm=0, args=(("point", 0),)),
                "damage_log")  # fmt: skip
    with pytest.raises(ActionRefused) as refused:
        run(state, Call("replicate", vm=0, args=(("app_consistent", False),)))
    assert "clean up the test failover first" in str(refused.value)
    assert "resynchronize first" not in str(refused.value)
