"""Counterexamples a person can follow: the whole state at each step, the changed
fields marked, the property that failed with the fields it reads, and a drawing
that shows the steps that are not lifecycle edges."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from hvdr import overlays
from hvdr.counterexample import failure_lines, walk
from invariants import mutation
from invariants.catalogue import BY_NAME
from invariants.configuration import DEFAULT_CONFIG, config_to_json
from model import Call

ROOT = Path(__file__).resolve().parent.parent

PROTECT = [
    Call("enable_protection", vm=0),
    Call("copy_disk", vm=0),
    Call("copy_disk", vm=0),
    Call("complete_initial_replication", vm=0),
    Call("write", vm=0),
]


def hvdr(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``python -m hvdr`` in a fresh interpreter (not a terminal: no colours)."""
    return subprocess.run(
        [sys.executable, "-m", "hvdr", *arguments],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=300,
    )  # fmt: skip


def write_trace(path: Path, calls: list[Call], mutant: str | None = None) -> Path:
    header: dict[str, object] = {"config": config_to_json(DEFAULT_CONFIG)}
    if mutant is not None:
        header["mutant"] = mutant
    lines = [header, *(call.to_json() for call in calls)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), "utf-8")
    return path


def block(output: str, number: int) -> str:
    """The printed block of step ``number`` (its heading and state lines)."""
    found = re.search(rf"^ *{number} .*?(?=^ *{number + 1} |^highlighted)", output,
                      re.MULTILINE | re.DOTALL)  # fmt: skip
    assert found, output
    return found.group(0)


def test_replay_shows_the_whole_state_with_the_changed_fields_marked(
    tmp_path: Path,
) -> None:
    """Each step prints every field; those the step changed carry a '*'."""
    trace = write_trace(tmp_path / "t.jsonl", PROTECT)
    result = hvdr("replay", str(trace))
    assert result.returncode == 0, result.stdout + result.stderr
    second = block(result.stdout, 2)
    assert "disks_copied 1 *" in second
    assert "phase initial_replication *" not in second  # set by step 1, not 2
    assert "phase initial_replication" in second
    for field in ("other", "points", "last_failover", "link_up", "faults_left"):
        assert f"{field} " in second, field
    fifth = block(result.stdout, 5)
    assert "other behind 1 *" in fifth
    assert "points [behind 1] *" in fifth


def test_walk_marks_exactly_the_fields_a_step_changed() -> None:
    """A write changes the other copy's and the point's lag, and nothing else."""
    rows = walk(DEFAULT_CONFIG, PROTECT)
    assert frozenset({"vm0.other", "vm0.points"}) == rows[5].changed
    assert frozenset({"vm0.disks_copied"}) == rows[2].changed


def test_replay_of_a_violation_names_the_property_and_the_fields_it_reads(
    tmp_path: Path,
) -> None:
    """A failed property is named, with its declared fields and their values."""
    calls = [
        *PROTECT[:4],
        Call("unplanned_failover", vm=0, args=(("point", "latest"),
                                               ("shutdown", "skip"))),
        Call("complete_failover", vm=0),
        Call("commit", vm=0),
    ]  # fmt: skip
    trace = write_trace(tmp_path / "t.jsonl", calls, "commit_keeps_recovery_points")
    result = hvdr("replay", str(trace))
    assert result.returncode == 1, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert (
        "property 'commit_discards_every_recovery_point' (always) failed at step 7"
        in (text)
    )
    assert "it reads: vm.chosen_point, vm.phase, vm.points" in text
    assert "vm0.phase=committed" in text
    assert "vm0.points=[up to date]" in text


def test_a_step_property_shows_its_fields_before_and_after() -> None:
    """A STEP property's fields are shown before and after the step that broke it."""
    rules = mutation.lookup("writes_untracked_in_initial_copy")
    assert rules is not None
    calls = [Call("enable_protection", vm=0), Call("write", vm=0)]
    rows = walk(DEFAULT_CONFIG, calls, rules)
    invariant = BY_NAME["writes_during_initial_replication_are_never_lost"]
    assert rows[2].violated == (invariant,)
    lines = failure_lines(DEFAULT_CONFIG, rows, invariant)
    assert lines[0].startswith(
        "property 'writes_during_initial_replication_are_never_lost' (step) failed "
        "at step 2"
    )
    assert (
        "before → after step 2: vm0.frozen_other=— → —, vm0.other=up to date → "
        in (lines[2])
    )


def box(dot: str, phase: str) -> str:
    """The HTML label of ``phase``'s box in the DOT text."""
    found = re.search(rf"^\t+{phase} \[label=<(.*)>", dot, re.MULTILINE)
    assert found, dot
    return found.group(1)


def test_the_drawing_shows_a_decisive_write() -> None:
    """A counterexample whose last step is a write draws it, crossed and red, in the
    box of its phase, and the legend says what the cross means."""
    rules = mutation.lookup("writes_untracked_in_initial_copy")
    assert rules is not None
    calls = [Call("enable_protection", vm=0), Call("write", vm=0)]
    graph = overlays.trace_graph(
        DEFAULT_CONFIG, calls, "ce", rules, "writes_during_initial_replication"
    )
    assert '<FONT POINT-SIZE="9" COLOR="red">✗ 2 write(vm=0)</FONT>' in box(
        graph.source, "initial_replication"
    )
    assert "the step that broke writes_during_initial_replication" in graph.source
    assert "initial_replication -> initial_replication" not in graph.source


def test_the_drawing_shows_writes_and_faults_that_are_not_edges() -> None:
    """Steps that change no phase appear, numbered and orange, in the box of the
    phase they happened in, in order, and the legend says what they are; no
    self-loop is drawn."""
    calls = [*PROTECT, Call("cut_link")]
    graph = overlays.trace_graph(DEFAULT_CONFIG, calls, "trace")
    protected = box(graph.source, "protected")
    steps = re.findall(r'COLOR="darkorange3">↻ ([^<]*)<', protected)
    assert steps == ["5 write(vm=0)", "6 cut_link()"]
    assert "a step of the trace that changes no phase" in graph.source
    assert "protected -> protected" not in graph.source


def test_fuzz_draws_its_shrunk_counterexample(tmp_path: Path) -> None:
    """fuzz on a mutant prints the state table and draws the shrunk trace."""
    svg = tmp_path / "ce.svg"
    result = hvdr(
        "fuzz", "--mutant", "commit_keeps_recovery_points", "--examples", "50",
        "--trace-out", str(tmp_path / "ce.jsonl"), "--svg", str(svg),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the counterexample, step by step" in result.stdout
    drawn = svg if svg.exists() else svg.with_suffix(".dot")
    assert "commit" in drawn.read_text("utf-8")
    assert f"path drawn in {drawn}" in " ".join(result.stdout.split())
