"""SIGKILL at sampled operations of the failover scenarios; reopen; the properties.

A child process (``CHILD``, a fresh interpreter started in this worktree) counts the
scenario's operations, samples the kill points (``failover_sweep.sampled``), forks
one process per point that runs the scenario under ``KillingFileSystem`` and dies
there, reopens the engine after each and checks the properties of
``failover_scenario`` (a kill keeps the page cache: no write may be lost and no
resynchronisation may be needed). ``HVDR_FAILOVER_POINTS=100000`` kills before and
after every operation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from crash_sweep import format_report, scratch_directory
from failover_sweep import POINTS_VARIABLE, budget

REPOSITORY = Path(__file__).resolve().parents[2]
POINTS_DEFAULT = 40  # per scenario: every step at least once, ~5 s on two cores
POINTS_MIN = 20  # fewer would leave steps of the failover half unvisited

CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, str(Path("tests", "crash").resolve()))
from failover_sweep import kill_sweep_main
kill_sweep_main(Path(sys.argv[1]), name=sys.argv[2], durable=False,
                points_max=int(sys.argv[3]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["planned", "unplanned", "divergent"])
def test_a_kill_in_the_failover_half_recovers(scenario: str) -> None:
    """After each kill: a phase of the step, no write lost, points are cuts, and
    the lifecycle reaches failback on the last writes."""
    started = time.perf_counter()
    points_max = budget(POINTS_DEFAULT)
    with scratch_directory() as directory:
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(directory), scenario, str(points_max)],
            cwd=REPOSITORY, capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert (child.returncode, child.stderr) == (0, "")
    outcome = json.loads(child.stdout)
    results = {(p[0], p[1]): [tuple(x) for x in f] for p, f in outcome["results"]}
    title = f"failover kill sweep, {scenario}, {outcome['operations']} operations, "
    title += f"{len(results)} kill points ({POINTS_VARIABLE}={points_max}), "
    title += f"{time.perf_counter() - started:.1f} s"
    report = format_report(title, results, outcome["trace"])
    print(report)
    assert len(results) >= min(POINTS_MIN, points_max)
    failing = [point for point, problems in results.items() if problems]
    assert not failing, report
