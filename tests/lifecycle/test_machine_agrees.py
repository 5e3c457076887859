"""The ``transitions`` machine and the pure successor function agree everywhere."""

from __future__ import annotations

import pytest
from transitions import MachineError

from model import (
    Call,
    ModelConfig,
    Phase,
    PhaseMachine,
    SystemState,
    UnknownCall,
    apply,
    enabled,
    initial_state,
)
from model.lifecycle import LIFECYCLE, TRIGGERS, possible_destinations, resolve
from model.machine import MACHINE_OPTIONS, transition_rows
from model.successor import Refusal, lifecycle_edge

SMALL = ModelConfig(vm_count=1, fault_budget=1, write_lag_max=1)  # as in conftest


def test_machine_and_successor_agree_on_every_reachable_phase_and_trigger(
    small_states: list[SystemState],
) -> None:
    """For every reachable VM state and trigger: same verdict, same destination."""
    machines = {phase: PhaseMachine(phase) for phase in Phase}
    allowed: set[tuple[Phase, str, Phase]] = set()
    for state in small_states:
        vm = state.vms[0]
        for trigger in TRIGGERS:
            edge = lifecycle_edge(SMALL, state, 0, trigger)
            expected = (
                None
                if isinstance(edge, Refusal)
                else resolve(edge, vm.phase, primary_active=vm.primary_active)
            )
            assert machines[vm.phase].allows(trigger, vm, SMALL) == expected
            if expected is not None:
                allowed.add((vm.phase, trigger, expected))
    # Agreeing is only worth something where both allow: every row of the table is
    # allowed by both somewhere (two sides that refused a row alike would agree).
    rows = {
        (source, edge.trigger, dest)
        for edge in LIFECYCLE
        for source in edge.sources
        for dest in possible_destinations(edge, source)
    }
    assert allowed == rows


def test_firing_the_machine_moves_it_like_the_model(
    small_states: list[SystemState],
) -> None:
    """Firing each enabled VM call's trigger lands the machine on the model's phase."""
    for state in small_states[:400]:
        for call in enabled(SMALL, state):
            if call.vm is None or call.action not in TRIGGERS:
                continue
            machine = PhaseMachine(state.vms[0].phase)
            after = apply(SMALL, state, call)
            assert machine.fire(call.action, state.vms[0], SMALL) is after.vms[0].phase


def test_an_illegal_trigger_raises_in_the_machine() -> None:
    """``ignore_invalid_triggers=False``: commit from unprotected raises."""
    machine = PhaseMachine()
    vm = initial_state(SMALL).vms[0]
    with pytest.raises(MachineError):
        machine.fire("commit", vm, SMALL)
    assert machine.phase is Phase.UNPROTECTED


def test_no_auto_transitions() -> None:
    """``to_<phase>`` helpers would make every phase reachable: they must not exist."""
    machine = PhaseMachine()
    assert MACHINE_OPTIONS["auto_transitions"] is False
    assert not hasattr(machine.holder, "to_committed")
    assert {row["trigger"] for row in transition_rows()} == set(TRIGGERS)


def test_unknown_trigger_is_refused_by_the_model() -> None:
    """A call naming no action gets the list of actions."""
    with pytest.raises(UnknownCall, match="unknown action 'teleport'"):
        apply(SMALL, initial_state(SMALL), Call("teleport", vm=0))
