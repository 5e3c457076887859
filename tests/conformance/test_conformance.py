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

import contextlib
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from invariants import trace as traces
from invariants.conformance import (
    CONFIG,
    OPERATIONS,
    TraceError,
    replay_on_engine,
)
from invariants.engine_mutants import ENGINE_MUTANTS, EngineMutant
from invariants.engine_world import DISKS, VM, World
from model import Call, Site

SEED = 2
EXAMPLES = 40
STEPS = 20
ROOT = Path(__file__).resolve().parents[2]


def _hvdr(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``hvdr`` in a fresh interpreter: the run a user makes, untouched by what
    other tests left in this process (a run's draws depend on it). A fuzz run
    keeps no example database: what a seed finds must not depend on what an
    earlier run saved."""
    if arguments[0] == "fuzz" and "--database" not in arguments:
        arguments = (*arguments, "--database", "none")
    return subprocess.run(
        [sys.executable, "-m", "hvdr", *arguments],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip


#: The seed each planted bug is looked for with (the engine as it is passes there);
#: a bug not listed is looked for with SEED. A seed fixes the draws, not what they
#: reach: a change to the harness or to what the model enables moves a run elsewhere,
#: and a pin can stop catching its bug. Re-pinned on 2026-12-01 when generation
#: became a function of the seed alone (invariants/constant_pool.py: before, the
#: constants Hypothesis collected from whatever modules were loaded changed the
#: draws): log_applied_out_of_order is caught at seeds 1, 2, 4-6 (not 0, 3);
#: loss_bound_always_zero at 5-7 (not 0-4), in 40 examples.
MUTANT_SEEDS = {
    "reconciliation_one_short": 0,
    "loss_report_forgets_the_final_sync": 1,
    "loss_bound_always_zero": 5,
}


@pytest.mark.slow
@pytest.mark.parametrize("seed", sorted({SEED, *MUTANT_SEEDS.values()}))
def test_the_engine_follows_the_model(seed: int) -> None:
    ran = _hvdr(
        "fuzz", "--engine", "--no-shrink", "--examples", str(EXAMPLES),
        "--steps", str(STEPS), "--seed", str(seed),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    text = " ".join(ran.stdout.split())
    assert "the engine followed the model at every step" in text
    assert "failback (reverse replication after commit) covered: True" in text
    assert "refusals matched: none" not in text
    edges = int(text.split("lifecycle edges taken on the engine: ")[1].split()[0])
    assert edges >= 30, text[:400]


@pytest.mark.slow
@pytest.mark.parametrize("mutant", ENGINE_MUTANTS, ids=lambda m: m.name)
def test_every_planted_engine_bug_is_caught_and_its_trace_replays(
    mutant: EngineMutant, tmp_path: Path
) -> None:
    """Each planted bug fails the run; the trace it leaves fails again when replayed
    with the bug, and passes on the engine as it is (the bug, not the trace, fails)."""
    trace_file = tmp_path / f"{mutant.name}.jsonl"
    seed = MUTANT_SEEDS.get(mutant.name, SEED)
    found = _hvdr(
        "fuzz", "--engine", "--engine-mutant", mutant.name, "--no-shrink",
        "--examples", str(EXAMPLES), "--steps", str(STEPS), "--seed", str(seed),
        "--trace-out", str(trace_file),
    )  # fmt: skip
    assert found.returncode == 1, f"{mutant.name} survived: {found.stdout[-2000:]}"
    trace = traces.read(trace_file)
    assert trace.mutant == mutant.name
    again = _hvdr("replay", "--engine", str(trace_file))
    assert again.returncode == 1, again.stdout + again.stderr
    clean_file = tmp_path / "clean.jsonl"
    traces.write(clean_file, replace(trace, mutant=None))
    clean = _hvdr("replay", "--engine", str(clean_file))
    assert clean.returncode == 0, clean.stdout + clean.stderr


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


FOUND = sorted((Path(__file__).parent / "found").glob("*.jsonl"))


@pytest.mark.parametrize("path", FOUND, ids=[path.stem for path in FOUND])
def test_each_disagreement_the_fuzzer_found_replays_clean(path: Path) -> None:
    """Traces on which the engine and the model once disagreed (the file name says
    how; docs/conformance.md and docs/model.md say which side was wrong): both now
    take every step alike."""
    trace = traces.loads(path.read_text(), str(path))
    assert replace(trace.config, vm_names=CONFIG.vm_names) == CONFIG
    replayed, failure = replay_on_engine(trace.calls, CONFIG)
    assert failure is None, str(failure)
    assert replayed == len(trace.calls)


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


def test_a_refusal_that_changes_a_file_is_a_conformance_failure() -> None:
    """The refusal check hashes both sites' files (a database by its rows): a file
    changed behind a refusal, or a row added, is named; a read is not a change."""
    world = World()
    try:
        before = world.fingerprint()
        assert world.changed_since(before) == []
        world.engine.status(VM)  # reads the control database
        assert world.changed_since(before) == []
        image = world.roots[Site.PRIMARY] / "vms" / VM / f"{DISKS[0]}.img"
        with image.open("r+b") as stream:
            stream.write(b"\x01")
        control = world.roots[Site.SECONDARY] / "control.sqlite3"
        with contextlib.closing(sqlite3.connect(control)) as database:
            database.execute("CREATE TABLE planted (x)")
            database.commit()
        changed = world.changed_since(before)
        assert changed == sorted(
            [f"primary/vms/{VM}/{DISKS[0]}.img", "secondary/control.sqlite3"]
        )
    finally:
        world.close()
