"""Recovery plans: groups of VMs run in order, the VMs of one group together.

Decision 11 (docs/behaviour.md): a plan runs an operation group by group; a VM that
fails stops the plan before the next group; the plan can be resumed after the cause is
fixed, skipping what already succeeded. Each operation is a short sequence of ordinary
VM actions, so a plan never changes a phase the lifecycle would not: ``plan_step`` tries
each step on each VM of the current group, skipping a step the VM has already passed,
and a VM is done when it stands in the operation's final phases, and stays done for the
rest of its group even if the operator moves it on (commits it) before the plan
resumes; the group is done when all of its VMs are.

The state keeps only which operation a plan runs, the group it is at and the VMs of
that group already done (``PlanRun``): no job history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from model.action import ActionSpec, Actor, Args, Call, Context, Guard, Scope
from model.lifecycle import STEADY, Phase
from model.state import ModelConfig, PlanRun, SystemState
from model.vm_actions import POINT_LATEST, SHUTDOWN_SKIP


@dataclass(frozen=True)
class PlanOperation:
    """An operation a plan can run: the VM actions in order, and where they end."""

    steps: tuple[tuple[str, Args], ...]
    done_in: frozenset[Phase]


OPERATIONS: Mapping[str, PlanOperation] = MappingProxyType(
    {
        "test_failover": PlanOperation(
            (("start_test_failover", (("point", 0),)),),
            frozenset({Phase.TEST_FAILOVER}),
        ),
        "cleanup_test_failover": PlanOperation(
            (("cleanup_test_failover", ()),), frozenset(STEADY)
        ),
        "planned_failover": PlanOperation(
            (("planned_failover", ()), ("failover", ()), ("complete_failover", ())),
            frozenset({Phase.FAILED_OVER}),
        ),
        "unplanned_failover": PlanOperation(
            (
                (
                    "unplanned_failover",
                    (("point", POINT_LATEST), ("shutdown", SHUTDOWN_SKIP)),
                ),
                ("complete_failover", ()),
            ),
            frozenset({Phase.FAILED_OVER}),
        ),
        "commit": PlanOperation((("commit", ()),), frozenset({Phase.COMMITTED})),
        "reverse_replication": PlanOperation(
            (("reverse_replication", ()),),
            frozenset({*STEADY, Phase.RESYNCHRONIZING}),
        ),
    }
)

#: Tries one call; returns the new state, or None when the model refuses it.
TryCall = Callable[[ModelConfig, SystemState, Call], SystemState | None]


def run_group(
    config: ModelConfig, state: SystemState, plan: int, try_call: TryCall
) -> tuple[SystemState, frozenset[int]]:
    """Run the current group of ``plan`` on the VMs not yet done; return the state and
    the VMs of the group done so far (a VM that succeeded stays done even if the
    operator moves it on before the plan resumes)."""
    run = state.plan_runs[plan]
    assert run is not None
    operation = OPERATIONS[run.operation]
    done = set(run.done)
    for vm in config.plans[plan].groups[run.group]:
        if vm in done:
            continue
        for action, args in operation.steps:
            after = try_call(config, state, Call(action, vm=vm, args=args))
            if after is not None:
                state = after
        if state.vms[vm].phase in operation.done_in:
            done.add(vm)
    return state, frozenset(done)


def make_plan_actions(try_call: TryCall) -> tuple[ActionSpec, ...]:
    """The plan actions, bound to the successor function that runs VM steps."""

    def runs(ctx: Context) -> bool:
        assert ctx.call.plan is not None
        return ctx.state.plan_runs[ctx.call.plan] is not None

    def start(ctx: Context) -> SystemState:
        assert ctx.call.plan is not None
        run = PlanRun(str(ctx.call.arg("operation")))
        return _with_run(ctx.state, ctx.call.plan, run)

    def operations(ctx: Context) -> Iterable[Args]:
        return ((("operation", name),) for name in ctx.config.plan_operations)

    #: The last group run: its config, state and plan (compared by identity) and
    #: what it gave. ``plan_step``'s guard runs the group to see whether it moves;
    #: the effect then asks the same of the same state, and gets this answer.
    last: list[tuple[ModelConfig, SystemState, int, SystemState, frozenset[int]]] = []

    def group_run(ctx: Context, plan: int) -> tuple[SystemState, frozenset[int]]:
        if last:
            config, state, known, after, done = last[0]
            if config is ctx.config and state is ctx.state and known == plan:
                return after, done
        after, done = run_group(ctx.config, ctx.state, plan, try_call)
        last[:] = [(ctx.config, ctx.state, plan, after, done)]
        return after, done

    def step(ctx: Context) -> SystemState:
        assert ctx.call.plan is not None
        plan = ctx.call.plan
        state, done = group_run(ctx, plan)
        run = state.plan_runs[plan]
        assert run is not None
        group = ctx.config.plans[plan].groups[run.group]
        if not done >= set(group):
            # blocked at this group until the cause is fixed; remember who succeeded
            return _with_run(state, plan, replace(run, done=done))
        groups = len(ctx.config.plans[plan].groups)
        if run.group + 1 < groups:
            return _with_run(state, plan, PlanRun(run.operation, run.group + 1))
        return _with_run(state, plan, None)

    def progresses(ctx: Context) -> bool:
        return runs(ctx) and step(ctx) != ctx.state

    idle = Guard("plan_idle", lambda ctx: not runs(ctx), lambda ctx: "it already runs")
    running = Guard("plan_running", runs, lambda ctx: "it is not running")
    progress = Guard(
        "plan_can_progress",
        progresses,
        lambda ctx: (
            "no VM of the current group can take its next step: fix the cause "
            "(see each VM's allowed actions), or cancel the plan"
        ),
    )
    return (
        ActionSpec("run_plan", Scope.PLAN, Actor.OPERATOR, "Start a recovery plan.",
                   (idle,), operations, system_effect=start),
        ActionSpec("plan_step", Scope.PLAN, Actor.AGENT,
                   "Run the plan's current group (again, after a fix).",
                   (running, progress), system_effect=step),
        ActionSpec("cancel_plan", Scope.PLAN, Actor.OPERATOR,
                   "Stop a plan run; its VMs stay as they are.", (running,),
                   system_effect=lambda ctx: _with_run(ctx.state, ctx.call.plan or 0,
                                                       None)),
    )  # fmt: skip


def _with_run(state: SystemState, plan: int, run: PlanRun | None) -> SystemState:
    runs = list(state.plan_runs)
    runs[plan] = run
    return replace(state, plan_runs=tuple(runs))
