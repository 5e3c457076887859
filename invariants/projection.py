"""The successor function, factored per VM and memoised: what makes the explorer fast.

A VM's actions read that VM, the two sites, the link and the fault budget, never
another VM (``model.vm_actions``); a site or link event changes the environment
and maps each VM on its own (a crashed host stops the VMs running there). So the
successors of a whole state follow from the successors of its *projections*: one
one-VM ``SystemState`` per VM, with the same sites, link and budget. The explorer
asks the model (``model.successors``, the very function everyone else uses) once per
distinct (environment, VM) pair and remembers the answer; every later state sharing
that pair reuses it. Recovery plans are the exception (a plan step runs several
VMs): their calls go through the model on the whole state.

States are encoded compactly: each distinct environment and each distinct VM state
gets a small integer, and a whole state is the tuple ``(environment, plan runs, vm
0, vm 1, ...)``. With no recovery plan to tell the VMs apart, the VM part is sorted:
states that differ only by a permutation of VMs are one (symmetry reduction).

The properties are checked on the projections too (``invariants.kinds``: every
predicate reads one VM with its environment), when a pair is first met: the ALWAYS
properties on the pair, the STEP properties and the SOMETIMES witnesses on each of
its fresh post-states (which still carry the step's observations).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TypeVar, cast

from invariants import catalogue
from invariants.kinds import Invariant
from invariants.packing import Key, Packing
from model import Call, ModelConfig, SystemState, VmState
from model.action import Scope
from model.state import PlanRun, SiteState
from model.successor import RULES, Rules, successors

Env = tuple[SiteState, SiteState, bool, int]
T = TypeVar("T")
Make = Callable[..., T]  # a successor from its fields: env, plans, vm, vm, ...


@dataclass(frozen=True, slots=True)
class PairMoves:
    """What one (environment, VM) pair can do, and what the checks found there.

    ``vm_moves``: (call on vm 0, new environment id, new VM id) per VM action.
    ``system_moves``: site and link calls -> (new environment id, the VM's new id).
    ``failed``: (invariant, call or None) for each property the pair violates (None:
    an ALWAYS property of the pair itself). ``seen``: witnesses its steps reach.
    """

    vm_moves: tuple[tuple[Call, int, int], ...]
    system_moves: dict[Call, tuple[int, int]]
    failed: tuple[tuple[Invariant, Call | None], ...]
    seen: frozenset[str]
    vm_targets: tuple[tuple[int, int], ...] = ()  # vm_moves without the calls
    system_targets: tuple[tuple[int, int], ...] = ()  # system_moves' values, in order


class Projection:
    """Interned environments and VM states, with memoised per-pair successors."""

    def __init__(
        self,
        config: ModelConfig,
        rules: Rules = RULES,
        invariants: tuple[Invariant, ...] = catalogue.INVARIANTS,
        *,
        symmetry: bool = True,
    ) -> None:
        self.config = config
        self.rules = rules
        self.invariants = invariants
        self.single = replace(config, vm_count=1, plans=(), plan_operations=())
        self.symmetric = symmetry and not config.plans
        self.envs: list[Env] = []
        self.env_ids: dict[Env, int] = {}
        self.vm_states: list[VmState] = []
        self.vm_ids: dict[VmState, int] = {}
        self.interned: dict[int, int] = {}  # id() of an object in vm_states -> its id
        self.plan_runs: list[tuple[PlanRun | None, ...]] = []
        self.plan_ids: dict[tuple[PlanRun | None, ...], int] = {}
        self.pairs: dict[tuple[int, int], PairMoves] = {}
        #: Per pair, how many states holding it ``successor_codes`` expanded (one
        #: per VM holding it): the explorer's coverage of the memoised moves.
        self.visits: dict[tuple[int, int], int] = {}
        #: How keys pack into codes (widened as ids are interned: ``fitted``).
        self.packing = Packing(config.vm_count)
        #: Called with the new packing when it is widened (the explorer repacks).
        self.on_widen: list[Callable[[Packing], None]] = []
        #: (invariant, plan call) found by the last plan moves computed; the
        #: explorer takes them after each state (plan calls are not memoised).
        self.plan_failed: list[tuple[Invariant, Call]] = []
        #: Plan calls per action made by ``successor_keys`` (the explorer's
        #: coverage; plan moves are not memoised, so they are counted as made).
        self.plan_calls: Counter[str] = Counter()
        #: Plan footprint -> its plan calls, when none of them moves a VM; and per
        #: plan-runs id, the VMs of the running plans' current groups.
        self.plan_memo: dict[Key, tuple[tuple[Call, int, int], ...]] = {}
        self.plan_groups: dict[int, tuple[int, ...]] = {}

    # -- encoding ---------------------------------------------------------------
    def env_id(self, env: Env) -> int:
        """The id of ``env`` (interned on first sight)."""
        found = self.env_ids.get(env)
        if found is None:
            found = self.env_ids[env] = len(self.envs)
            self.envs.append(env)
        return found

    def vm_id(self, vm: VmState) -> int:
        """The id of ``vm`` (interned on first sight; observations dropped).

        An interned object itself (a decoded state's VM that a plan call left as
        it was) is found by identity, without hashing it: ``vm_states`` keeps
        every interned object alive, so its ``id`` is never reused."""
        found = self.interned.get(id(vm))
        if found is not None:
            return found
        found = self.vm_ids.get(vm)
        if found is None:
            if vm.closed_report is not None:
                vm = replace(vm, closed_report=None)
            found = self.vm_ids[vm] = len(self.vm_states)
            self.vm_states.append(vm)
            self.interned[id(vm)] = found
        return found

    def plan_id(self, runs: tuple[PlanRun | None, ...]) -> int:
        """The id of a tuple of plan runs."""
        found = self.plan_ids.get(runs)
        if found is None:
            found = self.plan_ids[runs] = len(self.plan_runs)
            self.plan_runs.append(runs)
        return found

    def encode(self, state: SystemState) -> Key:
        """The compact key of ``state`` (not canonical: see ``canonical``)."""
        env = (state.primary, state.secondary, state.link_up, state.faults_left)
        vms = tuple(self.vm_id(vm) for vm in state.vms)
        return (self.env_id(env), self.plan_id(state.plan_runs), *vms)

    def canonical(self, key: Key) -> Key:
        """One representative per permutation of interchangeable VMs."""
        if not self.symmetric:
            return key
        return (key[0], key[1], *sorted(key[2:]))

    def decode(self, key: Key) -> SystemState:
        """The ``SystemState`` a key stands for."""
        primary, secondary, link_up, faults_left = self.envs[key[0]]
        return SystemState(
            primary=primary,
            secondary=secondary,
            link_up=link_up,
            vms=tuple(self.vm_states[v] for v in key[2:]),
            plan_runs=self.plan_runs[key[1]],
            faults_left=faults_left,
        )

    def project(self, env: int, vm: VmState) -> SystemState:
        """The one-VM state of ``vm`` in environment ``env``."""
        primary, secondary, link_up, faults_left = self.envs[env]
        return SystemState(primary, secondary, link_up, (vm,), (), faults_left)

    # -- successors ---------------------------------------------------------------
    def pair(self, env: int, vm: int) -> PairMoves:
        """The memoised moves and checks of one (environment, VM) pair."""
        found = self.pairs.get((env, vm))
        if found is None:
            found = self.pairs[(env, vm)] = self._explore_pair(env, vm)
        return found

    def _explore_pair(self, env: int, vm: int) -> PairMoves:
        config = self.single
        pre = self.project(env, self.vm_states[vm])
        failed: list[tuple[Invariant, Call | None]] = [
            (invariant, None)
            for invariant in catalogue.failing(config, pre, self.invariants)
        ]
        seen: set[str] = set()
        vm_moves: list[tuple[Call, int, int]] = []
        system_moves: dict[Call, tuple[int, int]] = {}
        try:
            moves = list(successors(config, pre, self.rules))
        except (AssertionError, LookupError, TypeError, ValueError):
            # Only a broken model fails here (a mutant: a state no effect expects);
            # when the state already violates a property, that is the finding and
            # the state is not expanded. Otherwise the failure is the model's own.
            if not failed:
                raise
            moves = []
        for call, post in moves:
            broken = catalogue.failing_step(config, pre, call, post, self.invariants)
            failed += [(invariant, call) for invariant in broken]
            seen.update(w.name for w in catalogue.witnessed(config, pre, call, post))
            new_env = self.env_id(
                (post.primary, post.secondary, post.link_up, post.faults_left)
            )
            new_vm = self.vm_id(post.vms[0])
            if call.vm is not None:
                vm_moves.append((call, new_env, new_vm))
            else:
                system_moves[call] = (new_env, new_vm)
        return PairMoves(
            tuple(vm_moves),
            system_moves,
            tuple(failed),
            frozenset(seen),
            tuple((new_env, new_vm) for _, new_env, new_vm in vm_moves),
            tuple(system_moves.values()),
        )

    def fitted(self) -> Packing:
        """The packing, widened first if the ids interned so far outgrew it."""
        envs, plans, vms = len(self.envs), len(self.plan_runs), len(self.vm_states)
        if max(envs, plans, vms) > self.packing.limit:
            self.packing = self.packing.grown(envs, plans, vms)
            for widen in self.on_widen:
                widen(self.packing)
        return self.packing

    def successor_keys(self, key: Key) -> list[Key]:
        """The canonical keys ``moves(key)`` leads to, in ``successor_codes``' order."""
        return self._successors(key, lambda *fields: fields)

    def successor_codes(self, code: bytes) -> list[bytes]:
        """The codes of the canonical keys ``moves`` leads to from the state of
        ``code`` (the explorer's hot path). ``code`` is of the packing current at
        the call; the codes returned are of ``self.packing`` after it, which is
        wider when the call met ids that did not fit (``on_widen`` was called)."""
        return self._successors(self.packing.unpack(code), None)

    def _successors(self, key: Key, make: Make[T] | None) -> list[T]:
        """The successors of ``key``, each made by ``make(env, plans, *vms)``
        (None: packed by the packing, once the new ids are interned)."""
        env, plans = key[0], key[1]
        vms = key[2:]
        pairs, visits = self.pairs, self.visits
        moves = []
        for vm in vms:
            pair_key = (env, vm)
            pair = pairs.get(pair_key)
            if pair is None:
                pair = self.pair(env, vm)
            moves.append(pair)
            visits[pair_key] = visits.get(pair_key, 0) + 1
        plan_keys = []
        if self.config.plans:
            for call, plan_key in self._plan_moves(key):
                self.plan_calls[call.action] += 1
                plan_keys.append(self.canonical(plan_key))
        if make is None:
            make = cast("Make[T]", self.fitted().pack)
        found = self._vm_successors(make, plans, vms, moves)
        for position, (new_env, _) in enumerate(moves[0].system_targets):
            after = [pair.system_targets[position][1] for pair in moves]
            if self.symmetric:
                after.sort()
            found.append(make(new_env, plans, *after))
        found += [make(*plan_key) for plan_key in plan_keys]
        return found

    def _vm_successors(
        self, make: Make[T], plans: int, vms: tuple[int, ...], moves: list[PairMoves]
    ) -> list[T]:
        """The successors by the VM actions (two VMs: the common case)."""
        found: list[T] = []
        if not self.symmetric:
            for index, pair in enumerate(moves):
                head, tail = vms[:index], vms[index + 1 :]
                found += [
                    make(new_env, plans, *head, new_vm, *tail)
                    for new_env, new_vm in pair.vm_targets
                ]
        elif len(vms) == 2:
            first, second = vms
            for new_env, new_vm in moves[0].vm_targets:
                low, high = (new_vm, second) if new_vm <= second else (second, new_vm)
                found.append(make(new_env, plans, low, high))
            for new_env, new_vm in moves[1].vm_targets:
                low, high = (new_vm, first) if new_vm <= first else (first, new_vm)
                found.append(make(new_env, plans, low, high))
        else:
            for index, pair in enumerate(moves):
                rest = vms[:index] + vms[index + 1 :]
                for new_env, new_vm in pair.vm_targets:
                    place = bisect_left(rest, new_vm)
                    found.append(
                        make(new_env, plans, *rest[:place], new_vm, *rest[place:])
                    )
        return found

    def moves(self, key: Key) -> Iterator[tuple[Call, Key]]:
        """Every enabled call of the state ``key`` with the key it leads to."""
        env, plans = key[0], key[1]
        vms = key[2:]
        pairs = [self.pair(env, vm) for vm in vms]
        for index, moves in enumerate(pairs):
            head, tail = (env, plans, *vms[:index]), vms[index + 1 :]
            for call, new_env, new_vm in moves.vm_moves:
                yield (
                    Call(call.action, vm=index, args=call.args),
                    (new_env, *head[1:], new_vm, *tail),
                )
        for call, (new_env, _) in pairs[0].system_moves.items():
            vms_after = tuple(moves.system_moves[call][1] for moves in pairs)
            yield call, (new_env, plans, *vms_after)
        if self.config.plans:
            yield from self._plan_moves(key)

    def _plan_moves(self, key: Key) -> Iterator[tuple[Call, Key]]:
        """The plan calls of ``key``; what they violate goes to ``plan_failed``.

        Memoised on the plan's footprint (``plan_footprint``) when no call of the
        state moves a VM: those calls read nothing else and change only the plan
        runs, so every state with that footprint has the same calls, leading to
        its own key with the new plan runs (and environment). A state where a
        call moves a VM is always asked of the model, so the properties are
        checked on its real pre- and post-states, observations included."""
        footprint = self.plan_footprint(key)
        known = None if footprint is None else self.plan_memo.get(footprint)
        if known is not None:
            vms = key[2:]
            for call, env, plans in known:
                yield call, (env, plans, *vms)
            return
        state = self.decode(key)
        among = self.invariants
        found: list[tuple[Call, int, int]] = []
        for call, post in self.plan_successors(state):
            if post.vms is not state.vms:  # starting or cancelling a run moves no VM
                broken = catalogue.failing_step(self.config, state, call, post, among)
                broken += catalogue.failing(self.config, post, among)
                self.plan_failed += [(invariant, call) for invariant in broken]
                footprint = None
            post_key = self.encode(post)
            found.append((call, post_key[0], post_key[1]))
            yield call, post_key
        if footprint is not None:
            self.plan_memo[footprint] = tuple(found)

    def plan_footprint(self, key: Key) -> Key | None:
        """What the plan calls of ``key`` can read, when the rules' plan actions are
        the model's own (else None: no memo): the environment, the plan runs and
        the VMs of each running plan's current group (a plan step runs their VM
        steps, and a VM step reads only its VM and the environment)."""
        if not self.rules.plans_as_written:
            return None
        positions = self.plan_groups.get(key[1])
        if positions is None:
            runs = self.plan_runs[key[1]]
            groups = [
                plan.groups[run.group]
                for plan, run in zip(self.config.plans, runs, strict=True)
                if run is not None
            ]
            positions = tuple(sorted({vm for group in groups for vm in group}))
            self.plan_groups[key[1]] = positions
        return (key[0], key[1], *(key[2 + vm] for vm in positions))

    def plan_successors(self, state: SystemState) -> Iterator[tuple[Call, SystemState]]:
        """The recovery-plan calls of ``state`` (on the whole state, not projected)."""
        return successors(self.config, state, self.rules, Scope.PLAN)
