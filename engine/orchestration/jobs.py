"""The job store: every job the orchestrator runs, durably, in one SQLite file.

The caller names the file (``<folder>/jobs.sqlite``, beside the orchestrator's own
state); the store keeps there one row per job (kind, target, parameters, state, run
number, owner, times, error, progress) and one row per step (name, VM, group, state,
times, error or note). What a job and a step are, and which state changes are allowed,
is declared once in ``job_records.py``; every change here is checked against those
tables first, and refused with :class:`~engine.errors.JobTransitionNotAllowed`
otherwise.

**Durable before and after.** A step is recorded ``running`` before its effect starts
and finished after it, each in its own committed transaction; the file is in WAL mode
with ``synchronous=FULL``, so a commit is on disk when it returns (with ``NORMAL`` the
last commits may be lost on power loss, and a job would forget a step it took).

**One owner, and no job left running forever.** Opening the store takes an operating-
system lock on ``<file>.lock`` (``engine/storage/owner_lock.py``, the sites' lock): a
second opener, in this process or another, is refused with
:class:`~engine.errors.JobStoreLocked` naming the holder. The lock is released when
its holder dies, however it dies; so whoever opens the store next is the only live
owner, and every job it finds ``running`` has lost its process: it is marked
``interrupted`` with :data:`INTERRUPTED_REASON` (and so is its running step), at once,
before anything else is read; its end time is the last time it recorded (its start,
or a step's start or end), not the time of the open that found it. Closing the store
under a running job interrupts it the same way, with :data:`CLOSED_REASON`.

**Threads.** One connection serves every thread (a plan runs the VMs of a group in a
thread pool); each public method holds one lock for its whole use of it, so two
threads' transactions never interleave.

**Damage is never silent, and never repaired by deleting.** A file that is not a
database, fails SQLite's ``quick_check``, lacks a table, or holds a value the store
never writes is refused with :class:`~engine.errors.DamagedState` naming the file and
what was found; nothing is written to it, and it is left where it is. A SQLite file of
another application (or of a newer version) is
:class:`~engine.errors.InvalidConfiguration`.
"""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Concatenate, Final, ParamSpec, Self, TypeVar

from engine.clock import Clock, SystemClock
from engine.control.sqlite_transactions import rollback, transaction
from engine.errors import (
    InvalidConfiguration,
    JobNotFound,
    JobStoreLocked,
    JobTransitionNotAllowed,
    ReplicationError,
    SiteLocked,
    TransitionNotAllowed,
)
from engine.names import validate_name
from engine.orchestration.job_file import (
    Row,
    caller_text,
    checked_path,
    connect,
    connect_read_only,
    damaged,
    params_json_text,
    translate,
)
from engine.orchestration.job_records import (
    STEP_TRANSITIONS,
    Job,
    JobKind,
    JobState,
    JobStep,
    StepState,
    allowed_from,
    job_transition,
)
from engine.storage.owner_lock import SiteLock

INTERRUPTED_REASON: Final = (
    "the orchestrator process ended before it recorded this job's end (it was "
    "stopped or killed, or could not write the job store: a full disk?)"
)
"""Why a job found running at open is interrupted (its owner is named after it)."""

CLOSED_REASON: Final = "the job store was closed while this job was running"
CTRL_C_REASON: Final = "interrupted (Ctrl-C) while this job was running"
"""Why a job still running when its store is closed is interrupted."""

LOCK_SUFFIX: Final = ".lock"
LOCK_HOLDER: Final = "orchestrator"

_JOB_SELECT: Final = (
    "SELECT job_id, kind, target, params_json, state, run, owner, started_at, "
    "finished_at, error, bytes_done, bytes_total FROM job "
)
_STEP_COLUMNS: Final = (
    "SELECT step_index, run, name, vm, group_number, state, started_at, "
    "finished_at, error, note FROM step WHERE job_id = ? "
)
_STEP_SELECT: Final = _STEP_COLUMNS + "ORDER BY step_index"
_STEP_BY_INDEX: Final = _STEP_COLUMNS + "AND step_index = ?"

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class JobStoreStatistics:
    """The file, its settings in force, and its jobs counted by state."""

    path: Path
    journal_mode: str
    synchronous: int  # 2 = FULL
    jobs_by_state: Mapping[str, int]


def _serialised(
    method: Callable[Concatenate[JobStore, P], R],
) -> Callable[Concatenate[JobStore, P], R]:
    """Run ``method`` holding the store's lock, its SQLite errors made ours."""

    @functools.wraps(method)
    def serialised(store: JobStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with store._lock:
            store._require_open()
            try:
                return method(store, *args, **kwargs)
            except sqlite3.DatabaseError as error:
                if isinstance(
                    error, sqlite3.ProgrammingError | sqlite3.NotSupportedError
                ):
                    raise  # our own misuse of the module, not the file's state
                store._rollback()
                raise translate(error, store.path) from error

    return serialised


def _last_recorded(job: Job) -> float:
    """When ``job`` last recorded anything: its start, a step's start or end."""
    times = [job.started_at]
    for step in job.steps:
        times.append(step.started_at)
        if step.finished_at is not None:
            times.append(step.finished_at)
    return max(times)


class JobStore:
    """The durable record of every job (one SQLite file, one owner at a time)."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: Path,
        clock: Clock,
        lock: SiteLock | None,
    ) -> None:
        """Use :meth:`open`; this only binds an opened, checked, locked file."""
        self._connection = connection
        self.path = path
        self._clock = clock
        self._owner_lock = lock
        self._lock = threading.RLock()
        self._closed = False
        self.owner = f"pid {os.getpid()} on host {socket.gethostname()}"
        self.interrupted_at_open: tuple[int, ...] = ()

    @classmethod
    def read(cls, path: Path, *, clock: Clock | None = None) -> Self:
        """The store at ``path`` opened to read only, beside the process that owns
        it (``hvdr jobs --watch``): no lock taken, nothing marked or written. A job
        whose owner died reads ``running`` until the owner's next open marks it."""
        path = checked_path(path)
        connection = connect_read_only(path)
        store = cls(connection, path, clock or SystemClock(), None)
        try:
            store._check_on_open()
        except sqlite3.DatabaseError as error:
            connection.close()
            raise translate(error, path) from error
        except BaseException:
            connection.close()
            raise
        return store

    @classmethod
    def open(cls, path: Path, *, clock: Clock | None = None) -> Self:
        """Own the job store at ``path`` (created when missing), checked; every job
        found running is marked interrupted (listed in :attr:`interrupted_at_open`).
        Times come from ``clock`` (default: the host's, ``SystemClock``)."""
        path = checked_path(path)
        clock = clock or SystemClock()
        try:
            lock = SiteLock.acquire(
                path.name, path.parent, clock, file_name=path.name + LOCK_SUFFIX,
                holder=LOCK_HOLDER, kind="job store",
            )  # fmt: skip
        except SiteLocked as error:
            raise JobStoreLocked(str(error)) from None
        try:
            connection = connect(path)
            try:
                store = cls(connection, path, clock, lock)
                store._check_on_open()
                store.interrupted_at_open = store._interrupt_running(INTERRUPTED_REASON)
            except sqlite3.DatabaseError as error:
                connection.close()
                raise translate(error, path) from error
            except BaseException:
                connection.close()
                raise
        except BaseException:
            lock.release()
            raise
        return store

    def close(self, reason: str = CLOSED_REASON) -> None:
        """Interrupt the jobs still running (with ``reason``), close the file and
        release the lock (idempotent)."""
        with self._lock:
            if self._closed:
                return
            try:
                # A full or damaged file cannot take the mark; the next open marks
                # the same jobs interrupted (its owner gone), so nothing is lost.
                if self._owner_lock is not None:  # a reader marks nothing
                    with suppress(ReplicationError, sqlite3.DatabaseError):
                        self._interrupt_running(reason)
            finally:
                self._closed = True
                self._connection.close()
                if self._owner_lock is not None:
                    self._owner_lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- jobs --------------------------------------------------------------------------

    @_serialised
    def start(
        self,
        kind: str,
        target: str,
        params: Mapping[str, object] | None = None,
        *,
        unless: Callable[[Job], str | None] | None = None,
    ) -> Job:
        """Record a new job, ``running`` from now, and return it. ``unless(job)``,
        asked of every running job (under the store's lock, so that two starts
        cannot both pass), says why this one may not start alongside it: refused
        with :class:`~engine.errors.TransitionNotAllowed` naming it."""
        kinds = [str(known) for known in JobKind]
        if kind not in kinds:
            msg = f"kind={kind!r} is not a job kind; kinds: {', '.join(kinds)}"
            raise InvalidConfiguration(msg)
        validate_name(target, argument="target")
        for running in self.jobs(JobState.RUNNING) if unless is not None else ():
            why = unless(running) if unless is not None else None
            if why is not None:
                msg = f"cannot start {kind} of {target!r}: {why}; wait for it to end "
                msg += "(or, if its process is gone, open the store again: it is "
                msg += "then interrupted, and can be resumed or abandoned)"
                raise TransitionNotAllowed(msg)
        params_json = params_json_text(params)
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO job (kind, target, params_json, state, run, owner, "
                "started_at) VALUES (?, ?, ?, ?, 1, ?, ?)",
                (kind, target, params_json, JobState.RUNNING, self.owner, self._now()),
            )
            job_id = cursor.lastrowid
        assert job_id is not None
        return self.job(job_id)

    @_serialised
    def succeed(self, job_id: int) -> Job:
        """The job ended well."""
        return self._move(job_id, "succeed", None)

    @_serialised
    def fail(self, job_id: int, error: str) -> Job:
        """The job ended badly: ``error`` says why (kept, cut past a bound)."""
        return self._move(job_id, "fail", caller_text("error", error))

    @_serialised
    def resume(self, job_id: int) -> Job:
        """Take a failed or interrupted job up again: ``running``, its run number one
        more, its finished steps kept (the runner skips them)."""
        with self._transaction() as cursor:
            job = self._require_job(cursor, job_id)
            dest = job_transition(job, "resume")
            cursor.execute(
                "UPDATE job SET state = ?, run = run + 1, owner = ?, finished_at = "
                "NULL, error = NULL WHERE job_id = ?",
                (dest, self.owner, job_id),
            )
        return self.job(job_id)

    @_serialised
    def abandon(self, job_id: int, reason: str) -> Job:
        """Give a failed or interrupted job up for good (``reason`` is kept)."""
        return self._move(job_id, "abandon", caller_text("reason", reason))

    @_serialised
    def set_progress(self, job_id: int, bytes_done: int, bytes_total: int) -> None:
        """Record how far a running job has moved its data."""
        for argument, value in (
            ("bytes_done", bytes_done),
            ("bytes_total", bytes_total),
        ):
            if type(value) is not int or value < 0:
                msg = f"{argument}={value!r} must be an int >= 0"
                raise InvalidConfiguration(msg)
        if bytes_done > bytes_total:
            msg = f"bytes_done={bytes_done} must not exceed bytes_total={bytes_total}"
            raise InvalidConfiguration(msg)
        with self._transaction() as cursor:
            self._require_running(cursor, job_id, "record the progress of")
            cursor.execute(
                "UPDATE job SET bytes_done = ?, bytes_total = ? WHERE job_id = ?",
                (bytes_done, bytes_total, job_id),
            )

    @_serialised
    def job(self, job_id: int) -> Job:
        """The job ``job_id`` with all its steps."""
        return self._require_job(self._connection.cursor(), job_id)

    @_serialised
    def jobs(self, state: JobState | None = None) -> tuple[Job, ...]:
        """Every job (or those in ``state``), oldest first."""
        cursor = self._connection.cursor()
        if state is None:
            rows = cursor.execute(_JOB_SELECT + "ORDER BY job_id").fetchall()
        else:
            state = JobState(state)
            query = _JOB_SELECT + "WHERE state = ? ORDER BY job_id"
            rows = cursor.execute(query, (state,)).fetchall()
        return tuple(self._decode_job(cursor, row) for row in rows)

    # -- steps -------------------------------------------------------------------------

    @_serialised
    def begin_step(
        self, job_id: int, name: str, *, vm: str | None = None, group: int | None = None
    ) -> int:
        """Record a step ``running`` (before its effect starts); return its index."""
        return self._insert_step(job_id, name, vm, group, StepState.RUNNING, None)

    @_serialised
    def skip_step(
        self,
        job_id: int,
        name: str,
        *,
        note: str,
        vm: str | None = None,
        group: int | None = None,
    ) -> int:
        """Record a step that did not need to run, and ``note`` saying why."""
        return self._insert_step(
            job_id, name, vm, group, StepState.SKIPPED, caller_text("note", note)
        )

    @_serialised
    def succeed_step(self, job_id: int, index: int) -> None:
        """The step's effect is done."""
        self._finish_step(job_id, index, "succeed", None)

    @_serialised
    def fail_step(self, job_id: int, index: int, error: str) -> None:
        """The step's effect failed: ``error`` says why."""
        self._finish_step(job_id, index, "fail", caller_text("error", error))

    # -- the file ----------------------------------------------------------------------

    @_serialised
    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"``, or one line per problem."""
        rows = self._connection.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(line) for (line,) in rows)

    @_serialised
    def statistics(self) -> JobStoreStatistics:
        """The settings in force and the jobs counted by state."""
        execute = self._connection.execute
        (journal_mode,) = execute("PRAGMA journal_mode").fetchone()
        (synchronous,) = execute("PRAGMA synchronous").fetchone()
        counts = dict.fromkeys((str(state) for state in JobState), 0)
        for state, count in execute("SELECT state, count(*) FROM job GROUP BY state"):
            counts[state] = count
        return JobStoreStatistics(
            self.path, journal_mode, synchronous, MappingProxyType(counts)
        )

    # -- internals ---------------------------------------------------------------------

    def _now(self) -> float:
        return float(self._clock.now())

    def _move(self, job_id: int, trigger: str, error: str | None) -> Job:
        with self._transaction() as cursor:
            job = self._require_job(cursor, job_id)
            dest = job_transition(job, trigger)
            if any(step.state is StepState.RUNNING for step in job.steps):
                msg = f"cannot {trigger} job {job_id}: a step of it still runs; "
                msg += "finish the step first"
                raise JobTransitionNotAllowed(msg)
            cursor.execute(
                "UPDATE job SET state = ?, finished_at = ?, error = ? WHERE job_id = ?",
                (dest, self._now(), error, job_id),
            )
        return self.job(job_id)

    def _insert_step(
        self,
        job_id: int,
        name: str,
        vm: str | None,
        group: int | None,
        state: StepState,
        note: str | None,
    ) -> int:
        validate_name(name, argument="name")
        if vm is not None:
            validate_name(vm, argument="vm")
        if group is not None and (type(group) is not int or group < 1):
            msg = f"group={group!r} must be None or a group number (an int >= 1)"
            raise InvalidConfiguration(msg)
        now = self._now()
        with self._transaction() as cursor:
            job = self._require_running(cursor, job_id, "record a step of")
            (count,) = cursor.execute(
                "SELECT count(*) FROM step WHERE job_id = ?", (job_id,)
            ).fetchone()
            index = int(count)
            cursor.execute(
                "INSERT INTO step (job_id, step_index, run, name, vm, group_number, "
                "state, started_at, finished_at, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?)",
                (
                    job_id, index, job.run, name, vm, group, state, now,
                    None if state is StepState.RUNNING else now, note,
                ),
            )  # fmt: skip
        return index

    def _finish_step(
        self, job_id: int, index: int, trigger: str, error: str | None
    ) -> None:
        with self._transaction() as cursor:
            self._require_running(cursor, job_id, f"{trigger} a step of")
            found = None
            if type(index) is int:
                found = cursor.execute(_STEP_BY_INDEX, (job_id, index)).fetchone()
            if found is None:
                (count,) = cursor.execute(
                    "SELECT count(*) FROM step WHERE job_id = ?", (job_id,)
                ).fetchone()
                msg = f"index={index!r} is not a step of job {job_id}; it has "
                msg += f"{count} steps" + (f" (0 to {count - 1})" if count else "")
                raise InvalidConfiguration(msg)
            step = self._decode_step(job_id, found)
            dest = next(
                (row.dest for row in STEP_TRANSITIONS
                 if row.trigger == trigger and step.state in row.sources),
                None,
            )  # fmt: skip
            if dest is None:
                allowed = ", ".join(allowed_from(STEP_TRANSITIONS, trigger))
                msg = f"cannot {trigger} step {index} ({step.name!r}) of job {job_id}: "
                msg += f"it is {step.state}; allowed only from: {allowed}"
                raise JobTransitionNotAllowed(msg)
            cursor.execute(
                "UPDATE step SET state = ?, finished_at = ?, error = ? "
                "WHERE job_id = ? AND step_index = ?",
                (dest, self._now(), error, job_id, index),
            )

    def _interrupt_running(self, reason: str) -> tuple[int, ...]:
        """Interrupt every running job and its running steps; return their ids."""
        with self._lock, self._transaction() as cursor:
            running = cursor.execute(
                _JOB_SELECT + "WHERE state = ? ORDER BY job_id", (JobState.RUNNING,)
            ).fetchall()
            interrupted = []
            for row in running:
                job = self._decode_job(cursor, row)
                why = f"{reason} (it was run by {job.owner})"
                job_transition(job, "interrupt")
                now = self._now()
                if reason == INTERRUPTED_REASON:
                    # Found at open: it ended unseen, some time after the last
                    # thing it recorded; that moment is its end, not this open
                    # (which may come days later).
                    now = _last_recorded(job)
                cursor.execute(
                    "UPDATE job SET state = ?, finished_at = ?, error = ? "
                    "WHERE job_id = ?",
                    (JobState.INTERRUPTED, now, why, job.job_id),
                )
                cursor.execute(
                    "UPDATE step SET state = ?, finished_at = ?, error = ? "
                    "WHERE job_id = ? AND state = ?",
                    (StepState.INTERRUPTED, now, why, job.job_id, StepState.RUNNING),
                )
                interrupted.append(job.job_id)
        return tuple(interrupted)

    def _require_open(self) -> None:
        if self._closed:
            msg = f"the job store at {str(self.path)!r} is closed; open it again"
            raise ReplicationError(msg)

    def _rollback(self) -> None:
        """End a transaction an error interrupted (the original error is reported)."""
        rollback(self._connection)

    def _transaction(self) -> AbstractContextManager[sqlite3.Cursor]:
        """One write transaction (callers hold the lock)."""
        return transaction(self._connection)

    def _require_job(
        self, cursor: sqlite3.Cursor, job_id: int, *, steps: bool = True
    ) -> Job:
        if type(job_id) is not int:
            msg = f"job_id={job_id!r} must be an int (got {type(job_id).__name__})"
            raise InvalidConfiguration(msg)
        # An id past SQLite's 64-bit integers names no job (never an OverflowError).
        row = (
            cursor.execute(_JOB_SELECT + "WHERE job_id = ?", (job_id,)).fetchone()
            if -(2**63) <= job_id < 2**63
            else None
        )
        if row is None:
            (count, low, high) = cursor.execute(
                "SELECT count(*), min(job_id), max(job_id) FROM job"
            ).fetchone()
            msg = f"job_id={job_id} is not in the job store {str(self.path)!r}; "
            msg += f"it holds {count} job{'' if count == 1 else 's'}" + (
                f", ids {low} to {high}" if count else ""
            )
            raise JobNotFound(msg)
        return self._decode_job(cursor, row, steps=steps)

    def _require_running(self, cursor: sqlite3.Cursor, job_id: int, what: str) -> Job:
        """The job (without its steps) if it is running."""
        job = self._require_job(cursor, job_id, steps=False)
        if job.state is not JobState.RUNNING:
            msg = f"cannot {what} job {job_id} ({job.kind} of {job.target!r}): it is "
            msg += f"{job.state}; only a running job takes steps (resume it first)"
            raise JobTransitionNotAllowed(msg)
        return job

    def _check_on_open(self) -> None:
        """SQLite's quick check, then every row read and checked."""
        with self._lock:
            rows = self._connection.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                found = [line for (line,) in rows[:5]]
                raise damaged(self.path, f"SQLite's quick_check reports {found}")
            cursor = self._connection.cursor()
            for row in cursor.execute(_JOB_SELECT + "ORDER BY job_id").fetchall():
                self._decode_job(cursor, row)

    def _decode_job(
        self, cursor: sqlite3.Cursor, values: tuple[object, ...], *, steps: bool = True
    ) -> Job:
        """The job of a row read back, with its steps unless ``steps`` is False."""
        job_id, kind, target, params, state, run, owner, started = values[:8]
        finished, error, bytes_done, bytes_total = values[8:]
        row = Row(self.path, f"job {job_id!r}")
        job_id = row.integer("job_id", job_id, minimum=1)
        rows = cursor.execute(_STEP_SELECT, (job_id,)).fetchall() if steps else []
        decoded_steps = tuple(self._decode_step(job_id, found) for found in rows)
        decoded_state = JobState(row.choice("state", state, JobState))
        if (decoded_state is JobState.RUNNING) != (finished is None):
            row.refuse("finished_at", finished, "None while running, a time once not")
        return Job(
            job_id=job_id,
            kind=row.choice("kind", kind, JobKind),
            target=row.name("target", target),
            params_json=row.json_object("params_json", params),
            state=decoded_state,
            run=row.integer("run", run, minimum=1),
            owner=row.text("owner", owner),
            started_at=row.time("started_at", started),
            finished_at=row.optional_time("finished_at", finished),
            error=row.optional_text("error", error),
            bytes_done=row.optional_integer("bytes_done", bytes_done),
            bytes_total=row.optional_integer("bytes_total", bytes_total),
            steps=decoded_steps,
        )

    def _decode_step(self, job_id: int, values: tuple[object, ...]) -> JobStep:
        index, run, name, vm, group, state, started, finished, error, note = values
        row = Row(self.path, f"step {index!r} of job {job_id}")
        decoded_state = StepState(row.choice("state", state, StepState))
        if (decoded_state is StepState.RUNNING) != (finished is None):
            row.refuse("finished_at", finished, "None while running, a time once not")
        return JobStep(
            index=row.integer("step_index", index, minimum=0),
            run=row.integer("run", run, minimum=1),
            name=row.name("name", name),
            vm=None if vm is None else row.name("vm", vm),
            group=row.optional_integer("group_number", group, minimum=1),
            state=decoded_state,
            started_at=row.time("started_at", started),
            finished_at=row.optional_time("finished_at", finished),
            error=row.optional_text("error", error),
            note=row.optional_text("note", note),
        )
