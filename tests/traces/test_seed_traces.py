"""The seed's procedures, stored as trace files, replay cleanly on the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from invariants import trace as traces
from model.scenarios import SCENARIOS, Scenario

HERE = Path(__file__).parent


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_trace_file_matches_the_scenario(scenario: Scenario) -> None:
    """Each file holds its scenario's configuration and calls (not stale)."""
    stored = traces.read(HERE / f"{scenario.name}.jsonl")
    assert (stored.config, stored.calls, stored.mutant) == (
        scenario.config,
        scenario.calls,
        None,
    )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_trace_replays_with_no_refusal_and_no_violation(scenario: Scenario) -> None:
    """Every step is accepted and every property holds after it."""
    stored = traces.read(HERE / f"{scenario.name}.jsonl")
    problems = [
        (step.number, step.refused, [inv.name for inv in step.violated])
        for step in traces.replay(stored.config, stored.calls)
        if step.refused is not None or step.violated
    ]
    assert problems == []


def test_every_trace_file_is_a_scenario() -> None:
    """No orphan trace file: each names a scenario of model.scenarios."""
    names = {path.stem for path in HERE.glob("*.jsonl")}
    assert names == {scenario.name for scenario in SCENARIOS}


def test_a_malformed_line_is_reported_with_its_number() -> None:
    """A broken trace names the line that is wrong."""
    with pytest.raises(ValueError, match="needs an 'action'") as error:
        traces.loads('{"action": "write", "vm": 0}\n{"vm": 0}\n', "bad.jsonl")
    assert any("bad.jsonl, line 2" in note for note in error.value.__notes__)


def test_an_unknown_configuration_key_is_refused() -> None:
    """A header with a misspelt key is refused with the known keys."""
    with pytest.raises(ValueError, match="vm_cout"):
        traces.loads('{"config": {"vm_cout": 2}}\n')
