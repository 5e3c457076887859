"""The explorer on small configurations: pinned counts, and nothing found wrong.

Counts are pinned as Stateright pins ``generated_count()``: a change to the model
that changes the reachable space must change these numbers on purpose.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from invariants.configuration import DEFAULT_CONFIG
from invariants.explorer import Report, explore
from invariants.mutants import BY_NAME, PLAN_TIERS_CONFIG, PLAN_TOGETHER_CONFIG
from invariants.trace import replay
from model import ModelConfig
from model.successor import RULES

NO_FAULTS = replace(DEFAULT_CONFIG, fault_budget=0)
TWO_NO_FAULTS = replace(NO_FAULTS, vm_count=2)
TWO_EVERY_FAULT = replace(DEFAULT_CONFIG, vm_count=2)
PLAN_TIERS_CALLS = [30276, 12528, 60552]  # run_plan, plan_step, cancel_plan


def _clean(report: Report) -> tuple[bool, int, int, int]:
    return (
        report.complete,
        len(report.violations),
        report.deadlocks,
        report.unrecoverable,
    )


@pytest.mark.parametrize(
    ("config", "states", "transitions", "depth"),
    [
        (NO_FAULTS, 360, 1254, 17),
        (DEFAULT_CONFIG, 3604, 14168, 18),
        (TWO_NO_FAULTS, 64980, 452694, 34),
    ],
    ids=["1vm-no-faults", "1vm-every-fault-budget-1", "2vm-no-faults"],
)
def test_small_configurations_have_the_pinned_counts_and_no_problem(
    config: ModelConfig, states: int, transitions: int, depth: int
) -> None:
    """States, transitions and depth are as pinned; no violation, deadlock or trap."""
    report = explore(config, stop_at_first=False)
    figures = report.statistics
    assert (figures.states, figures.transitions, figures.depth) == (
        states,
        transitions,
        depth,
    )
    assert _clean(report) == (True, 0, 0, 0)


@pytest.mark.slow
def test_two_vms_with_every_fault_is_clean_and_reduced_by_symmetry() -> None:
    """The acceptance configuration: 720,162 representatives of 1,436,938 states."""
    report = explore(TWO_EVERY_FAULT)
    figures = report.statistics
    assert (figures.states, figures.transitions, figures.unreduced_states) == (
        720162,
        4666922,
        1436938,
    )
    assert _clean(report) == (True, 0, 0, 0)
    assert report.unwitnessed == ()


def test_symmetry_reduction_loses_no_state() -> None:
    """Orbit sizes of the representatives add up to the unreduced search's count."""
    reduced = explore(TWO_NO_FAULTS).statistics
    full = explore(TWO_NO_FAULTS, symmetry=False).statistics
    assert reduced.unreduced_states == full.states


def test_every_witness_is_reached_with_every_fault() -> None:
    """Every SOMETIMES witness holds somewhere: the invariants are not vacuous."""
    assert explore(DEFAULT_CONFIG).unwitnessed == ()


def test_without_faults_only_fault_witnesses_are_missing() -> None:
    """Without faults, exactly the witnesses that need one are never reached: an
    unusable log, a site or the link down (and the writes made while a site is
    down), a final sync cut short, a shutdown refused."""
    assert explore(NO_FAULTS).unwitnessed == (
        "log_unusable",
        "a_site_down",
        "the_link_down",
        "write_while_the_other_site_is_down",
        "stale_write_while_the_active_site_is_down",
        "shutdown_first_sync_cut_short",
        "shutdown_first_refused",
    )


def test_statistics_report_a_rate_and_memory() -> None:
    """states/s and peak memory are positive figures."""
    figures = explore(NO_FAULTS).statistics
    assert figures.states_per_second > 0
    assert figures.peak_memory_bytes > 0


def test_an_incomplete_search_is_not_ok() -> None:
    """A search cut short by max_states is reported incomplete, never OK."""
    report = explore(DEFAULT_CONFIG, max_states=100)
    assert (report.complete, report.ok) == (False, False)


@pytest.mark.parametrize(
    "name", ["reverse_moves_active_site", "report_forgets_final_sync_writes"]
)
def test_two_vm_counterexamples_replay_under_symmetry(name: str) -> None:
    """A trace found on representatives replays on the concrete model to the failure."""
    rules = BY_NAME[name].rules
    config = replace(TWO_NO_FAULTS, fault_budget=1)
    violation = explore(config, rules).violations[0]
    steps = list(replay(config, violation.trace, rules))
    assert [step.refused for step in steps if step.refused is not None] == []
    assert violation.invariant in steps[-1].violated


def test_a_single_recovery_point_is_explored_clean() -> None:
    """With one point kept, a shutdown-first failover to the latest app-consistent
    point must not be offered when the final sync's point would merge it away (it
    once was, and the VM then ran from a copy other than the chosen point)."""
    config = replace(
        DEFAULT_CONFIG, recovery_points_max=1, write_lag_max=2,
    )  # fmt: skip
    report = explore(config, stop_at_first=False)
    assert _clean(report) == (True, 0, 0, 0)
    assert report.statistics.states > 1000


def test_a_plan_configuration_has_the_pinned_counts() -> None:
    """Plan calls go through the model on the whole state (not the per-pair memo):
    the tiers plan's space, its transitions, depth and the calls of each plan
    action are as pinned, with nothing wrong."""
    report = explore(PLAN_TIERS_CONFIG, stop_at_first=False)
    figures = report.statistics
    assert (figures.states, figures.transitions, figures.depth) == (90828, 627444, 37)
    counts = dict(report.action_counts)
    plan_calls = [counts[name] for name in ("run_plan", "plan_step", "cancel_plan")]
    assert plan_calls == PLAN_TIERS_CALLS
    assert _clean(report) == (True, 0, 0, 0)


@pytest.mark.parametrize(
    "config", [PLAN_TIERS_CONFIG, PLAN_TOGETHER_CONFIG], ids=["tiers", "together"]
)
def test_the_plan_memo_changes_nothing(config: ModelConfig) -> None:
    """Plan calls memoised on their footprint (the plan runs, the environment, the
    current group's VMs) find what asking the model on every whole state finds:
    the same states, transitions, depth, calls per action and verdicts."""
    memoised = explore(config, stop_at_first=False)
    plain = explore(config, replace(RULES, plans_as_written=False), stop_at_first=False)
    for report in (memoised, plain):
        assert _clean(report) == (True, 0, 0, 0)
    figures = [(r.statistics.states, r.statistics.transitions, r.statistics.depth,
                r.action_counts) for r in (memoised, plain)]  # fmt: skip
    assert figures[0] == figures[1]


def test_a_mutant_with_its_own_plan_step_is_never_memoised() -> None:
    """A hand-written plan mutant wraps plan_step, so its plan calls may read more
    than their group: its rules say so, and the explorer asks the model each time."""
    assert RULES.plans_as_written
    assert not BY_NAME["plan_runs_the_next_group_too"].rules.plans_as_written
    assert BY_NAME["commit_keeps_recovery_points"].rules.plans_as_written
