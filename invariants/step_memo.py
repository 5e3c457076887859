"""The model's answers to one fuzzing run, asked once each.

Half the steps a fuzzing run takes replay a starting path from the pool
(``invariants.fuzz``): the same states, the same calls, the same verdicts, example after
example. The model is pure and a run's configuration and rules are fixed, so each
answer (the next state, the calls enabled, the properties a state or a step fails) is
kept the first time it is asked and reused after. The memo is bounded: past
``LIMIT`` answers of a kind it starts again from empty, so a long campaign's memory
stays flat. It changes no verdict, only how often one is computed
(``tests/stateful/test_step_memo.py``).

Not under HypoFuzz: a coverage-guided fuzzer keeps a behaviour only when a second run
of its input reaches the same code, and a memo's second run reaches less; the
HypoFuzz wrapper (``invariants.fuzz.example_test``) asks the model every time
(``limit`` 0).
"""

from __future__ import annotations

from typing import Final, TypeVar

from invariants import catalogue
from invariants.kinds import Invariant
from model import Call, ModelConfig, SystemState
from model.successor import Rules, enabled, try_apply

LIMIT: Final = 200_000
"""Answers kept of each kind before the memo starts again."""

_REFUSED: Final = object()  # try_apply's None, told apart from "not asked yet"

K = TypeVar("K")
V = TypeVar("V")


class StepMemo:
    """Memoised ``try_apply``, ``enabled``, ``catalogue.failing`` and
    ``catalogue.failing_step`` for one configuration under one set of rules."""

    def __init__(self, config: ModelConfig, rules: Rules, limit: int = LIMIT) -> None:
        self._config = config
        self._rules = rules
        self._limit = limit
        self._after: dict[tuple[SystemState, Call], object] = {}
        self._enabled: dict[SystemState, tuple[Call, ...]] = {}
        self._failing: dict[SystemState, tuple[Invariant, ...]] = {}
        self._failing_step: dict[tuple[SystemState, Call], tuple[Invariant, ...]] = {}
        self.asked = 0  # answers looked up
        self.computed = 0  # of them, those computed (not found)

    def after(self, state: SystemState, call: Call) -> SystemState | None:
        """The state after ``call`` (None: the model refuses it)."""
        self.asked += 1
        found = self._after.get((state, call))
        if found is None:
            self.computed += 1
            after = try_apply(self._config, state, call, self._rules)
            found = _REFUSED if after is None else after
            _keep(self._limit, self._after, (state, call), found)
        return None if found is _REFUSED else found  # type: ignore[return-value]

    def enabled(self, state: SystemState) -> tuple[Call, ...]:
        """Every call the model allows in ``state``."""
        self.asked += 1
        found = self._enabled.get(state)
        if found is None:
            self.computed += 1
            found = tuple(enabled(self._config, state, self._rules))
            _keep(self._limit, self._enabled, state, found)
        return found

    def failing(self, state: SystemState) -> tuple[Invariant, ...]:
        """The ALWAYS properties ``state`` violates."""
        self.asked += 1
        found = self._failing.get(state)
        if found is None:
            self.computed += 1
            found = tuple(catalogue.failing(self._config, state))
            _keep(self._limit, self._failing, state, found)
        return found

    def failing_step(
        self, state: SystemState, call: Call, after: SystemState
    ) -> tuple[Invariant, ...]:
        """The STEP properties the step ``state --call--> after`` violates (``after``
        is the memo's own answer for ``(state, call)``)."""
        self.asked += 1
        found = self._failing_step.get((state, call))
        if found is None:
            self.computed += 1
            found = tuple(catalogue.failing_step(self._config, state, call, after))
            _keep(self._limit, self._failing_step, (state, call), found)
        return found


def _keep(limit: int, table: dict[K, V], key: K, value: V) -> None:
    """Keep ``value`` under ``key``; a table at ``limit`` starts again from empty
    (``limit`` 0: nothing is kept)."""
    if limit <= 0:
        return
    if len(table) >= limit:
        table.clear()
    table[key] = value
