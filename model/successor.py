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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from model.action import ActionSpec, Call, Context, Scope, vm_name
from model.environment import LINK_ENVIRONMENT, SITE_ENVIRONMENT, VM_ENVIRONMENT
from model.errors import ActionRefused, UnknownCall
from model.lifecycle import Edge, Phase, edges_from, resolve, sources_of
from model.lifecycle_guards import GUARD_HINTS, GUARDS
from model.plans import make_plan_actions
from model.state import ModelConfig, Site, SystemState
from model.vm_actions import VM_ACTIONS


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call is not allowed: the guard's name and the reason in words."""

    guard: str
    reason: str


def lifecycle_edge(
    config: ModelConfig, state: SystemState, vm: int, trigger: str
) -> Edge | Refusal:
    """The edge ``trigger`` takes for VM ``vm``, or why there is none."""
    machine_vm = state.vms[vm]
    rows = list(edges_from(machine_vm.phase, trigger))
    if not rows:
        sources = ", ".join(phase.value for phase in sources_of(trigger))
        return Refusal("phase", f"{trigger} is allowed only from: {sources}")
    for edge in rows:
        failing = [g for g in edge.guards if not GUARDS[g](machine_vm, config)]
        if not failing:
            return edge
    first = next(g for g in rows[0].guards if not GUARDS[g](machine_vm, config))
    return Refusal(first, GUARD_HINTS[first])


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
    config: ModelConfig, state: SystemState, call: Call
) -> tuple[ActionSpec, Edge | None] | Refusal:
    spec = _spec(call)
    _validate_target(config, spec, call)
    edge: Edge | None = None
    if spec.trigger is not None:
        assert call.vm is not None
        found = lifecycle_edge(config, state, call.vm, spec.trigger)
        if isinstance(found, Refusal):
            return found
        edge = found
    refusal = _refusal(config, spec, Context(config, state, call))
    return refusal if refusal is not None else (spec, edge)


def try_apply(
    config: ModelConfig, state: SystemState, call: Call
) -> SystemState | None:
    """The next state, or None when the model refuses ``call``."""
    checked = _check(config, state, call)
    if isinstance(checked, Refusal):
        return None
    spec, edge = checked
    return _next_state(spec, Context(config, state, call), edge)


def apply(config: ModelConfig, state: SystemState, call: Call) -> SystemState:
    """The state after ``call``; ``ActionRefused`` explains a refusal."""
    checked = _check(config, state, call)
    if isinstance(checked, Refusal):
        raise _refused(config, state, call, checked)
    spec, edge = checked
    return _next_state(spec, Context(config, state, call), edge)


def _refused(
    config: ModelConfig, state: SystemState, call: Call, refusal: Refusal
) -> ActionRefused:
    phase: Phase | None = None
    if call.vm is not None:
        subject = f"VM {vm_name(config, call.vm)!r}"
        phase = state.vms[call.vm].phase
        allowed = [str(c) for c in enabled(config, state) if c.vm == call.vm]
    elif call.site is not None:
        subject = f"site {call.site.value!r}"
        allowed = [str(c) for c in enabled(config, state) if c.site == call.site]
    elif call.plan is not None:
        subject = f"plan {config.plans[call.plan].name!r}"
        allowed = [str(c) for c in enabled(config, state) if c.plan == call.plan]
    else:
        subject = "the link"
        allowed = [str(c) for c in enabled(config, state) if c.action in _LINK]
    return ActionRefused(
        action=call.action,
        subject=subject,
        phase=None if phase is None else phase.value,
        guard=refusal.guard,
        reason=refusal.reason,
        allowed=tuple(dict.fromkeys(text.split("(")[0] for text in allowed)),
    )


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
    config: ModelConfig, state: SystemState
) -> Iterator[tuple[Call, SystemState]]:
    """Every enabled call with the state it leads to."""
    for spec in ACTIONS.values():
        for bare in _targets(config, spec):
            edge: Edge | None = None
            if spec.trigger is not None:
                assert bare.vm is not None
                found = lifecycle_edge(config, state, bare.vm, spec.trigger)
                if isinstance(found, Refusal):
                    continue
                edge = found
            for args in tuple(spec.choices(Context(config, state, bare))):
                ctx = Context(config, state, replace(bare, args=args))
                if _refusal(config, spec, ctx) is None:
                    yield ctx.call, _next_state(spec, ctx, edge)


def enabled(config: ModelConfig, state: SystemState) -> list[Call]:
    """Every call the model allows in ``state``."""
    return [call for call, _ in successors(config, state)]


def _spec(call: Call) -> ActionSpec:
    try:
        return ACTIONS[call.action]
    except KeyError:
        msg = f"unknown action {call.action!r}; the model has: {', '.join(ACTIONS)}"
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


ACTIONS: Mapping[str, ActionSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            *VM_ACTIONS,
            *VM_ENVIRONMENT,
            *SITE_ENVIRONMENT,
            *LINK_ENVIRONMENT,
            *make_plan_actions(try_apply),
        )
    }
)

_LINK = frozenset(spec.name for spec in LINK_ENVIRONMENT)
