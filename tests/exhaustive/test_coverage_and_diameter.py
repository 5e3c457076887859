"""The explorer's action coverage and diameter, checked against a plain search.

The plain search here is the textbook one: breadth first over the model's own
``successors`` on whole states, no projection, no memo, no symmetry (one VM, so
symmetry folds nothing). Its transitions per action and its eccentricity of the
initial state must be the explorer's.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import replace

from invariants.configuration import DEFAULT_CONFIG
from invariants.explorer import explore
from invariants.mutants import BY_NAME
from model import ModelConfig, SystemState, initial_state
from model.state import RecoveryPlan
from model.successor import RULES, successors


def plain_search(config: ModelConfig) -> tuple[Counter[str], int, int]:
    """Transitions per action, the largest BFS distance, and the state count."""
    start = initial_state(config)
    distance: dict[SystemState, int] = {start: 0}
    queue = deque([start])
    fired: Counter[str] = Counter()
    while queue:
        state = queue.popleft()
        for call, after in successors(config, state):
            fired[call.action] += 1
            bare = replace(
                after, vms=tuple(replace(vm, closed_report=None) for vm in after.vms)
            )
            if bare not in distance:
                distance[bare] = distance[state] + 1
                queue.append(bare)
    return fired, max(distance.values()), len(distance)


def test_action_coverage_is_what_a_plain_search_counts() -> None:
    """Each action fires as often as in a plain search; the counts sum to the
    transitions; the actions that never fire are the ones with a count of 0."""
    report = explore(DEFAULT_CONFIG)
    fired, _, states = plain_search(DEFAULT_CONFIG)
    assert report.statistics.states == states
    counts = dict(report.action_counts)
    assert list(counts) == list(RULES.actions)
    assert {name: n for name, n in counts.items() if n} == dict(fired)
    assert sum(counts.values()) == report.statistics.transitions
    assert report.never_fired == ("run_plan", "plan_step", "cancel_plan")


def test_plan_calls_are_counted() -> None:
    """With a recovery plan, its calls are counted as the plain search counts them."""
    config = replace(
        DEFAULT_CONFIG,
        fault_budget=0,
        plans=(RecoveryPlan("p", ((0,),)),),
        plan_operations=("planned_failover",),
    )
    report = explore(config)
    fired, _, _ = plain_search(config)
    counts = {name: n for name, n in report.action_counts if n}
    assert counts == dict(fired)
    assert counts["run_plan"] > 0


def test_the_diameter_is_the_longest_shortest_path() -> None:
    """The diameter is the initial state's eccentricity in the plain search."""
    report = explore(DEFAULT_CONFIG)
    _, eccentricity, _ = plain_search(DEFAULT_CONFIG)
    assert report.diameter == eccentricity


def test_an_incomplete_search_has_no_diameter() -> None:
    """A search cut short by its state limit does not claim a diameter."""
    report = explore(DEFAULT_CONFIG, max_states=100)
    assert not report.complete
    assert report.diameter is None


def test_coverage_sums_to_the_transitions_when_a_violation_stops_the_search() -> None:
    """Stopped at the first violation, the coverage still counts every transition."""
    report = explore(DEFAULT_CONFIG, BY_NAME["commit_keeps_recovery_points"].rules)
    assert report.violations
    counts = dict(report.action_counts)
    assert sum(counts.values()) == report.statistics.transitions
