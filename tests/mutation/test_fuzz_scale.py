"""Fuzzing finds what the bounded check cannot: a planted bug three VMs deep.

``plan_ends_after_two_groups`` (``invariants.mutants``) ends a recovery plan of three
groups after its second. Nothing smaller than three VMs shows it, and ``hvdr check``
cannot exhaust three VMs with a plan; ``hvdr fuzz --config configs/fuzz-large.json``
finds it in its first batch, thanks to the deep composed starts and the weights
(``invariants.fuzz_scale``), and says how far past check's default space it went.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from invariants import trace as traces
from invariants.configuration import DEFAULT_CONFIG, read_config
from invariants.explorer import explore
from invariants.fuzz import fuzz, starts_and_weights
from invariants.fuzz_scale import RARE_WEIGHT, composed_paths
from invariants.mutants import BY_NAME, FUZZ_LARGE_CONFIG, PLAN_TIERS_CONFIG
from model import Phase, initial_state
from model.successor import apply

ROOT = Path(__file__).resolve().parents[2]
LARGE = ROOT / "configs" / "fuzz-large.json"
MUTANT = BY_NAME["plan_ends_after_two_groups"]


def test_the_documented_file_is_the_mutants_configuration() -> None:
    assert read_config(LARGE) == FUZZ_LARGE_CONFIG
    assert MUTANT.config == FUZZ_LARGE_CONFIG
    assert MUTANT.fuzz_only


def test_hvdr_fuzz_finds_the_deep_plan_bug_and_its_trace_replays(
    tmp_path: Path,
) -> None:
    """The documented command fails on the mutant (1), names the plan property, and
    writes a trace that replays to the same failure on the mutant."""
    out, result = tmp_path / "ce.jsonl", tmp_path / "result.json"
    run = subprocess.run(
        [sys.executable, "-m", "hvdr", "fuzz", "--config", str(LARGE),
         "--mutant", MUTANT.name, "--seed", "0", "--database", "none",
         "--examples", "100", "--steps", "30", "--no-shrink",
         "--trace-out", str(out), "--svg", str(tmp_path / "ce.svg"),
         "--json", str(result)],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=600,
    )  # fmt: skip
    text = " ".join(run.stdout.split())
    assert run.returncode == 1, run.stdout + run.stderr
    assert "invariant 'plan_groups_finish_in_order' violated" in text
    beyond = json.loads(result.read_text("utf-8"))["fuzz"]["beyond"]
    assert beyond["vms"] == 3
    assert beyond["outside"] > 0
    assert "lie outside hvdr check's default space" in text
    written = traces.read(out)
    assert (written.mutant, written.config) == (MUTANT.name, FUZZ_LARGE_CONFIG)
    steps = list(traces.replay(written.config, written.calls, MUTANT.rules))
    assert [s.refused for s in steps if s.refused is not None] == []
    assert [i.name for i in steps[-1].violated] == ["plan_groups_finish_in_order"]


def test_check_does_not_find_it_within_its_bounds() -> None:
    """At the default bounds (no plan) and in the two-group plan space the mutant
    is clean when searched whole; in the three-VM space a search of 60,000 states
    ends without reaching it."""
    for config in (DEFAULT_CONFIG, PLAN_TIERS_CONFIG):
        report = explore(config, MUTANT.rules)
        assert (report.complete, report.violations) == (True, ())
    deep = explore(FUZZ_LARGE_CONFIG, MUTANT.rules, max_states=60_000)
    assert (deep.complete, deep.violations) == (False, ())


def test_the_model_fuzzes_clean_there_and_goes_past_the_bounded_space() -> None:
    """The real model at the large configuration: no failure, and most of what the
    run visits lies outside check's default space (three VMs, lags and faults past
    its bounds)."""
    report = fuzz(FUZZ_LARGE_CONFIG, examples=100, steps=30, shrink=False, beyond=True)
    assert report.failure is None
    beyond = report.beyond
    assert beyond is not None
    assert beyond.vms == 3
    assert beyond.outside > beyond.views // 2
    assert beyond.max_lag > DEFAULT_CONFIG.write_lag_max
    assert beyond.max_faults_spent > DEFAULT_CONFIG.fault_budget


def test_at_the_default_bounds_fuzzing_stays_inside_the_checked_space() -> None:
    """Everything fuzzing visits at check's own bounds is in check's space: the
    report's 'outside' counts only what check never explores."""
    report = fuzz(DEFAULT_CONFIG, examples=100, shrink=False, beyond=True)
    assert report.beyond is not None
    assert report.beyond.views > 100
    assert report.beyond.outside == 0


def test_the_first_composed_start_protects_every_vm() -> None:
    """A breadth-first pool of three VMs ends before they are protected; the first
    composed path leaves all three protected, what a recovery plan needs."""
    first = composed_paths(FUZZ_LARGE_CONFIG)[0]
    state = initial_state(FUZZ_LARGE_CONFIG)
    for call in first:
        state = apply(FUZZ_LARGE_CONFIG, state, call)
    assert [vm.phase for vm in state.vms] == [Phase.PROTECTED] * 3
    assert composed_paths(DEFAULT_CONFIG) == ()


def test_actions_into_rare_phases_are_weighted_and_common_ones_not() -> None:
    """Where the pool cannot hold the space, plan actions and triggers into rare
    phases are drawn more often, and the workload's writes and delta cycles (which
    land where they are) are not; where it holds it whole, nothing is weighted."""
    _, weights = starts_and_weights(FUZZ_LARGE_CONFIG)
    assert weights["run_plan"] == weights["plan_step"] == RARE_WEIGHT
    assert {"write", "replicate"} & set(weights) == set()
    assert set(weights) - {"run_plan", "plan_step"}
    assert starts_and_weights(DEFAULT_CONFIG)[1] == {}
