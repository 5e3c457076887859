"""What a job is: its kinds, its states and their transitions (as data), its records.

Every operation the orchestrator runs is a **job**: a kind (what it does), a target (a
VM, or a recovery plan), the steps it took, its progress and how it ended. The job
store (``jobs.py``) keeps them durably; this module holds what is read out of it
(:class:`Job`, :class:`JobStep`, frozen) and the lifecycle of both, declared once as
tables that the store consults before every change:

- a job is ``running`` from its start; it ends ``succeeded`` or ``failed``; it is
  ``interrupted`` when the process running it stopped (found at the next open) or its
  store was closed under it. A failed or interrupted job may be **resumed** (the same
  job, ``running`` again, its finished steps kept) or **abandoned** (``abandoned``,
  final: the operator gave it up). ``succeeded`` and ``abandoned`` are final.
- a step is ``running`` from the moment it is recorded, before its effect starts; it
  ends ``succeeded`` or ``failed``, or ``interrupted`` with its job. A step recorded
  ``skipped`` did not run: its note says why (the VM had already passed it).

Steps are never rewritten once finished: a resumed job appends new steps (its ``run``
number grows), so the record shows every attempt, the failed one included.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from engine.errors import JobTransitionNotAllowed


class JobState(enum.StrEnum):
    """Where a job is (stored as its value): the job's result once it has one."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    ABANDONED = "abandoned"


class StepState(enum.StrEnum):
    """Where one step of a job is (stored as its value)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"


class JobKind(enum.StrEnum):
    """What a job does: one VM operation, or a recovery plan running one."""

    ENABLE = "enable"
    INITIAL_REPLICATION = "initial_replication"
    TEST_FAILOVER = "test_failover"
    CLEANUP_TEST_FAILOVER = "cleanup_test_failover"
    PLANNED_FAILOVER = "planned_failover"
    UNPLANNED_FAILOVER = "unplanned_failover"
    COMMIT = "commit"
    CANCEL = "cancel"
    REVERSE_REPLICATION = "reverse_replication"
    REPLICATE = "replicate"
    SUSPEND = "suspend"
    RESUME = "resume"
    RESYNCHRONIZE = "resynchronize"
    CHANGE_RECOVERY_POINT = "change_recovery_point"
    COMPLETE_FAILOVER = "complete_failover"
    DISABLE = "disable"
    PLAN_TEST_FAILOVER = "plan_test_failover"
    PLAN_CLEANUP_TEST_FAILOVER = "plan_cleanup_test_failover"
    PLAN_PLANNED_FAILOVER = "plan_planned_failover"
    PLAN_UNPLANNED_FAILOVER = "plan_unplanned_failover"
    PLAN_COMMIT = "plan_commit"
    PLAN_REVERSE_REPLICATION = "plan_reverse_replication"


PLAN_KIND_PREFIX: Final = "plan_"
"""A plan run's kind is this prefix and the operation it runs (``plan_commit``)."""


@dataclass(frozen=True)
class Transition:
    """One row of a lifecycle table: ``trigger`` moves ``sources`` to ``dest``."""

    trigger: str
    sources: tuple[str, ...]
    dest: str


_R, _S, _F = JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED
_I, _A = JobState.INTERRUPTED, JobState.ABANDONED

JOB_TRANSITIONS: Final = (
    # A running job ends one of three ways; only its owner's disappearance (found at
    # the next open) or a close under it interrupts it.
    Transition("succeed",   (_R,),     _S),
    Transition("fail",      (_R,),     _F),
    Transition("interrupt", (_R,),     _I),
    # What did not succeed can be taken up again (same job, finished steps kept) or
    # given up for good; what succeeded or was given up is never reopened.
    Transition("resume",    (_F, _I),  _R),
    Transition("abandon",   (_F, _I),  _A),
)  # fmt: skip
"""Every change of a job's state; a job starts ``running``."""

STEP_TRANSITIONS: Final = (
    # A step is recorded running before its effect starts, and finished after it.
    Transition("succeed",   (StepState.RUNNING,), StepState.SUCCEEDED),
    Transition("fail",      (StepState.RUNNING,), StepState.FAILED),
    Transition("interrupt", (StepState.RUNNING,), StepState.INTERRUPTED),
)  # fmt: skip
"""Every change of a step's state; a step starts ``running`` (or is recorded
``skipped``, final, when it did not need to run)."""


def _check_table(table: tuple[Transition, ...], states: Iterable[str]) -> None:
    """One destination per (source, trigger), and only known states."""
    known = set(states)
    pairs = [(source, row.trigger) for row in table for source in row.sources]
    assert len(pairs) == len(set(pairs)), pairs
    for row in table:
        assert row.dest in known, row
        assert set(row.sources) <= known, row


_check_table(JOB_TRANSITIONS, JobState)
_check_table(STEP_TRANSITIONS, StepState)


def allowed_from(table: tuple[Transition, ...], trigger: str) -> tuple[str, ...]:
    """The states ``trigger`` is allowed from, in the table's order."""
    return tuple(
        source for row in table if row.trigger == trigger for source in row.sources
    )


def job_transition(job: Job, trigger: str) -> JobState:
    """The state ``trigger`` moves ``job`` to, or :class:`JobTransitionNotAllowed`."""
    for row in JOB_TRANSITIONS:
        if row.trigger == trigger and job.state in row.sources:
            return JobState(row.dest)
    allowed = ", ".join(allowed_from(JOB_TRANSITIONS, trigger))
    msg = f"cannot {trigger} job {job.job_id} ({job.kind} of {job.target!r}): it is "
    msg += f"{job.state}; {trigger} is allowed only from: {allowed}"
    if job.state is JobState.RUNNING:
        msg += " (it still runs: wait for it to end)"
    elif job.state in (JobState.SUCCEEDED, JobState.ABANDONED):
        msg += " (it is over: start a new job)"
    raise JobTransitionNotAllowed(msg)


@dataclass(frozen=True)
class JobStep:
    """One step of a job, as recorded: begun before its effect, finished after."""

    index: int  # 0, 1, ... in the order the steps began
    run: int  # which run of the job began it (1, then 2 after a resume, ...)
    name: str  # what the step does (the engine method a plan step calls)
    vm: str | None  # the VM it acts on, when it acts on one
    group: int | None  # a plan step's group, from 1
    state: StepState
    started_at: float
    finished_at: float | None
    error: str | None  # why it failed or was interrupted
    note: str | None  # why it was skipped

    @property
    def finished(self) -> bool:
        """Whether the step is done with for good (succeeded, or not needed)."""
        return self.state in (StepState.SUCCEEDED, StepState.SKIPPED)


@dataclass(frozen=True)
class Job:
    """One job, as recorded: what it does, where it stands, every step it took."""

    job_id: int
    kind: str
    target: str  # a VM's name, or a recovery plan's
    params_json: str  # what the job needs to run again (a plan's definition)
    state: JobState
    run: int  # 1, then one more for every resume
    owner: str  # the process that ran it last (pid, host)
    started_at: float
    finished_at: float | None  # None while running
    error: str | None  # why it failed, was interrupted or abandoned
    bytes_done: int | None  # progress, for jobs that move data
    bytes_total: int | None
    steps: tuple[JobStep, ...]

    @property
    def params(self) -> Mapping[str, object]:
        """The parameters (a JSON object, checked when the job was read)."""
        found = json.loads(self.params_json)
        assert isinstance(found, dict)
        return found

    @property
    def percent(self) -> float | None:
        """Progress in percent (None while nothing is known of the total)."""
        if self.bytes_done is None or not self.bytes_total:
            return None
        return 100.0 * self.bytes_done / self.bytes_total

    def finished_steps(self) -> frozenset[tuple[int | None, str | None, str]]:
        """(group, vm, name) of every step done with for good, in any run."""
        return frozenset((s.group, s.vm, s.name) for s in self.steps if s.finished)
