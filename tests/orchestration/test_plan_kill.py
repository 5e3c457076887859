"""The orchestrator process SIGKILLed in the middle of a plan: on reopen the job is
interrupted with its finished steps, and resuming it completes the plan."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from engine.orchestration.engine import ReplicationEngine
from engine.orchestration.job_records import JobState, StepState
from engine.orchestration.jobs import INTERRUPTED_REASON, JobStore
from engine.orchestration.plan_runner import PlanRunner
from engine.testing import ManualClock

CHILD = Path(__file__).with_name("plan_child.py")
REPOSITORY = Path(__file__).resolve().parents[2]
GROUPS = [["a1", "a2"], ["b1", "b2"], ["c1"]]
VMS = [vm for group in GROUPS for vm in group]
SIGNAL_SECONDS_MAX = 60.0  # the child imports the engine and runs group 1 first


def first_line(process: subprocess.Popen[str]) -> str:
    """The child's first line on stdout ('' if it ended or stayed silent too long)."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=SIGNAL_SECONDS_MAX):
            return ""
    return process.stdout.readline()


def test_an_orchestrator_killed_mid_plan_leaves_an_interrupted_job_that_resumes(
    make_engine: Callable[..., ReplicationEngine], tmp_path: Path
) -> None:
    """Killed inside group 2 (b1 and b2 in their shutdowns): group 1's steps are
    kept finished, group 2's are interrupted, no group 3 step exists; the engine
    rolls the two failovers back on reopen, and resume finishes the job without
    redoing group 1."""
    make_engine(VMS).close()
    (tmp_path / "orchestrator").mkdir()
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(tmp_path), "b1,b2", json.dumps(GROUPS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )  # fmt: skip
    try:
        signal = first_line(child)
        child.kill()
        _, err = child.communicate(timeout=SIGNAL_SECONDS_MAX)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert signal == "in group 2\n", err
    assert child.returncode == -9

    with JobStore.open(tmp_path / "orchestrator" / "jobs.sqlite",
                       clock=ManualClock(10.0)) as jobs:  # fmt: skip
        (job_id,) = jobs.interrupted_at_open
        job = jobs.job(job_id)
        assert job.state is JobState.INTERRUPTED
        assert job.error is not None
        assert job.error.startswith(
            f"{INTERRUPTED_REASON} (it was run by pid {child.pid} on host "
        )
        first = {(s.vm, s.name, s.state) for s in job.steps if s.group == 1}
        ran = {(vm, step, StepState.SUCCEEDED) for vm in GROUPS[0]
               for step in ("planned_failover", "failover")}  # fmt: skip
        done = {(vm, "complete_failover", StepState.SKIPPED) for vm in GROUPS[0]}
        assert first == ran | done
        assert {(s.vm, s.name, s.state) for s in job.steps if s.group == 2} == {
            (vm, "planned_failover", StepState.INTERRUPTED) for vm in GROUPS[1]
        }
        assert [s for s in job.steps if s.group == 3] == []
        assert jobs.integrity_check() == "ok"

        with ReplicationEngine.open(
            tmp_path / "primary", tmp_path / "secondary", clock=ManualClock(),
            block_bytes=4096,
        ) as engine:  # fmt: skip
            print("RECOVERED", engine.recovered)
            resumed = PlanRunner(engine, jobs).resume(job_id)
            for s in resumed.steps:
                print(
                    s.run, s.group, s.vm, s.name, s.state, s.note, (s.error or "")[:60]
                )
            assert resumed.state is JobState.SUCCEEDED
            assert resumed.steps[: len(job.steps)] == job.steps
            assert {s.vm for s in resumed.steps if s.run == 2} <= {"b1", "b2", "c1"}
            assert "c1" in {s.vm for s in resumed.steps if s.run == 2}
            assert {"failed_over"} == {engine.status(vm).phase for vm in VMS}
        assert jobs.integrity_check() == "ok"
