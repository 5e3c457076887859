"""The recovery-plan properties (invariants/plans.py) on the seed plan, and a plan
configuration explored with and without symmetry reduction."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from invariants.explorer import explore
from invariants.kinds import Invariant
from invariants.mutants import PLAN_TIERS_CONFIG, PLAN_TOGETHER_CONFIG
from invariants.plans import (
    plan_groups_finish_in_order,
    plan_resume_never_redoes_a_vm,
    plan_step_acts_on_its_group,
)
from invariants.trace import read
from model import Call, ModelConfig, SystemState, apply, initial_state
from model.lifecycle import Phase
from model.state import PlanRun

TRACE = Path(__file__).resolve().parents[1] / "traces" / "recovery_plan.jsonl"


def _steps() -> tuple[ModelConfig, list[tuple[SystemState, Call, SystemState]]]:
    trace = read(TRACE)
    state = initial_state(trace.config)
    steps = []
    for call in trace.calls:
        after = apply(trace.config, state, call)
        steps.append((state, call, after))
        state = after
    return trace.config, steps


def _holds(
    invariant: Invariant,
    config: ModelConfig,
    pre: SystemState,
    call: Call,
    post: SystemState,
) -> bool:
    assert invariant.step is not None
    return invariant.step(config, pre, call, post)


PROPERTIES = (
    plan_step_acts_on_its_group,
    plan_resume_never_redoes_a_vm,
    plan_groups_finish_in_order,
)


@pytest.mark.parametrize("invariant", PROPERTIES, ids=lambda i: i.name)
def test_the_seed_plan_keeps_every_plan_property(invariant: Invariant) -> None:
    config, steps = _steps()
    assert sum(call.action == "plan_step" for _, call, _ in steps) == 6
    for pre, call, post in steps:
        assert _holds(invariant, config, pre, call, post), call


def _first_plan_step() -> tuple[ModelConfig, SystemState, Call, SystemState]:
    config, steps = _steps()
    pre, call, post = next(s for s in steps if s[1].action == "plan_step")
    return config, pre, call, post


def test_a_step_that_touches_a_vm_of_a_later_group_is_caught() -> None:
    """The plan runs group [1] first: VM 0 failing over in the same step breaks it."""
    config, pre, call, post = _first_plan_step()
    assert config.plans[0].groups[0] == (1,)
    moved = replace(post.vms[0], phase=Phase.FAILED_OVER)
    forged = replace(post, vms=(moved, post.vms[1]))
    assert not _holds(plan_step_acts_on_its_group, config, pre, call, forged)


def test_a_resume_that_runs_a_done_vm_again_is_caught() -> None:
    config, pre, call, post = _first_plan_step()
    run = pre.plan_runs[0]
    assert run is not None
    done = replace(pre, plan_runs=(replace(run, done=frozenset({1})),))
    rerun = replace(post.vms[1], phase=Phase.FAILOVER_PREPARED)
    forged = replace(post, vms=(post.vms[0], rerun))
    assert _holds(plan_resume_never_redoes_a_vm, config, done, call, post) is (
        post.vms[1] == pre.vms[1]
    )
    assert not _holds(plan_resume_never_redoes_a_vm, config, done, call, forged)


def test_moving_on_before_the_group_succeeded_or_skipping_one_is_caught() -> None:
    config, pre, call, post = _first_plan_step()
    run = pre.plan_runs[0]
    assert run is not None
    assert run.group == 0
    # The group's VM not failed over yet, but the plan says group 1: caught.
    early = replace(pre, plan_runs=(PlanRun(run.operation, 1),))
    assert not _holds(plan_groups_finish_in_order, config, pre, call, early)
    # Ending the plan from its first group skips the second: caught.
    ended = replace(post, plan_runs=(None,))
    assert not _holds(plan_groups_finish_in_order, config, pre, call, ended)
    # An operator step that moves a plan on: caught.
    write = Call("write", vm=0)
    assert not _holds(plan_groups_finish_in_order, config, pre, write, early)


def test_a_plan_configuration_is_the_same_with_and_without_symmetry() -> None:
    """A plan tells its VMs apart (their groups): symmetry must merge none of them, so
    both searches find the same states, and every property holds."""
    config = replace(
        read(TRACE).config, fault_budget=0, app_consistent_points=False,
        recovery_points_max=1, plan_operations=("planned_failover", "commit"),
    )  # fmt: skip
    reduced = explore(config, symmetry=True, stop_at_first=False)
    plain = explore(config, symmetry=False, stop_at_first=False)
    assert reduced.statistics.states == plain.statistics.states > 10_000
    for report in (reduced, plain):
        assert (report.complete, report.violations, report.deadlocks) == (True, (), 0)
        assert report.unrecoverable == 0


@pytest.mark.parametrize(
    "config",
    [PLAN_TIERS_CONFIG, PLAN_TOGETHER_CONFIG],
    ids=["tiers", "together"],
)
def test_the_model_keeps_every_property_where_the_plan_mutants_are_looked_for(
    config: ModelConfig,
) -> None:
    """The plan mutants are killed in these spaces (tests/mutation): the real model
    explores each whole without a violation, so a kill there is the mutant's."""
    report = explore(config, stop_at_first=False)
    assert report.complete
    assert (report.violations, report.deadlocks, report.unrecoverable) == ((), 0, 0)
