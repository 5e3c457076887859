"""Conformance: the real engine, driven beside the model, stays in its state.

One Hypothesis state machine drives the model and a :class:`~invariants.engine_world.
World` (a real engine on real files) with the same steps. A step is an *engine
operation* (``enable_protection``, ``unplanned_failover(point=1, shutdown=refused)``,
...) or an environment event (a write, a site crash, the link cut, the vault lost, a
site's storage full, a log overflowing or damaged). After every step:

- when the model refuses the operation, the engine must refuse it too, with a
  :class:`~engine.errors.TransitionNotAllowed` carrying the model's reason, and
  change nothing;
- otherwise the model takes the operation's *chain*: an engine operation may be
  several model steps (enabling protection copies every disk and completes the
  initial replication; a failover completes as soon as the target's VMM can start
  the replica VM), each follow-up taken while the model enables it, as the engine
  does;
- the engine's state read back through the refinement mapping (``engine_world``:
  copies from the bytes, the engine's own view for the rest) must equal the model's,
  field by field, and the health and protection the engine reports must be the
  model's; every ALWAYS property of the catalogue must hold on the engine's state.

Guided as the model's fuzzer is (``invariants.fuzz``): each example starts from a
state reached by a shortest path of engine operations (breadth first over the model,
grouped by situation, one group per lifecycle edge), replayed on the engine and checked
step by step, so examples reach failback, cancel and reverse replication.

A failure raises :class:`ConformanceFailure` with the model calls taken so far: a trace
``hvdr replay --engine`` replays on real files (:func:`replay_on_engine`).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from hypothesis import strategies as st
from hypothesis.database import ExampleDatabase
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    rule,
)

from engine.errors import ReplicationError, TransitionNotAllowed
from invariants import catalogue
from invariants.databases import key_examples
from invariants.engine_world import (
    BLOCK,
    DISK_BYTES,
    DISKS,
    RETENTION,
    VM,
    MappingError,
    World,
    damage_last_record,
)
from invariants.fuzz import run_in_batches, situation
from invariants.interrupts import StopRequest
from model import (
    ActionRefused,
    Call,
    Copy,
    ModelConfig,
    ModelError,
    Phase,
    Site,
    SystemState,
    initial_state,
)
from model.action import Context
from model.state import VmState, health, is_protected
from model.successor import ACTIONS, RULES, Rules, apply, enabled

CONFIG: Final = ModelConfig(
    vm_count=1,
    disks_per_vm=len(DISKS),
    write_lag_max=2,
    recovery_points_max=RETENTION,
    fault_budget=3,
    vm_names=(VM,),
)
"""The model the engine is held to: one VM of two disks, the engine's retention."""

POOL_STATES: Final = 1_500

#: Engine operation -> (the model action it asks first, follow-ups taken while enabled).
OPERATIONS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "enable_protection": (
        "enable_protection",
        ("copy_disk", "copy_disk", "complete_initial_replication"),
    ),
    "continue_initial_replication": (
        "copy_disk", ("copy_disk", "complete_initial_replication"),
    ),
    "replicate": ("replicate", ()),
    "pause": ("pause", ()),
    "resume": ("resume", ()),
    "resynchronize": ("resynchronize", ("complete_resynchronization",)),
    "disable": ("disable_protection", ()),
    "start_test_failover": ("start_test_failover", ()),
    "cleanup_test_failover": ("cleanup_test_failover", ()),
    "planned_failover": ("planned_failover", ()),
    "failover": ("failover", ("complete_failover",)),
    "unplanned_failover": ("unplanned_failover", ("complete_failover",)),
    "complete_failover": ("complete_failover", ()),
    "change_recovery_point": ("change_recovery_point", ()),
    "commit": ("commit", ()),
    "cancel_failover": ("cancel_failover", ()),
    "reverse_replication": ("reverse_replication", ("complete_resynchronization",)),
}  # fmt: skip

#: Environment events: each is one model call, realised on the engine by the world.
EVENTS: Final = (
    "write",
    "write_stale_copy",
    "write_test_vm",
    "overflow_log",
    "damage_log",
    "crash_site",
    "recover_site",
    "disconnect_vault",
    "reconnect_vault",
    "fill_storage",
    "free_storage",
    "cut_link",
    "repair_link",
)


@dataclass(frozen=True, slots=True)
class Step:
    """One engine operation (or event) with the model call it starts with."""

    operation: str
    call: Call

    def __str__(self) -> str:
        if self.operation == self.call.action:
            return str(self.call)
        return f"{self.operation}: {self.call}"


class ConformanceFailure(AssertionError):
    """The engine left the model: the step, what differed, and the calls so far."""

    def __init__(self, message: str, steps: Sequence[Step], calls: Sequence[Call]):
        super().__init__(message)
        self.steps = tuple(steps)
        self.calls = tuple(calls)


# -- the model side --------------------------------------------------------------------


def chain(
    config: ModelConfig, state: SystemState, step: Step, rules: Rules = RULES
) -> list[tuple[Call, SystemState]]:
    """The model steps an engine operation takes from ``state`` (raises the model's
    refusal of its first call)."""
    taken = [(step.call, apply(config, state, step.call, rules))]
    if step.operation not in OPERATIONS:
        return taken
    head, follow = OPERATIONS[step.operation]
    del head
    current = taken[-1][1]
    if step.call.action == "resynchronize":
        # The engine refuses to start a resynchronisation it could not complete now.
        after = _try(config, current, Call("complete_resynchronization", vm=0), rules)
        if after is None:
            raise _second_step_refused(config, current, rules)
    for action in follow:
        resync = action == "complete_resynchronization"
        if resync and current.vms[0].phase is not Phase.RESYNCHRONIZING:
            continue
        after = _try(config, current, Call(action, vm=0), rules)
        if after is None:
            if action == "copy_disk":
                continue
            break
        taken.append((Call(action, vm=0), after))
        current = after
    return taken


def _try(
    config: ModelConfig, state: SystemState, call: Call, rules: Rules
) -> SystemState | None:
    try:
        return apply(config, state, call, rules)
    except ActionRefused:
        return None


def _second_step_refused(
    config: ModelConfig, state: SystemState, rules: Rules
) -> ActionRefused:
    try:
        apply(config, state, Call("complete_resynchronization", vm=0), rules)
    except ActionRefused as refusal:
        return refusal
    msg = "unreachable"
    raise AssertionError(msg)  # pragma: no cover


def _head_action(step_operation: str, state: SystemState) -> str:
    head = OPERATIONS[step_operation][0]
    vm = state.vms[0]
    copied = vm.disks_copied >= len(DISKS)
    if step_operation == "continue_initial_replication" and copied:
        return "complete_initial_replication"
    if step_operation == "resynchronize" and vm.phase is Phase.RESYNCHRONIZING:
        return "complete_resynchronization"
    return head


def head_call(step_operation: str, state: SystemState) -> Call:
    """The model call an engine operation asks first in ``state``, with the first
    arguments the action lists there (none when it lists none)."""
    head = _head_action(step_operation, state)
    bare = Call(head, vm=0)
    try:
        choices = tuple(ACTIONS[head].choices(Context(CONFIG, state, bare)))
    except (AssertionError, AttributeError, IndexError, StopIteration, TypeError):
        choices = ()  # the phase has no such arguments: the model refuses the phase
    return Call(head, vm=0, args=choices[0]) if choices else bare


def steps_enabled(
    config: ModelConfig, state: SystemState, rules: Rules = RULES
) -> list[Step]:
    """Every step the model allows in ``state``: operations with their arguments."""
    calls = enabled(config, state, rules)
    found: list[Step] = []
    actions = {call.action for call in calls}
    for operation in OPERATIONS:
        head = _head_action(operation, state)
        if head not in actions:
            continue
        for call in calls:
            if call.action == head and call.vm == 0:
                found.append(Step(operation, call))
    found += [Step(call.action, call) for call in calls if call.action in EVENTS]
    # In a fixed order: the model lists some calls from sets, whose order changes
    # with the interpreter's hash seed; a seed must give the same run everywhere.
    return sorted(found, key=str)


def start_pool(
    config: ModelConfig, rules: Rules = RULES, limit: int = POOL_STATES
) -> tuple[tuple[tuple[Step, ...], ...], ...]:
    """Shortest paths of steps to the first ``limit`` states, grouped by situation;
    one more group per lifecycle edge (the first path that ends by taking it)."""
    start = initial_state(config)
    paths: dict[SystemState, tuple[Step, ...]] = {start: ()}
    through: dict[tuple[str, Phase, Phase], tuple[Step, ...]] = {}
    queue = deque([start])
    while queue and len(paths) < limit:
        state = queue.popleft()
        for step in steps_enabled(config, state, rules):
            try:
                taken = chain(config, state, step, rules)
            except ActionRefused:
                continue
            before = state
            for call, after in taken:
                edge = (call.action, before.vms[0].phase, after.vms[0].phase)
                if rules.actions[call.action].trigger and edge not in through:
                    through[edge] = (*paths[state], step)
                before = after
            after = taken[-1][1]
            if after not in paths:
                paths[after] = (*paths[state], step)
                queue.append(after)
    groups: dict[object, list[tuple[Step, ...]]] = {}
    for state, path in paths.items():
        groups.setdefault(situation(state), []).append(path)
    return tuple(tuple(group) for group in groups.values()) + tuple(
        (path,) for path in through.values()
    )


# -- the engine side -------------------------------------------------------------------


def point_id(world: World, index: int) -> int:
    """The engine's id of the model's point ``index`` (newest first)."""
    shown = world.engine.status(VM).recovery_points[-RETENTION:]
    newest_first = [point.recovery_point_id for point in reversed(shown)]
    return newest_first[index] if 0 <= index < len(newest_first) else -1


def realise(world: World, step: Step, model: SystemState) -> object:
    """Do ``step`` on the engine (its errors propagate)."""
    args: dict[str, object] = dict(step.call.args)
    if step.operation in EVENTS:
        return _EVENTS[step.call.action](world, step.call, model.vms[0])
    special = _OPERATIONS.get(step.operation)
    if special is not None:
        return special(world, args)
    method: Callable[[str], object] = getattr(world.engine, step.operation)
    return method(VM)


def _start_drill(world: World, args: dict[str, object]) -> object:
    point = args.get("point")
    chosen = None if point is None else point_id(world, int(str(point)))
    return world.engine.start_test_failover(VM, chosen)


def _unplanned(world: World, args: dict[str, object]) -> object:
    point = args.get("point", "latest")
    target: int | str = str(point)
    if isinstance(point, int) and not isinstance(point, bool):
        target = point_id(world, point)
    shutdown = args.get("shutdown", "skip")
    world.refuse_shutdown = shutdown == "refused"
    status = world.engine.status(VM)
    towards = world.lossy[Site(status.active_site).other.value]
    towards.drops = 1 if shutdown == "sync_cut_short" else 0
    try:
        return world.engine.unplanned_failover(
            VM, point=target, shut_down_first=shutdown != "skip"
        )
    finally:
        world.refuse_shutdown = False
        towards.drops = 0


_OPERATIONS: Final[dict[str, Callable[[World, dict[str, object]], object]]] = {
    "replicate": lambda w, a: w.engine.replicate(
        VM, app_consistent=bool(a.get("app_consistent"))
    ),
    "start_test_failover": _start_drill,
    "planned_failover": lambda w, a: w.engine.planned_failover(
        VM, then_fail_over=False
    ),
    "unplanned_failover": _unplanned,
    "change_recovery_point": lambda w, a: w.engine.change_recovery_point(
        VM, point_id(w, int(str(a.get("point", 1))))
    ),
}
"""Engine operations that take arguments (the others are ``engine.<name>(vm)``)."""


def _write(world: World, call: Call, vm: VmState) -> object:
    if call.action == "write":
        site = None

        def current(disk: str, offset: int) -> bytes:
            return world.engine.read(VM, disk, offset, BLOCK)
    else:
        site = vm.active.other.value

        def current(disk: str, offset: int) -> bytes:
            return world.read_image_block(vm.active.other, disk, offset)

    _, disk, offset, data = world.next_write(current)
    world.engine.write(VM, disk, offset, data, site=site)
    return None


def _write_test_vm(world: World, call: Call, vm: VmState) -> object:
    test_vm = world.engine.test_vm(VM)
    version, disk, offset, data = world.next_write(
        lambda disk, offset: test_vm.read(disk, offset, BLOCK)
    )
    world.test_versions.add(version)
    test_vm.write(disk, offset, data)
    test_vm.flush()
    return None


def _overflow_log(world: World, call: Call, vm: VmState) -> object:
    # Past half the disk in one log, rewriting bytes already there: the log grows, no
    # copy's contents change (the model's copies do not either).
    data = world.engine.read(VM, DISKS[0], 0, BLOCK)
    for _ in range(DISK_BYTES // (2 * BLOCK) + 1):
        world.engine.write(VM, DISKS[0], 0, data)
    return None


def _damage_log(world: World, call: Call, vm: VmState) -> object:
    world.engine.flush(VM)
    for path in world.log_files(vm.active):
        if damage_last_record(path):
            break
    return world.engine.verify_logs(VM)


def _storage(world: World, call: Call, vm: VmState) -> object:
    root = world.roots[_site(call.site)]
    fs = world.file_system
    change = fs.fill if call.action == "fill_storage" else fs.free
    for folder in ("replicas", "inbox"):
        change(root / folder)
    return None


Event = Callable[[World, Call, VmState], object]

_EVENTS: Final[dict[str, Event]] = {
    "write": _write,
    "write_stale_copy": _write,
    "write_test_vm": _write_test_vm,
    "overflow_log": _overflow_log,
    "damage_log": _damage_log,
    "crash_site": lambda w, c, v: w.engine.crash_site(_name(c.site)),
    "recover_site": lambda w, c, v: w.engine.recover_site(_name(c.site)),
    "disconnect_vault": lambda w, c, v: w.engine.disconnect_vault(_name(c.site)),
    "reconnect_vault": lambda w, c, v: w.engine.reconnect_vault(_name(c.site)),
    "fill_storage": _storage,
    "free_storage": _storage,
    "cut_link": lambda w, c, v: w.engine.set_link(False),
    "repair_link": lambda w, c, v: w.engine.set_link(True),
}
"""How each environment event is played on the engine (``EVENTS``, by name)."""


def _site(site: Site | None) -> Site:
    assert site is not None
    return site


def _name(site: Site | None) -> str:
    return _site(site).value


# -- comparing -------------------------------------------------------------------------


def differences(
    expected: SystemState, got: SystemState, *, uncountable: bool = False
) -> list[str]:
    """Every field where the engine's mapped state differs from the model's.

    ``uncountable``: the engine's open loss report rolls back a resynchronisation's
    point, whose writes it cannot count (it carries blocks): its lower bound then
    stands for the model's figure, exact or not, if it is not higher."""
    found: list[str] = []
    for site in Site:
        want, have = expected.site(site), got.site(site)
        for name in ("up", "connected"):
            if getattr(want, name) != getattr(have, name):
                found.append(f"{site.value}.{name}: model {getattr(want, name)}, "
                             f"engine {getattr(have, name)}")  # fmt: skip
        if want.up and want.storage_full != have.storage_full:
            found.append(f"{site.value}.storage_full: model {want.storage_full}, "
                         f"engine {have.storage_full}")  # fmt: skip
    if expected.link_up != got.link_up:
        found.append(f"link_up: model {expected.link_up}, engine {got.link_up}")
    want_vm = _comparable(expected.vms[0])
    have_vm = _comparable(got.vms[0])
    want_loss, have_loss = want_vm.last_failover, have_vm.last_failover
    if (
        want_loss is not None
        and have_loss is not None
        and uncountable
        and not have_loss.reported_exact
        and have_loss.reported_writes <= want_loss.reported_writes
    ):
        # Rolling back a resynchronisation's point (the harness knows which points
        # those are), the engine cannot count its writes (blocks, not writes): its
        # lower bound stands for the model's figure if it is not higher.
        loss = replace(
            have_loss,
            reported_writes=want_loss.reported_writes,
            reported_exact=want_loss.reported_exact,
        )
        have_vm = replace(have_vm, last_failover=loss)
    for name in VmState.__slots__:
        if name in ("closed_report", "frozen_other"):
            continue
        want, have = getattr(want_vm, name), getattr(have_vm, name)
        if want != have:
            found.append(f"vm.{name}: model {want}, engine {have}")
    return found


def _comparable(vm: VmState) -> VmState:
    """``vm`` without what the engine cannot hold (ghosts) or show exactly."""
    other = vm.other
    fuzzy = vm.phase is Phase.INITIAL_REPLICATION or (
        vm.phase is Phase.RESYNCHRONIZING and not vm.other_trusted and not vm.points
    )
    if fuzzy and other is not None:
        # An initial copy is fuzzy until it completes consistently (or is
        # resynchronised): only its existence is compared.
        other = Copy()
    record = vm.last_failover
    if record is not None:
        # Whether the old source's logs can count is a fact of that site, known to
        # the engine only once it could ask; the closed figure compares its effect.
        record = replace(record, logs_tell=True)
    points = tuple(replace(point, quiesced=False) for point in vm.points)  # a ghost
    return replace(
        vm, other=other, points=points, frozen_other=None, last_failover=record
    )


#: Phases whose points the engine does not show (deleted, unusable), or may keep past
#: retention (a drill pins its point).
_NO_POINTS: Final = frozenset(
    {
        Phase.UNPROTECTED,
        Phase.COMMITTED,
        Phase.REPLICATION_STOPPED,
        Phase.TEST_FAILOVER,
    }
)


# -- the machine -----------------------------------------------------------------------


@dataclass
class Coverage:
    """What conformance runs did: lifecycle edges, operations, refusals, events."""

    edges: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    steps: int = 0
    prefix_steps: int = 0
    replies_lost: int = 0  # cycles the target committed whose reply never came


def machine_class(
    config: ModelConfig = CONFIG,
    rules: Rules = RULES,
    *,
    pool: tuple[tuple[tuple[Step, ...], ...], ...] | None = None,
    coverage: Coverage | None = None,
    refusal_share: float = 0.15,
    label: str = "engine",
) -> type[RuleBasedStateMachine]:
    """A state machine holding the engine to the model (see the module essay);
    ``label`` (``engine``, or the planted engine mutant's name) keys its examples
    in an example database, as ``invariants.fuzz.machine_class`` does."""
    starts = pool if pool is not None else start_pool(config, rules)
    seen = coverage if coverage is not None else Coverage()
    operations = tuple(OPERATIONS)

    class ConformanceMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.world = World()
            self.state = initial_state(config)
            self.steps: list[Step] = []
            self.calls: list[Call] = []
            self.in_prefix = False

        def teardown(self) -> None:
            seen.replies_lost += self.world.replies_lost
            self.world.close()

        def run(self, step: Step) -> None:
            self.steps.append(step)
            try:
                conform(
                    config, self.world, self.state, step, rules,
                    on_taken=self._taken, on_refused=self._refused,
                )  # fmt: skip
            except ConformanceFailure as failure:
                calls = [*self.calls, *failure.calls]
                raise ConformanceFailure(str(failure), self.steps, calls) from failure

        def _taken(self, taken: list[tuple[Call, SystemState]]) -> None:
            before = self.state
            for call, after in taken:
                self.calls.append(call)
                if rules.actions[call.action].trigger is not None:
                    seen.edges[
                        (
                            call.action,
                            before.vms[0].phase.value,
                            after.vms[0].phase.value,
                        )
                    ] += 1
                before = after
            self.state = taken[-1][1]
            if self.in_prefix:
                seen.prefix_steps += 1
            else:
                seen.steps += 1
            seen.operations[self.steps[-1].operation] += 1

        def _refused(self, step: Step) -> None:
            self.calls.append(step.call)  # a refusal is a step of the trace too
            seen.refusals[step.operation] += 1

        def fail(self, message: str) -> None:
            raise ConformanceFailure(message, self.steps, self.calls)

        def start_over(self, coarse: int, data: st.DataObject) -> None:
            seen.replies_lost += self.world.replies_lost
            self.world.close()
            self.world = World()
            self.state = initial_state(config)
            self.steps, self.calls = [], []
            group = starts[coarse]
            path = group[data.draw(st.integers(0, len(group) - 1), label="start")]
            self.in_prefix = True
            try:
                for step in path:
                    self.run(step)
            finally:
                self.in_prefix = False

        @initialize(coarse=st.integers(0, len(starts) - 1), data=st.data())
        def start_from_a_reachable_state(
            self, coarse: int, data: st.DataObject
        ) -> None:
            self.start_over(coarse, data)

        @rule(data=st.data())
        def step(self, data: st.DataObject) -> None:
            allowed = steps_enabled(config, self.state, rules)
            refuse = data.draw(st.floats(0, 1), label="refusal?") < refusal_share
            if refuse or not allowed:
                operation = data.draw(st.sampled_from(operations), label="operation")
                candidate = Step(operation, head_call(operation, self.state))
                if _refused(config, self.state, candidate, rules):
                    self.run(candidate)
                    return
            if allowed:
                self.run(data.draw(st.sampled_from(allowed), label="step"))

    ConformanceMachine.__name__ = ConformanceMachine.__qualname__ = "ConformanceMachine"
    key_examples(ConformanceMachine, label, config)
    return ConformanceMachine


def _refused(config: ModelConfig, state: SystemState, step: Step, rules: Rules) -> bool:
    try:
        chain(config, state, step, rules)
    except ActionRefused:
        return True
    return False


def conform(
    config: ModelConfig,
    world: World,
    state: SystemState,
    step: Step,
    rules: Rules = RULES,
    *,
    on_taken: Callable[[list[tuple[Call, SystemState]]], None] | None = None,
    on_refused: Callable[[Step], None] | None = None,
) -> SystemState:
    """Take ``step`` on the model and the engine; raise ConformanceFailure (without
    the trace: the caller's) when they disagree. Returns the model's new state."""
    try:
        taken = chain(config, state, step, rules)
    except ActionRefused as refusal:
        try:
            _expect_refusal(config, world, state, step, refusal)
        except ConformanceFailure as failure:
            # The refused call is the trace's last step: replaying it must fail too.
            raise ConformanceFailure(str(failure), (step,), [step.call]) from None
        if on_refused is not None:
            on_refused(step)
        return state
    error: BaseException | None = None
    newest = world.newest_point_id()
    try:
        realise(world, step, state)
    except ReplicationError as raised:
        error = raised
    except Exception as raised:
        msg = f"{step}: the engine raised {type(raised).__name__}: {raised}"
        raise ConformanceFailure(msg, (step,), ()) from raised
    after = taken[-1][1]
    if any(call.action == "complete_resynchronization" for call, _ in taken):
        world.note_resync_point(after_point=newest)
    try:
        _compare(config, world, after, step, error)
        _compare_closed(world, [state for _, state in taken], step)
    except ConformanceFailure as failure:
        raise ConformanceFailure(str(failure), (step,), [c for c, _ in taken]) from None
    if on_taken is not None:
        on_taken(taken)
    return after


def _expect_refusal(
    config: ModelConfig,
    world: World,
    state: SystemState,
    step: Step,
    refusal: ActionRefused,
) -> None:
    before = world.fingerprint()
    try:
        realise(world, step, state)
    except TransitionNotAllowed as refused:
        reason = str(refusal).split(": ", 1)[-1].split("; allowed now", 1)[0]
        named = refusal.guard == "choice" and step.call.action in str(refused)
        if reason not in str(refused) and not world.blind and not named:
            msg = f"{step}: the engine refused with {refused!r}, the model with "
            msg += f"{str(refusal)!r}"
            raise ConformanceFailure(msg, (step,), ()) from refused
    except Exception as other:
        msg = f"{step}: the model refuses ({refusal}); the engine raised "
        msg += f"{type(other).__name__} instead of TransitionNotAllowed: {other}"
        raise ConformanceFailure(msg, (step,), ()) from other
    else:
        msg = f"{step}: the model refuses ({refusal}) but the engine did it"
        raise ConformanceFailure(msg, (step,), ())
    changed = world.changed_since(before)
    if changed:
        msg = f"{step}: refused, yet the engine changed {', '.join(changed)}"
        raise ConformanceFailure(msg, (step,), ())
    _compare(config, world, state, step, None)


def _compare(
    config: ModelConfig,
    world: World,
    expected: SystemState,
    step: Step,
    error: BaseException | None,
) -> None:
    try:
        got = world.abstract()
    except MappingError as unmapped:
        msg = f"after {step}: the engine's state cannot be read as the model's: "
        msg += str(unmapped)
        raise ConformanceFailure(msg, (step,), ()) from None
    found = differences(expected, got, uncountable=world.loss_uncountable)
    vm = expected.vms[0]
    if not world.blind:
        status = world.engine.status(VM)
        store = vm.active if vm.phase is Phase.FAILED_OVER else vm.active.other
        kept = len(status.recovery_points)
        counted = vm.phase not in _NO_POINTS and world.engine.sites.up(store.value)
        if counted and kept != len(vm.points):
            found.append(f"recovery points kept: model {len(vm.points)}, engine {kept}")
        want_health = health(expected, vm).value
        if status.health != want_health:
            found.append(f"health: model {want_health}, engine {status.health}")
        if status.protected != is_protected(vm):
            found.append(
                f"protected: model {is_protected(vm)}, engine {status.protected}"
            )
    for failed in catalogue.failing(config, _with_ghosts(got, expected)):
        found.append(f"property {failed.name} fails on the engine's state")
    if found:
        raised = "" if error is None else f" (the engine raised: {error})"
        msg = f"after {step}{raised}:\n  " + "\n  ".join(found)
        raise ConformanceFailure(msg, (step,), ())


def _compare_closed(world: World, states: list[SystemState], step: Step) -> None:
    """When the step closed the failover's loss record, the engine's final report
    must say what the model's does: abandoned, or the reconciled figure."""
    closed = next(
        (s.vms[0].closed_report for s in states if s.vms[0].closed_report), None
    )
    if closed is None or world.blind:
        return
    report = world.engine.status(VM).loss
    found: list[str] = []
    if report is None:
        found.append(f"closed loss report: model {closed}, engine none")
    elif report.abandoned != closed.abandoned:
        found.append(f"loss abandoned: model {closed.abandoned}, engine "
                     f"{report.abandoned}")  # fmt: skip
    elif closed.reconciled_writes is None and not closed.abandoned:
        # The old source's logs could not count: the engine closes with its bound.
        if report.exact or report.writes_lost_at_least != closed.reported_writes:
            figure = report.writes_lost if report.exact else report.writes_lost_at_least
            said = "exactly" if report.exact else "at least"
            found.append(f"closed loss: model at least {closed.reported_writes} (its "
                         f"logs cannot count), engine {said} {figure}")  # fmt: skip
    elif closed.reconciled_writes is not None and not closed.abandoned:
        want = closed.reconciled_writes
        if report.exact and report.writes_lost != want:
            found.append(f"reconciled loss: model {want}, engine {report.writes_lost}")
        elif not report.exact and not (
            world.loss_uncountable and report.writes_lost_at_least <= want
        ):
            found.append(f"reconciled loss: model exactly {want}, engine at least "
                         f"{report.writes_lost_at_least}")  # fmt: skip
    if found:
        msg = f"after {step}:\n  " + "\n  ".join(found)
        raise ConformanceFailure(msg, (step,), ())


def _with_ghosts(got: SystemState, expected: SystemState) -> SystemState:
    """The engine's state with the model's ghosts and budget (what the properties
    read that no engine holds: the cancelled replica, whether each point's guest
    was quiesced)."""
    have, want = got.vms[0], expected.vms[0]
    points = have.points
    if len(points) == len(want.points):  # else the comparison has already failed
        points = tuple(
            replace(point, quiesced=model_point.quiesced)
            for point, model_point in zip(points, want.points, strict=True)
        )
    vm = replace(have, frozen_other=want.frozen_other, points=points)
    return replace(got, vms=(vm,), faults_left=expected.faults_left)


# -- running ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConformanceReport:
    """What a conformance run did, and its failure (None: the engine conformed)."""

    examples: int
    seconds: float
    coverage: Coverage
    failure: ConformanceFailure | None


def fuzz_engine(
    *,
    examples: int = 50,
    steps: int = 20,
    seed_value: int = 0,
    rules: Rules = RULES,
    config: ModelConfig = CONFIG,
    timeout_seconds: float | None = None,
    batch: int = 25,
    shrink: bool = True,
    progress: Callable[[int, Coverage], None] | None = None,
    stop: StopRequest | None = None,
    database: ExampleDatabase | None = None,
    label: str = "engine",
) -> ConformanceReport:
    """Run ``examples`` conformance examples of up to ``steps`` steps each;
    ``shrink=False`` reports the first failing example as found (faster); a
    ``stop`` asked (Ctrl-C) ends the run after the batch it is in; a ``database``
    keeps the failures and replays them first (``label``: ``machine_class``)."""
    started = time.perf_counter()
    coverage = Coverage()
    pool = start_pool(config, rules)
    machine = machine_class(config, rules, pool=pool, coverage=coverage, label=label)

    def after_batch(done: int) -> None:
        if progress is not None:
            progress(done, coverage)

    ran = run_in_batches(
        machine, ConformanceFailure, examples=examples, steps=steps,
        seed_value=seed_value, timeout_seconds=timeout_seconds, batch=batch,
        shrink=shrink, started=started, after_batch=after_batch, stop=stop,
        database=database,
        derandomize=False,  # the seed decides, whatever profile is loaded
    )  # fmt: skip
    seconds = time.perf_counter() - started
    return ConformanceReport(ran.done, seconds, coverage, ran.caught)


def replay_on_engine(
    calls: Iterable[Call], config: ModelConfig = CONFIG, rules: Rules = RULES
) -> tuple[int, ConformanceFailure | None]:
    """Replay a model trace on a fresh engine, checking every step; returns the steps
    replayed and the failure (None: the engine followed the model throughout).

    Model calls are grouped back into engine operations: a call that starts one takes
    the follow-ups the engine would take; a trace that waits where the engine does
    not (a failover left incomplete while it could complete) cannot be replayed and
    says so."""
    pending = list(calls)
    if not pending:
        msg = "the trace has no steps: nothing to replay"
        raise TraceError(msg)
    world = World()
    state = initial_state(config)
    steps: list[Step] = []
    done: list[Call] = []
    try:
        while pending:
            call = pending[0]
            step = _step_for(call, state)
            steps.append(step)
            number = len(done) + 1
            try:
                taken = chain(config, state, step, rules)
            except ActionRefused as refusal:
                _check_replayable(number, call, refusal)
                # A refusal in the trace: the engine must refuse it too, and change
                # nothing (conform checks both).
                try:
                    conform(config, world, state, step, rules)
                except ConformanceFailure as failure:
                    done.append(call)
                    return len(done), ConformanceFailure(str(failure), steps, done)
                done.append(call)
                del pending[0]
                continue
            except ModelError as error:
                msg = f"step {number}: {call} is not a call of this model: {error}"
                raise TraceError(msg) from error
            expected = [c for c, _ in taken]
            if pending[: len(expected)] != expected:
                had = ", ".join(str(c) for c in pending[: len(expected)])
                msg = f"step {number}: the engine takes "
                msg += f"{', '.join(str(c) for c in expected)} as one operation; "
                msg += f"the trace has {had}"
                raise TraceError(msg)
            try:
                state = conform(config, world, state, step, rules)
            except ConformanceFailure as failure:
                done += expected
                return len(done), ConformanceFailure(str(failure), steps, done)
            done += expected
            del pending[: len(expected)]
        return len(done), None
    finally:
        world.close()


class TraceError(ValueError):
    """A trace the engine cannot replay: not a conformance failure, a bad input."""


def _check_replayable(number: int, call: Call, refusal: ActionRefused) -> None:
    """A refused operation is a step to check; a refused environment event, or
    arguments the model never offers, make the trace itself wrong."""
    if call.action in EVENTS:
        msg = f"step {number}: the environment event {call} cannot happen here "
        msg += f"({refusal}); a trace's events must be possible"
        raise TraceError(msg)
    if refusal.guard == "choice" and call.args:
        msg = f"step {number}: {call} has arguments the model never offers here "
        msg += f"({refusal})"
        raise TraceError(msg)


def _step_for(call: Call, state: SystemState) -> Step:
    """The engine operation a model call starts."""
    if call.action in EVENTS:
        return Step(call.action, call)
    for operation in OPERATIONS:
        if _head_action(operation, state) == call.action:
            return Step(operation, call)
    if call.action in {"copy_disk", "complete_initial_replication"}:
        return Step("continue_initial_replication", call)
    return Step(call.action, call)
