"""Fuzzing past the bounded check: deep starts for many VMs, rare phases first, and
what was reached that ``hvdr check`` at its default bounds never explores.

``hvdr check`` exhausts small configurations; ``hvdr fuzz`` is for the ones it
cannot (three VMs, longer lags, more faults, recovery plans of several groups).
Three things make it useful there:

* **Deep starts** (``composed_paths``): a breadth-first pool of a three-VM model
  ends before the VMs are protected. A composed path replays, VM after VM, a path
  the one-VM model takes to each of its situations (its operator and agent calls
  only, renamed to that VM), so an example can start with every VM somewhere deep:
  all protected (what a recovery plan needs), one failed over while another
  resynchronises. The environment's faults come from the rules afterwards.
* **Rare phases first** (``action_weights``): an action that leads only into
  phases the pool holds few states of (a drill, a failover in progress, a plan
  step) is drawn three times as often as the others, in a space larger than the
  pool (a space the pool holds whole is drawn from evenly: each situation already
  has its own group). The weights are computed once from the model,
  never from the run's history, so an example replays and shrinks as it was drawn.
* **What lies beyond** (``Beyond``): each state a run visits is looked at VM by VM,
  as a one-VM state (the sites, the link and that VM; faults spent left out, since
  budgets differ); the views that ``hvdr check``'s default one-VM space does not
  hold are counted, with the largest lag, the most faults spent and the VM count
  seen, so a run says how far past the bounded check it went.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cache

from invariants.configuration import DEFAULT_CONFIG
from model import Call, ModelConfig, Phase, SystemState, VmState, initial_state
from model.lifecycle import LIFECYCLE, STEADY, Dest
from model.successor import RULES, Rules, successors, try_apply

Path = tuple[Call, ...]

#: How many composed paths a multi-VM pool gets.
COMPOSED = 300

#: How much more often an action into a rare phase is drawn.
RARE_WEIGHT = 3


def single_vm(config: ModelConfig) -> ModelConfig:
    """``config`` for one VM and no plan: what each VM of it does on its own."""
    return replace(config, vm_count=1, plans=(), plan_operations=(), vm_names=())


def _one_vm_paths(config: ModelConfig, rules: Rules, limit: int) -> list[Path]:
    """Shortest paths of the one-VM model to its first ``limit`` states, each made
    only of VM calls (a path with a site or link event is left out), one per
    situation (phase, direction, log health, copies' shape)."""
    start = initial_state(config)
    paths: dict[SystemState, Path] = {start: ()}
    order = [start]
    for state in order:
        if len(paths) >= limit:
            break
        for call, after in successors(config, state, rules):
            if call.vm is None or after in paths:
                continue
            paths[after] = (*paths[state], call)
            order.append(after)
    chosen: dict[object, Path] = {}
    for state, path in paths.items():
        vm = state.vms[0]
        key = (vm.phase, vm.active, vm.log, vm.other, len(vm.points), vm.running)
        chosen.setdefault(key, path)
    return [path for path in chosen.values() if path]


def composed_paths(
    config: ModelConfig, rules: Rules = RULES, limit: int = 4_000
) -> tuple[Path, ...]:
    """Starting paths for a multi-VM ``config``: each VM replays a one-VM path in
    turn (the module essay). The first puts every VM where the one-VM model's path
    to ``protected`` ends; the others pair situations round-robin."""
    if config.vm_count < 2:
        return ()
    single = _one_vm_paths(single_vm(config), rules, limit)
    if not single:
        return ()
    protect = next(
        (p for p in single if _ends_in(config, rules, p, Phase.PROTECTED)), single[0]
    )
    composed = [tuple(_renamed(protect, vm) for vm in range(config.vm_count))]
    for index in range(COMPOSED - 1):
        composed.append(
            tuple(
                _renamed(single[(index * (2 * vm + 1) + vm * 7) % len(single)], vm)
                for vm in range(config.vm_count)
            )
        )
    return tuple(tuple(call for part in path for call in part) for path in composed)


def _renamed(path: Path, vm: int) -> Path:
    return tuple(replace(call, vm=vm) for call in path)


def _ends_in(config: ModelConfig, rules: Rules, path: Path, phase: Phase) -> bool:
    state: SystemState | None = initial_state(single_vm(config))
    for call in path:
        assert state is not None
        state = try_apply(single_vm(config), state, call, rules)
        if state is None:
            return False
    return state is not None and state.vms[0].phase is phase


def action_weights(
    config: ModelConfig, pool_states: Iterable[SystemState]
) -> dict[str, int]:
    """``RARE_WEIGHT`` for each lifecycle trigger whose every edge lands in a rare
    phase (one the pool holds fewer states of than the median phase it reaches, or
    none) and for the plan actions when there are plans; 1 for the others is
    implied (absent)."""
    phases: Counter[Phase] = Counter(
        vm.phase for state in pool_states for vm in state.vms
    )
    if not phases:
        return {}
    reached = sorted(phases.values())
    median = reached[len(reached) // 2]
    rare = {phase for phase in Phase if phases.get(phase, 0) < median}
    lands: dict[str, set[Phase]] = {}
    for edge in LIFECYCLE:
        dest = {edge.dest} if isinstance(edge.dest, Phase) else set(STEADY)
        if edge.dest is Dest.SAME:
            dest = set(edge.sources)  # it stays where it is
        lands.setdefault(edge.trigger, set()).update(dest)
    weights = {
        trigger: RARE_WEIGHT
        for trigger, phases_in in lands.items()
        if phases_in <= rare
    }
    if config.plans:
        for action in ("run_plan", "plan_step"):
            weights[action] = RARE_WEIGHT
    return weights


# -- beyond the bounded check ------------------------------------------------------


def _view(state: SystemState, vm: VmState) -> SystemState:
    """The one-VM view of ``vm`` in ``state``, its faults spent left out."""
    bare = replace(vm, closed_report=None)
    return replace(state, vms=(bare,), plan_runs=(), faults_left=0)


@cache
def default_views() -> frozenset[SystemState]:
    """Every one-VM view of ``hvdr check``'s default space (``DEFAULT_CONFIG``)."""
    start = initial_state(DEFAULT_CONFIG)
    seen = {start}
    queue = [start]
    for state in queue:
        for _, after in successors(DEFAULT_CONFIG, state):
            if after not in seen:
                seen.add(after)
                queue.append(after)
    return frozenset(_view(state, state.vms[0]) for state in seen)


def _lag(vm: VmState) -> int:
    copies = [vm.other, vm.test_copy, *(point.copy for point in vm.points)]
    return max((copy.behind for copy in copies if copy is not None), default=0)


@dataclass
class Beyond:
    """What a run visited, and how much of it ``hvdr check``'s default space lacks."""

    budget: int
    visited: set[SystemState]

    def record(self, state: SystemState) -> None:
        """Note a state the run reached."""
        self.visited.add(state)

    def summary(self) -> BeyondSummary:
        """The figures of the run so far."""
        known = default_views()
        views = {_view(state, vm) for state in self.visited for vm in state.vms}
        outside = {view for view in views if view not in known}
        return BeyondSummary(
            states=len(self.visited),
            views=len(views),
            outside=len(outside),
            max_lag=max((_lag(v.vms[0]) for v in views), default=0),
            max_faults_spent=max(
                (self.budget - state.faults_left for state in self.visited), default=0
            ),
            vms=max((len(state.vms) for state in self.visited), default=0),
        )


@dataclass(frozen=True)
class BeyondSummary:
    """How far past ``hvdr check``'s default bounds a fuzzing run went."""

    states: int  # distinct states visited
    views: int  # distinct one-VM views of them
    outside: int  # of those views, how many the default space does not hold
    max_lag: int  # the most writes a copy or point lagged
    max_faults_spent: int
    vms: int

    def line(self) -> str:
        """One line for the report."""
        return (
            f"states visited: {self.states:,}; one-VM views {self.views:,}, of which "
            f"{self.outside:,} lie outside hvdr check's default space "
            f"({len(default_views()):,} views); largest lag {self.max_lag}, "
            f"most faults spent {self.max_faults_spent}, {self.vms} VM(s)"
        )
