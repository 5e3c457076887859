"""The fuzzer's memo of the model's answers (``invariants.step_memo``): the same
answer as the model's own for every reachable state of a small configuration, each
computed once, and still right after it starts again from empty."""

from __future__ import annotations

from invariants import catalogue
from invariants.step_memo import StepMemo
from model import Call, ModelConfig, SystemState, enabled, try_apply
from model.successor import RULES

SMALL = ModelConfig(vm_count=1, fault_budget=1, write_lag_max=1)  # as in conftest


def _calls(state: SystemState) -> list[Call]:
    """Every enabled call, and one the model refuses (commit, in most phases)."""
    return [*enabled(SMALL, state), Call("commit", vm=0)]


def test_every_answer_is_the_models_and_is_computed_once(
    small_states: list[SystemState],
) -> None:
    memo = StepMemo(SMALL, RULES)
    computed = asked = 0
    for round_ in range(2):  # the second pass finds every answer kept
        for state in small_states:
            assert memo.enabled(state) == tuple(enabled(SMALL, state))
            assert memo.failing(state) == tuple(catalogue.failing(SMALL, state))
            for call in _calls(state):
                after = memo.after(state, call)
                assert after == try_apply(SMALL, state, call)
                if after is not None:
                    assert memo.failing_step(state, call, after) == tuple(
                        catalogue.failing_step(SMALL, state, call, after)
                    )
        if round_ == 0:
            computed, asked = memo.computed, memo.asked
    assert memo.computed == computed  # nothing computed twice
    assert memo.asked == 2 * asked
    assert computed > len(small_states)  # every state had answers to compute


def test_a_full_memo_starts_again_and_stays_right(
    small_states: list[SystemState],
) -> None:
    memo = StepMemo(SMALL, RULES, limit=3)
    for state in small_states[:50]:
        for call in _calls(state):
            assert memo.after(state, call) == try_apply(SMALL, state, call)
    assert all(
        len(table) <= 3 for table in vars(memo).values() if isinstance(table, dict)
    )


def test_with_limit_0_every_answer_is_computed_again(
    small_states: list[SystemState],
) -> None:
    """The HypoFuzz wrapper's memo: a second run of an input runs the same code."""
    memo = StepMemo(SMALL, RULES, limit=0)
    for _ in range(2):
        for state in small_states[:20]:
            memo.enabled(state)
            memo.failing(state)
    assert memo.computed == memo.asked == 80
