"""SIGKILL before every operation of one VM's life, and after those a kill there
leaves something of its own (``crash_sweep.kill_points``); reopen; recovery.

A child process (``CHILD``, a fresh interpreter) counts the scenario's operations,
then forks one process per kill point that runs the scenario under
``KillingFileSystem`` and dies by SIGKILL there; the child reopens the engine after
each and checks the four properties of ``crash_scenario`` (a kill keeps the page
cache: every acknowledged write must be there, whatever ``durable_writes`` is). The
child prints its findings as JSON; this test reports them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from crash_sweep import format_report, scratch_directory

REPOSITORY = Path(__file__).resolve().parents[2]
KILL_POINTS_MIN = 550  # before each of ~580-670 operations, after a few (kill_points)

CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, str(Path("tests", "crash").resolve()))
from crash_sweep import kill_sweep_main
kill_sweep_main(Path(sys.argv[1]), durable=sys.argv[2] == "durable")
"""


@pytest.mark.slow
@pytest.mark.parametrize("durable", [True, False], ids=["durable", "cached"])
def test_kill_before_and_after_every_operation_recovers(durable: bool) -> None:
    """After each kill: real cuts, every acknowledged write, the replica resumes."""
    started = time.perf_counter()
    with scratch_directory() as directory:
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(directory),
             "durable" if durable else "cached"],
            cwd=REPOSITORY, capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert (child.returncode, child.stderr) == (0, "")
    outcome = json.loads(child.stdout)
    results = {(p[0], p[1]): [tuple(x) for x in f] for p, f in outcome["results"]}
    title = f"kill sweep, durable_writes={durable}, {outcome['operations']} "
    title += f"operations, {len(results)} kill points, "
    title += f"{time.perf_counter() - started:.1f} s"
    report = format_report(title, results, outcome["trace"])
    print(report)
    assert len(results) >= KILL_POINTS_MIN
    failing = [point for point, problems in results.items() if problems]
    assert not failing, report
