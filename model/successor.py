"""The pure successor function: which calls are enabled, and what each one does.

``enabled(config, state)`` lists every call the model allows; ``apply(config, state,
call)`` returns the next state or raises ``ActionRefused`` naming the subject, the
action, the phase, the guard that failed and what is allowed; ``successors`` yields both
at once for the explorer. Everything is a function of frozen values: no I/O, no clock,
no randomness.

A call is checked in a fixed order, which is also the order its refusal explains:

1. the lifecycle (a VM action's trigger needs an edge from the VM's phase whose edge
   guards hold; the destination comes from that edge, never from the effect);
2. the fault it would spend (the kind must be enabled and the budget not spent);
3. its arguments (they must be among the action's finite choices);
4. the action's guards (sites, link, vault, storage, bounds).

**The rules are a value.** ``Rules`` bundles the lifecycle table, its edge guards and
the action registry; every public function takes ``rules=RULES`` (the model as
written). The checkers build deliberately broken variants from it (``replace_action``,
``replace_lifecycle``) to show that the invariants catch them; nothing else should.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from model.action import ActionSpec, Actor, Call, Context, Scope, vm_name
from model.environment import LINK_ENVIRONMENT, SITE_ENVIRONMENT, VM_ENVIRONMENT
from model.errors import ActionRefused, UnknownCall
from model.lifecycle import LIFECYCLE, WAY_OUT, Edge, Phase, edges_from, resolve
from model.lifecycle_guards import GUARD_HINTS, GUARDS, PHASE_GUARD_HINTS, EdgeGuard
from model.plans import TryCall, make_plan_actions
from model.state import ModelConfig, Site, SystemState, VmState
from model.vm_actions import VM_ACTIONS


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call is not allowed: the guard's name and the reason in words."""

    guard: str
    reason: str


@dataclass(frozen=True)
class Rules:
    """The model's rules as one value: lifecycle table, edge guards, actions.

    Build one with ``make_rules``; derive variants with ``replace_action`` and
    ``replace_lifecycle`` (the plan actions are rebound to the variant, so a plan
    runs the variant's VM steps).
    """

    lifecycle: tuple[Edge, ...]
    edge_guards: Mapping[str, EdgeGuard]
    actions: Mapping[str, ActionSpec]
    #: The plan actions are ``model.plans``' own (a mutant may bring others): they
    #: read the plan runs, and the environment and VMs only through the VM steps
    #: of each running plan's current group (the explorer memoises on that).
    plans_as_written: bool = False
    _rows: dict[tuple[Phase, str], tuple[Edge, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _targets: dict[ModelConfig, tuple[tuple[ActionSpec, tuple[Call, ...]], ...]] = (
        field(default_factory=dict, compare=False, repr=False)
    )

    def targets(
        self, config: ModelConfig
    ) -> tuple[tuple[ActionSpec, tuple[Call, ...]], ...]:
        """Each action with the bare calls (no arguments) it can make in ``config``."""
        found = self._targets.get(config)
        if found is None:
            found = tuple(
                (spec, tuple(_targets(config, spec))) for spec in self.actions.values()
            )
            self._targets[config] = found
        return found

    def rows(self, phase: Phase, trigger: str) -> tuple[Edge, ...]:
        """The edges leaving ``phase`` on ``trigger`` (cached: the table is frozen)."""
        key = (phase, trigger)
        found = self._rows.get(key)
        if found is None:
            found = tuple(edges_from(phase, trigger, self.lifecycle))
            self._rows[key] = found
        return found

    def sources_of(self, trigger: str) -> tuple[Phase, ...]:
        """Phases from which ``trigger`` has an edge, in declaration order."""
        found: dict[Phase, None] = {}
        for edge in self.lifecycle:
            if edge.trigger == trigger:
                found.update(dict.fromkeys(edge.sources))
        return tuple(found)

    def replace_action(self, spec: ActionSpec) -> Rules:
        """These rules with the action named ``spec.name`` replaced by ``spec``."""
        assert spec.name in self.actions, spec.name
        own = [s for s in self.actions.values() if s.scope is not Scope.PLAN]
        specs = [spec if s.name == spec.name else s for s in own]
        return make_rules(tuple(specs), self.lifecycle, self.edge_guards)

    def replace_lifecycle(self, table: tuple[Edge, ...]) -> Rules:
        """These rules with another lifecycle table (same actions)."""
        own = [s for s in self.actions.values() if s.scope is not Scope.PLAN]
        return make_rules(tuple(own), table, self.edge_guards)


def make_rules(
    specs: tuple[ActionSpec, ...],
    lifecycle: tuple[Edge, ...] = LIFECYCLE,
    edge_guards: Mapping[str, EdgeGuard] = GUARDS,
    plan_actions: Callable[[TryCall], tuple[ActionSpec, ...]] = make_plan_actions,
) -> Rules:
    """Rules from VM, site and link action specs; plan actions are added, bound
    (``plan_actions`` makes them from the successor function: a mutant's may differ)."""
    bound: list[Rules] = []

    def try_call(
        config: ModelConfig, state: SystemState, call: Call
    ) -> SystemState | None:
        return try_apply(config, state, call, bound[0])

    plan_specs = plan_actions(try_call)
    actions = MappingProxyType({spec.name: spec for spec in (*specs, *plan_specs)})
    rules = Rules(
        lifecycle,
        edge_guards,
        actions,
        plans_as_written=plan_actions is make_plan_actions,
    )
    bound.append(rules)
    return rules


def lifecycle_edge(
    config: ModelConfig,
    state: SystemState,
    vm: int,
    trigger: str,
    rules: Rules | None = None,
) -> Edge | Refusal:
    """The edge ``trigger`` takes for VM ``vm``, or why there is none."""
    rules = RULES if rules is None else rules
    guards = rules.edge_guards
    machine_vm = state.vms[vm]
    rows = rules.rows(machine_vm.phase, trigger)
    if not rows:
        sources = ", ".join(phase.value for phase in rules.sources_of(trigger))
        reason = f"{trigger} is allowed only from: {sources}"
        way_out = WAY_OUT.get(machine_vm.phase)
        return Refusal("phase", reason if way_out is None else f"{reason}; {way_out}")
    for edge in rows:
        if all(guards[g](machine_vm, config) for g in edge.guards):
            return edge
    first = next(g for g in rows[0].guards if not guards[g](machine_vm, config))
    hint = PHASE_GUARD_HINTS.get((machine_vm.phase, first))
    return Refusal(first, hint or GUARD_HINTS.get(first, first))


def _refusal(config: ModelConfig, spec: ActionSpec, ctx: Context) -> Refusal | None:
    """Steps 2-4 of the module essay (the lifecycle is checked by the caller)."""
    if spec.fault is not None:
        fault = spec.fault(ctx)
        if fault is not None and fault not in config.faults:
            return Refusal("fault_enabled", f"fault {fault.value} is not enabled")
        if fault is not None and ctx.state.faults_left <= 0:
            return Refusal("fault_budget", "the trace's fault budget is spent")
    if ctx.call.args not in tuple(spec.choices(ctx)):
        choices = [dict(args) for args in spec.choices(ctx)]
        return Refusal(
            "choice", f"arguments {dict(ctx.call.args)} are not one of {choices}"
        )
    for guard in spec.guards:
        if not guard.check(ctx):
            return Refusal(guard.name, guard.explain(ctx))
    return None


def _allowed(config: ModelConfig, spec: ActionSpec, ctx: Context) -> bool:
    """Steps 2 and 4 for arguments drawn from the choices: ``_refusal``, unexplained."""
    if spec.fault is not None:
        fault = spec.fault(ctx)
        if fault is not None and (
            fault not in config.faults or ctx.state.faults_left <= 0
        ):
            return False
    return all(guard.check(ctx) for guard in spec.guards)


def _next_state(spec: ActionSpec, ctx: Context, edge: Edge | None) -> SystemState:
    state = ctx.state
    if spec.fault is not None and spec.fault(ctx) is not None:
        state = replace(state, faults_left=state.faults_left - 1)
    if spec.system_effect is not None:
        after = spec.system_effect(replace(ctx, state=_without_observations(ctx.state)))
        return replace(after, faults_left=state.faults_left)
    assert spec.vm_effect is not None
    assert ctx.call.vm is not None
    before = ctx.vm
    vm = spec.vm_effect(ctx)
    if edge is not None:
        phase = resolve(edge, before.phase, primary_active=before.primary_active)
        vm = replace(vm, phase=phase)
    assert vm.phase is before.phase or edge is not None, spec.name
    if vm.closed_report is not None and vm.closed_report is before.closed_report:
        vm = replace(vm, closed_report=None)  # an observation of an earlier step
    return _without_observations(state).with_vm(ctx.call.vm, vm)


def _without_observations(state: SystemState) -> SystemState:
    """``state`` with the observations of the step that produced it cleared."""
    if all(vm.closed_report is None for vm in state.vms):
        return state
    vms = tuple(replace(vm, closed_report=None) for vm in state.vms)
    return replace(state, vms=vms)


def _check(
    config: ModelConfig, state: SystemState, call: Call, rules: Rules
) -> tuple[ActionSpec, Edge | None] | Refusal:
    spec = _spec(call, rules)
    _validate_target(config, spec, call)
    edge: Edge | None = None
    if spec.trigger is not None:
        assert call.vm is not None
        found = lifecycle_edge(config, state, call.vm, spec.trigger, rules)
        if isinstance(found, Refusal):
            return found
        edge = found
    refusal = _refusal(config, spec, Context(config, state, call))
    return refusal if refusal is not None else (spec, edge)


def try_apply(
    config: ModelConfig, state: SystemState, call: Call, rules: Rules | None = None
) -> SystemState | None:
    """The next state, or None when the model refuses ``call``."""
    checked = _check(config, state, call, RULES if rules is None else rules)
    if isinstance(checked, Refusal):
        return None
    spec, edge = checked
    return _next_state(spec, Context(config, state, call), edge)


def apply(
    config: ModelConfig, state: SystemState, call: Call, rules: Rules | None = None
) -> SystemState:
    """The state after ``call``; ``ActionRefused`` explains a refusal."""
    rules = RULES if rules is None else rules
    checked = _check(config, state, call, rules)
    if isinstance(checked, Refusal):
        raise _refused(config, state, call, checked, rules)
    spec, edge = checked
    return _next_state(spec, Context(config, state, call), edge)


def _refused(
    config: ModelConfig, state: SystemState, call: Call, refusal: Refusal, rules: Rules
) -> ActionRefused:
    phase: Phase | None = None
    world: list[str] = []
    if call.vm is not None:
        subject = f"VM {vm_name(config, call.vm)!r}"
        phase = state.vms[call.vm].phase
        calls = [c for c in enabled(config, state, rules) if c.vm == call.vm]
        acted = {c: _spec(c, rules).actor is Actor.ENVIRONMENT for c in calls}
        allowed = [str(c) for c in calls if not acted[c]]
        world = [str(c) for c in calls if acted[c]]
    elif call.site is not None:
        subject = f"site {call.site.value!r}"
        allowed = [str(c) for c in enabled(config, state, rules) if c.site == call.site]
    elif call.plan is not None:
        subject = f"plan {config.plans[call.plan].name!r}"
        allowed = [str(c) for c in enabled(config, state, rules) if c.plan == call.plan]
    else:
        subject = "the link"
        allowed = [str(c) for c in enabled(config, state, rules) if c.action in _LINK]
    return ActionRefused(
        action=call.action,
        subject=subject,
        phase=None if phase is None else phase.value,
        guard=refusal.guard,
        reason=refusal.reason,
        allowed=_names(allowed),
        world=_names(world),
    )


def _names(calls: list[str]) -> tuple[str, ...]:
    """The action names of ``calls`` (their text), each once, in order."""
    return tuple(dict.fromkeys(text.split("(")[0] for text in calls))


def _first_edge(
    rows: tuple[Edge, ...], vm: VmState, config: ModelConfig, rules: Rules
) -> Edge | None:
    """The first of ``rows`` whose edge guards hold (``lifecycle_edge`` without why)."""
    guards = rules.edge_guards
    for edge in rows:
        if all(guards[g](vm, config) for g in edge.guards):
            return edge
    return None


def _targets(config: ModelConfig, spec: ActionSpec) -> Iterator[Call]:
    if spec.scope is Scope.VM:
        yield from (Call(spec.name, vm=index) for index in range(config.vm_count))
    elif spec.scope is Scope.SITE:
        yield from (Call(spec.name, site=site) for site in Site)
    elif spec.scope is Scope.PLAN:
        yield from (Call(spec.name, plan=index) for index in range(len(config.plans)))
    else:
        yield Call(spec.name)


def successors(
    config: ModelConfig,
    state: SystemState,
    rules: Rules | None = None,
    scope: Scope | None = None,
) -> Iterator[tuple[Call, SystemState]]:
    """Every enabled call with the state it leads to (only the actions of
    ``scope`` when given: the explorer asks the plan calls alone)."""
    rules = RULES if rules is None else rules
    for spec, ctx, edge in _enabled(config, state, rules, scope):
        yield ctx.call, _next_state(spec, ctx, edge)


def _enabled(
    config: ModelConfig, state: SystemState, rules: Rules, scope: Scope | None = None
) -> Iterator[tuple[ActionSpec, Context, Edge | None]]:
    """Each enabled call's action, context and lifecycle edge, in a fixed order."""
    for spec, bares in rules.targets(config):
        if scope is not None and spec.scope is not scope:
            continue
        trigger = spec.trigger
        for bare in bares:
            edge: Edge | None = None
            if trigger is not None:
                assert bare.vm is not None
                vm = state.vms[bare.vm]
                rows = rules.rows(vm.phase, trigger)
                edge = _first_edge(rows, vm, config, rules) if rows else None
                if edge is None:
                    continue
            for args in tuple(spec.choices(Context(config, state, bare))):
                call = bare if not args else Call(bare.action, bare.vm, bare.site,
                                                  bare.plan, args)  # fmt: skip
                ctx = Context(config, state, call)
                if _allowed(config, spec, ctx):
                    yield spec, ctx, edge


def enabled(
    config: ModelConfig, state: SystemState, rules: Rules | None = None
) -> list[Call]:
    """Every call the model allows in ``state`` (the calls of ``successors``)."""
    found = _enabled(config, state, RULES if rules is None else rules)
    return [ctx.call for _, ctx, _ in found]


def _spec(call: Call, rules: Rules) -> ActionSpec:
    try:
        return rules.actions[call.action]
    except KeyError:
        names = ", ".join(rules.actions)
        msg = f"unknown action {call.action!r}; the model has: {names}"
        raise UnknownCall(msg) from None


def _validate_target(config: ModelConfig, spec: ActionSpec, call: Call) -> None:
    wanted = {Scope.VM: call.vm, Scope.SITE: call.site, Scope.PLAN: call.plan}
    if spec.scope is Scope.VM and not (
        call.vm is not None and 0 <= call.vm < config.vm_count
    ):
        msg = f"{call.action} needs vm=0..{config.vm_count - 1} (got vm={call.vm!r})"
        raise UnknownCall(msg)
    if spec.scope is Scope.SITE and call.site is None:
        sites = ", ".join(site.value for site in Site)
        msg = f"{call.action} needs a site: one of {sites}"
        raise UnknownCall(msg)
    if spec.scope is Scope.PLAN and not (
        call.plan is not None and 0 <= call.plan < len(config.plans)
    ):
        msg = (
            f"{call.action} needs plan=0..{len(config.plans) - 1} "
            f"(got plan={call.plan!r}; this model has {len(config.plans)} plans)"
        )
        raise UnknownCall(msg)
    extra = [k for k, v in wanted.items() if v is not None and k is not spec.scope]
    if extra:
        msg = f"{call.action} acts on a {spec.scope.value}, not on: " + ", ".join(
            scope.value for scope in extra
        )
        raise UnknownCall(msg)


#: The model as written: every function here defaults to these rules.
RULES: Rules = make_rules(
    (*VM_ACTIONS, *VM_ENVIRONMENT, *SITE_ENVIRONMENT, *LINK_ENVIRONMENT)
)
ACTIONS: Mapping[str, ActionSpec] = RULES.actions

_LINK = frozenset(spec.name for spec in LINK_ENVIRONMENT)
