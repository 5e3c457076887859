"""The ``transitions`` state machine of one VM, built from ``LIFECYCLE``.

One ``PhaseMachine`` per protected VM: the engine's binding layer asks it before doing
anything, and the diagrams are drawn from it. It is built from the same table as the
pure successor function and never re-declares an edge: a row whose destination is
``Dest.STEADY`` becomes one transition per steady phase, each conditioned on the
direction (``primary_active`` / ``secondary_active``) unless it leaves a steady phase,
which keeps its direction; ``Dest.SAME`` becomes a
reflexive transition; the row's data guards become the transition's conditions.

Every option is spelled out at the call site: ``auto_transitions=False`` (otherwise
``to_<phase>()`` would make every phase reachable), ``ignore_invalid_triggers=False``
(an illegal trigger raises), ``send_event=True`` (conditions read the VM's data from the
event), ``initial=INITIAL_PHASE``. No callback does I/O: the machine only decides.

Triggers are called as ``machine.trigger(name, vm=..., config=...)`` so mypy sees every
call; the ``transitions`` cost (~15 us a trigger) is why the explorer uses the successor
function instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transitions import EventData, Machine, MachineError

from model.lifecycle import LIFECYCLE, Phase, possible_destinations
from model.lifecycle_guards import GUARDS
from model.state import ModelConfig, VmState

DIRECTION_GUARDS = {
    Phase.PROTECTED: "primary_active",
    Phase.REVERSE_REPLICATING: "secondary_active",
}


def transition_rows() -> list[dict[str, Any]]:
    """The ``transitions`` rows derived from ``LIFECYCLE`` (one per concrete edge)."""
    rows: list[dict[str, Any]] = []
    for edge in LIFECYCLE:
        for source in edge.sources:
            destinations = possible_destinations(edge, source)
            for dest in destinations:
                conditions = list(edge.guards)
                if len(destinations) > 1:
                    conditions.append(DIRECTION_GUARDS[dest])
                row: dict[str, Any] = {
                    "trigger": edge.trigger,
                    "source": source,
                    "dest": dest,
                }
                if conditions:
                    row["conditions"] = conditions
                rows.append(row)
    return rows


def _condition(name: str) -> Callable[[EventData], bool]:
    def check(event: EventData) -> bool:
        vm: VmState = event.kwargs["vm"]
        config: ModelConfig = event.kwargs["config"]
        if name == "primary_active":
            return vm.primary_active
        if name == "secondary_active":
            return not vm.primary_active
        return GUARDS[name](vm, config)

    check.__name__ = name
    return check


class PhaseHolder:
    """The model object ``transitions`` drives: it holds the phase, nothing else.

    Conditions are attributes named after the guards, so diagrams can show the names.
    """

    state: Phase

    def __init__(self) -> None:
        for name in (*GUARDS, *DIRECTION_GUARDS.values()):
            setattr(self, name, _condition(name))


MACHINE_OPTIONS: dict[str, Any] = {
    "states": list(Phase),
    "initial": Phase.UNPROTECTED,
    "auto_transitions": False,
    "ignore_invalid_triggers": False,
    "send_event": True,
    "model_attribute": "state",
}


class PhaseMachine:
    """The lifecycle machine of one VM; ``fire`` moves it, ``allows`` only asks."""

    def __init__(self, phase: Phase = Phase.UNPROTECTED) -> None:
        self.holder = PhaseHolder()
        self.machine = Machine(
            model=self.holder,
            transitions=transition_rows(),
            **{**MACHINE_OPTIONS, "initial": phase},
        )

    @property
    def phase(self) -> Phase:
        """The current phase."""
        return self.holder.state

    def allows(self, trigger: str, vm: VmState, config: ModelConfig) -> Phase | None:
        """Where ``trigger`` would lead with this data, or None; changes nothing."""
        event = self.machine.events.get(trigger)
        if event is None:
            return None
        for transition in event.transitions.get(self.phase.name, []):
            data = EventData(
                self.machine.get_state(self.phase), event, self.machine, self.holder,
                args=(), kwargs={"vm": vm, "config": config},
            )  # fmt: skip
            if all(cond.check(data) for cond in transition.conditions):
                return Phase[transition.dest] if transition.dest else self.phase
        return None

    def fire(self, trigger: str, vm: VmState, config: ModelConfig) -> Phase:
        """Take ``trigger``; raise ``MachineError`` when no edge allows it."""
        if trigger not in self.machine.events:
            msg = f"unknown trigger {trigger!r}"
            raise MachineError(msg)
        if not self.holder.trigger(trigger, vm=vm, config=config):  # type: ignore[attr-defined]
            msg = f"{trigger!r} from {self.phase.value}: conditions not met"
            raise MachineError(msg)
        return self.phase
