"""Each property's declared fields (``Invariant.reads``) are the fields it reads.

The check, on a sample: take states (reachable ones, and mixtures of their fields,
so that properties fail as well as hold), change one field a property does not
declare to its value in another state, and the verdict must stay the same. A step
property gets the same change in the states before and after the step.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import replace

import pytest

from invariants.catalogue import BY_NAME, INVARIANTS
from invariants.configuration import DEFAULT_CONFIG
from invariants.fields import FIELDS, transplant
from invariants.kinds import Invariant, Kind
from model import Call, ModelConfig, SystemState, initial_state
from model.successor import successors

CONFIG = DEFAULT_CONFIG
SAMPLES = 250
Transition = tuple[SystemState, Call, SystemState]


def reachable(config: ModelConfig) -> tuple[list[SystemState], list[Transition]]:
    """Every reachable state of ``config`` and every transition between them."""
    start = initial_state(config)
    seen = {start}
    queue = deque([start])
    transitions: list[Transition] = []
    while queue:
        state = queue.popleft()
        for call, after in successors(config, state):
            transitions.append((state, call, after))
            bare = replace(
                after, vms=tuple(replace(vm, closed_report=None) for vm in after.vms)
            )
            if bare not in seen:
                seen.add(bare)
                queue.append(bare)
    return list(seen), transitions


STATES, TRANSITIONS = reachable(CONFIG)


def mixed(rng: random.Random, state: SystemState) -> SystemState:
    """``state`` with a few fields taken from other reachable states."""
    for field in rng.sample(FIELDS, 3):
        state = transplant(state, field, rng.choice(STATES))
    return state


def verdict(
    invariant: Invariant, pre: SystemState, call: Call, post: SystemState
) -> str:
    """What the property says of the step (a state property: of ``post``)."""
    try:
        if invariant.step is not None:
            return str(invariant.step(CONFIG, pre, call, post))
        assert invariant.state is not None
        return str(invariant.state(CONFIG, post))
    except (IndexError, TypeError, AttributeError) as error:  # a mixture it rejects
        return type(error).__name__


def undeclared_dependencies(invariant: Invariant, seed: int = 15) -> dict[str, int]:
    """The undeclared fields whose change changed the verdict, with how often;
    and, under the key "", how many sampled verdicts were False."""
    rng = random.Random(seed)
    found: dict[str, int] = {"": 0}
    undeclared = [field for field in FIELDS if field not in invariant.reads]
    for _ in range(SAMPLES):
        pre, call, post = rng.choice(TRANSITIONS)
        if invariant.step is None:
            pre, post = pre, mixed(rng, post)
        before = verdict(invariant, pre, call, post)
        found[""] += before == "False"
        for field in undeclared:
            donor_pre, _, donor_post = rng.choice(TRANSITIONS)
            changed_pre = transplant(pre, field, donor_pre)
            changed_post = transplant(post, field, donor_post)
            if verdict(invariant, changed_pre, call, changed_post) != before:
                found[field] = found.get(field, 0) + 1
    return found


CHECKED = [i for i in INVARIANTS if i.kind is not Kind.EVENTUALLY]


@pytest.mark.parametrize("invariant", CHECKED, ids=lambda i: i.name)
def test_a_property_reads_only_the_fields_it_declares(invariant: Invariant) -> None:
    """Changing a field the property does not declare leaves its verdict as it was."""
    found = undeclared_dependencies(invariant)
    del found[""]
    assert found == {}


def test_the_sample_makes_state_properties_fail() -> None:
    """The mixtures break most ALWAYS properties, so the check above is not vacuous."""
    always = [i for i in INVARIANTS if i.kind is Kind.ALWAYS]
    failing = [i.name for i in always if undeclared_dependencies(i)[""] > 0]
    assert len(failing) >= len(always) - 2, sorted(set(BY_NAME) - set(failing))


def test_a_missing_declaration_is_found() -> None:
    """A property declared without a field it reads is caught by the same check."""
    honest = BY_NAME["replica_is_a_past_source_state"]
    wrong = replace(honest, reads=honest.reads - {"vm.other"})
    found = undeclared_dependencies(wrong)
    assert "vm.other" in found
