"""What a property is: a named predicate, its kind, and the message when it fails.

Three kinds, after Stateright and Hypothesis:

* ``ALWAYS``: a predicate over one ``SystemState`` that every reachable state
  satisfies (``check(config, state)``), or, for a rule a state cannot express, over
  one step ``(pre, call, post)`` (``STEP``). A step predicate reads the fresh
  post-state, before any deduplication, so it sees the step's observations
  (``VmState.closed_report``).
* ``SOMETIMES``: a witness that must be reachable (every phase, a lossy failover,
  two copies running ...). It proves the model is not vacuous: an invariant over
  states the model never reaches checks nothing.
* ``EVENTUALLY``: recoverability, checked by the explorer on the whole graph (a
  backward search from the goal states); it has no per-state predicate here.

Every predicate quantifies over all the VMs of the state it gets, and reads one VM
together with the sites, the link and the budget only, never another VM. The
explorer relies on that: it checks each (environment, VM) pair once, on a one-VM
projection of the state, which is what makes checking nearly free. A property that
needs two VMs at once must say so (``per_vm=False``).

Every property declares the state fields it reads (``reads``, names of
``invariants.fields.FIELDS``: ``vm.phase``, ``site.up``, ``link_up`` ...), so a
counterexample can say what the failed property looked at; a test changes the
fields a property does not declare and checks that its verdict stays the same.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from invariants.fields import FIELDS
from model import Call, ModelConfig, SystemState

StatePredicate = Callable[[ModelConfig, SystemState], bool]
StepPredicate = Callable[[ModelConfig, SystemState, Call, SystemState], bool]


class Kind(enum.Enum):
    """When a property must hold."""

    ALWAYS = "always"
    STEP = "step"
    SOMETIMES = "sometimes"
    EVENTUALLY = "eventually"


@dataclass(frozen=True)
class Invariant:
    """A named property: ``state`` for ALWAYS/SOMETIMES, ``step`` for STEP.

    ``message`` is the one-line violation (or, for SOMETIMES, the never-reached)
    message; the docstring of the predicate gives the rule, the disaster it
    prevents and where it applies. ``reads`` names the state fields the predicate
    reads (of the state, or of the states before and after a step), besides the
    configuration and, for a step, the call.
    """

    name: str
    kind: Kind
    message: str
    state: StatePredicate | None = None
    step: StepPredicate | None = None
    per_vm: bool = True
    description: str = ""  # the docstring of a property with no predicate
    reads: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        wants_state = self.kind in (Kind.ALWAYS, Kind.SOMETIMES)
        wants_step = self.kind is Kind.STEP
        assert (self.state is not None) == wants_state, self.name
        assert (self.step is not None) == wants_step, self.name
        assert self.reads, f"{self.name}: declare the fields it reads"
        unknown = sorted(self.reads - set(FIELDS))
        assert not unknown, f"{self.name} reads unknown fields {unknown}"

    @property
    def doc(self) -> str:
        """The predicate's docstring: rule, disaster, where it applies."""
        check = self.state if self.state is not None else self.step
        if check is None:
            return self.description.strip()
        return (check.__doc__ or "").strip()


def always(
    message: str, *, reads: Iterable[str]
) -> Callable[[StatePredicate], Invariant]:
    """Declare a state predicate as an ALWAYS invariant named after the function."""

    def wrap(check: StatePredicate) -> Invariant:
        return Invariant(
            check.__name__, Kind.ALWAYS, message, state=check, reads=frozenset(reads)
        )

    return wrap


def step(message: str, *, reads: Iterable[str]) -> Callable[[StepPredicate], Invariant]:
    """Declare a step predicate as a STEP invariant named after the function."""

    def wrap(check: StepPredicate) -> Invariant:
        return Invariant(
            check.__name__, Kind.STEP, message, step=check, reads=frozenset(reads)
        )

    return wrap


def sometimes(
    message: str, *, reads: Iterable[str]
) -> Callable[[StatePredicate], Invariant]:
    """Declare a state predicate as a SOMETIMES witness named after the function."""

    def wrap(check: StatePredicate) -> Invariant:
        return Invariant(
            check.__name__, Kind.SOMETIMES, message, state=check, reads=frozenset(reads)
        )

    return wrap


@dataclass(frozen=True)
class Violation:
    """An invariant that failed, with the calls that lead from the initial state."""

    invariant: Invariant
    trace: tuple[Call, ...]
    detail: str = ""

    def __str__(self) -> str:
        path = " → ".join(str(call) for call in self.trace) or "(initial state)"
        tail = f"; {self.detail}" if self.detail else ""
        return (
            f"invariant {self.invariant.name!r} violated after {path}: "
            f"{self.invariant.message}{tail}"
        )
