"""The exhaustive explorer: breadth-first search of the bounded model, every property.

``explore(config)`` visits every state reachable from ``initial_state(config)``
breadth first, over the memoised, per-VM factored successor function of
``invariants.projection`` (the model's own ``successors``, asked once per distinct
environment and VM). It keeps, per state, only its packed code (a few bytes:
``invariants.packing``, in ``invariants.state_store``), the index of the state it
was first reached from (so the trace to any state is a *shortest* one) and, for
recoverability, its outgoing edges as flat arrays of 4-byte integers.

It reports: ALWAYS and STEP violations with the shortest trace found (the search
stops at the first one unless asked to go on), deadlocks (states with no enabled
call at all), SOMETIMES witnesses never reached, and unrecoverable states: those
from which no *goal* state is reachable, found by one backward search from every
goal over the reversed edges (not a search per state). A goal is the system at
rest: both sites up, connected and with free storage, the link up, every VM in a
steady phase, no recovery plan running (so no failover job is in progress).

Limits: ``max_states`` and ``max_memory_bytes`` (the process's peak resident size,
asked every ``MEMORY_CHECK_EVERY`` states) stop the search cleanly; so does Ctrl-C
when ``interruptible`` (the first SIGINT sets a flag the loop reads between states,
so the bookkeeping stays whole; a second one interrupts at once). The report then
says which (``stopped_by``), how many states were still queued, and the shortest
trace to the state the search was at, with the statistics so far.

Traces are concrete: under symmetry reduction the path of representatives is
replayed from the initial state, choosing at each step the call whose successor has
the next representative, so every trace replays on the model unchanged.
"""

from __future__ import annotations

import enum
import math
import resource
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import repeat, tee
from operator import eq, itemgetter

from invariants.catalogue import INVARIANTS, RECOVERABILITY, SOMETIMES
from invariants.interrupts import StopRequest, stop_requests
from invariants.kinds import Invariant, Violation
from invariants.packing import Key
from invariants.projection import Projection
from invariants.state_store import StateStore
from model import Call, ModelConfig, initial_state
from model.lifecycle import STEADY
from model.successor import RULES, Rules

Progress = Callable[["Statistics"], None]

#: How often (in states) the search asks the process's peak memory: ``getrusage``
#: costs a system call, a state costs far more, and memory grows slowly per state.
MEMORY_CHECK_EVERY = 1_024


class Stop(enum.Enum):
    """Why a search ended before it had seen every reachable state (but for a
    violation, which the report's ``violations`` show)."""

    STATE_LIMIT = "state limit"
    MEMORY_LIMIT = "memory limit"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Statistics:
    """What one exploration measured."""

    states: int
    transitions: int
    depth: int
    seconds: float
    peak_memory_bytes: int
    unreduced_states: int | None = None  # before symmetry reduction, when it applied
    queued: int = 0  # states found and not yet expanded

    @property
    def states_per_second(self) -> float:
        """Distinct states visited per second of search."""
        return self.states / self.seconds if self.seconds > 0 else float("inf")

    @property
    def symmetry_factor(self) -> float:
        """How many states symmetry reduction folded into each representative."""
        if not self.unreduced_states:
            return 1.0
        return self.unreduced_states / self.states


@dataclass(frozen=True)
class Report:
    """The outcome: statistics, violations, deadlocks, unrecoverable states."""

    config: ModelConfig
    statistics: Statistics
    complete: bool
    violations: tuple[Violation, ...] = ()
    deadlocks: int = 0
    deadlock_traces: tuple[tuple[Call, ...], ...] = ()
    unrecoverable: int = 0
    unrecoverable_traces: tuple[tuple[Call, ...], ...] = ()
    unwitnessed: tuple[str, ...] = field(default=())
    stopped_by: Stop | None = None  # a limit or Ctrl-C; None: the end or a violation
    stopped_at: tuple[Call, ...] = ()  # the trace to the state it was expanding
    #: Per action of the rules, in their order, the transitions it labels among
    #: the states expanded (0: it never fired); they sum to ``transitions``.
    action_counts: tuple[tuple[str, int], ...] = ()

    @property
    def diameter(self) -> int | None:
        """The longest shortest path from the initial state (the BFS depth), known
        only when the search is complete."""
        return self.statistics.depth if self.complete else None

    @property
    def never_fired(self) -> tuple[str, ...]:
        """The actions no explored transition took."""
        return tuple(name for name, count in self.action_counts if count == 0)

    @property
    def ok(self) -> bool:
        """No violation, no deadlock, no unrecoverable state, search complete."""
        return (
            self.complete
            and not self.violations
            and not self.deadlocks
            and not self.unrecoverable
        )


@dataclass
class _Search:
    """The mutable bookkeeping of one search."""

    projection: Projection
    store: StateStore
    offsets: array[int] = field(default_factory=lambda: array("I"))
    targets: array[int] = field(default_factory=lambda: array("I"))
    found: list[tuple[Invariant, int, Call | None, int | None]] = field(
        default_factory=list
    )
    deadlocked: list[int] = field(default_factory=list)
    seen_witnesses: set[str] = field(default_factory=set)
    transitions: int = 0
    depth: int = 0
    current: int = 0  # the state being expanded
    expanded: int = 0  # states whose successors were counted (the first ones)
    stopped_by: Stop | None = None
    interrupt: StopRequest = field(default_factory=StopRequest)  # read per state


def explore(
    config: ModelConfig,
    rules: Rules = RULES,
    *,
    invariants: tuple[Invariant, ...] = INVARIANTS,
    symmetry: bool = True,
    stop_at_first: bool = True,
    recoverability: bool = True,
    max_states: int | None = None,
    max_memory_bytes: int | None = None,
    interruptible: bool = False,
    progress: Progress | None = None,
    progress_every: int = 100_000,
) -> Report:
    """Explore every reachable state of ``config`` under ``rules``; see the essay.

    ``invariants`` limits the properties checked (recoverability included only if
    listed); ``symmetry=False`` keeps permutations of VMs apart; ``stop_at_first``
    ends the search at the first violation; ``max_states`` and ``max_memory_bytes``
    bound it, and with ``interruptible`` Ctrl-C ends it (the report is then
    incomplete and says why); ``progress`` is called every ``progress_every``
    states.
    """
    started = time.perf_counter()
    recoverability = recoverability and RECOVERABILITY in invariants
    projection = Projection(config, rules, invariants, symmetry=symmetry)
    search = _Search(projection, StateStore(projection.packing))
    limits = _Limits(max_states, max_memory_bytes)
    with stop_requests(enabled=interruptible) as request:
        search.interrupt = request
        complete = _breadth_first(
            search, stop_at_first, recoverability, limits, progress, progress_every,
            started,
        )  # fmt: skip
    unrecoverable: list[int] = []
    if recoverability and complete and not (stop_at_first and search.found):
        unrecoverable = _unrecoverable(search)
    seconds = time.perf_counter() - started
    statistics = _statistics(search, seconds)
    violations = tuple(_violation(search, *found) for found in search.found)
    if unrecoverable and not (stop_at_first and violations):
        violations += (Violation(RECOVERABILITY, _trace(search, unrecoverable[0])),)
    return Report(
        config=config,
        statistics=statistics,
        complete=complete,
        violations=violations,
        deadlocks=len(search.deadlocked),
        deadlock_traces=tuple(_trace(search, i) for i in search.deadlocked[:3]),
        unrecoverable=len(unrecoverable),
        unrecoverable_traces=tuple(_trace(search, i) for i in unrecoverable[:3]),
        unwitnessed=tuple(
            w.name for w in SOMETIMES if w.name not in search.seen_witnesses
        ),
        stopped_by=search.stopped_by,
        stopped_at=() if search.stopped_by is None else _trace(search, search.current),
        action_counts=_action_counts(search, rules),
    )


def _action_counts(search: _Search, rules: Rules) -> tuple[tuple[str, int], ...]:
    """How many transitions each action labels among the states expanded: each
    pair's moves times the expansions that held it (``Projection.visits``), the
    site and link events once per state, and the plan calls the projection
    counted as it made them."""
    projection = search.projection
    counts: Counter[str] = Counter(projection.plan_calls)
    per_env: Counter[int] = Counter()
    for (env, vm), visits in projection.visits.items():
        pair = projection.pairs[(env, vm)]
        for call, _, _ in pair.vm_moves:
            counts[call.action] += visits
        per_env[env] += visits
    vm_count = projection.config.vm_count
    for (env, _), pair in projection.pairs.items():
        states = per_env.pop(env, 0) // vm_count  # each state visits one pair per VM
        for call in pair.system_moves:
            counts[call.action] += states
    return tuple((name, counts.get(name, 0)) for name in rules.actions)


@dataclass(frozen=True)
class _Limits:
    states: int | None
    memory_bytes: int | None


def _breadth_first(
    search: _Search,
    stop_at_first: bool,  # noqa: FBT001
    record_edges: bool,  # noqa: FBT001
    limits: _Limits,
    progress: Progress | None,
    progress_every: int,
    started: float,
) -> bool:
    """The search proper; False when it stopped before the end."""
    projection, store = search.projection, search.store
    offsets, targets = search.offsets, search.targets
    start = projection.canonical(projection.encode(initial_state(projection.config)))
    store.repack(projection.fitted())
    projection.on_widen.append(store.repack)  # ids outgrew their fields
    store.add(store.packing.code(start), -1)
    successor_codes = projection.successor_codes
    pairs = projection.pairs
    codes, index, parent = store.codes, store.index, store.parent
    level_end, current = 1, 0
    while current < len(codes):
        search.current = current
        stop = _limit_hit(search, limits)
        if stop is not None:
            search.stopped_by = stop
            return False
        if current == level_end:
            search.depth += 1
            level_end = len(codes)
        if record_edges:
            offsets.append(len(targets))
        fresh = len(pairs)
        after_codes = successor_codes(codes[current])
        for after in after_codes:
            found = index.get(after)
            if found is None:
                found = index[after] = len(codes)
                codes.append(after)
                parent.append(current)
            if record_edges:
                targets.append(found)
        search.transitions += len(after_codes)
        search.expanded = current + 1
        if not after_codes:
            search.deadlocked.append(current)
        if len(pairs) > fresh or projection.config.plans:
            _check_new_pairs(search, current, store.key(current))
            if stop_at_first and search.found:
                return False
        current += 1
        if progress is not None and current % progress_every == 0:
            search.current = current
            progress(_statistics(search, time.perf_counter() - started, final=False))
    search.current = current
    if record_edges:
        offsets.append(len(targets))
    return True


def _limit_hit(search: _Search, limits: _Limits) -> Stop | None:
    """The limit that ends the search before it expands state ``search.current``."""
    if search.interrupt.asked:
        return Stop.INTERRUPTED
    if limits.states is not None and len(search.store) >= limits.states:
        return Stop.STATE_LIMIT
    if (
        limits.memory_bytes is not None
        and search.current % MEMORY_CHECK_EVERY == 0
        and _peak_memory_bytes() >= limits.memory_bytes
    ):
        return Stop.MEMORY_LIMIT
    return None


def _peak_memory_bytes() -> int:
    """The process's peak resident size (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _check_new_pairs(search: _Search, current: int, key: Key) -> None:
    """Record what the pairs first met at state ``current`` violate or witness."""
    projection = search.projection
    env = key[0]
    for vm in dict.fromkeys(key[2:]):
        moves = projection.pair(env, vm)
        if moves.failed or not moves.seen <= search.seen_witnesses:
            search.seen_witnesses |= moves.seen
            for invariant, call in moves.failed:
                entry = (invariant, current, call, vm)
                if entry not in search.found:
                    search.found.append(entry)
    for invariant, call in projection.plan_failed:
        search.found.append((invariant, current, call, None))
    projection.plan_failed.clear()


def _statistics(search: _Search, seconds: float, *, final: bool = True) -> Statistics:
    projection = search.projection
    unreduced = None
    if final and projection.symmetric and projection.config.vm_count > 1:
        unreduced = _unreduced(search.store)
    peak = _peak_memory_bytes()
    return Statistics(
        states=len(search.store),
        transitions=search.transitions,
        depth=search.depth,
        seconds=seconds,
        peak_memory_bytes=peak,
        unreduced_states=unreduced,
        queued=len(search.store) - search.current,
    )


def _unreduced(store: StateStore) -> int:
    """How many states the representatives stand for: ``n! / (m1! m2! ...)`` each,
    the m's the runs of equal ids among its sorted VM ids. The pattern of equal
    neighbours (a tuple of booleans) is worked out in C, one code after another:
    ``map(eq, vms, vms[1:])`` over the unpacked codes, counted by pattern."""
    count = store.packing.vm_count
    keys, shifted = tee(map(store.packing.unpack, store.codes))
    vms = map(itemgetter(slice(2, None)), keys)
    later = map(itemgetter(slice(3, None)), shifted)
    patterns = Counter(map(tuple, map(map, repeat(eq), vms, later)))
    total = 0
    for pattern, states in patterns.items():
        orbit, run = math.factorial(count), 1
        for same in pattern:
            run = run + 1 if same else 1
            orbit //= run  # a run of r equal ids divides by r! in steps
        total += orbit * states
    return total


def _goals(projection: Projection, store: StateStore) -> list[int]:
    """The indices of the goal states (see the module essay)."""
    healthy = [
        link_up
        and all(
            site.up and site.connected and not site.storage_full
            for site in (primary, secondary)
        )
        for primary, secondary, link_up, _ in projection.envs
    ]
    idle = [all(run is None for run in runs) for runs in projection.plan_runs]
    steady = [vm.phase in STEADY for vm in projection.vm_states]
    return [
        i
        for i, key in enumerate(map(store.packing.unpack, store.codes))
        if healthy[key[0]] and idle[key[1]] and all(map(steady.__getitem__, key[2:]))
    ]


def _unrecoverable(search: _Search) -> list[int]:
    """States from which no goal is reachable: one backward search from the goals."""
    projection = search.projection
    count = len(search.store)
    offsets, targets = search.offsets, search.targets
    indegree = array("I", [0]) * (count + 1)
    for target in targets:
        indegree[target + 1] += 1
    for i in range(count):
        indegree[i + 1] += indegree[i]
    reverse = array("I", [0]) * len(targets)
    fill = array("I", indegree)
    for source in range(count):
        for position in range(offsets[source], offsets[source + 1]):
            target = targets[position]
            reverse[fill[target]] = source
            fill[target] += 1
    good = bytearray(count)
    queue: deque[int] = deque()
    for i in _goals(projection, search.store):
        good[i] = 1
        queue.append(i)
    while queue:
        state = queue.popleft()
        for position in range(indegree[state], indegree[state + 1]):
            source = reverse[position]
            if not good[source]:
                good[source] = 1
                queue.append(source)
    return [i for i in range(count) if not good[i]]


def _concrete_path(search: _Search, target: int) -> tuple[list[Call], Key]:
    """The calls from the initial state to state ``target``, and its concrete key."""
    chain = []
    while target != -1:
        chain.append(target)
        target = search.store.parent[target]
    chain.reverse()
    projection = search.projection
    concrete = projection.encode(initial_state(projection.config))
    calls: list[Call] = []
    for step in chain[1:]:
        wanted = search.store.key(step)
        for call, after in projection.moves(concrete):
            if projection.canonical(after) == wanted:
                calls.append(call)
                concrete = after
                break
        else:  # pragma: no cover - the parent links always lead somewhere
            msg = f"no call leads to state {step} on the path"
            raise AssertionError(msg)
    return calls, concrete


def _trace(search: _Search, target: int) -> tuple[Call, ...]:
    return tuple(_concrete_path(search, target)[0])


def _violation(
    search: _Search,
    invariant: Invariant,
    state: int,
    call: Call | None,
    vm: int | None,
) -> Violation:
    calls, concrete = _concrete_path(search, state)
    if call is not None:
        if call.vm is not None and vm is not None:
            call = replace(call, vm=list(concrete[2:]).index(vm))
        calls.append(call)
    phases = _phases(search, concrete)
    return Violation(invariant, tuple(calls), f"phases before: {phases}")


def _phases(search: _Search, key: Key) -> str:
    states = search.projection.vm_states
    return ", ".join(states[vm].phase.value for vm in key[2:])
