"""The lifecycle table: its load-time checks, and every row taken and refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from model import ActionRefused, Call, ModelConfig, Phase, SystemState, apply, enabled
from model.lifecycle import (
    COMPLEMENTARY_GUARDS,
    LIFECYCLE,
    STEADY,
    Dest,
    Edge,
    LifecycleError,
    check_lifecycle,
    possible_destinations,
    sources_of,
)
from model.lifecycle_guards import GUARD_HINTS, GUARDS, PHASE_GUARD_HINTS
from model.successor import lifecycle_edge

SMALL = ModelConfig(vm_count=1, fault_budget=1, write_lag_max=1)  # as in conftest

ROWS = [
    (edge, source, dest)
    for edge in LIFECYCLE
    for source in edge.sources
    for dest in possible_destinations(edge, source)
]


def _row_id(row: tuple[Edge, Phase, Phase]) -> str:
    edge, source, dest = row
    return f"{edge.trigger}:{source.value}->{dest.value}"


#: Loads ``model`` with one row dropped from ``model/lifecycle.py`` (the only way into
#: replication_stopped) and prints how the import ended.
BROKEN_IMPORT = """
import importlib.abc, importlib.util, re, sys
from pathlib import Path

PATH = Path("model", "lifecycle.py").resolve()


class DropOneRow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name != "model.lifecycle":
            return None
        return importlib.util.spec_from_loader(name, self, origin=str(PATH))

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        source, dropped = re.subn(
            r'^ *Edge\\("cancel_failover",.*$', "", PATH.read_text(), flags=re.M
        )
        assert dropped == 1, dropped
        exec(compile(source, str(PATH), "exec"), module.__dict__)


sys.meta_path.insert(0, DropOneRow())
try:
    import model
except Exception as error:
    print(type(error).__name__, error)
else:
    print("imported")
"""


def test_a_malformed_table_fails_the_import() -> None:
    """The table is checked when ``model`` is imported: a row dropped from the source
    makes the import itself fail, naming the phase left unreachable."""
    root = Path(__file__).resolve().parents[2]
    child = subprocess.run(
        [sys.executable, "-c", BROKEN_IMPORT],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert child.stderr == ""
    assert child.stdout.startswith("LifecycleError lifecycle table is malformed: ")
    assert "replication_stopped" in child.stdout


def test_an_unknown_guard_is_reported() -> None:
    """A row naming a guard that does not exist is refused at load."""
    table = (*LIFECYCLE, Edge("pause", (Phase.PROTECTED,), Phase.PROTECTED, ("bogus",)))
    with pytest.raises(LifecycleError, match="unknown guard 'bogus'"):
        check_lifecycle(GUARDS, table)


def test_two_unguarded_rows_for_one_pair_are_reported() -> None:
    """Two unguarded edges for the same (source, trigger) are ambiguous."""
    table = (*LIFECYCLE, Edge("pause", (Phase.PROTECTED,), Phase.UNPROTECTED))
    with pytest.raises(LifecycleError, match="'pause' from protected"):
        check_lifecycle(GUARDS, table)


def test_an_unreachable_phase_is_reported() -> None:
    """Dropping the only way into a phase makes it unreachable: reported."""
    table = tuple(edge for edge in LIFECYCLE if edge.trigger != "cancel_failover")
    with pytest.raises(LifecycleError, match="replication_stopped"):
        check_lifecycle(GUARDS, table)


def test_every_guard_has_a_hint() -> None:
    """Every edge guard explains itself in refusals."""
    assert set(GUARDS) == set(GUARD_HINTS)


def test_steady_rows_are_declared_once() -> None:
    """No row lists one steady phase without the other: direction is resolved."""
    for edge in LIFECYCLE:
        steady_sources = set(edge.sources) & set(STEADY)
        assert steady_sources in (set(), set(STEADY)), edge.trigger


@pytest.mark.parametrize("row", ROWS, ids=[_row_id(row) for row in ROWS])
def test_every_row_is_taken(
    row: tuple[Edge, Phase, Phase], small_states: list[SystemState]
) -> None:
    """Some reachable state takes the row: the model lands where the table says."""
    edge, source, dest = row
    for state in small_states:
        vm = state.vms[0]
        if vm.phase is not source:
            continue
        if lifecycle_edge(SMALL, state, 0, edge.trigger) != edge:
            continue
        for call in enabled(SMALL, state):
            if call.action != edge.trigger:
                continue
            after = apply(SMALL, state, call)
            if after.vms[0].phase is dest:
                return
    pytest.fail(f"no reachable state takes {_row_id(row)}")


ILLEGAL = [
    (trigger, phase)
    for trigger in dict.fromkeys(edge.trigger for edge in LIFECYCLE)
    for phase in Phase
    if phase not in sources_of(trigger)
]


@pytest.mark.parametrize(
    ("trigger", "phase"), ILLEGAL, ids=[f"{t}@{p.value}" for t, p in ILLEGAL]
)
def test_every_trigger_is_refused_outside_its_phases(
    trigger: str, phase: Phase, small_states: list[SystemState]
) -> None:
    """From a phase the table does not list, the refusal names the phases allowed."""
    state = next(s for s in small_states if s.vms[0].phase is phase)
    with pytest.raises(ActionRefused) as refused:
        apply(SMALL, state, Call(trigger, vm=0))
    allowed = ", ".join(p.value for p in sources_of(trigger))
    assert refused.value.guard == "phase"
    assert (
        f"cannot {trigger} VM 'vm0' in phase {phase.value}: "
        f"{trigger} is allowed only from: {allowed}"
    ) in str(refused.value)
    assert "allowed now:" in str(refused.value)


def test_a_refusal_lists_the_workload_and_faults_apart_from_what_is_allowed(
    small_states: list[SystemState],
) -> None:
    """An operator told "allowed now: ..., overflow_log, damage_log" would read a
    fault as something to ask for: in every protected state, commit's refusal
    lists the environment's enabled actions apart, and every enabled action of the
    VM is in one list or the other."""
    world = {"write", "write_stale_copy", "write_test_vm", "overflow_log", "damage_log"}
    seen: set[str] = set()
    for state in small_states:
        if state.vms[0].phase is not Phase.PROTECTED:
            continue
        with pytest.raises(ActionRefused) as refused:
            apply(SMALL, state, Call("commit", vm=0))
        names = {c.action for c in enabled(SMALL, state) if c.vm == 0}
        assert set(refused.value.world) == names & world
        assert set(refused.value.allowed) == names - world
        seen |= set(refused.value.world)
        message = str(refused.value)
        said = message.split("allowed now: ")[1]
        if refused.value.world:
            assert said == (
                f"{', '.join(refused.value.allowed)}; the workload and faults may: "
                f"{', '.join(refused.value.world)}"
            )
        else:
            assert said == ", ".join(refused.value.allowed)
    assert seen == {"write", "overflow_log", "damage_log"}


GUARDED = [
    (edge, source) for edge in LIFECYCLE if edge.guards for source in edge.sources
]

#: Each guard's complement, from the table's own pairs (exactly one of a pair holds).
COMPLEMENT = {
    **dict(COMPLEMENTARY_GUARDS),
    **{second: first for first, second in COMPLEMENTARY_GUARDS},
}


#: (guards, phase) that no reachable state falsifies, with the decision that says so.
NEVER_FALSE = {
    (("recovery_point_exists",), phase)
    for phase in (Phase.PROTECTED, Phase.REVERSE_REPLICATING, Phase.REPLICATION_PAUSED)
}


def _siblings(edge: Edge, source: Phase) -> list[Edge]:
    """The other rows of ``edge``'s trigger from ``source``."""
    return [
        other
        for other in LIFECYCLE
        if other.trigger == edge.trigger and source in other.sources and other != edge
    ]


def _holds(edge: Edge, state: SystemState) -> bool:
    return all(GUARDS[guard](state.vms[0], SMALL) for guard in edge.guards)


@pytest.mark.parametrize(
    ("edge", "source"),
    GUARDED,
    ids=[f"{e.trigger}[{','.join(e.guards)}]@{s.value}" for e, s in GUARDED],
)
def test_every_guarded_row_is_refused_when_its_guard_fails(
    edge: Edge, source: Phase, small_states: list[SystemState]
) -> None:
    """In the row's phase with its guard false, the row is never taken: the call is
    refused naming the guard, or, where the table has a complementary row, that row
    is taken and the VM lands where it says (never where this row would)."""
    falsified = [
        state
        for state in small_states
        if state.vms[0].phase is source and not _holds(edge, state)
    ]
    if (edge.guards, source) in NEVER_FALSE:
        # The guard cannot fail in this phase: decision 15 makes every VM shown
        # protected hold a recovery point (``protected_vm_has_a_recovery_point``).
        assert falsified == []
        assert any(state.vms[0].phase is source for state in small_states)
        return
    assert falsified != [], f"no reachable state falsifies {edge.guards} in {source}"
    own = set(possible_destinations(edge, source))
    landings: list[Phase] = []  # where the sibling rows took the VM
    sibling_taken = False
    for state in falsified:
        taken = [other for other in _siblings(edge, source) if _holds(other, state)]
        calls = [c for c in enabled(SMALL, state) if c.action == edge.trigger]
        if not taken:
            with pytest.raises(ActionRefused) as refused:
                apply(SMALL, state, Call(edge.trigger, vm=0))
            guard = refused.value.guard
            assert guard in edge.guards
            assert not GUARDS[guard](state.vms[0], SMALL)
            # A guard whose complement guards a sibling row is never the reason: that
            # row is the way on (the complement holds whenever the guard fails).
            ways_on = [
                other
                for other in _siblings(edge, source)
                if COMPLEMENT.get(guard) in other.guards
            ]
            assert ways_on == [], (guard, state.vms[0])
            hint = PHASE_GUARD_HINTS.get((source, guard))
            assert (hint or GUARD_HINTS[guard]) in str(refused.value)
            assert calls == []
            continue
        assert len(taken) == 1, taken
        (sibling,) = taken
        sibling_taken = True
        landed = {apply(SMALL, state, call).vms[0].phase for call in calls}
        assert landed <= set(possible_destinations(sibling, source)), (sibling, landed)
        assert landed.isdisjoint(own), (edge, landed)
        landings += landed
    # Where a sibling row is the way on, some state also had the call enabled.
    assert landings != [] or not sibling_taken


def test_dest_same_rows_stay_put() -> None:
    """Rows landing on ``Dest.SAME`` resolve to their source phase."""
    for edge in LIFECYCLE:
        if edge.dest is Dest.SAME:
            for source in edge.sources:
                assert possible_destinations(edge, source) == (source,)


def test_the_graph_has_every_phase_reachable_and_a_way_back_to_steady() -> None:
    """On the networkx graph: all phases reachable; from each, a steady phase is."""
    import networkx as nx

    from model.lifecycle import INITIAL_PHASE
    from model.lifecycle_graph import (
        lifecycle_graph,
        phases_that_cannot_reach_a_steady_phase,
    )

    graph = lifecycle_graph()
    assert nx.descendants(graph, INITIAL_PHASE) | {INITIAL_PHASE} == set(Phase)
    assert phases_that_cannot_reach_a_steady_phase() == set()
    assert graph.number_of_edges() == len(ROWS)
