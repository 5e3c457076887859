"""Mutants made by rule: broken variants generated from the model's own tables.

The hand-written mutants (``invariants.mutants``) are mistakes someone thought of;
these are every mistake of a few kinds, generated mechanically from the data the
model is declared as: the action registry (``Rules.actions``: each action's guards,
choices and effect) and the lifecycle table (``Rules.lifecycle``). Each is a
modified ``Rules`` value, built through ``Rules.replace_action`` and
``Rules.replace_lifecycle``; no module of the model is patched.

The operators, in the order they are generated (names are ``operator:what``, so a
name says what was changed and stays the same from run to run):

* ``drop_guard:<action>:<guard>``: the action without one of its guards;
* ``drop_edge_guard:<edge>:<guard>``: a lifecycle edge without one of its guards
  (``<edge>`` is the trigger, with ``#n`` when the trigger has several rows);
* ``swap_roles:<action>:<part>``: a guard, the choices or the effect reads the VM
  with its source and target exchanged (the effect's result has its active site put
  back, so only what it read, stopped or started is wrong);
* ``swap_sites:<action>:<part>``: a guard, the choices or the effect reads the
  primary's site state for the secondary's and back (for site and link events, whose
  effects write sites, the result is swapped back);
* ``drop_write:<action>:<field>``: the effect leaves one field it writes at its old
  value;
* ``retarget:<edge>:<phase>``: a lifecycle edge lands on another phase.

**Only mutations that change something.** A swap is generated only where the part
swapped returns something different in some state the model as written reaches (at
``DEFAULT_CONFIG``); a field only where the effect writes it there. Otherwise the
"mutant" would be the model itself: the guard reads no site, the effect never
writes the field. Those are counted (``Generation.skipped``), not run.

**Equivalence, shown by the model.** A survivor whose successors (calls, states and
observations) equal the model's in every state the model reaches has, by induction,
the same reachable graph: nothing any property could observe differs at these
bounds (``same_successors``). The others are listed with their reasons in
``EQUIVALENT`` (docs/verification.md) or killed by a property of the catalogue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from functools import cache

from invariants.configuration import DEFAULT_CONFIG
from model import Call, ModelConfig, Phase, SystemState, VmState, initial_state
from model.action import ActionSpec, Context, Guard, Scope
from model.lifecycle import Edge, possible_destinations
from model.successor import RULES, Rules, successors

#: The operators, in the order mutants are generated and reported.
OPERATORS: tuple[str, ...] = (
    "drop_guard",
    "drop_edge_guard",
    "swap_roles",
    "swap_sites",
    "drop_write",
    "retarget",
)

#: The parts of an action a swap applies to, besides each guard.
CHOICES, EFFECT = "choices", "effect"


@dataclass(frozen=True)
class RuleMutant:
    """A generated broken variant: its name, operator, summary and rules."""

    name: str
    operator: str
    summary: str
    build: Callable[[], Rules]

    @property
    def rules(self) -> Rules:
        """The mutated rules (built once per name)."""
        return _built(self.name)


@dataclass(frozen=True)
class Generation:
    """The mutants generated from ``RULES``, and the mutations skipped per operator
    because they change nothing in any reachable state."""

    mutants: tuple[RuleMutant, ...]
    skipped: dict[str, int]


# -- what the model as written does: the survey ----------------------------------------


@dataclass(frozen=True)
class _Survey:
    """Every state the model reaches at ``DEFAULT_CONFIG``, and the contexts in
    which it evaluates each action: ``asked`` (the guards are asked: the lifecycle
    edge exists) and ``taken`` (every guard held: the effect runs)."""

    states: tuple[SystemState, ...]
    asked: dict[str, tuple[Context, ...]]
    taken: dict[str, tuple[Context, ...]]


def reachable_states(config: ModelConfig, rules: Rules = RULES) -> list[SystemState]:
    """Every state reachable from the initial one under ``rules``, breadth first."""
    start = initial_state(config)
    seen = {start}
    order = [start]
    queue = deque(order)
    while queue:
        state = queue.popleft()
        for _, after in successors(config, state, rules):
            if after not in seen:
                seen.add(after)
                order.append(after)
                queue.append(after)
    return order


@cache
def survey() -> _Survey:
    """The survey of the model as written (computed once)."""
    config = DEFAULT_CONFIG
    states = reachable_states(config)
    asked: dict[str, list[Context]] = {name: [] for name in RULES.actions}
    taken: dict[str, list[Context]] = {name: [] for name in RULES.actions}
    for state in states:
        for spec, bares in RULES.targets(config):
            for bare in bares:
                for ctx in _contexts(config, state, spec, bare):
                    asked[spec.name].append(ctx)
                    if all(guard.check(ctx) for guard in spec.guards):
                        taken[spec.name].append(ctx)
    return _Survey(
        tuple(states),
        {name: tuple(found) for name, found in asked.items()},
        {name: tuple(found) for name, found in taken.items()},
    )


def _contexts(
    config: ModelConfig, state: SystemState, spec: ActionSpec, bare: Call
) -> Iterator[Context]:
    """The contexts ``successors`` evaluates ``spec``'s guards in (fault allowed)."""
    if spec.trigger is not None:
        assert bare.vm is not None
        vm = state.vms[bare.vm]
        rows = RULES.rows(vm.phase, spec.trigger)
        guards = RULES.edge_guards
        if not any(all(guards[g](vm, config) for g in e.guards) for e in rows):
            return
    for args in tuple(spec.choices(Context(config, state, bare))):
        ctx = Context(config, state, replace(bare, args=args))
        fault = None if spec.fault is None else spec.fault(ctx)
        if fault is not None and (fault not in config.faults or state.faults_left <= 0):
            continue
        yield ctx


# -- the transformations ---------------------------------------------------------------


def _swap_sites(state: SystemState) -> SystemState:
    """``state`` with the primary's and the secondary's site states exchanged."""
    return replace(state, primary=state.secondary, secondary=state.primary)


def _flip_role(ctx: Context) -> Context:
    """``ctx`` with the VM's source and target exchanged."""
    assert ctx.call.vm is not None
    vm = ctx.vm
    flipped = replace(vm, active=vm.active.other)
    return replace(ctx, state=ctx.state.with_vm(ctx.call.vm, flipped))


def _sites_swapped(ctx: Context) -> Context:
    return replace(ctx, state=_swap_sites(ctx.state))


Lens = Callable[[Context], Context]
LENSES: dict[str, Lens] = {"swap_roles": _flip_role, "swap_sites": _sites_swapped}


def _guard_through(guard: Guard, lens: Lens) -> Guard:
    return replace(guard, check=lambda ctx: guard.check(lens(ctx)))


def _spec_through(spec: ActionSpec, part: str, lens: Lens, operator: str) -> ActionSpec:
    """``spec`` with ``part`` (a guard's name, ``choices`` or ``effect``) reading
    its context through ``lens``."""
    if part == CHOICES:
        choices = spec.choices
        return replace(spec, choices=lambda ctx: choices(lens(ctx)))
    if part != EFFECT:
        guards = tuple(
            _guard_through(g, lens) if g.name == part else g for g in spec.guards
        )
        return replace(spec, guards=guards)
    if spec.vm_effect is not None:
        vm_effect = spec.vm_effect
        if operator == "swap_roles":
            return replace(spec, vm_effect=lambda ctx: _unflip(vm_effect(lens(ctx))))
        return replace(spec, vm_effect=lambda ctx: vm_effect(lens(ctx)))
    system_effect = spec.system_effect
    assert system_effect is not None
    return replace(
        spec, system_effect=lambda ctx: _swap_sites(system_effect(lens(ctx)))
    )


def _unflip(vm: VmState) -> VmState:
    return replace(vm, active=vm.active.other)


def _without_write(spec: ActionSpec, name: str) -> ActionSpec:
    """``spec`` whose effect keeps field ``name`` at its value before the step."""
    if spec.vm_effect is not None:
        vm_effect = spec.vm_effect

        def keep_vm(ctx: Context) -> VmState:
            return replace(vm_effect(ctx), **{name: getattr(ctx.vm, name)})

        return replace(spec, vm_effect=keep_vm)
    system_effect = spec.system_effect
    assert system_effect is not None

    def keep(ctx: Context) -> SystemState:
        return replace(system_effect(ctx), **{name: getattr(ctx.state, name)})

    return replace(spec, system_effect=keep)


# -- generation ------------------------------------------------------------------------


def _own_specs() -> list[ActionSpec]:
    """The actions mutated: all but the recovery-plan actions, which run the VM
    actions of the mutated rules (``make_rules`` binds them)."""
    return [spec for spec in RULES.actions.values() if spec.scope is not Scope.PLAN]


def edge_names(table: tuple[Edge, ...]) -> list[str]:
    """A name per edge: its trigger, with ``#n`` (from 1) when it has several."""
    counts: dict[str, int] = {}
    for edge in table:
        counts[edge.trigger] = counts.get(edge.trigger, 0) + 1
    seen: dict[str, int] = {}
    names = []
    for edge in table:
        seen[edge.trigger] = seen.get(edge.trigger, 0) + 1
        several = counts[edge.trigger] > 1
        names.append(
            f"{edge.trigger}#{seen[edge.trigger]}" if several else edge.trigger
        )
    return names


def _replace_spec(spec: ActionSpec) -> Callable[[], Rules]:
    return lambda: RULES.replace_action(spec)


def _replace_edge(index: int, edge: Edge) -> Callable[[], Rules]:
    def build() -> Rules:
        table = list(RULES.lifecycle)
        table[index] = edge
        return RULES.replace_lifecycle(tuple(table))

    return build


def _drop_guards(skipped: dict[str, int]) -> Iterator[RuleMutant]:
    for spec in _own_specs():
        for guard in spec.guards:
            if guard.bound:
                skipped["drop_guard"] += 1  # a bound of the model, not a rule
                continue
            kept = tuple(g for g in spec.guards if g is not guard)
            yield RuleMutant(
                f"drop_guard:{spec.name}:{guard.name}",
                "drop_guard",
                f"{spec.name} without its guard {guard.name}",
                _replace_spec(replace(spec, guards=kept)),
            )


def _drop_edge_guards() -> Iterator[RuleMutant]:
    table = RULES.lifecycle
    for index, (edge, name) in enumerate(zip(table, edge_names(table), strict=True)):
        for guard in edge.guards:
            kept = tuple(g for g in edge.guards if g != guard)
            yield RuleMutant(
                f"drop_edge_guard:{name}:{guard}",
                "drop_edge_guard",
                f"lifecycle edge {name} without its guard {guard}",
                _replace_edge(index, replace(edge, guards=kept)),
            )


def _swap_parts(spec: ActionSpec, operator: str) -> list[str]:
    """The parts of ``spec`` a swap can apply to (guards, choices, effect)."""
    if operator == "swap_roles" and spec.scope is not Scope.VM:
        return []  # a site or link event has no source or target
    return [*(g.name for g in spec.guards), CHOICES, EFFECT]


def _swaps(operator: str, skipped: dict[str, int]) -> Iterator[RuleMutant]:
    lens = LENSES[operator]
    for spec in _own_specs():
        for part in _swap_parts(spec, operator):
            mutated = _spec_through(spec, part, lens, operator)
            if not _differs(spec, mutated, part):
                skipped[operator] += 1
                continue
            yield RuleMutant(
                f"{operator}:{spec.name}:{part}",
                operator,
                f"{spec.name}: its {_part_words(part)} reads {_SWAPPED[operator]}",
                _replace_spec(mutated),
            )


_SWAPPED = {"swap_roles": "source for target", "swap_sites": "the other site's state"}


def _part_words(part: str) -> str:
    return part if part in (CHOICES, EFFECT) else f"guard {part}"


def _differs(spec: ActionSpec, mutated: ActionSpec, part: str) -> bool:
    """Whether ``mutated``'s ``part`` returns something else than ``spec``'s in
    some context of the survey."""
    found = survey()
    if part == CHOICES:
        return any(
            _safely(lambda s, c: tuple(s.choices(c)), spec, mutated, ctx)
            for ctx in found.asked[spec.name]
        )
    if part == EFFECT:
        return any(
            _safely(_effect, spec, mutated, ctx) for ctx in found.taken[spec.name]
        )
    return any(
        _safely(lambda s, c: _guard(s, part).check(c), spec, mutated, ctx)
        for ctx in found.asked[spec.name]
    )


def _guard(spec: ActionSpec, name: str) -> Guard:
    return next(guard for guard in spec.guards if guard.name == name)


def _safely(
    part: Callable[[ActionSpec, Context], object],
    spec: ActionSpec,
    mutated: ActionSpec,
    ctx: Context,
) -> bool:
    """Whether ``part`` differs between ``spec`` and ``mutated`` in ``ctx``; a
    mutated part that fails there (an assertion of the model) differs."""
    try:
        return bool(part(spec, ctx) != part(mutated, ctx))
    except (AssertionError, LookupError, TypeError, ValueError):
        return True


def _effect(spec: ActionSpec, ctx: Context) -> object:
    """What ``spec``'s effect returns in ``ctx``, observations included."""
    if spec.vm_effect is not None:
        vm = spec.vm_effect(ctx)
        return vm, vm.closed_report
    assert spec.system_effect is not None
    return spec.system_effect(ctx)


def _written_fields(spec: ActionSpec) -> list[str]:
    """The fields ``spec``'s effect changes in some context of the survey."""
    taken = survey().taken[spec.name]
    if spec.vm_effect is not None:
        names = [f.name for f in fields(VmState) if f.name != "phase"]
        before: Callable[[Context], object] = lambda ctx: ctx.vm  # noqa: E731
    else:
        names = [f.name for f in fields(SystemState) if f.name != "faults_left"]
        before = lambda ctx: ctx.state  # noqa: E731
    results = [(before(ctx), _effect_value(spec, ctx)) for ctx in taken]
    return [
        name
        for name in names
        if any(getattr(old, name) != getattr(new, name) for old, new in results)
    ]


def _effect_value(spec: ActionSpec, ctx: Context) -> object:
    if spec.vm_effect is not None:
        return spec.vm_effect(ctx)
    assert spec.system_effect is not None
    return spec.system_effect(ctx)


def _drop_writes() -> Iterator[RuleMutant]:
    for spec in _own_specs():
        for name in _written_fields(spec):
            yield RuleMutant(
                f"drop_write:{spec.name}:{name}",
                "drop_write",
                f"{spec.name} leaves {name} as it was",
                _replace_spec(_without_write(spec, name)),
            )


def _retargets(skipped: dict[str, int]) -> Iterator[RuleMutant]:
    table = RULES.lifecycle
    for index, (edge, name) in enumerate(zip(table, edge_names(table), strict=True)):
        for phase in Phase:
            if all(possible_destinations(edge, s) == (phase,) for s in edge.sources):
                skipped["retarget"] += 1  # the edge lands there already
                continue
            yield RuleMutant(
                f"retarget:{name}:{phase.value}",
                "retarget",
                f"lifecycle edge {name} lands on {phase.value}",
                _replace_edge(index, replace(edge, dest=phase)),
            )


@cache
def generate() -> Generation:
    """Every mutant of every operator, in a fixed order (see the module essay)."""
    skipped = dict.fromkeys(OPERATORS, 0)
    mutants = [
        *_drop_guards(skipped),
        *_drop_edge_guards(),
        *_swaps("swap_roles", skipped),
        *_swaps("swap_sites", skipped),
        *_drop_writes(),
        *_retargets(skipped),
    ]
    names = [mutant.name for mutant in mutants]
    assert len(set(names)) == len(names), "generated mutant names must be unique"
    return Generation(tuple(mutants), skipped)


@cache
def by_name() -> dict[str, RuleMutant]:
    """The generated mutants by name."""
    return {mutant.name: mutant for mutant in generate().mutants}


@cache
def _built(name: str) -> Rules:
    return by_name()[name].build()


# -- equivalence -----------------------------------------------------------------------


def same_successors(rules: Rules, config: ModelConfig = DEFAULT_CONFIG) -> bool:
    """Whether ``rules`` allow exactly the model's calls, to exactly its states
    (observations included), in every state the model reaches at ``config``, but
    for steps that change nothing: then their reachable states and the steps
    between them are the same, and no property can tell them apart."""
    states = survey().states if config == DEFAULT_CONFIG else reachable_states(config)
    for state in states:
        if _moves(config, state, RULES) != _moves(config, state, rules):
            return False
    return True


def _moves(config: ModelConfig, state: SystemState, rules: Rules) -> set[object]:
    """The steps of ``state`` that change it, with their observations (a step to
    the same state with no observation changes nothing any property can see)."""
    found: set[object] = set()
    for call, after in successors(config, state, rules):
        observed = tuple(vm.closed_report for vm in after.vms)
        if after != state or any(report is not None for report in observed):
            found.add((call, after, observed))
    return found
