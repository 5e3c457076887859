"""``hvdr check``, ``hvdr fuzz`` and ``hvdr replay`` end to end, on small models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hvdr import diagrams
from hvdr.cli import main
from invariants import trace as traces
from invariants.configuration import DEFAULT_CONFIG
from invariants.explorer import explore
from invariants.mutants import PLAN_TIERS_CONFIG
from model import ModelConfig


def test_check_passes_on_the_model(tmp_path: Path) -> None:
    """The default one-VM model checks clean: exit status 0, no trace written."""
    out = tmp_path / "ce.jsonl"
    assert main(["check", "--trace-out", str(out)]) == 0
    assert not out.exists()


def test_check_catches_a_mutant_and_replay_reproduces_it(tmp_path: Path) -> None:
    """A mutant fails check (1); its trace names the mutant and replays to a failure."""
    out, svg = tmp_path / "ce.jsonl", tmp_path / "ce.svg"
    status = main(
        ["check", "--mutant", "commit_keeps_recovery_points", "--trace-out", str(out),
         "--svg", str(svg)]
    )  # fmt: skip
    assert status == 1
    assert traces.read(out).mutant == "commit_keeps_recovery_points"
    assert main(["replay", str(out), "--quiet"]) == 1


def test_a_plan_mutant_is_checked_in_its_plan_configuration(tmp_path: Path) -> None:
    """A recovery-plan mutant brings its plan configuration (the default one has no
    plan, where it could not show): check fails it, and its trace replays on it."""
    out, svg = tmp_path / "ce.jsonl", tmp_path / "ce.svg"
    name = "plan_runs_the_next_group_too"
    arguments = ["--trace-out", str(out), "--svg", str(svg)]
    assert main(["check", "--mutant", name, *arguments]) == 1
    written = traces.read(out)
    assert (written.mutant, written.config) == (name, PLAN_TIERS_CONFIG)
    assert main(["replay", str(out), "--quiet"]) == 1
    assert (
        main(
            [
                "check",
                "--mutant",
                name,
                "--vms",
                "1",
                "--config",
                str(_no_plan(tmp_path)),
            ]
        )
        == 0
    )


def _no_plan(tmp_path: Path) -> Path:
    """A configuration file without plans, which overrides the mutant's own."""
    path = tmp_path / "no-plan.json"
    path.write_text(json.dumps({"vm_count": 1, "fault_budget": 0}), "utf-8")
    return path


def test_check_reads_a_configuration_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--config sets the model; flags given on the command line override it."""
    # Each value differs from hvdr check's default (2 disks, lag 1, budget 1, no
    # app-consistent points), so a file that was ignored shows in what is explored;
    # --lag overrides the file's lag.
    config = tmp_path / "model.json"
    chosen = {
        "vm_count": 1,
        "disks_per_vm": 1,
        "write_lag_max": 2,
        "fault_budget": 0,
        "app_consistent_points": False,
    }
    config.write_text(json.dumps(chosen), "utf-8")
    status = main(["check", "--config", str(config), "--faults", "none", "--lag", "1"])
    assert status == 0
    expected = ModelConfig(
        vm_count=1,
        disks_per_vm=1,
        write_lag_max=1,
        fault_budget=0,
        app_consistent_points=False,
        faults=frozenset(),
    )
    states = explore(expected).statistics.states
    assert states != explore(DEFAULT_CONFIG).statistics.states  # the file matters
    printed = capsys.readouterr().out
    assert "1 VM(s), 1 disks, lag 1, points 2, budget 0, plans 0" in printed
    assert re.search(rf"states\s+│\s+{states:,}\s", printed), printed


def test_check_refuses_an_unknown_fault() -> None:
    """A misspelt fault kind is a usage error (2), not a crash."""
    assert main(["check", "--faults", "site_crsh"]) == 2


@pytest.mark.parametrize("name", ["drill", "unplanned"])
def test_replay_of_a_seed_trace_holds(name: str) -> None:
    """The stored seed procedures replay with every property holding."""
    files = {
        "drill": "test_failover_drill.jsonl",
        "unplanned": "unplanned_failover.jsonl",
    }
    path = Path(__file__).parent / "traces" / files[name]
    assert main(["replay", str(path), "--quiet"]) == 0


def test_fuzz_runs_and_writes_a_coverage_report(tmp_path: Path) -> None:
    """A short fuzzing run passes and writes its HTML coverage picture."""
    report = tmp_path / "coverage.html"
    assert main(["fuzz", "--examples", "10", "--report", str(report)]) == 0
    page = report.read_text("utf-8")
    assert "lifecycle coverage" in page
    if diagrams.dot_available():
        (svg,) = re.findall(r"<svg\b[^>]*>", page)
        assert 'width="100%"' in svg
        assert "viewBox=" in svg
        assert "height=" not in svg.replace('style="height: auto"', "")
    legend = page[page.index('<ul class="legend"') : page.index("</ul>")]
    assert "never taken" in legend
    assert 'class="swatch never"' in legend  # a dotted sample, as in the picture
    assert re.search(r"taken \d+ (to \d+ )?times?", legend), legend
    assert "edges taken by hvdr fuzz" in page


def test_check_prints_the_diameter_and_the_actions_that_never_fired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default model: diameter 18, and the three plan actions never fire."""
    out = tmp_path / "ce.jsonl"
    assert main(["check", "--trace-out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"diameter\s+│ 18 \(the longest shortest path", printed), printed
    assert re.search(r"│ enable_protection\s+│\s+14 │", printed), printed
    assert "never fired (3): run_plan, plan_step, cancel_plan" in printed
