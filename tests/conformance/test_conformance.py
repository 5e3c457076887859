"""The engine, driven beside the model on real files, stays in the model's state.

Each run is ``invariants.conformance.fuzz_engine`` with a fixed seed: the same
examples every time, on a real engine in fresh folders. A divergence anywhere (a
field of the mapped state, a refusal the model would not make, health, protection,
a property failing on the engine's state) fails the test with the steps taken.
The planted engine bugs of ``invariants.engine_mutants`` must each be caught by
the same run, and the trace written for one must reproduce under
``hvdr replay --engine``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from invariants import trace as traces
from invariants.conformance import (
    CONFIG,
    OPERATIONS,
    TraceError,
    fuzz_engine,
    replay_on_engine,
)
from invariants.engine_mutants import ENGINE_MUTANTS, EngineMutant
from model import Call, Site

SEED = 2
EXAMPLES = 40
STEPS = 20
ROOT = Path(__file__).resolve().parents[2]


def test_the_engine_follows_the_model() -> None:
    report = fuzz_engine(examples=EXAMPLES, steps=STEPS, seed_value=SEED, shrink=False)
    assert report.failure is None, str(report.failure)
    coverage = report.coverage
    assert coverage.steps > 100
    assert coverage.refusals, "refusals must be tried, and matched"
    assert len(coverage.edges) >= 15, sorted(coverage.edges)


@pytest.mark.parametrize("mutant", ENGINE_MUTANTS, ids=lambda m: m.name)
def test_every_planted_engine_bug_is_caught_and_its_trace_replays(
    mutant: EngineMutant,
) -> None:
    """Each planted bug fails the run; the trace it leaves fails again when replayed
    with the bug, and passes on the engine as it is (the bug, not the trace, fails)."""
    with mutant.plant():
        report = fuzz_engine(
            examples=EXAMPLES, steps=STEPS, seed_value=SEED, shrink=False
        )
    assert report.failure is not None, f"{mutant.name} survived conformance fuzzing"
    calls = report.failure.calls
    with mutant.plant():
        _, again = replay_on_engine(calls, CONFIG)
    assert again is not None, f"the trace of {mutant.name} did not fail on replay"
    _, clean = replay_on_engine(calls, CONFIG)
    assert clean is None, f"the trace of {mutant.name} fails without it: {clean}"


def test_a_trace_of_a_planted_bug_replays_on_the_engine(tmp_path: Path) -> None:
    trace_file = tmp_path / "health.jsonl"
    found = subprocess.run(
        [
            sys.executable, "-m", "hvdr", "fuzz", "--engine",
            "--engine-mutant", "health_from_the_wrong_site",
            "--examples", str(EXAMPLES), "--steps", str(STEPS), "--seed", str(SEED),
            "--trace-out", str(trace_file),
        ],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert found.returncode == 1, found.stdout + found.stderr
    assert traces.read(trace_file).mutant == "health_from_the_wrong_site"
    replayed = subprocess.run(
        [sys.executable, "-m", "hvdr", "replay", "--engine", str(trace_file)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    assert "health" in replayed.stdout


def test_a_clean_trace_replays_clean_and_a_refusal_is_checked() -> None:
    calls = (
        Call("enable_protection", vm=0),
        Call("copy_disk", vm=0),
        Call("copy_disk", vm=0),
        Call("complete_initial_replication", vm=0),
        Call("write", vm=0),
        Call("commit", vm=0),  # refused by the model: the engine must refuse it too
        Call("replicate", vm=0, args=(("app_consistent", False),)),
    )
    replayed, failure = replay_on_engine(calls, CONFIG)
    assert failure is None, str(failure)
    assert replayed == len(calls)


def test_a_trace_the_engine_cannot_take_is_named() -> None:
    # The engine copies every disk when protection is enabled: a trace that writes
    # between the copies waits where the engine does not.
    calls = (
        Call("enable_protection", vm=0),
        Call("write", vm=0),
        Call("copy_disk", vm=0),
    )
    with pytest.raises(TraceError, match="as one operation"):
        replay_on_engine(calls, CONFIG)


@pytest.mark.parametrize(
    ("calls", "words"),
    [
        ((), "no steps"),
        ((Call("enable_protection", vm=5),), "not a call of this model"),
        ((Call("recover_site", site=Site.PRIMARY),), "cannot happen here"),
        ((Call("launch_missiles", vm=0),), "not a call of this model"),
    ],
    ids=["empty", "unknown-vm", "impossible-event", "unknown-action"],
)
def test_a_bad_trace_is_a_trace_error_naming_the_step(
    calls: tuple[Call, ...], words: str
) -> None:
    with pytest.raises(TraceError, match=words):
        replay_on_engine(calls, CONFIG)


def test_every_engine_operation_names_a_model_action() -> None:
    from model.successor import RULES

    for head, follow in OPERATIONS.values():
        for action in (head, *follow):
            assert action in RULES.actions, action
