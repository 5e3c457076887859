"""A child orchestrator for ``test_plan_kill.py``: runs a plan, stops inside group 2.

Arguments: the folder (``primary/``, ``secondary/`` and ``orchestrator/jobs.sqlite``
in it), the VMs whose shutdowns block (comma-separated: those of one group), and the
plan's groups as JSON. The engine asks each VM's guest to shut down during its planned
failover; the groups before theirs are done and recorded by then (a group starts only
when the one before it is done). Once every blocking VM is inside its shutdown, the
child writes ``in group 2`` on stdout; they all read stdin, which the parent never
closes: the child waits there until the parent SIGKILLs it.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from engine.orchestration.engine import ReplicationEngine
from engine.orchestration.jobs import JobStore
from engine.orchestration.plan_runner import PlanRunner
from engine.orchestration.recovery_plans import RecoveryPlan
from engine.testing import ManualClock

BLOCK = 4096
SIGNAL = "in group 2"


def main(folder: Path, blocking: set[str], groups: list[list[str]]) -> None:
    """Run the plan's planned failover until the blocking VMs' shutdowns."""
    arrived: set[str] = set()
    lock = threading.Lock()

    def guest_shutdown(vm: str, site: str) -> bool:
        if vm in blocking:
            with lock:
                arrived.add(vm)
                if arrived == blocking:
                    sys.stdout.write(SIGNAL + "\n")
                    sys.stdout.flush()
            sys.stdin.read()  # until the parent kills this process
        return True

    engine = ReplicationEngine.open(
        folder / "primary", folder / "secondary", clock=ManualClock(),
        block_bytes=BLOCK, guest_shutdown=guest_shutdown,
    )  # fmt: skip
    jobs = JobStore.open(folder / "orchestrator" / "jobs.sqlite", clock=ManualClock())
    PlanRunner(engine, jobs).run(RecoveryPlan.define("dr", groups), "planned_failover")
    sys.stdout.write("not killed\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), set(sys.argv[2].split(",")), json.loads(sys.argv[3]))
