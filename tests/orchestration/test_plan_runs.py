"""Recovery plans run on a real engine, recorded in a real job store (decision 11).

Every failure here is one the engine really refuses (the model's message), never a
fake: a paused VM, a site's VMM disconnected from the vault.
"""

from __future__ import annotations

import itertools
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from small_filesystem import mounted

from engine.errors import (
    InvalidConfiguration,
    InvalidPlan,
    JobTransitionNotAllowed,
    PlanFailed,
    ReplicationError,
    StorageFull,
    TransitionNotAllowed,
)
from engine.orchestration.engine import ReplicationEngine
from engine.orchestration.job_records import JobState, JobStep, StepState
from engine.orchestration.jobs import JobStore
from engine.orchestration.plan_runner import PlanRunner
from engine.orchestration.recovery_plans import RecoveryPlan

EngineFactory = Callable[..., ReplicationEngine]  # the make_engine fixture


class RefusingGuests:
    """The guests of ``refusing`` refuse to shut down (a planned failover's first
    step fails while it runs); ``clear()`` is the fix."""

    def __init__(self, *refusing: str) -> None:
        self.refusing = set(refusing)

    def __call__(self, vm: str, site: str) -> bool:
        del site
        return vm not in self.refusing

    def clear(self) -> None:
        self.refusing.clear()


GROUPS = [["a1", "a2"], ["b1", "b2"], ["c1"]]
VMS = [vm for group in GROUPS for vm in group]
FAILED_OVER_BY = ("planned_failover", "failover")  # complete_failover: already done


def ran(steps: tuple[JobStep, ...], state: StepState = StepState.SUCCEEDED) -> set[str]:
    """'vm:step' of the steps in ``state``."""
    return {f"{step.vm}:{step.name}" for step in steps if step.state is state}


def test_a_plan_of_three_groups_fails_over_in_group_order(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """Every step of group n ends before any step of group n+1 starts (step times)."""
    engine = make_engine(VMS)
    job = PlanRunner(engine, jobs).run(
        RecoveryPlan.define("dr", GROUPS), "planned_failover"
    )
    assert job.state is JobState.SUCCEEDED
    assert job.kind == "plan_planned_failover"
    assert job.target == "dr"
    recorded = jobs.job(job.job_id)  # read back from the file
    assert recorded == job
    expected = {f"{vm}:{step}" for vm in VMS for step in FAILED_OVER_BY}
    assert expected == ran(recorded.steps)
    assert {f"{vm}:complete_failover" for vm in VMS} == ran(
        recorded.steps, StepState.SKIPPED
    )
    for group in (1, 2):
        this = [s for s in recorded.steps if s.group == group]
        after = [s for s in recorded.steps if s.group == group + 1]
        assert max(s.finished_at or 0.0 for s in this) < min(
            s.started_at for s in after
        )
    assert {"failed_over"} == {engine.status(vm).phase for vm in VMS}


def test_a_vm_failing_in_group_2_stops_the_plan_and_resume_finishes_it(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """A VM of group 2 whose guest refuses to shut down: its planned failover fails
    while it runs, group 3 never starts; once the guest shuts down (the fix), the
    same job finishes without redoing group 1."""
    guests = RefusingGuests("b2")
    engine = make_engine(VMS, guest_shutdown=guests)
    runner = PlanRunner(engine, jobs)
    with pytest.raises(PlanFailed) as failed:
        runner.run(RecoveryPlan.define("dr", GROUPS), "planned_failover")
    cause = failed.value.__cause__
    assert isinstance(cause, ReplicationError)
    assert "'b2'" in str(cause)
    message = str(failed.value)
    assert message.startswith(
        "plan 'dr' (planned_failover) stopped at group 2 of 3, before group 3: "
        f"VM 'b2' failed at step planned_failover: {cause}"
    )
    job = jobs.job(failed.value.job_id)
    assert job.state is JobState.FAILED
    assert job.error == message
    (refused,) = [s for s in job.steps if s.state is StepState.FAILED]
    assert (refused.group, refused.vm, refused.name) == (2, "b2", "planned_failover")
    assert refused.error == str(cause)
    assert [s for s in job.steps if s.group == 3] == []
    assert engine.status("c1").phase == "protected"
    assert engine.status("b1").phase == "failed_over"  # its group ran to its end
    first_run = job.steps

    guests.clear()  # the fix: the guest shuts down
    resumed = runner.resume(job.job_id)
    assert resumed.state is JobState.SUCCEEDED
    assert (resumed.job_id, resumed.run) == (job.job_id, 2)
    assert resumed.steps[: len(first_run)] == first_run  # nothing rewritten
    second_run = [s for s in resumed.steps if s.run == 2]
    assert {"b2", "c1"} == {s.vm for s in second_run}
    assert {"b2:planned_failover", "b2:failover", "c1:planned_failover",
            "c1:failover"} == ran(tuple(second_run))  # fmt: skip
    assert {"failed_over"} == {engine.status(vm).phase for vm in VMS}


def test_resume_never_redoes_a_vm_the_operator_moved_on(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """A VM done in the failed run stays done, even committed since by hand."""
    guests = RefusingGuests("b")
    engine = make_engine(["a", "b"], guest_shutdown=guests)
    runner = PlanRunner(engine, jobs)
    with pytest.raises(PlanFailed) as failed:
        runner.run(RecoveryPlan.define("p", [["a", "b"]]), "planned_failover")
    engine.commit("a")  # the operator moves a on
    guests.clear()
    resumed = runner.resume(failed.value.job_id)
    assert resumed.state is JobState.SUCCEEDED
    assert {"b"} == {s.vm for s in resumed.steps if s.run == 2}
    assert engine.status("a").phase == "committed"


def test_the_vms_of_a_group_run_together(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """Three VMs of one group are inside their shutdowns at the same time (a barrier
    of three that would break, after 5 s, if they ran one after another)."""
    barrier = threading.Barrier(3, timeout=5)

    def guest_shutdown(vm: str, site: str) -> bool:
        barrier.wait()
        return True

    engine = make_engine(["a", "b", "c"], guest_shutdown=guest_shutdown)
    job = PlanRunner(engine, jobs, max_workers=3).run(
        RecoveryPlan.define("p", [["a", "b", "c"]]), "planned_failover"
    )
    assert job.state is JobState.SUCCEEDED
    assert not barrier.broken


def test_one_worker_runs_the_vms_of_a_group_one_after_another(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """With max_workers=1 no two VMs' steps overlap in time."""
    engine = make_engine(["a", "b", "c"])
    job = PlanRunner(engine, jobs, max_workers=1).run(
        RecoveryPlan.define("p", [["a", "b", "c"]]), "planned_failover"
    )
    spans = sorted(
        (
            min(s.started_at for s in job.steps if s.vm == vm),
            max(s.finished_at or 0.0 for s in job.steps if s.vm == vm),
        )
        for vm in "abc"
    )
    assert all(end < start for (_, end), (start, _) in itertools.pairwise(spans))


def test_a_failover_that_waits_fails_its_last_step_until_the_vault_is_back(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """The target's VMM loses the vault between failover and the replica VM's start:
    the failover waits in its phase, the last step fails with the engine's reason;
    after the reconnect, resume starts the replica VM."""
    engines: list[ReplicationEngine] = []
    shut_down = threading.Event()
    effects_done = []

    def guest_shutdown(vm: str, site: str) -> bool:
        shut_down.set()
        return True

    def crash_point(step: str) -> None:
        if shut_down.is_set() and step == "effect_done":
            effects_done.append(step)
            if len(effects_done) == 2:  # the first half's, then the failover's
                engines[0].disconnect_vault("secondary")

    engine = make_engine(["a"], guest_shutdown=guest_shutdown, crash_point=crash_point)
    engines.append(engine)
    runner = PlanRunner(engine, jobs)
    with pytest.raises(PlanFailed) as failed:
        runner.run(RecoveryPlan.define("p", [["a"]]), "planned_failover")
    assert "VM 'a' failed at step complete_failover: VM 'a' is failing_over after " in (
        str(failed.value)
    )
    assert "the other site (secondary) is disconnected from the vault" in str(
        failed.value
    )
    assert engine.status("a").phase == "failing_over"
    engine.reconnect_vault("secondary")
    resumed = runner.resume(failed.value.job_id)
    assert [(s.name, s.state) for s in resumed.steps if s.run == 2] == [
        ("complete_failover", StepState.SUCCEEDED)
    ]  # the two finished steps are neither run nor recorded again
    assert engine.status("a").phase == "failed_over"


def test_a_step_the_vm_has_passed_is_skipped_not_asked_again(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """Prepared by hand (the planned failover's first half): the model no longer
    allows planned_failover but allows failover, so the plan goes on from there."""
    engine = make_engine(["a", "b"])
    engine.planned_failover("a", then_fail_over=False)
    job = PlanRunner(engine, jobs).run(
        RecoveryPlan.define("p", [["a", "b"]]), "planned_failover"
    )
    steps = [(s.name, s.state, s.note) for s in job.steps if s.vm == "a"]
    assert steps == [
        ("planned_failover", StepState.SKIPPED, ("VM 'a' has passed it: it is "
         "failover_prepared, where the model allows failover next")),
        ("failover", StepState.SUCCEEDED, None),
        ("complete_failover", StepState.SKIPPED, ("VM 'a' is already failed_over, "
         "where planned_failover ends")),
    ]  # fmt: skip
    assert {"failed_over"} == {engine.status(vm).phase for vm in "ab"}


def test_a_drill_plan_then_its_cleanup(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """test_failover opens a drill on every VM; cleanup_test_failover closes them."""
    engine = make_engine(["a", "b"])
    runner = PlanRunner(engine, jobs)
    plan = RecoveryPlan.define("drill", [["a"], ["b"]])
    drill = runner.run(plan, "test_failover")
    assert {"a:start_test_failover", "b:start_test_failover"} == ran(drill.steps)
    assert {"test_failover"} == {engine.status(vm).phase for vm in "ab"}
    cleanup = runner.run(plan, "cleanup_test_failover")
    assert cleanup.kind == "plan_cleanup_test_failover"
    assert {"a:cleanup_test_failover", "b:cleanup_test_failover"} == ran(cleanup.steps)
    assert {"protected"} == {engine.status(vm).phase for vm in "ab"}


def test_unplanned_failover_commit_and_reverse_replication_plans(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """The whole way round: each plan job succeeds and leaves the VMs where it ends."""
    engine = make_engine(["a", "b"])
    runner = PlanRunner(engine, jobs)
    plan = RecoveryPlan.define("dr", [["a"], ["b"]])
    for operation, phase in (
        ("unplanned_failover", "failed_over"),
        ("commit", "committed"),
        ("reverse_replication", "reverse_replicating"),
    ):
        job = runner.run(plan, operation)
        assert (job.kind, job.state) == (f"plan_{operation}", JobState.SUCCEEDED)
        assert {phase} == {engine.status(vm).phase for vm in "ab"}, operation


def test_a_vm_already_where_the_operation_ends_is_skipped_with_a_note(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """A drill already open: the step is recorded skipped, saying why; not called."""
    engine = make_engine(["a", "b"])
    engine.start_test_failover("a")
    job = PlanRunner(engine, jobs).run(
        RecoveryPlan.define("p", [["a", "b"]]), "test_failover"
    )
    (skipped,) = [s for s in job.steps if s.state is StepState.SKIPPED]
    assert skipped.vm == "a"
    assert skipped.note == "VM 'a' is already test_failover, where test_failover ends"
    assert {"b:start_test_failover"} == ran(job.steps)


def test_a_plan_with_an_unprotected_or_unknown_vm_is_refused_before_any_job(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """Both problems named at once; nothing runs, no job is recorded."""
    engine = make_engine(["a"], unprotected=["raw"])
    plan = RecoveryPlan.define("p", [["a"], ["raw", "ghost"]])
    with pytest.raises(InvalidPlan) as refused:
        PlanRunner(engine, jobs).run(plan, "planned_failover")
    assert str(refused.value) == (
        "plan 'p' cannot run planned_failover: VM 'raw' (group 2) is unprotected: its "
        "replication is not enabled, and planned_failover needs a protected VM "
        "(enable_protection first, or take it out of the plan); VM 'ghost' (group 2) "
        "is unknown to the engine; the engine knows: ['a', 'raw']"
    )
    assert jobs.jobs() == ()
    assert engine.status("a").phase == "protected"


def test_an_unknown_operation_and_a_bad_worker_count_are_refused(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """The message lists the operations a plan runs, and the allowed worker counts."""
    engine = make_engine(["a"])
    with pytest.raises(InvalidConfiguration) as refused:
        PlanRunner(engine, jobs).run(RecoveryPlan.define("p", [["a"]]), "failback")
    assert str(refused.value) == (
        "operation='failback' is not an operation a recovery plan runs; operations: "
        "test_failover, cleanup_test_failover, planned_failover, unplanned_failover, "
        "commit, reverse_replication"
    )
    with pytest.raises(InvalidConfiguration, match="max_workers=0 must be an int from"):
        PlanRunner(engine, jobs, max_workers=0)


def test_a_finished_or_abandoned_plan_job_is_not_resumed(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """Resume of a succeeded job, and of an abandoned one, is refused naming why."""
    engine = make_engine(["a", "b"], guest_shutdown=RefusingGuests("b"))
    runner = PlanRunner(engine, jobs)
    done = runner.run(RecoveryPlan.define("p", [["a"]]), "test_failover")
    with pytest.raises(JobTransitionNotAllowed) as refused:
        runner.resume(done.job_id)
    assert str(refused.value) == (
        f"cannot resume job {done.job_id} (plan_test_failover of 'p'): it is "
        "succeeded; resume is allowed only from: failed, interrupted (it is over: "
        "start a new job)"
    )
    with pytest.raises(PlanFailed) as failed:
        runner.run(RecoveryPlan.define("q", [["b"]]), "planned_failover")
    given_up = jobs.abandon(failed.value.job_id, "b stays at the primary")
    assert (given_up.state, given_up.error) == (
        JobState.ABANDONED,
        "b stays at the primary",
    )
    with pytest.raises(JobTransitionNotAllowed, match="it is abandoned; resume is"):
        runner.resume(failed.value.job_id)


def test_a_job_that_is_no_plan_run_is_not_resumed_as_one(
    make_engine: EngineFactory, jobs: JobStore, tmp_path: Path
) -> None:
    """A single-VM job in the store: the plan runner says it resumes plan jobs only."""
    engine = make_engine(["a"])
    job = jobs.start("commit", "a")
    jobs.fail(job.job_id, "test")
    with pytest.raises(InvalidConfiguration) as refused:
        PlanRunner(engine, jobs).resume(job.job_id)
    assert str(refused.value) == (
        f"job {job.job_id} is a commit job, not a recovery plan's; a plan runner "
        "resumes plan jobs only"
    )


def test_a_plan_is_not_run_twice_at_once_nor_beside_a_plan_on_its_vms(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """Found by the outside review: two runs of one plan at once split its VMs
    between them and both failed. A plan job that runs holds its plan and its VMs:
    another run of it, or a plan sharing a VM, is refused before it starts."""
    release = threading.Event()
    inside = threading.Event()

    def guest_shutdown(vm: str, site: str) -> bool:
        if vm == "a":  # the first run waits inside a's shutdown
            inside.set()
            assert release.wait(60)
        return True

    engine = make_engine(["a", "b", "c"], guest_shutdown=guest_shutdown)
    runner = PlanRunner(engine, jobs)
    first = RecoveryPlan.define("dr", [["a"], ["b"]])
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.append(runner.run(first, "planned_failover"))
    )
    worker.start()
    try:
        assert inside.wait(60)  # the first run is inside a's shutdown
        with pytest.raises(TransitionNotAllowed) as again:
            runner.run(first, "planned_failover")
        assert "plan 'dr' already runs as job 1" in str(again.value)
        sharing = RecoveryPlan.define("other", [["c", "b"]])
        with pytest.raises(TransitionNotAllowed) as shared:
            runner.run(sharing, "planned_failover")
        assert "runs on its VM(s) ['b']" in str(shared.value)
        apart = RecoveryPlan.define("apart", [["c"]])
        assert runner.run(apart, "planned_failover").state is JobState.SUCCEEDED
    finally:
        release.set()
        worker.join(60)
    assert [job.state for job in outcome] == [JobState.SUCCEEDED]  # type: ignore[attr-defined]
    assert [job.target for job in jobs.jobs()] == ["dr", "apart"]


def test_a_job_store_that_fills_during_a_step_reports_the_full_disk(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    """Found by the outside review: the job store's disk filling while a VM's step
    ran made recording its end fail, and the caller was told "cannot fail job 1: a
    step of it still runs" instead. The cause (the full disk) is what is raised;
    the job reads interrupted once the store is opened again after space is freed,
    and resumes."""
    with mounted(tmp_path / "small") as small:
        path = small.root / "jobs.sqlite"
        shutdowns: list[str] = []

        def guest_shutdown(vm: str, site: str) -> bool:
            shutdowns.append(vm)
            if vm == "sql":
                small.fill()  # the disk fills while sql's failover runs
            return True

        engine = make_engine(["sql", "web"], guest_shutdown=guest_shutdown)
        plan = RecoveryPlan.define("shop", [["sql"], ["web"]])
        store = JobStore.open(path)
        try:
            with pytest.raises(StorageFull) as full:
                PlanRunner(engine, store).run(plan, "planned_failover")
            assert "could not be marked failed" in " ".join(full.value.__notes__)
        finally:
            small.free()
            store.close()
        assert shutdowns == ["sql"]  # web's group never started
        with JobStore.open(path) as reopened:
            (job,) = reopened.jobs()
            assert job.state is JobState.INTERRUPTED
            resumed = PlanRunner(engine, reopened).resume(job.job_id)
            assert resumed.state is JobState.SUCCEEDED
        assert {engine.status(vm).phase for vm in ("sql", "web")} == {"failed_over"}


def test_ctrl_c_during_a_plan_stops_it_between_steps_and_waits_for_the_one_in_flight(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """Found by the outside review: Ctrl-C while a group ran let the interrupt go on
    at once while the group's threads kept calling the engine, which the caller was
    closing. Now no step starts after it, the step in flight ends and is recorded
    before the interrupt goes on, no thread is left, and the job resumes."""
    shutdowns: list[str] = []

    def guest_shutdown(vm: str, site: str) -> bool:
        shutdowns.append(vm)
        if shutdowns == ["a1"]:
            # Ctrl-C while a1's first step runs: SIGINT to the main thread, where
            # the kernel delivers a terminal's (the first thread that takes it)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        return True

    engine = make_engine(["a1", "a2"], guest_shutdown=guest_shutdown)
    plan = RecoveryPlan.define("dr", [["a1", "a2"]])
    runner = PlanRunner(engine, jobs, max_workers=1)  # a2 waits for a1's thread
    with pytest.raises(KeyboardInterrupt):
        runner.run(plan, "planned_failover")
    assert not [t for t in threading.enumerate() if t.name.startswith("plan-group")]
    assert shutdowns == ["a1"]  # a2 never started
    (job,) = jobs.jobs()
    assert job.state is JobState.RUNNING  # closing the store marks it interrupted
    assert ran(job.steps) == {"a1:planned_failover"}  # in flight: ended, recorded
    assert engine.status("a1").phase == "failover_prepared"
    jobs.close()
    with JobStore.open(jobs.path) as reopened:
        (interrupted,) = reopened.jobs()
        assert interrupted.state is JobState.INTERRUPTED
        resumed = PlanRunner(engine, reopened).resume(job.job_id)
        assert resumed.state is JobState.SUCCEEDED
    assert shutdowns == ["a1", "a2"]  # a1 not shut down twice: its step was recorded
    assert {engine.status(vm).phase for vm in ("a1", "a2")} == {"failed_over"}


@pytest.mark.parametrize(
    ("operation", "said"),
    [
        ("cleanup_test_failover", "every VM already stands where it ends"),
        ("reverse_replication", "every VM already stands where it ends"),
    ],
)
def test_a_plan_run_with_nothing_to_do_is_refused_not_succeeded(
    make_engine: EngineFactory, jobs: JobStore, operation: str, said: str
) -> None:
    """Found by the outside review: cleaning up a plan with no test failover open,
    or reversing one never failed over, "succeeded" with every step skipped. It is
    refused before any job, naming each VM's phase and what the model allows."""
    engine = make_engine(["a", "b"])
    plan = RecoveryPlan.define("p", [["a"], ["b"]])
    with pytest.raises(InvalidPlan) as refused:
        PlanRunner(engine, jobs).run(plan, operation)
    message = str(refused.value)
    assert said in message
    assert "a is protected (allowed now: " in message
    assert "planned_failover" in message  # the model's allowed list, in its words
    assert jobs.jobs() == ()


def test_a_vm_the_model_blocks_refuses_the_plan_before_anything_runs(
    make_engine: EngineFactory, jobs: JobStore
) -> None:
    """Found by the outside review: an unplanned plan failover failed 'b' over, then
    stopped on 'a' (a drill open), exit 1. The model's answer for every VM is asked
    first: refused, nothing run, no job."""
    engine = make_engine(["a", "b", "c"])
    engine.start_test_failover("a")
    runner = PlanRunner(engine, jobs)
    plan = RecoveryPlan.define("mix", [["b", "a"], ["c"]])
    with pytest.raises(InvalidPlan) as refused:
        runner.run(plan, "unplanned_failover")
    said = str(refused.value)
    assert said.startswith(
        "plan 'mix': unplanned_failover cannot start, nothing was run: VM 'a' "
        "(group 1) is test_failover, where the model allows none of "
        "unplanned_failover, complete_failover (allowed now: replicate, "
        "cleanup_test_failover)"
    )
    assert [engine.status(vm).phase for vm in ("a", "b", "c")] == [
        "test_failover", "protected", "protected",
    ]  # fmt: skip
    assert jobs.jobs() == ()
