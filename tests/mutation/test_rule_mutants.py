"""Mutants made by rule: generation stays whole, and killing does not regress.

The whole run (``hvdr check --mutate``, about 100 s) is too slow for the default
tests, so these run a fixed sample: one mutant per new property, killed by it
alone with a trace that replays on the mutant; every equivalent one; and every
``SAMPLE_STEP``-th generated mutant, whose verdict must be the recorded one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hvdr.cli import main
from invariants import catalogue, mutation, rule_mutants
from invariants import trace as traces
from invariants.configuration import DEFAULT_CONFIG
from invariants.explorer import explore
from invariants.mutation import EQUIVALENT, KNOWN_KILLS, OPEN, Verdict
from invariants.rule_mutants import OPERATORS, generate

ROOT = Path(__file__).resolve().parents[2]


#: Every how many generated mutants the sample takes one.
SAMPLE_STEP = 25


def test_every_operator_generates_a_mutant() -> None:
    """Each operator yields at least one mutant."""
    made = {mutant.operator for mutant in generate().mutants}
    assert [operator for operator in OPERATORS if operator not in made] == []


def test_generation_is_deterministic_and_names_are_unique() -> None:
    """Generating again gives the same names in the same order, each once."""
    first = [mutant.name for mutant in generate().mutants]
    again = [mutant.name for mutant in generate.__wrapped__().mutants]
    assert first == again
    assert len(set(first)) == len(first)


def test_mutants_are_rules_values_and_leave_the_model_alone() -> None:
    """A mutant's rules differ from RULES; building one changes nothing in RULES."""
    from model.successor import RULES

    actions = dict(RULES.actions)
    mutant = rule_mutants.by_name()["drop_guard:pause:active_site_reachable"]
    assert mutant.rules is not RULES
    assert mutant.rules.actions["pause"].guards == ()
    assert dict(RULES.actions) == actions


@pytest.mark.parametrize("invariant", sorted(KNOWN_KILLS))
def test_each_new_property_kills_its_generated_mutant_alone(invariant: str) -> None:
    """Checking the property alone finds the mutant; the trace replays to it."""
    rules = mutation.lookup(KNOWN_KILLS[invariant])
    assert rules is not None
    report = explore(DEFAULT_CONFIG, rules, invariants=catalogue.select((invariant,)))
    assert [v.invariant.name for v in report.violations[:1]] == [invariant]
    steps = list(traces.replay(DEFAULT_CONFIG, report.violations[0].trace, rules))
    assert [s.number for s in steps if s.refused is not None] == []
    assert invariant in [i.name for i in steps[-1].violated]


@pytest.mark.parametrize("name", sorted(EQUIVALENT))
def test_each_listed_equivalent_mutant_is_shown_equivalent(name: str) -> None:
    """A mutant listed as equivalent survives and has the model's successors."""
    assert mutation.run(rule_mutants.by_name()[name]).verdict is Verdict.EQUIVALENT


SAMPLE = generate().mutants[::SAMPLE_STEP]


@pytest.mark.parametrize("mutant", SAMPLE, ids=[m.name for m in SAMPLE])
def test_sampled_mutants_have_their_recorded_verdict(
    mutant: rule_mutants.RuleMutant,
) -> None:
    """Killed, unless recorded as equivalent or open."""
    expected = Verdict.KILLED
    if mutant.name in EQUIVALENT:
        expected = Verdict.EQUIVALENT
    elif mutant.name in OPEN:
        expected = Verdict.SURVIVED
    assert mutation.run(mutant).verdict is expected


def test_recorded_names_are_generated() -> None:
    """Every equivalent, open and known-kill name names a generated mutant."""
    names = set(rule_mutants.by_name())
    recorded = {*EQUIVALENT, *OPEN, *KNOWN_KILLS.values()}
    assert sorted(recorded - names) == []
    assert sorted(set(EQUIVALENT) & set(OPEN)) == []


def _documented(heading: str) -> list[str]:
    text = (ROOT / "docs" / "verification.md").read_text(encoding="utf-8")
    section = text.split(f"### {heading}", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


def test_docs_list_the_equivalent_and_open_mutants_exactly() -> None:
    """docs/verification.md lists exactly the equivalent and the open mutants."""
    assert sorted(_documented("Equivalent generated mutants")) == sorted(EQUIVALENT)
    assert sorted(_documented("Generated mutants still open")) == sorted(OPEN)


def test_only_writes_a_trace_that_replays_on_the_mutant(tmp_path: Path) -> None:
    """check --mutate --only NAME writes a counterexample naming the mutant; replay
    runs it on that mutant and finds the violation again."""
    name = "drop_guard:pause:active_site_reachable"
    out = tmp_path / "ce.jsonl"
    status = main(["check", "--mutate", "--only", name, "--trace-out", str(out),
                   "--svg", str(tmp_path / "ce.svg")])  # fmt: skip
    assert status == 1
    assert traces.read(out).mutant == name
    assert main(["replay", str(out), "--quiet"]) == 1
