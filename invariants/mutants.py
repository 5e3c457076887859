"""Deliberately broken variants of the model: the proof that the harness bites.

Each ``Mutant`` is a small, realistic mistake (a missing guard, a wrong destination,
an effect that forgets a step) built from the model's rules through the ``Rules``
seam (``model.successor.Rules``): the model itself is never edited. The mutation
test runs ``check`` and ``fuzz`` on each one and fails when either lets a mutant
survive; every invariant of the catalogue must kill at least one mutant, or it is
suspected of restating a guard rather than stating a property.

``expected`` names the invariants meant to catch the mutant: each must kill it on
its own (an exploration checking that invariant alone finds a violation), which is
how the test shows that every invariant bites; with the whole catalogue the report
says which one failed first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache

from model import Call, ModelConfig, Phase, RecoveryPlan, SystemState
from model.action import ActionSpec, Context, Scope
from model.lifecycle import LIFECYCLE, Dest, Edge
from model.plans import OPERATIONS, TryCall, make_plan_actions
from model.state import PlanRun, VmState
from model.successor import RULES, Rules, make_rules


@dataclass(frozen=True)
class Mutant:
    """A named broken variant of the rules, and the invariant meant to catch it."""

    name: str
    summary: str
    expected: tuple[str, ...]  # each of these kills it on its own
    build: Callable[[], Rules]
    config: ModelConfig | None = None  # where it is looked for (None: the default)
    fuzz_only: bool = False  # too deep for check in its config: fuzzing finds it

    @property
    def rules(self) -> Rules:
        """The mutated rules (built once)."""
        return _built(self.name)


def _spec(name: str) -> ActionSpec:
    return RULES.actions[name]


def _effect(name: str, wrap: Callable[[Context, VmState], VmState]) -> Rules:
    """RULES with action ``name``'s VM effect post-processed by ``wrap``."""
    spec = _spec(name)
    original = spec.vm_effect
    assert original is not None

    def effect(ctx: Context) -> VmState:
        return wrap(ctx, original(ctx))

    return RULES.replace_action(replace(spec, vm_effect=effect))


def _without_guards(name: str, *guards: str) -> Rules:
    spec = _spec(name)
    kept = tuple(g for g in spec.guards if g.name not in guards)
    assert len(kept) < len(spec.guards), (name, guards)
    return RULES.replace_action(replace(spec, guards=kept))


def _edges(change: Callable[[Edge], Edge | None], *extra: Edge) -> Rules:
    table = [changed for edge in LIFECYCLE if (changed := change(edge)) is not None]
    return RULES.replace_lifecycle((*table, *extra))


def _retarget(trigger: str, dest: Phase | Dest) -> Rules:
    return _edges(lambda e: replace(e, dest=dest) if e.trigger == trigger else e)


def _unguard(trigger: str, guard: str) -> Rules:
    def change(edge: Edge) -> Edge | None:
        if edge.trigger != trigger:
            return edge
        if guard in edge.guards:
            return replace(edge, guards=tuple(g for g in edge.guards if g != guard))
        return None  # the complementary row goes: the unguarded one replaces it

    return _edges(change)


def _report_ignores_running(ctx: Context, vm: VmState) -> VmState:
    """The failed shutdown taken for a success: the report claims to be exact."""
    record = vm.last_failover
    assert record is not None
    assert vm.other is not None
    reachable = ctx.state.site(ctx.vm.active).up and ctx.state.link_up
    if not reachable:
        return vm
    exact = replace(record, reported_writes=vm.other.divergent, reported_exact=True)
    return replace(vm, last_failover=exact)


def _report_forgets_final_sync(ctx: Context, vm: VmState) -> VmState:
    """An exact report that assumes the final sync shipped everything."""
    del ctx
    record = vm.last_failover
    assert record is not None
    if not record.reported_exact:
        return vm
    return replace(vm, last_failover=replace(record, reported_writes=0))


def _drill_write_leaks(ctx: Context, vm: VmState) -> VmState:
    del ctx
    assert vm.other is not None
    leaked = replace(vm.other, divergent=vm.other.divergent + 1, from_test=True)
    return replace(vm, other=leaked)


def _write_untracked_in_initial_copy(ctx: Context, vm: VmState) -> VmState:
    if ctx.vm.phase is Phase.INITIAL_REPLICATION:
        return replace(vm, other=ctx.vm.other)
    return vm


def _point_without_apply(ctx: Context, vm: VmState) -> VmState:
    """The cycle records its recovery point, but the replica never applies it."""
    if vm.points != ctx.vm.points:
        return replace(vm, other=ctx.vm.other)
    return vm


def _points_never_merged(ctx: Context, vm: VmState) -> VmState:
    """A cycle keeps every older point: the oldest is never merged away."""
    before = ctx.vm.points
    added = vm.points != before and vm.points[1:] == before[: len(vm.points) - 1]
    if added and len(before) >= len(vm.points):
        return replace(vm, points=(vm.points[0], *before))
    return vm


def _change_point_without_rebase(ctx: Context, vm: VmState) -> VmState:
    return replace(ctx.vm, chosen_point=vm.chosen_point)


def _newest_point_claims_app_consistent(ctx: Context, vm: VmState) -> VmState:
    """The point the step made (if any) is marked app-consistent; the guest was
    never asked to quiesce (a shut-down guest cannot be, and a block comparison does
    not ask it)."""
    if not vm.points or vm.points == ctx.vm.points:
        return vm
    newest = replace(vm.points[0], app_consistent=True)
    return replace(vm, points=(newest, *vm.points[1:]))


_VM_MUTANTS: tuple[Mutant, ...] = (
    Mutant("commit_keeps_recovery_points", "commit forgets to delete the points",
           ("commit_discards_every_recovery_point",),
           lambda: _effect("commit",
                           lambda ctx, vm: replace(vm, points=ctx.vm.points))),
    Mutant("complete_failover_lands_committed", "wrong destination: straight to commit",
           ("commit_discards_every_recovery_point",),
           lambda: _retarget("complete_failover", Phase.COMMITTED)),
    Mutant("replication_after_cancel", "delta cycles allowed in replication_stopped",
           ("no_replication_after_cancelled_failover",),
           lambda: _edges(lambda e: e, Edge("replicate", (Phase.REPLICATION_STOPPED,),
                                            Dest.SAME, ("log_usable",)))),
    Mutant("cancel_resumes_replication", "wrong destination: cancel returns to steady",
           ("no_replication_after_cancelled_failover",),
           lambda: _retarget("cancel_failover", Dest.STEADY)),
    Mutant("cancel_keeps_points", "a cancelled failover keeps its recovery points",
           ("no_replication_after_cancelled_failover",),
           lambda: _effect("cancel_failover",
                           lambda ctx, vm: replace(vm, points=ctx.vm.points))),
    Mutant("planned_failover_skips_final_sync", "planned failover ships nothing",
           ("planned_failover_loses_no_acknowledged_write",),
           lambda: _effect("planned_failover", lambda ctx, vm: replace(
               vm, other=ctx.vm.other, points=ctx.vm.points))),
    Mutant("reverse_moves_active_site", "reverse replication swaps the active site",
           ("reverse_replication_keeps_the_active_site",),
           lambda: _effect("reverse_replication", lambda ctx, vm: replace(
               vm, active=vm.active.other))),
    Mutant("failed_shutdown_taken_for_success", "report exact while the old copy runs",
           ("unplanned_failover_loss_is_exact",),
           lambda: _effect("complete_failover", _report_ignores_running)),
    Mutant("report_forgets_final_sync_writes", "exact report assumes a full final sync",
           ("unplanned_failover_loss_is_exact",),
           lambda: _effect("complete_failover", _report_forgets_final_sync)),
    Mutant("drill_writes_reach_replica", "the test VM writes into the replica",
           ("test_failover_writes_never_reach_the_replica",
            "replica_is_a_past_source_state"),
           lambda: _effect("write_test_vm", _drill_write_leaks)),
    Mutant("reverse_without_both_sites", "missing guard: reverse needs no vault",
           ("failback_needs_both_sites_connected",),
           lambda: _without_guards("reverse_replication", "active_site_reachable",
                                   "other_site_reachable")),
    Mutant("unplanned_failover_stays_trusted", "unplanned failover keeps 'protected'",
           ("unplanned_failover_leaves_the_target_unprotected",),
           lambda: _effect("unplanned_failover",
                           lambda ctx, vm: replace(vm, other_trusted=True))),
    Mutant("planned_failover_distrusts_old_copy", "planned failover: not protected",
           ("planned_failover_leaves_it_protected",),
           lambda: _effect("planned_failover",
                           lambda ctx, vm: replace(vm, other_trusted=False))),
    Mutant("reverse_without_a_first_point", "deltas-only reverse makes no point",
           ("protected_vm_has_a_recovery_point",),
           lambda: _effect("reverse_replication",
                           lambda ctx, vm: replace(vm, points=()))),
    Mutant("initial_copy_completes_early", "missing edge guard: all disks copied",
           ("delta_replication_only_after_initial_copy",),
           lambda: _unguard("complete_initial_replication", "all_disks_copied")),
    Mutant("writes_untracked_in_initial_copy", "writes during the copy are not logged",
           ("writes_during_initial_replication_are_never_lost",),
           lambda: _effect("write", _write_untracked_in_initial_copy)),
    Mutant("reconciliation_under_reports", "resync reports no loss",
           ("reconciled_loss_is_exact",),
           lambda: _effect("complete_resynchronization", lambda ctx, vm: replace(
               vm, closed_report=None if vm.closed_report is None else replace(
                   vm.closed_report, reconciled_writes=0)))),
    Mutant("change_point_without_rebase", "another point chosen, copies not re-based",
           ("failover_starts_from_the_chosen_point",),
           lambda: _effect("change_recovery_point", _change_point_without_rebase)),
    Mutant("reverse_keeps_stale_copy_running", "the divergent copy is never stopped",
           ("only_the_active_copy_is_replicated",),
           lambda: _effect("reverse_replication",
                           lambda ctx, vm: replace(vm, running=ctx.vm.running))),
    Mutant("point_recorded_without_apply", "a cycle's point is kept, never applied",
           ("recovery_points_are_past_states_in_order",),
           lambda: _effect("replicate", _point_without_apply)),
    Mutant("points_never_merged", "the oldest point is never merged away",
           ("recovery_points_are_past_states_in_order",),
           lambda: _effect("replicate", _points_never_merged)),
    Mutant("reverse_skips_resynchronization", "deltas only after an unplanned failover",
           ("replica_is_a_past_source_state",),
           lambda: _unguard("reverse_replication", "other_copy_trusted")),
    Mutant("resync_keeps_divergent_replica", "resync leaves the replica as it was",
           ("recovery_points_are_past_states_in_order",),
           lambda: _effect("complete_resynchronization", lambda ctx, vm: replace(
               vm, other=ctx.vm.other))),
    Mutant("stopped_is_a_trap", "missing edge: disable from replication_stopped",
           ("recoverability",),
           lambda: _edges(lambda e: e if e.trigger != "disable_protection" else replace(
               e, sources=tuple(s for s in e.sources
                                if s is not Phase.REPLICATION_STOPPED)))),
    Mutant("final_sync_claims_app_consistent",
           "a planned failover's final sync point is marked app-consistent",
           ("app_consistent_points_were_quiesced",),
           lambda: _effect("planned_failover", _newest_point_claims_app_consistent)),
    Mutant("resync_point_claims_app_consistent",
           "a resynchronisation's point is marked app-consistent",
           ("app_consistent_points_were_quiesced",),
           lambda: _effect("complete_resynchronization",
                           _newest_point_claims_app_consistent)),
)  # fmt: skip


# -- recovery plans --------------------------------------------------------------------

#: Where the plan mutants are looked for: two VMs, drills only, no faults (a group
#: still blocks half-way: a drill fails on a VM not yet protected). One plan of two
#: groups, to see a plan run ahead of its group ...
PLAN_TIERS_CONFIG = ModelConfig(
    vm_count=2,
    write_lag_max=1,
    fault_budget=0,
    faults=frozenset(),
    app_consistent_points=False,
    plans=(RecoveryPlan("tiers", ((1,), (0,))),),
    plan_operations=("test_failover",),
)
#: ... and one plan of one group of both VMs, to see it redo a VM or leave the group
#: half-done. Each space is explored whole on the real model in the tests (90,828
#: and 121,104 states, about 10 s each; both plans in one configuration make three
#: times as many).
PLAN_TOGETHER_CONFIG = replace(
    PLAN_TIERS_CONFIG, plans=(RecoveryPlan("together", ((0, 1),)),)
)

PlanWrap = Callable[[Context, SystemState, TryCall], SystemState]


def _plan_step(wrap: PlanWrap) -> Rules:
    """RULES with ``plan_step``'s effect post-processed by ``wrap``."""

    def factory(try_call: TryCall) -> tuple[ActionSpec, ...]:
        specs = make_plan_actions(try_call)

        def patched(spec: ActionSpec) -> ActionSpec:
            original = spec.system_effect
            if spec.name != "plan_step" or original is None:
                return spec
            return replace(
                spec, system_effect=lambda ctx: wrap(ctx, original(ctx), try_call)
            )

        return tuple(patched(spec) for spec in specs)

    own = tuple(s for s in RULES.actions.values() if s.scope is not Scope.PLAN)
    return make_rules(own, RULES.lifecycle, RULES.edge_guards, plan_actions=factory)


def _next_group_too(ctx: Context, state: SystemState, try_call: TryCall) -> SystemState:
    """The plan also starts the operation on the VMs of the group after its own."""
    plan = ctx.call.plan or 0
    run = ctx.state.plan_runs[plan]
    groups = ctx.config.plans[plan].groups
    if run is None or run.group + 1 >= len(groups):
        return state
    action, args = OPERATIONS[run.operation].steps[0]
    for vm in groups[run.group + 1]:
        state = try_call(ctx.config, state, Call(action, vm=vm, args=args)) or state
    return state


def _forgets_done(ctx: Context, state: SystemState, try_call: TryCall) -> SystemState:
    """Resuming, the plan runs its whole group again, the VMs that succeeded too."""
    del state
    plan = ctx.call.plan or 0
    run = ctx.state.plan_runs[plan]
    assert run is not None
    runs = list(ctx.state.plan_runs)
    runs[plan] = replace(run, done=frozenset())
    forgot = replace(ctx, state=replace(ctx.state, plan_runs=tuple(runs)))
    spec = make_plan_actions(try_call)[1]
    assert spec.name == "plan_step"
    assert spec.system_effect is not None
    return spec.system_effect(forgot)


def _moves_on_early(ctx: Context, state: SystemState, try_call: TryCall) -> SystemState:
    """A group blocked half-way is left for the next one anyway."""
    del try_call
    plan = ctx.call.plan or 0
    before, after = ctx.state.plan_runs[plan], state.plan_runs[plan]
    groups = ctx.config.plans[plan].groups
    if before is None or after is None or after.group != before.group:
        return state
    runs = list(state.plan_runs)
    last = before.group + 1 >= len(groups)
    runs[plan] = None if last else PlanRun(before.operation, before.group + 1)
    return replace(state, plan_runs=tuple(runs))


def _ends_after_two_groups(
    ctx: Context, state: SystemState, try_call: TryCall
) -> SystemState:
    """A plan that reaches its third group ends there, as if it were done (a plan
    runner whose loop stops one group early: two groups run, the third never)."""
    del try_call
    plan = ctx.call.plan or 0
    after = state.plan_runs[plan]
    if after is None or after.group != 2:
        return state
    runs = list(state.plan_runs)
    runs[plan] = None
    return replace(state, plan_runs=tuple(runs))


#: The configuration ``configs/fuzz-large.json`` holds (a test keeps the two equal):
#: three VMs, lags of two writes, three points, three faults, one plan of three
#: groups. ``hvdr check`` cannot exhaust it; ``hvdr fuzz --config`` it is for.
FUZZ_LARGE_CONFIG = ModelConfig(
    vm_count=3,
    write_lag_max=2,
    recovery_points_max=3,
    fault_budget=3,
    plans=(RecoveryPlan("three-tiers", ((0,), (1,), (2,))),),
    plan_operations=(
        "test_failover", "cleanup_test_failover", "planned_failover", "commit",
    ),
)  # fmt: skip


PLAN_MUTANTS: tuple[Mutant, ...] = (
    Mutant("plan_runs_the_next_group_too", "a plan step starts the next group as well",
           ("plan_step_acts_on_its_group",), lambda: _plan_step(_next_group_too),
           PLAN_TIERS_CONFIG),
    Mutant("plan_resume_redoes_done_vms", "a resumed plan runs its done VMs again",
           ("plan_resume_never_redoes_a_vm",), lambda: _plan_step(_forgets_done),
           PLAN_TOGETHER_CONFIG),
    Mutant("plan_moves_on_early", "a blocked group is left for the next one",
           ("plan_groups_finish_in_order",), lambda: _plan_step(_moves_on_early),
           PLAN_TOGETHER_CONFIG),
    Mutant("plan_ends_after_two_groups", "a plan of three groups ends after two",
           ("plan_groups_finish_in_order",),
           lambda: _plan_step(_ends_after_two_groups), FUZZ_LARGE_CONFIG,
           fuzz_only=True),
)  # fmt: skip

MUTANTS: tuple[Mutant, ...] = (*_VM_MUTANTS, *PLAN_MUTANTS)

BY_NAME = {mutant.name: mutant for mutant in MUTANTS}


@cache
def _built(name: str) -> Rules:
    return BY_NAME[name].build()
