"""``hvdr check --dot FILE``: the state graph of a small model as DOT text, and the
refusal above the size limit (one line naming the flag that lifts it, exit 2)."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import graphviz
import pytest

from hvdr import state_graph
from hvdr.diagrams import dot_available
from invariants.configuration import DEFAULT_CONFIG
from invariants.explorer import explore

ROOT = Path(__file__).resolve().parent.parent
NO_FAULTS = replace(DEFAULT_CONFIG, fault_budget=0)


def hvdr(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``python -m hvdr`` in a fresh interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "hvdr", *arguments],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=300,
    )  # fmt: skip


def test_the_dump_holds_every_state_and_transition_the_explorer_counts(
    tmp_path: Path,
) -> None:
    """One VM (no symmetry to fold): as many nodes and edges as check explores."""
    out = tmp_path / "states.dot"
    result = hvdr(
        "check", "--budget", "0", "--dot", str(out),
        "--trace-out", str(tmp_path / "ce.jsonl"), "--svg", str(tmp_path / "ce.svg"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    text = out.read_text("utf-8")
    figures = explore(NO_FAULTS).statistics
    nodes = re.findall(r"^\ts\d+ \[label=", text, re.MULTILINE)
    edges = re.findall(r"^\ts\d+ -> s\d+ ", text, re.MULTILINE)
    assert (len(nodes), len(edges)) == (figures.states, figures.transitions)
    assert f"state graph written to {out}" in result.stdout


def test_a_dump_above_the_limit_is_refused_naming_the_flag(tmp_path: Path) -> None:
    """Past --dot-max-states: one line, exit 2, nothing written, the flag named."""
    out = tmp_path / "states.dot"
    result = hvdr("check", "--dot", str(out), "--dot-max-states", "100")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "the state graph has more than 100 states" in lines[0]
    assert "raise the limit with --dot-max-states N" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (("--dot-max-states", "0"), "argument --dot-max-states: 0 is not allowed"),
        (("--mutate",), "--dot: not with --list-mutants or --mutate"),
    ],
    ids=["zero-limit", "with-mutate"],
)
def test_dot_mistakes_are_one_line_and_status_2(
    tmp_path: Path, arguments: tuple[str, ...], words: str
) -> None:
    """A bad limit, or --dot where one graph has no meaning: one line, exit 2."""
    result = hvdr("check", "--dot", str(tmp_path / "s.dot"), *arguments)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert words in lines[0]


def test_the_search_stops_just_past_the_limit() -> None:
    """The bounded search refuses at the first state past the limit, not later."""
    with pytest.raises(state_graph.TooLarge) as raised:
        state_graph.search(DEFAULT_CONFIG, states_max=50)
    assert raised.value.states == 51
    assert len(state_graph.search(NO_FAULTS, states_max=360).states) == 360


@pytest.mark.skipif(not dot_available(), reason="Graphviz's dot is not installed")
def test_the_dump_renders() -> None:
    """Graphviz reads the DOT text (the initial state, bold, is in the picture)."""
    # A small graph: dot's layout time grows fast with the states (360 took
    # minutes); one disk and no app-consistent points keep it to a few seconds.
    small = replace(NO_FAULTS, disks_per_vm=1, app_consistent_points=False)
    graph = state_graph.dot(state_graph.search(small), "states")
    svg = graphviz.Source(graph.source).pipe(format="svg").decode("utf-8")
    assert "vm0 unprotected" in svg
