"""The plan runner: a recovery plan's operation over a ReplicationEngine, as one job.

:meth:`PlanRunner.run` checks the plan (``recovery_plans.py``), starts a job of kind
``plan_<operation>`` whose parameters hold the plan's definition, and runs the groups in
order (decision 11, docs/behaviour.md). The VMs of one group run together, in a thread
pool of at most ``max_workers`` threads (default :data:`MAX_WORKERS_DEFAULT`); the next
group starts only once every VM of this one is done.

**Each VM's steps** are the operation's engine calls, in order, as the model declares
them (``engine/binding/plan_operations.py``: a planned failover is ``planned_failover``
(the first half), ``failover``, ``complete_failover``). For each step the runner

1. skips it when this job already finished it (in an earlier run: that is how a
   resume never redoes a VM), or when the VM already stands where the operation ends,
   or has passed the step (the model no longer allows it but allows a later step of
   the operation, e.g. after a restart finished the step the kill interrupted); a
   skipped step is recorded with a note saying why;
2. records the step ``running`` (durable), calls the engine, and records the result
   (durable): ``succeeded``, or ``failed`` with the engine's error as the cause. A
   failover that waits in its phase (its VMM disconnected) leaves the VM short of the
   operation's end: its last step fails with the engine's reason for waiting.

The runner never decides whether an operation is legal: it calls the engine, which
asks the model, and the model's refusal (``TransitionNotAllowed``, its message) is the
cause recorded. What it reads to skip a step, ``status().phase`` and
``status().allowed``, is the model's answer too.

**A failing VM stops the plan before the next group.** The other VMs of its group run
to their end (they started together); then the job fails with a message naming the
group, each failed VM, its step and the cause, and :class:`~engine.errors.PlanFailed`
is raised with that message. :meth:`PlanRunner.resume` takes the same job up again once
the cause is fixed: the plan comes from the job's record, and every step already
finished is skipped, so only the failed VM and the groups after it run.

**Threads.** ``ReplicationEngine`` serialises operations per VM (one operation lock
each) and is documented as callable from any thread, one operation at a time per VM;
shared state (each site's control store, the in-process replica) has its own lock.
The runner gives each VM of a group to one thread, so no VM ever has two operations
in flight. The job store serialises its writes the same way.

**Ctrl-C** (KeyboardInterrupt in the thread that runs the plan) stops the plan
between steps: no VM starts another step, the steps in flight finish and are
recorded, and only then does the interrupt go on (a second Ctrl-C waits the same
way), so the engine and the job store are never closed under a step. The job is left
running, and closing the store marks it interrupted: ``resume`` takes it up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from engine.binding.failover import FailoverReport
from engine.binding.plan_operations import PLAN_OPERATIONS, PlanOperation
from engine.binding.protected_vm import VmStatus
from engine.errors import (
    InvalidConfiguration,
    InvalidPlan,
    PlanFailed,
    ReplicationError,
)
from engine.orchestration.engine import ReplicationEngine
from engine.orchestration.job_records import PLAN_KIND_PREFIX, Job, job_transition
from engine.orchestration.jobs import JobStore
from engine.orchestration.recovery_plans import (
    RecoveryPlan,
    check_against,
    plan_operation,
)

MAX_WORKERS_DEFAULT: Final = 4
"""VMs of one group run at most this many at a time: each is mostly waiting on disk
I/O, and a host's disks (and the link) saturate long before the thread count does."""

MAX_WORKERS_MAX: Final = 64
"""More threads than this would only queue on the same disks and the job store."""

StepCall = Callable[[ReplicationEngine, str], object]

STEP_CALLS: Final[Mapping[str, StepCall]] = MappingProxyType(
    {
        # The arguments are the model's plan arguments: the latest point for a drill
        # and an unplanned failover, no shutdown first, the planned failover's first
        # half only (its second half is the next step).
        "start_test_failover": lambda engine, vm: engine.start_test_failover(vm),
        "cleanup_test_failover": lambda engine, vm: engine.cleanup_test_failover(vm),
        "planned_failover": lambda engine, vm: engine.planned_failover(
            vm, then_fail_over=False
        ),
        "failover": lambda engine, vm: engine.failover(vm),
        "unplanned_failover": lambda engine, vm: engine.unplanned_failover(
            vm, "latest", shut_down_first=False
        ),
        "complete_failover": lambda engine, vm: engine.complete_failover(vm),
        "commit": lambda engine, vm: engine.commit(vm),
        "reverse_replication": lambda engine, vm: engine.reverse_replication(vm),
    }
)
"""How the runner calls each engine method a plan step names."""

assert {s for op in PLAN_OPERATIONS.values() for s in op.steps} <= set(STEP_CALLS)


@dataclass(frozen=True)
class VmFailure:
    """A VM of a group that did not reach the operation's end: where, and why."""

    vm: str
    step: str
    cause: ReplicationError


class PlanRunner:
    """Runs recovery plans over one engine, each run a durable job."""

    def __init__(
        self,
        engine: ReplicationEngine,
        jobs: JobStore,
        *,
        max_workers: int = MAX_WORKERS_DEFAULT,
    ) -> None:
        """Run plans on ``engine``, recording them in ``jobs``; at most
        ``max_workers`` VMs of a group at a time."""
        if type(max_workers) is not int or not 1 <= max_workers <= MAX_WORKERS_MAX:
            msg = f"max_workers={max_workers!r} must be an int from 1 to "
            msg += f"{MAX_WORKERS_MAX} (VMs of one group run at most that many at once)"
            raise InvalidConfiguration(msg)
        self._engine = engine
        self._jobs = jobs
        self.max_workers = max_workers

    def run(self, plan: RecoveryPlan, operation: str) -> Job:
        """Run ``operation`` over ``plan``, group by group; return the succeeded job.

        Raises :class:`~engine.errors.InvalidPlan` before anything runs (no job is
        started; also when every VM already stands where the operation ends) and
        :class:`~engine.errors.PlanFailed` when a VM fails (the job is failed, and
        resumable).
        """
        if not isinstance(plan, RecoveryPlan):  # caller input: checked at run time
            kind = type(plan).__name__  # type: ignore[unreachable]
            msg = f"plan={plan!r} must be a RecoveryPlan (RecoveryPlan.define(...)), "
            msg += f"got {kind}"
            raise InvalidConfiguration(msg)
        found = plan_operation(operation)
        check_against(plan, self._engine, operation)
        statuses = {vm: self._engine.status(vm) for vm in plan.vm_names}
        _refuse_nothing_to_do(plan, found, statuses)
        _refuse_blocked(plan, found, statuses)
        job = self._jobs.start(
            PLAN_KIND_PREFIX + operation,
            plan.name,
            {"plan": plan.to_json(), "operation": operation},
            unless=lambda running: _overlaps(running, plan),
        )
        return self._execute(job.job_id, plan, found)

    def resume(self, job_id: int) -> Job:
        """Take a failed or interrupted plan job up again, skipping every step it
        already finished; return the succeeded job (or raise as :meth:`run`)."""
        job = self._jobs.job(job_id)
        if not job.kind.startswith(PLAN_KIND_PREFIX):
            msg = f"job {job_id} is a {job.kind} job, not a recovery plan's; a plan "
            msg += "runner resumes plan jobs only"
            raise InvalidConfiguration(msg)
        job_transition(job, "resume")  # refused here, before anything is checked
        plan_json, operation = job.params.get("plan"), job.params.get("operation")
        if not isinstance(plan_json, Mapping) or not isinstance(operation, str):
            msg = f"job {job_id} records no plan to resume (parameters "
            msg += f"{job.params_json[:200]})"
            raise InvalidConfiguration(msg)
        plan = RecoveryPlan.from_json(plan_json)
        found = plan_operation(operation)
        left = [vm for vm in plan.vm_names if not _vm_done(job, plan, vm, found)]
        check_against(plan, self._engine, operation, left)
        _refuse_blocked(plan, found, {vm: self._engine.status(vm) for vm in left})
        self._jobs.resume(job_id)
        return self._execute(job_id, plan, found)

    # -- internals ---------------------------------------------------------------------

    def _execute(
        self, job_id: int, plan: RecoveryPlan, operation: PlanOperation
    ) -> Job:
        count = len(plan.groups)
        for number, group in enumerate(plan.groups, start=1):
            job = self._jobs.job(job_id)
            left = [vm for vm in group if not _vm_done(job, plan, vm, operation)]
            if not left:
                continue
            failures = self._run_group(job, number, left, operation)
            if failures:
                msg = f"plan {plan.name!r} ({operation.name}) stopped at group "
                msg += f"{number} of {count}"
                msg += f", before group {number + 1}: " if number < count else ": "
                msg += "; ".join(
                    f"VM {failure.vm!r} failed at step {failure.step}: {failure.cause}"
                    for failure in failures
                )
                msg += f"; fix the cause, then resume job {job_id}"
                self._jobs.fail(job_id, msg)
                raise PlanFailed(msg, job_id=job_id) from failures[0].cause
        return self._jobs.succeed(job_id)

    def _run_group(
        self, job: Job, number: int, vms: list[str], operation: PlanOperation
    ) -> list[VmFailure]:
        """Run the VMs of group ``number`` together; every one runs to its end."""
        workers = min(self.max_workers, len(vms))
        stop = threading.Event()
        pool = ThreadPoolExecutor(workers, thread_name_prefix="plan-group")
        futures: dict[str, Future[VmFailure | None]] = {}
        try:
            for vm in vms:
                futures[vm] = pool.submit(
                    self._run_vm, job, number, vm, operation, stop
                )
            wait(futures.values())
        except KeyboardInterrupt:
            # Ctrl-C: no step starts any more; the steps in flight run to their end
            # (an engine call cannot be cut short from another thread) before the
            # interrupt goes on, so the engine is never closed under one of them.
            stop.set()
            _finish_uninterrupted(pool)
            raise
        finally:
            pool.shutdown(wait=True)
        failures = []
        unexpected: list[tuple[str, Exception]] = []
        for vm, future in futures.items():
            try:
                failure = future.result()
            except Exception as error:  # a bug, not a refusal: recorded, then raised
                unexpected.append((vm, error))
                continue
            if failure is not None:
                failures.append(failure)
        if unexpected:
            where, bug = unexpected[0]
            msg = f"group {number}: VM {where!r}: unexpected {type(bug).__name__}: "
            msg += f"{bug}"
            try:
                self._jobs.fail(job.job_id, msg)
            except ReplicationError as unrecorded:
                # The store itself failed (full, or a step it could not close):
                # the cause is what the caller must see, not the store's refusal.
                bug.add_note(
                    f"job {job.job_id} could not be marked failed ({unrecorded}); it "
                    "reads running until the job store is opened again, which marks "
                    "it interrupted"
                )
            raise bug
        return failures

    def _run_vm(
        self,
        job: Job,
        number: int,
        vm: str,
        operation: PlanOperation,
        stop: threading.Event,
    ) -> VmFailure | None:
        """Run one VM's steps not yet finished; None when it reached the end (or
        ``stop`` was set: the steps left stay unrecorded, for a resume)."""
        finished = job.finished_steps()
        steps = operation.steps
        for position, step in enumerate(steps):
            if stop.is_set():
                return None
            if (number, vm, step) in finished:
                continue
            try:
                status = self._engine.status(vm)
            except ReplicationError as error:  # damaged since the plan was checked
                index = self._jobs.begin_step(job.job_id, step, vm=vm, group=number)
                self._jobs.fail_step(job.job_id, index, str(error))
                return VmFailure(vm, step, error)
            if status.phase in operation.done_in:
                for rest in steps[position:]:
                    note = f"VM {vm!r} is already {status.phase}, where "
                    note += f"{operation.name} ends"
                    self._jobs.skip_step(
                        job.job_id, rest, note=note, vm=vm, group=number
                    )
                return None
            later = [s for s in steps[position + 1 :] if s in status.allowed]
            if step not in status.allowed and later:
                note = f"VM {vm!r} has passed it: it is {status.phase}, where the "
                note += f"model allows {later[0]} next"
                self._jobs.skip_step(job.job_id, step, note=note, vm=vm, group=number)
                continue
            failure = self._call(job, number, vm, step, last=position == len(steps) - 1,
                                 operation=operation)  # fmt: skip
            if failure is not None:
                return failure
        return None

    def _call(
        self,
        job: Job,
        number: int,
        vm: str,
        step: str,
        *,
        last: bool,
        operation: PlanOperation,
    ) -> VmFailure | None:
        """One step: recorded running, the engine called, the result recorded."""
        index = self._jobs.begin_step(job.job_id, step, vm=vm, group=number)
        try:
            report = STEP_CALLS[step](self._engine, vm)
            phase = self._engine.status(vm).phase if last else None
        except ReplicationError as error:
            self._jobs.fail_step(job.job_id, index, str(error))
            return VmFailure(vm, step, error)
        except Exception as error:  # a bug, not a refusal: recorded, then raised
            cause = f"unexpected {type(error).__name__}: {error}"
            self._jobs.fail_step(job.job_id, index, cause)
            raise
        if phase is not None and phase not in operation.done_in:
            ends = " or ".join(sorted(operation.done_in))
            cause = f"VM {vm!r} is {phase} after {step}, not {ends}"
            if isinstance(report, FailoverReport) and report.waiting:
                cause += f": the failover waits ({report.waiting})"
            self._jobs.fail_step(job.job_id, index, cause)
            return VmFailure(vm, step, ReplicationError(cause))
        try:
            self._jobs.succeed_step(job.job_id, index)
        except ReplicationError as unrecorded:
            # The engine's step is done and durable; only its record is missing
            # (a resume finds the VM past it and skips it).
            unrecorded.add_note(
                f"step {step} of VM {vm!r} itself was done; only job {job.job_id} "
                "could not record its end"
            )
            raise
        return None


def _finish_uninterrupted(pool: ThreadPoolExecutor) -> None:
    """Wait for the pool's threads to end, a second Ctrl-C included."""
    while True:
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        except KeyboardInterrupt:
            continue
        return


def _refuse_nothing_to_do(
    plan: RecoveryPlan, operation: PlanOperation, statuses: Mapping[str, VmStatus]
) -> None:
    """A fresh run where every VM already stands where the operation ends (a
    cleanup with no test failover open, a reverse of VMs never failed over) is
    refused, naming each VM's phase and what the model allows it now: a job
    that "succeeds" doing nothing would tell the operator it had run."""
    if any(s.phase not in operation.done_in for s in statuses.values()):
        return
    said = "; ".join(
        f"{vm} is {s.phase} (allowed now: {', '.join(s.allowed) or 'nothing'})"
        for vm, s in statuses.items()
    )
    msg = f"plan {plan.name!r}: {operation.name} has nothing to do, every VM "
    msg += f"already stands where it ends: {said}"
    raise InvalidPlan(msg)


def _refuse_blocked(
    plan: RecoveryPlan, operation: PlanOperation, statuses: Mapping[str, VmStatus]
) -> None:
    """Refuse, before anything runs, a plan with a VM (of ``statuses``: those
    left to run) the model allows none of the operation's steps now (a drill
    open, replication paused): run, the plan would fail over the VMs before it,
    then stop there. The model's answer (``status().allowed``) decides, as it
    would at the step."""
    blocked = [
        f"VM {vm!r} (group {plan.group_of(vm)}) is {status.phase}, where the "
        f"model allows none of {', '.join(operation.steps)} (allowed now: "
        f"{', '.join(status.allowed) or 'nothing'})"
        for vm, status in statuses.items()
        if status.phase not in operation.done_in
        and not any(step in status.allowed for step in operation.steps)
    ]
    if blocked:
        msg = f"plan {plan.name!r}: {operation.name} cannot start, nothing was "
        msg += "run: " + "; ".join(blocked)
        raise InvalidPlan(msg)


def _overlaps(running: Job, plan: RecoveryPlan) -> str | None:
    """Why ``plan`` may not start while ``running`` runs (None: it may): the same
    plan, or a job on one of its VMs (a VM never has two operations in flight)."""
    if running.kind.startswith(PLAN_KIND_PREFIX):
        if running.target == plan.name:
            return f"plan {plan.name!r} already runs as job {running.job_id}"
        recorded = running.params.get("plan")
        groups = recorded.get("groups") if isinstance(recorded, Mapping) else None
        theirs = {vm for group in groups or () for vm in group}
    else:
        theirs = {running.target}
    shared = sorted(theirs & set(plan.vm_names))
    if shared:
        return (
            f"job {running.job_id} ({running.kind} of {running.target!r}) runs on "
            f"its VM(s) {shared}"
        )
    return None


def _vm_done(job: Job, plan: RecoveryPlan, vm: str, operation: PlanOperation) -> bool:
    """Whether this job finished every step of ``vm`` (it stays done: a resume never
    redoes a VM, even one the operator moved on since)."""
    number = plan.group_of(vm)
    finished = job.finished_steps()
    return all((number, vm, step) in finished for step in operation.steps)
