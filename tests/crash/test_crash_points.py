"""Every listed operation crashed by kill and by power cut (with the crash states in
between), sampled; the full campaign is ``make crash-sweep``.

The campaign (``crash_campaign``) runs in a fresh interpreter started in this
worktree, which forks one process per crash point; this test prints its report
(run with ``-s``) and asserts that each operation the issue lists was crashed both
ways and that no property of ``failover_scenario`` was violated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from crash_campaign import format_report, uncovered, violations
from crash_points import OPERATIONS, file_role, role, step_operations

REPOSITORY = Path(__file__).resolve().parents[2]
CAMPAIGN = REPOSITORY / "tests" / "crash" / "crash_campaign.py"


def test_a_path_becomes_a_role() -> None:
    """The site stays; the VM, the disks and the numbers are generalised."""
    undo = "/secondary/replicas/web/undo/12.undo"
    expected = "secondary:replicas/<vm>/undo/N.undo"
    assert file_role(f"{undo}.tmp -> {undo}") == f"{expected}.tmp -> {expected}"
    log = role("/primary/vms/web/data.img.hrl.new")
    assert log == "primary:vms/<vm>/<disk>.img.hrl.new"


def test_every_listed_operation_is_a_step_of_some_scenario() -> None:
    """Failback is the way back from reverse replication; each operation occurs."""
    found = {
        operation
        for name in ("planned", "unplanned", "divergent")
        for operation, _ in step_operations(name)
    }
    assert set(OPERATIONS) <= found
    planned = [operation for operation, _ in step_operations("planned")]
    assert planned[-5:-2] == ["failback", "failback", "failback"]


@pytest.mark.slow
def test_every_operation_survives_a_kill_and_a_power_cut_sampled() -> None:
    """Sampled: each operation crashed both ways, every state checked, no violation."""
    child = subprocess.run(
        [sys.executable, str(CAMPAIGN), "--sampled", "--json"],
        cwd=REPOSITORY, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (child.returncode, child.stderr) == (0, "")
    result = json.loads(child.stdout)
    report = format_report(result)
    print(report)
    assert uncovered(result) == []
    assert violations(result) == 0, report
