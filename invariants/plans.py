"""Recovery plans: what a plan run may do to its VMs, step by step (decision 11).

A plan runs an operation group by group. These properties read the plan's run before
and after a step and the VMs it touched, not the plan code's own bookkeeping of why:

- a plan step acts only on the VMs of the group it is at;
- a VM of that group that already succeeded is not run again when the plan resumes;
- a plan moves to the next group (or ends) only when every VM of its group stands
  where the operation ends, and it never skips or goes back a group.
"""

from __future__ import annotations

from invariants.fields import VM_FIELDS
from invariants.kinds import Invariant, step
from model import Call, ModelConfig, SystemState
from model.plans import OPERATIONS
from model.state import PlanRun

#: A plan step's VMs are compared whole: every field of a VM.
EVERY_VM_FIELD = tuple(f"vm.{name}" for name in VM_FIELDS)


@step(
    "a plan step changed a VM outside the group it is at",
    reads=("plan_runs", *EVERY_VM_FIELD),
)
def plan_step_acts_on_its_group(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """A plan step changes only VMs of its current group.

    Rule: "groups run in order; the VMs of one group together" (decision 11).
    Disaster: a VM of a later group failed over before the one it depends on (a
    database before its storage, an application before its database). Applies:
    every ``plan_step``.
    """
    if call.action != "plan_step" or call.plan is None:
        return True
    run = pre.plan_runs[call.plan]
    if run is None:
        return True
    group = set(config.plans[call.plan].groups[run.group])
    return all(
        before == after
        for index, (before, after) in enumerate(zip(pre.vms, post.vms, strict=True))
        if index not in group
    )


@step(
    "a resumed plan ran again a VM that had already succeeded",
    reads=("plan_runs", *EVERY_VM_FIELD),
)
def plan_resume_never_redoes_a_vm(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """Resuming a plan skips the VMs of its group that already succeeded.

    Rule: "the plan can be resumed after the cause is fixed, skipping what already
    succeeded" (decision 11). Disaster: a VM failed over twice (its second failover
    from a recovery point older than the data it serves since), or committed again.
    Applies: every ``plan_step`` of a run whose group has VMs done.
    """
    del config
    if call.action != "plan_step" or call.plan is None:
        return True
    run = pre.plan_runs[call.plan]
    if run is None:
        return True
    return all(pre.vms[vm] == post.vms[vm] for vm in run.done)


@step(
    "a plan left a group before all its VMs succeeded, or skipped one",
    reads=("plan_runs", "vm.phase"),
)
def plan_groups_finish_in_order(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """A plan is at group g+1 (or done) only once every VM of group g succeeded.

    Rule: "a VM that fails stops the plan before the next group" (decision 11).
    Disaster: a recovery plan that reports success, or starts the next tier, while a
    VM of an earlier tier never came up. Applies: every step; a plan starts at its
    first group, only ``plan_step`` moves it on, and ``cancel_plan`` ends it.
    """
    return all(
        before == after
        or _changed_as_a_plan_may(config, plan, before, after, call, post)
        for plan, (before, after) in enumerate(
            zip(pre.plan_runs, post.plan_runs, strict=True)
        )
    )


def _changed_as_a_plan_may(
    config: ModelConfig,
    plan: int,
    before: PlanRun | None,
    after: PlanRun | None,
    call: Call,
    post: SystemState,
) -> bool:
    """Whether plan ``plan`` going from ``before`` to ``after`` is a legal change."""
    if before is None:  # started: by run_plan, at the first group, nothing done yet
        return (
            call.action == "run_plan"
            and after is not None
            and after.group == 0
            and not after.done
        )
    if call.action == "cancel_plan" and after is None:
        return True
    if call.action != "plan_step" or call.plan != plan:
        return False
    if after is not None and after.operation != before.operation:
        return False
    groups = config.plans[plan].groups
    if after is not None and after.group == before.group:
        return before.done <= after.done  # a success is never forgotten
    last = before.group == len(groups) - 1
    next_one = (
        after is None
        if last
        else (after is not None and after.group == before.group + 1)
    )
    done_in = OPERATIONS[before.operation].done_in
    finished = all(
        vm in before.done or post.vms[vm].phase in done_in
        for vm in groups[before.group]
    )
    return next_one and finished


PLAN_INVARIANTS: tuple[Invariant, ...] = (
    plan_step_acts_on_its_group,
    plan_resume_never_redoes_a_vm,
    plan_groups_finish_in_order,
)
