"""The factored, memoised successor function equals the model's on whole states."""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import pytest

from invariants.configuration import DEFAULT_CONFIG
from invariants.projection import Projection
from model import ModelConfig, SystemState, initial_state, successors
from model.scenarios import TWO_VM_PLAN

TWO = ModelConfig(vm_count=2, fault_budget=1, write_lag_max=1)


def _first_states(config: ModelConfig, count: int) -> list[SystemState]:
    start = initial_state(config)
    seen = {start}
    order = [start]
    queue = deque([start])
    while queue and len(order) < count:
        for _, after in successors(config, queue.popleft()):
            if after not in seen:
                seen.add(after)
                order.append(after)
                queue.append(after)
    return order


@pytest.mark.parametrize("config", [TWO, TWO_VM_PLAN], ids=["two-vms", "with-plan"])
def test_projected_moves_equal_the_models_successors(config: ModelConfig) -> None:
    """On 1,500 reachable states, every (call, next state) pair agrees."""
    projection = Projection(config)
    for state in _first_states(config, 1500):
        expected = {
            (call, projection.encode(after))
            for call, after in successors(config, state)
        }
        assert set(projection.moves(projection.encode(state))) == expected


def test_successor_keys_are_the_canonical_moves() -> None:
    """The hot path yields the canonical keys of exactly the moves."""
    projection = Projection(TWO)
    for state in _first_states(TWO, 500):
        key = projection.canonical(projection.encode(state))
        moved = sorted(
            projection.canonical(after) for _, after in projection.moves(key)
        )
        assert sorted(projection.successor_keys(key)) == moved


def test_decode_inverts_encode() -> None:
    """A key decodes to the state it was encoded from."""
    projection = Projection(DEFAULT_CONFIG)
    for state in _first_states(DEFAULT_CONFIG, 300):
        assert projection.decode(projection.encode(state)) == state


def test_three_vm_successor_keys_are_the_canonical_moves() -> None:
    """Three VMs take the general path (a target put in its sorted place among the
    other two): the same check on 400 states, from three equal VMs (the initial
    state) to three different ones."""
    three = replace(TWO, vm_count=3)
    projection = Projection(three)
    kinds = set()
    for state in _first_states(three, 400):
        key = projection.canonical(projection.encode(state))
        kinds.add(len(set(key[2:])))
        moved = sorted(
            projection.canonical(after) for _, after in projection.moves(key)
        )
        assert sorted(projection.successor_keys(key)) == moved
    assert kinds == {1, 2, 3}
