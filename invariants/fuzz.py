"""Guided stateful fuzzing of the model: a Hypothesis ``RuleBasedStateMachine``.

``machine_class(config, rules)`` builds a state machine whose one rule, ``step``,
draws an action among those the model enables in the current state (operator,
agent and environment alike, each with the same share), then one of its calls.
One rule and no preconditions: Hypothesis never has to reject a drawn rule, so no
input gives up in the rule sampling (with one rule per action, each behind its
precondition, over a quarter of the inputs did). After every step the catalogue's
ALWAYS properties run as an ``@invariant`` and the STEP properties on the step
itself; a failure raises ``FuzzViolation`` carrying the whole trace, so ``hvdr
fuzz`` can write it as a trace file that ``hvdr replay`` reproduces.

Uniform rule choice from the initial state rarely gets past initial replication,
so the search is guided: every example starts from a state drawn from a pool of
states the model can reach (an ``@initialize`` rule replays a shortest path to it,
checked like any step; the step's last choice among the actions, ``JUMP``, starts
over from another one, so an example visits several), and ``target()`` rewards
depth. The pool is computed on the rules as written, breadth first, and grouped so
that rare situations and every lifecycle edge get their own share of the draws
(``start_pool``); the indices drawn shrink towards the initial state, so a failing
example shrinks to a short prefix. A trace always starts at the initial state: a
jump starts the recorded calls afresh. A state with no enabled call is a deadlock,
reported as a RECOVERABILITY failure.

Coverage: each step that fires a lifecycle trigger is counted per concrete edge
(trigger, source phase, destination phase), the rows ``model.machine`` builds from
``LIFECYCLE``; ``fuzz`` returns the counts for the report and the diagram.

Seeds and the example database: ``fuzz`` runs seeded batches (``run_in_batches``);
given a ``database`` (``invariants.databases``), the failures found are saved there
and every later run replays them first, whatever its seed. Long campaigns:
``example_test`` runs the same examples as a plain ``@given`` test for HypoFuzz
(its docstring says why not the state machine itself).

Seam for the engine (a later issue): ``machine_class`` takes ``on_step``, called
with (pre, call, post) after each accepted step; a conformance machine passes one
that drives the engine and compares it through the refinement mapping.
``tally`` counts the accepted steps, apart: those replaying a starting state
(``prefix``) and those the rules drew (``rule``).
"""

from __future__ import annotations

import time
import unittest
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings, target
from hypothesis import strategies as st
from hypothesis.database import ExampleDatabase
from hypothesis.stateful import (
    RuleBasedStateMachine,
    get_state_machine_test,
    initialize,
    invariant,
    rule,
)

from invariants import catalogue
from invariants.catalogue import RECOVERABILITY
from invariants.constant_pool import fixed_constant_pool
from invariants.databases import key_examples
from invariants.fuzz_scale import Beyond, BeyondSummary, action_weights, composed_paths
from invariants.interrupts import StopRequest, stop_requests
from invariants.kinds import Violation
from invariants.step_memo import StepMemo
from model import Call, ModelConfig, SystemState, initial_state
from model import Phase as LifecyclePhase
from model.machine import transition_rows
from model.successor import RULES, Rules, successors

EdgeKey = tuple[str, LifecyclePhase, LifecyclePhase]
StepHook = Callable[[SystemState, Call, SystemState], None]

#: Hypothesis' phases; targeting and shrinking (last) are dropped when a kill is all
#: that is wanted: hill-climbing on depth can cost thousands of extra examples.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)

#: States in the pool of starting points (breadth first: all the shallow ones).
POOL_STATES = 4_000

#: The step's pseudo-action that starts over from another reachable state; drawn
#: last among the enabled actions, so shrinking prefers a real call to a jump.
JUMP = "(jump to a reachable state)"


class FuzzViolation(AssertionError):
    """A property failed during fuzzing; ``violation`` holds the trace."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(str(violation))
        self.violation = violation


def lifecycle_edges() -> tuple[EdgeKey, ...]:
    """Every concrete edge of the lifecycle (the ``transitions`` rows)."""
    rows = transition_rows()
    return tuple(
        dict.fromkeys((row["trigger"], row["source"], row["dest"]) for row in rows)
    )


Paths = tuple[tuple[Call, ...], ...]
Pool = tuple[tuple[Paths, ...], ...]  # coarse situation -> fine situation -> paths


def start_pool(
    config: ModelConfig, rules: Rules = RULES, limit: int = POOL_STATES
) -> Pool:
    """Shortest paths to the first ``limit`` states reached, grouped by situation.

    Drawing a coarse situation (each VM's phase, direction and log health) first,
    then a fine one (``situation``), then a state in it, gives the rare situations
    (a damaged log while replicating back, a committed failover with a site
    disconnected) the same chance as the common ones. One more coarse group per
    lifecycle edge holds the first path found that ends by taking it (an edge back
    to a state seen before, like resume, ends no shortest path), and, with several
    VMs, one per composed path (``invariants.fuzz_scale``: every VM somewhere deep,
    which a breadth-first pool of several VMs never reaches).
    """
    return starts_and_weights(config, rules, limit)[0]


def starts_and_weights(
    config: ModelConfig, rules: Rules = RULES, limit: int = POOL_STATES
) -> tuple[Pool, dict[str, int]]:
    """The pool (``start_pool``) and the actions' draw weights
    (``fuzz_scale.action_weights``), from one breadth-first search."""
    start = initial_state(config)
    paths: dict[SystemState, tuple[Call, ...]] = {start: ()}
    through: dict[EdgeKey, tuple[Call, ...]] = {}  # the first path ending on an edge
    queue = deque([start])
    while queue and len(paths) < limit:
        state = queue.popleft()
        if catalogue.failing(config, state):
            continue  # a failure already (a mutant's): examples reach it, not past it
        for call, after in successors(config, state, rules):
            edge = _edge(rules, state, call, after)
            if edge is not None and edge not in through:
                through[edge] = (*paths[state], call)
            if after not in paths:
                paths[after] = (*paths[state], call)
                queue.append(after)
    groups: dict[object, dict[object, list[tuple[Call, ...]]]] = {}
    for state, path in paths.items():
        coarse = tuple((vm.phase, vm.active, vm.log) for vm in state.vms)
        fine = groups.setdefault(coarse, {})
        fine.setdefault(situation(state), []).append(path)
    by_situation = tuple(
        tuple(tuple(group) for group in fine.values()) for fine in groups.values()
    )
    deep = tuple(((path,),) for path in composed_paths(config, rules))
    pool = by_situation + tuple(((path,),) for path in through.values()) + deep
    # Weights only where the pool could not hold the whole space: a space it holds
    # is drawn from evenly already (every situation has its group).
    weights = action_weights(config, paths) if queue else {}
    return pool, weights


def situation(state: SystemState) -> tuple[object, ...]:
    """What tells states apart for guidance: phases, copies' shape, health, sites."""
    vms = tuple(
        (
            vm.phase,
            vm.active,
            vm.log,
            len(vm.points),
            vm.other is not None and vm.other.behind > 0,
            vm.other is not None and vm.other.divergent > 0,
            vm.running,
            vm.failover_kind,
            None if vm.last_failover is None else vm.last_failover.kind,
        )
        for vm in state.vms
    )
    return (state.primary, state.secondary, state.link_up, vms)


def machine_class(
    config: ModelConfig,
    rules: Rules = RULES,
    *,
    pool: Pool | None = None,
    coverage: Counter[EdgeKey] | None = None,
    tally: Counter[str] | None = None,
    on_step: StepHook | None = None,
    label: str = "model",
    weights: dict[str, int] | None = None,
    memoise: bool = True,
) -> type[RuleBasedStateMachine]:
    """A state machine over ``config`` under ``rules`` (see the module essay).

    ``label`` names the rules (``model``, or a mutant's name): with the
    configuration it keys the machine's examples in an example database, so a
    failure saved on a mutant or another configuration is not replayed here.
    ``memoise``: keep the model's answers for replayed paths (False under a
    coverage-guided fuzzer, ``invariants.step_memo``).
    """
    if pool is None:
        pool, weights = starts_and_weights(config, rules)
    starts = pool
    weight = weights or {}
    taken: Counter[EdgeKey] = coverage if coverage is not None else Counter()
    steps: Counter[str] = tally if tally is not None else Counter()
    # A replayed path asks what it asked before (``invariants.step_memo``); not
    # under a coverage-guided fuzzer, whose replays must run the same code.
    memo = StepMemo(config, rules) if memoise else StepMemo(config, rules, limit=0)

    class ModelMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            steps["example"] += 1
            self.state = initial_state(config)
            self.calls: list[Call] = []
            self.in_prefix = False

        starts_count = len(starts)

        def enabled(self) -> tuple[Call, ...]:
            return memo.enabled(self.state)

        def take(self, call: Call) -> bool:
            after = memo.after(self.state, call)
            if after is None:
                return False
            self.calls.append(call)
            for failed in memo.failing_step(self.state, call, after):
                raise FuzzViolation(Violation(failed, tuple(self.calls)))
            _count(rules, taken, self.state, call, after)
            steps["prefix" if self.in_prefix else "rule"] += 1
            if on_step is not None:
                on_step(self.state, call, after)
            self.state = after
            for failed in memo.failing(after):
                raise FuzzViolation(Violation(failed, tuple(self.calls)))
            return True

        def start_over(self, coarse: int, data: st.DataObject) -> None:
            self.state, self.calls = initial_state(config), []
            fine = starts[coarse]
            group = fine[data.draw(st.integers(0, len(fine) - 1), label="situation")]
            start = data.draw(st.integers(0, len(group) - 1), label="state")
            self.in_prefix = True
            for call in group[start]:
                if not self.take(call):
                    break  # these rules refuse the path: start from where it stops
            self.in_prefix = False

        @initialize(coarse=st.integers(0, len(starts) - 1), data=st.data())
        def start_from_a_reachable_state(
            self, coarse: int, data: st.DataObject
        ) -> None:
            self.start_over(coarse, data)

        @rule(data=st.data())
        def step(self, data: st.DataObject) -> None:
            calls = self.enabled()
            if not calls:
                detail = "deadlock: no call is enabled"
                violation = Violation(RECOVERABILITY, tuple(self.calls), detail)
                raise FuzzViolation(violation)
            actions = [
                action
                for action in dict.fromkeys(call.action for call in calls)
                for _ in range(weight.get(action, 1))
            ]
            actions.append(JUMP)
            action = data.draw(st.sampled_from(actions), label="action")
            if action == JUMP:
                coarse = data.draw(st.integers(0, len(starts) - 1), label="jump")
                self.start_over(coarse, data)
                return
            chosen = [call for call in calls if call.action == action]
            self.take(data.draw(st.sampled_from(chosen), label=action))

        def teardown(self) -> None:
            target(float(len(self.calls)), label="depth")

        @invariant()
        def every_always_property_holds(self) -> None:
            for failed in memo.failing(self.state):
                raise FuzzViolation(Violation(failed, tuple(self.calls)))

    ModelMachine.__name__ = ModelMachine.__qualname__ = "ModelMachine"
    key_examples(ModelMachine, label, config)
    return ModelMachine


def example_test(
    config: ModelConfig, rules: Rules = RULES, *, steps: int = 30
) -> Callable[..., None]:
    """The machine's examples as a plain ``@given(st.data())`` test, for HypoFuzz.

    Each example starts from a drawn reachable state, draws how many steps to take
    (1 to ``steps``) and takes them with the machine's ``step`` rule, the same
    properties checked after each. Not a ``RuleBasedStateMachine`` test: Hypothesis'
    stateful runner forces some of its choices (whether to stop, at the first and
    last step), and HypoFuzz (25.11) records forced choices with the others but does
    not replay them: every stateful input has a forced first choice, so none
    replays the same, and HypoFuzz, which keeps a behaviour only when a second run
    of its input reproduces it, records none.
    """
    machine = machine_class(config, rules, memoise=False)

    @given(st.data())
    def run_one_example(data: st.DataObject) -> None:
        example: Any = machine()  # the rules are methods mypy cannot see
        example.every_always_property_holds()
        coarse = data.draw(st.integers(0, example.starts_count - 1), label="start")
        example.start_from_a_reachable_state(coarse=coarse, data=data)
        for _ in range(data.draw(st.integers(1, steps), label="steps")):
            example.step(data=data)
        example.teardown()

    return run_one_example


def _edge(
    rules: Rules, pre: SystemState, call: Call, post: SystemState
) -> EdgeKey | None:
    """The lifecycle edge a step takes (None: it fires no trigger)."""
    trigger = rules.actions[call.action].trigger
    if trigger is None or call.vm is None:
        return None
    return (trigger, pre.vms[call.vm].phase, post.vms[call.vm].phase)


def _count(
    rules: Rules,
    taken: Counter[EdgeKey],
    pre: SystemState,
    call: Call,
    post: SystemState,
) -> None:
    edge = _edge(rules, pre, call, post)
    if edge is not None:
        taken[edge] += 1


_Failure = TypeVar("_Failure", bound=BaseException)


@dataclass(frozen=True)
class BatchesRun:
    """What :func:`run_in_batches` did: the examples of the batches run, the
    failure caught (None: none), and whether that failure is one the example
    database held from an earlier run, replayed before anything was generated."""

    done: int
    caught: Any
    from_database: bool = False


def run_in_batches(
    machine: type[RuleBasedStateMachine],
    failure: type[_Failure],
    *,
    examples: int,
    steps: int,
    seed_value: int,
    timeout_seconds: float | None,
    batch: int,
    shrink: bool,
    started: float,
    after_batch: Callable[[int], None] | None = None,
    stop: StopRequest | None = None,
    database: ExampleDatabase | None = None,
    **extra: Any,
) -> BatchesRun:
    """Run ``machine`` for ``examples`` examples in seeded batches until ``failure``
    is raised.

    Batches use seeds ``seed_value``, +1, ... so a ``timeout_seconds`` (counted from
    ``started``) can end the run between batches; each batch is deterministic.
    ``shrink=False`` drops targeting and shrinking. ``extra`` are more Hypothesis
    settings; ``after_batch(done)`` is called after each batch; a ``stop`` asked
    (Ctrl-C, ``invariants.interrupts``) ends the run after the batch it is in.
    With a ``database`` (``invariants.databases``) a failure is saved there, and the
    failures saved before are replayed first, on their own: one of them failing
    again ends the run before any example is generated (``from_database``).
    """

    def run(size: int, phases: tuple[Phase, ...], seed_at: int) -> _Failure | None:
        options = settings(
            max_examples=size,
            stateful_step_count=steps,
            deadline=None,
            database=database,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
            verbosity=Verbosity.quiet,
            report_multiple_bugs=False,
            phases=phases,
            **extra,
        )
        test = get_state_machine_test(machine, settings=options)
        try:
            with fixed_constant_pool():  # the seed alone decides (constant_pool.py)
                _seeded(test, seed_at, keep_database=database is not None)()
        except failure as error:
            return error
        except unittest.SkipTest:
            if Phase.generate in phases:
                raise
            # Hypothesis' way to say "nothing saved to replay": not a failure.
        return None

    phases: tuple[Phase, ...] = PHASES if shrink else PHASES[:3]
    if database is not None:
        replayed = run(min(batch, examples), (Phase.explicit, Phase.reuse), seed_value)
        if replayed is not None:
            return BatchesRun(0, replayed, from_database=True)
        phases = tuple(phase for phase in phases if phase is not Phase.reuse)
    done = 0
    while done < examples:
        size = min(batch, examples - done)
        caught = run(size, phases, seed_value + done)
        done += size
        if after_batch is not None:
            after_batch(done)
        if caught is not None:
            return BatchesRun(done, caught)
        late = timeout_seconds is not None
        if late and time.perf_counter() - started > (timeout_seconds or 0.0):
            break
        if stop is not None and stop.asked:
            break
    return BatchesRun(done, None)


def _seeded(
    test: Callable[..., None], seed_value: int, *, keep_database: bool
) -> Callable[..., None]:
    """``test`` seeded with ``seed_value``, keeping its example database.

    ``hypothesis.seed`` also sets ``database=None`` (Hypothesis' view: a seeded run
    reproduces, it does not replay); here the seed decides what is generated and the
    database what is replayed first, so the seed is set the way ``seed`` sets it,
    without the database change (``tests/stateful/test_example_database.py`` fails
    if a Hypothesis release stops honouring it).
    """
    if not keep_database:
        return seed(seed_value)(test)
    setattr(test, "_hypothesis_internal_use_seed", seed_value)  # noqa: B010
    return test


@dataclass(frozen=True)
class FuzzReport:
    """What a fuzzing run did: examples, steps, time, edges taken, the failure."""

    examples: int
    steps: int  # model steps drawn by the rules
    prefix_steps: int  # model steps replaying the drawn starting states
    seconds: float
    coverage: dict[EdgeKey, int]
    edges: tuple[EdgeKey, ...]
    failure: Violation | None = None
    untaken: tuple[EdgeKey, ...] = field(default=())
    interrupted: bool = False  # Ctrl-C ended the run (``examples``: batches done)
    beyond: BeyondSummary | None = None  # how far past check's bounds (``beyond``)
    runs: int = 0  # examples Hypothesis ran: replays and shrinking included
    from_database: bool = False  # the failure is one the example database held

    @property
    def steps_per_second(self) -> float:
        """Model steps (prefix steps included) per second."""
        total = self.steps + self.prefix_steps
        return total / self.seconds if self.seconds > 0 else float("inf")


def fuzz(
    config: ModelConfig,
    rules: Rules = RULES,
    *,
    examples: int = 200,
    steps: int = 50,
    seed_value: int = 0,
    timeout_seconds: float | None = None,
    batch: int = 50,
    shrink: bool = True,
    progress: Callable[[int, int], None] | None = None,
    interruptible: bool = False,
    database: ExampleDatabase | None = None,
    label: str = "model",
    beyond: bool = False,
) -> FuzzReport:
    """Run ``examples`` examples of up to ``steps`` steps; stop at the first failure.

    Examples run in batches of ``batch`` with seeds ``seed_value``, +1, ... so a
    ``timeout_seconds`` can end the run between batches; each batch is deterministic.
    ``shrink=False`` reports the first failing example as found, without targeting
    or shrinking (faster; the mutation test needs a kill, not the shortest trace).
    ``progress(examples_done, steps)`` is called after each batch; with
    ``interruptible``, Ctrl-C ends the run after the batch it is in, with the report
    so far (``interrupted``). A ``database`` keeps the failures found and replays
    them first; ``label`` names ``rules`` in its keys (``machine_class``). With
    ``beyond``, the report says how far past ``hvdr check``'s default space the
    run went (``invariants.fuzz_scale``).
    """
    started = time.perf_counter()
    taken: Counter[EdgeKey] = Counter()
    pool, weights = starts_and_weights(config, rules)
    tally: Counter[str] = Counter()
    seen = Beyond(config.fault_budget, set()) if beyond else None

    def record(pre: SystemState, call: Call, post: SystemState) -> None:
        del pre, call
        assert seen is not None
        seen.record(post)

    machine = machine_class(
        config, rules, pool=pool, coverage=taken, tally=tally, label=label,
        weights=weights, on_step=None if seen is None else record,
    )  # fmt: skip

    def after_batch(done: int) -> None:
        if progress is not None:
            progress(done, tally["rule"])

    with stop_requests(enabled=interruptible) as stop:
        ran = run_in_batches(
            machine, FuzzViolation, examples=examples, steps=steps,
            seed_value=seed_value, timeout_seconds=timeout_seconds, batch=batch,
            shrink=shrink, started=started, after_batch=after_batch, stop=stop,
            database=database,
        )  # fmt: skip
    done, caught = ran.done, ran.caught
    interrupted = stop.asked and caught is None and done < examples
    failure = None if caught is None else caught.violation
    edges = lifecycle_edges()
    return FuzzReport(
        examples=done,
        steps=tally["rule"],
        prefix_steps=tally["prefix"],
        seconds=time.perf_counter() - started,
        coverage=dict(taken),
        edges=edges,
        failure=failure,
        untaken=tuple(edge for edge in edges if not taken.get(edge)),
        interrupted=interrupted,
        beyond=None if seen is None else seen.summary(),
        runs=tally["example"],
        from_database=ran.from_database,
    )
