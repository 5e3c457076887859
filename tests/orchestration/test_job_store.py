"""The job store on real SQLite files: records, states, one owner, damage refused."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.clock import Clock
from engine.errors import (
    DamagedState,
    InvalidConfiguration,
    InvalidName,
    JobNotFound,
    JobStoreLocked,
    JobTransitionNotAllowed,
)
from engine.orchestration.job_file import TEXT_CHARACTERS_MAX
from engine.orchestration.job_records import (
    JOB_TRANSITIONS,
    JobState,
    StepState,
    allowed_from,
)
from engine.orchestration.jobs import CLOSED_REASON, INTERRUPTED_REASON, JobStore
from engine.testing import ManualClock

REPOSITORY = Path(__file__).resolve().parents[2]

#: Starts a job and one step in a store, then the process ends without closing it.
DIES_RUNNING = """
import os, sys
from pathlib import Path
from engine.orchestration.jobs import JobStore
from engine.testing import ManualClock
store = JobStore.open(Path(sys.argv[1]), clock=ManualClock(50.0))
job = store.start("commit", "web")
store.begin_step(job.job_id, "commit", vm="web")
print(job.job_id, flush=True)
if sys.argv[2] == "die":
    os._exit(0)
sys.stdin.read()
"""


def child(script: str, *args: str) -> subprocess.Popen[str]:
    """A Python process running ``script`` with this worktree's engine."""
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
    )  # fmt: skip


def test_a_job_records_its_steps_times_and_end(jobs: JobStore, jobs_path: Path) -> None:
    """Start, a step run, a step skipped, success: all read back after a reopen."""
    job = jobs.start("plan_commit", "dr", {"operation": "commit"})
    assert (job.state, job.run, job.steps, job.finished_at) == (
        JobState.RUNNING, 1, (), None,
    )  # fmt: skip
    index = jobs.begin_step(job.job_id, "commit", vm="web", group=1)
    jobs.succeed_step(job.job_id, index)
    jobs.skip_step(job.job_id, "commit", vm="db", group=2, note="already committed")
    done = jobs.succeed(job.job_id)
    jobs.close()
    with JobStore.open(jobs_path, clock=ManualClock()) as reopened:
        assert reopened.job(job.job_id) == done
        assert reopened.interrupted_at_open == ()
    first, second = done.steps
    assert (first.name, first.vm, first.group, first.state) == (
        "commit", "web", 1, StepState.SUCCEEDED,
    )  # fmt: skip
    assert first.finished_at is not None
    assert job.started_at < first.started_at < first.finished_at
    assert (second.state, second.note) == (StepState.SKIPPED, "already committed")
    assert second.started_at == second.finished_at
    assert done.state is JobState.SUCCEEDED
    assert done.params == {"operation": "commit"}
    assert done.finished_at is not None
    assert second.finished_at < done.finished_at


def test_the_file_is_wal_with_full_synchronous(jobs: JobStore) -> None:
    """What the durability argument rests on is in force."""
    jobs.start("enable", "web")
    found = jobs.statistics()
    assert (found.journal_mode, found.synchronous) == ("wal", 2)
    assert found.jobs_by_state["running"] == 1
    assert jobs.integrity_check() == "ok"


def test_a_job_running_when_its_process_died_is_interrupted_at_open(
    jobs_path: Path, ticking_clock: Clock
) -> None:
    """The process ends without closing the store: the next opener marks the job and
    its running step interrupted, naming the process that ran it."""
    process = child(DIES_RUNNING, str(jobs_path), "die")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    job_id = int(out)
    with JobStore.open(jobs_path, clock=ticking_clock) as store:
        assert store.interrupted_at_open == (job_id,)
        job = store.job(job_id)
    assert job.state is JobState.INTERRUPTED
    reason = f"{INTERRUPTED_REASON} (it was run by pid {process.pid} on host "
    assert job.error is not None
    assert job.error.startswith(reason)
    (step,) = job.steps
    assert (step.state, step.error) == (StepState.INTERRUPTED, job.error)
    # Found by the outside review: its end was the time of the open that found it
    # (here the parent's clock, long before the child's), so its duration was that
    # of the outage. It ends when it last recorded: its running step's start.
    assert job.finished_at == step.finished_at == step.started_at


def test_closing_the_store_interrupts_the_jobs_still_running(
    jobs_path: Path, ticking_clock: Clock
) -> None:
    """A close under a running job marks it, with its own reason."""
    with JobStore.open(jobs_path, clock=ticking_clock) as store:
        job = store.start("commit", "web")
    with JobStore.open(jobs_path, clock=ticking_clock) as store:
        found = store.job(job.job_id)
        assert store.interrupted_at_open == ()
    assert found.state is JobState.INTERRUPTED
    assert found.error == f"{CLOSED_REASON} (it was run by {store.owner})"


def test_an_interrupted_job_resumes_with_its_finished_steps(
    jobs_path: Path, ticking_clock: Clock
) -> None:
    """Same job id, run 2, the finished step kept; new steps carry run 2."""
    with JobStore.open(jobs_path, clock=ticking_clock) as store:
        job = store.start("plan_commit", "dr")
        store.succeed_step(job.job_id, store.begin_step(job.job_id, "commit", vm="a"))
        store.begin_step(job.job_id, "commit", vm="b")
    with JobStore.open(jobs_path, clock=ticking_clock) as store:
        resumed = store.resume(job.job_id)
        assert (resumed.state, resumed.run, resumed.error) == (
            JobState.RUNNING, 2, None,
        )  # fmt: skip
        assert [s.state for s in resumed.steps] == [
            StepState.SUCCEEDED, StepState.INTERRUPTED,
        ]  # fmt: skip
        assert resumed.finished_steps() == {(None, "a", "commit")}
        again = store.begin_step(job.job_id, "commit", vm="b")
        store.succeed_step(job.job_id, again)
        done = store.succeed(job.job_id)
    assert [(s.vm, s.run, s.state) for s in done.steps] == [
        ("a", 1, StepState.SUCCEEDED),
        ("b", 1, StepState.INTERRUPTED),
        ("b", 2, StepState.SUCCEEDED),
    ]


def test_a_second_opener_is_refused_naming_the_first(
    jobs: JobStore, jobs_path: Path
) -> None:
    """In this process and in another: the lock's holder is named, nothing changed."""
    with pytest.raises(JobStoreLocked) as refused:
        JobStore.open(jobs_path, clock=ManualClock())
    folder = str(jobs_path.parent.resolve())
    assert str(refused.value).startswith(
        f"job store 'jobs.sqlite' at {folder!r} is in use by pid {os.getpid()} on host "
    )
    assert str(refused.value).endswith(
        f"(its lock '{jobs_path}.lock'); stop that orchestrator first, or open "
        "another job store"
    )
    other = child(
        "import sys\nfrom pathlib import Path\nfrom engine.orchestration.jobs import "
        "JobStore\nfrom engine.testing import ManualClock\n"
        "JobStore.open(Path(sys.argv[1]), clock=ManualClock())",
        str(jobs_path),
    )
    _, err = other.communicate(timeout=60)
    assert other.returncode == 1
    assert (
        f"JobStoreLocked: job store 'jobs.sqlite' at {folder!r} is in use by pid "
        f"{os.getpid()} on host "
    ) in err
    jobs.start("enable", "web")  # the first owner carries on


def test_the_lock_is_released_by_a_holder_that_dies(
    jobs_path: Path, ticking_clock: Clock
) -> None:
    """A SIGKILLed holder leaves no stale lock: the next opener gets the store."""
    holder = child(DIES_RUNNING, str(jobs_path), "wait")
    assert holder.stdout is not None
    job_id = int(holder.stdout.readline())
    with pytest.raises(JobStoreLocked, match=f"in use by pid {holder.pid} on host"):
        JobStore.open(jobs_path, clock=ticking_clock)
    holder.kill()
    holder.communicate(timeout=60)
    with JobStore.open(jobs_path, clock=ticking_clock) as store:
        assert store.interrupted_at_open == (job_id,)


def test_an_unknown_job_is_refused_naming_what_the_store_holds(jobs: JobStore) -> None:
    """JobNotFound says the id, the file and the ids there are."""
    jobs.start("enable", "web")
    with pytest.raises(JobNotFound) as refused:
        jobs.resume(7)
    assert str(refused.value) == (
        f"job_id=7 is not in the job store {str(jobs.path)!r}; it holds 1 job, "
        "ids 1 to 1"
    )
    with pytest.raises(InvalidConfiguration, match="job_id='1' must be an int"):
        jobs.job("1")  # type: ignore[arg-type]


def test_state_changes_outside_the_table_are_refused(jobs: JobStore) -> None:
    """Resume of a succeeded job, abandon of a running one, a step of a failed one,
    a step finished twice: each names the state and the states allowed."""
    job = jobs.start("enable", "web")
    index = jobs.begin_step(job.job_id, "enable_protection", vm="web")
    with pytest.raises(JobTransitionNotAllowed) as refused:
        jobs.abandon(job.job_id, "no")
    assert str(refused.value) == (
        f"cannot abandon job {job.job_id} (enable of 'web'): it is running; abandon "
        "is allowed only from: failed, interrupted (it still runs: wait for it to end)"
    )
    with pytest.raises(JobTransitionNotAllowed, match="a step of it still runs"):
        jobs.succeed(job.job_id)
    jobs.succeed_step(job.job_id, index)
    with pytest.raises(JobTransitionNotAllowed) as twice:
        jobs.fail_step(job.job_id, index, "late")
    assert str(twice.value) == (
        f"cannot fail step 0 ('enable_protection') of job {job.job_id}: it is "
        "succeeded; allowed only from: running"
    )
    with pytest.raises(InvalidConfiguration, match=r"index=5 is not a step of job"):
        jobs.succeed_step(job.job_id, 5)
    jobs.succeed(job.job_id)
    with pytest.raises(JobTransitionNotAllowed, match="it is succeeded; resume is"):
        jobs.resume(job.job_id)
    failed = jobs.start("commit", "web")
    jobs.fail(failed.job_id, "the model refused")
    with pytest.raises(JobTransitionNotAllowed) as stepped:
        jobs.begin_step(failed.job_id, "commit")
    assert str(stepped.value) == (
        f"cannot record a step of job {failed.job_id} (commit of 'web'): it is "
        "failed; only a running job takes steps (resume it first)"
    )


def test_resume_and_abandon_are_allowed_from_failed_and_interrupted_only() -> None:
    """The table says so (and the store's refusals quote the table)."""
    assert allowed_from(JOB_TRANSITIONS, "resume") == ("failed", "interrupted")
    assert allowed_from(JOB_TRANSITIONS, "abandon") == ("failed", "interrupted")
    reached = {row.dest for row in JOB_TRANSITIONS} | {JobState.RUNNING}
    assert reached == set(JobState)


def test_a_damaged_file_is_refused_and_left_as_it_was(
    jobs_path: Path, ticking_clock: Clock
) -> None:
    """Garbage over the file: DamagedState naming it; the file is not deleted or
    changed, and no other file appears beside it."""
    with JobStore.open(jobs_path, clock=ticking_clock) as store:
        store.start("enable", "web")
    garbage = b"not a database, " * 4096
    jobs_path.write_bytes(garbage)
    for stale in jobs_path.parent.glob("jobs.sqlite-*"):
        stale.unlink()  # the WAL of the sound file: gone with it
    before = sorted(path.name for path in jobs_path.parent.iterdir())
    with pytest.raises(DamagedState) as refused:
        JobStore.open(jobs_path, clock=ticking_clock)
    assert str(refused.value) == (
        f"job store {str(jobs_path)!r} is damaged: it is not a readable SQLite "
        "database (file is not a database); nothing was changed or deleted: move "
        "the file aside (a new store starts an empty job history) or restore it "
        "from a backup"
    )
    assert jobs_path.read_bytes() == garbage
    assert sorted(path.name for path in jobs_path.parent.iterdir()) == before
    with pytest.raises(DamagedState):  # not JobStoreLocked: the lock was released
        JobStore.open(jobs_path, clock=ticking_clock)
    jobs_path.rename(jobs_path.with_name("jobs.sqlite.damaged"))  # moved aside
    with JobStore.open(jobs_path, clock=ticking_clock) as fresh:
        assert fresh.jobs() == ()


def test_a_file_truncated_to_nothing_is_refused_not_made_anew(
    jobs_path: Path, ticking_clock: Clock
) -> None:
    """Found by the outside review: a store truncated to 0 bytes opened as a new,
    empty one (the job history, resumable jobs included, silently gone). A new store
    is now made whole and renamed into place, so an empty file is always damage."""
    with JobStore.open(jobs_path, clock=ticking_clock) as store:
        store.start("enable", "web")
    assert jobs_path.stat().st_size > 0
    jobs_path.write_bytes(b"")
    with pytest.raises(DamagedState) as refused:
        JobStore.open(jobs_path, clock=ticking_clock)
    assert "it is empty (0 bytes)" in str(refused.value)
    assert jobs_path.stat().st_size == 0  # left as it was
    assert not jobs_path.with_name("jobs.sqlite.creating").exists()


def test_a_new_store_is_never_seen_half_made(tmp_path: Path) -> None:
    """The schema is written under another name first: debris of a creation a crash
    cut short is removed, and the store opens whole."""
    path = tmp_path / "jobs.sqlite"
    path.with_name("jobs.sqlite.creating").write_bytes(b"half")
    with JobStore.open(path) as store:
        assert store.jobs() == ()
        assert store.integrity_check() == "ok"
    assert not path.with_name("jobs.sqlite.creating").exists()


def test_a_value_the_store_never_writes_is_damage(
    jobs_path: Path, ticking_clock: Clock
) -> None:
    """A kind no job has (edited by hand, past SQLite's checks): refused at open,
    naming the row, the column, the value and what is allowed."""
    with JobStore.open(jobs_path, clock=ticking_clock) as store:
        job = store.start("enable", "web")
        store.succeed(job.job_id)
    with sqlite3.connect(jobs_path) as editor:
        editor.execute("UPDATE job SET kind = 'failback'")
    editor.close()
    with pytest.raises(DamagedState) as refused:
        JobStore.open(jobs_path, clock=ticking_clock)
    assert str(refused.value).startswith(
        f"job store {str(jobs_path)!r} is damaged: job 1 has kind='failback'; "
        "allowed: enable, initial_replication, test_failover, "
    )


def test_a_state_written_past_the_check_constraint_is_damage(
    jobs_path: Path, ticking_clock: Clock
) -> None:
    """SQLite's quick_check finds a CHECK constraint broken by hand."""
    with JobStore.open(jobs_path, clock=ticking_clock) as store:
        store.succeed(store.start("enable", "web").job_id)
    with sqlite3.connect(jobs_path) as editor:
        editor.execute("PRAGMA ignore_check_constraints = ON")
        editor.execute("UPDATE job SET state = 'paused'")
    editor.close()
    with pytest.raises(DamagedState) as refused:
        JobStore.open(jobs_path, clock=ticking_clock)
    assert str(refused.value).startswith(
        f"job store {str(jobs_path)!r} is damaged: SQLite's quick_check reports "
        "['CHECK constraint failed in job']"
    )


def test_a_table_dropped_by_hand_is_damage(
    jobs_path: Path, ticking_clock: Clock
) -> None:
    """The structure is compared with the schema's at open."""
    JobStore.open(jobs_path, clock=ticking_clock).close()
    with sqlite3.connect(jobs_path) as editor:
        editor.execute("DROP TABLE step")
    editor.close()
    with pytest.raises(DamagedState, match="its tables and indexes"):
        JobStore.open(jobs_path, clock=ticking_clock)


def test_an_sqlite_file_of_another_application_is_refused(
    jobs_path: Path, ticking_clock: Clock
) -> None:
    """Nothing is written to it."""
    with sqlite3.connect(jobs_path) as other:
        other.execute("CREATE TABLE notes (text TEXT)")
    other.close()
    before = jobs_path.read_bytes()
    with pytest.raises(InvalidConfiguration) as refused:
        JobStore.open(jobs_path, clock=ticking_clock)
    assert str(refused.value) == (
        f"path={str(jobs_path)!r} is an SQLite database of another application "
        "(application_id=0x0, user_version=0); expected an hvdr job store: name "
        "another file"
    )
    assert jobs_path.read_bytes() == before


def test_bad_input_is_refused_before_anything_is_written(
    jobs: JobStore, tmp_path: Path
) -> None:
    """An unknown kind, a hostile target, parameters that are not JSON, bad progress,
    a folder that does not exist."""
    with pytest.raises(InvalidConfiguration, match="kind='failback' is not a job kind"):
        jobs.start("failback", "web")
    with pytest.raises(InvalidName, match=r"target='\.\./etc' is not a valid name"):
        jobs.start("enable", "../etc")
    with pytest.raises(InvalidConfiguration, match="must hold only JSON values"):
        jobs.start("enable", "web", {"when": object()})
    job = jobs.start("enable", "web")
    with pytest.raises(InvalidConfiguration, match="bytes_done=5 must not exceed"):
        jobs.set_progress(job.job_id, 5, 4)
    with pytest.raises(InvalidConfiguration, match="its folder does not exist"):
        JobStore.open(tmp_path / "missing" / "jobs.sqlite", clock=ManualClock())
    assert [found.job_id for found in jobs.jobs()] == [job.job_id]


def test_progress_and_a_long_error_are_recorded(jobs: JobStore) -> None:
    """Bytes and percent; an error past the bound is cut, saying how much."""
    job = jobs.start("initial_replication", "web")
    assert jobs.job(job.job_id).percent is None
    jobs.set_progress(job.job_id, 1 << 20, 4 << 20)
    assert jobs.job(job.job_id).percent == 25.0
    failed = jobs.fail(job.job_id, "x" * (TEXT_CHARACTERS_MAX + 10))
    assert failed.error == "x" * TEXT_CHARACTERS_MAX + " [... 10 characters cut]"
    with pytest.raises(JobTransitionNotAllowed, match="record the progress of"):
        jobs.set_progress(job.job_id, 2, 4)
