"""``hvdr jobs``: the Jobs page. Every operation the orchestrator ran, as a table.

``hvdr jobs`` lists them (``--watch``: a live table, refreshed until Ctrl-C, read
beside the process running the jobs); ``show N`` prints one job's steps; ``resume N``
takes a failed or interrupted job up again (a plan skips what already succeeded);
``abandon N --reason TEXT`` gives it up.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, Final

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from engine.errors import JobNotFound, PlanFailed, ReplicationError
from engine.orchestration.job_records import Job
from engine.orchestration.jobs import JobStore
from engine.orchestration.orchestrator import JOBS_FILE, Orchestrator
from engine.orchestration.site_config import load_orchestrator_config
from hvdr.commands.operator import (
    EXITS,
    REFUSALS,
    add_config,
    one_line,
    with_orchestrator,
)
from hvdr.status import ExitStatus, examples

WATCH_SECONDS: Final = 1.0
ERROR_CHARACTERS: Final = 70  # of a job's error below the table


def register(subparsers: Any) -> None:
    """Add ``hvdr jobs``."""
    parser = subparsers.add_parser(
        "jobs",
        help="the jobs the orchestrator ran: list, watch, show, resume, abandon",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        epilog=examples(
            ("hvdr jobs", "every job, newest last"),
            ("hvdr jobs --watch", "a live table while a plan runs elsewhere"),
            ("hvdr jobs show 3", "job 3's steps, their times and errors"),
            ("hvdr jobs resume 3", "run failed job 3 again, skipping what succeeded"),
        )
        + "\n"
        + EXITS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config(parser)
    parser.add_argument(
        "--watch", action="store_true", help="refresh the table until Ctrl-C"
    )
    parser.set_defaults(handler=_list)
    inner = parser.add_subparsers(dest="action", metavar="ACTION")
    show = inner.add_parser("show", help="one job and its steps")
    show.add_argument("job", type=int, metavar="JOB")
    add_config(show)
    show.set_defaults(handler=_show)
    resume = inner.add_parser("resume", help="take a failed or interrupted job up")
    resume.add_argument("job", type=int, metavar="JOB")
    add_config(resume)
    resume.set_defaults(handler=_resume)
    abandon = inner.add_parser("abandon", help="give a failed or interrupted job up")
    abandon.add_argument("job", type=int, metavar="JOB")
    abandon.add_argument("--reason", required=True, help="why (kept with the job)")
    add_config(abandon)
    abandon.set_defaults(handler=_abandon)


def _reading(args: argparse.Namespace) -> JobStore | None:
    """The job store, read only; None when no operator command has run yet."""
    config = load_orchestrator_config(args.config)
    path = config.state / JOBS_FILE
    if not path.exists() and not path.is_symlink():
        return None
    return JobStore.read(path)


NO_JOBS_YET: Final = "no jobs yet: no operation has run with this configuration"


def _list(args: argparse.Namespace) -> int:
    console = Console()
    try:
        store = _reading(args)
    except ReplicationError as error:
        return _refused(args, error)
    if store is None:
        console.print(table(()))
        print(NO_JOBS_YET)
        return ExitStatus.OK
    with store:
        if not args.watch:
            console.print(table(store.jobs()))
            return ExitStatus.OK
        stop = threading.Event()
        with Live(table(store.jobs()), console=console, auto_refresh=False) as live:
            try:
                while not stop.wait(WATCH_SECONDS):
                    live.update(table(store.jobs()), refresh=True)
            except KeyboardInterrupt:
                return ExitStatus.INTERRUPTED
    return ExitStatus.OK


def table(jobs: tuple[Job, ...], *, errors: bool = True) -> Group:
    """The jobs as the Jobs page shows them: a row each (times UTC), then (with
    ``errors``) the start of each failed or interrupted job's error (``show N``
    prints all of it instead)."""
    found = Table(title=f"jobs ({len(jobs)})")
    for name in ("job", "kind", "target", "state", "started", "progress"):
        found.add_column(name, justify="right" if name == "job" else "left")
    for job in jobs:
        found.add_row(
            str(job.job_id), job.kind, job.target, job.state.value,
            _when(job.started_at, short=True), _progress(job),
        )  # fmt: skip
    if not errors:
        return Group(found)
    starts = [
        f"job {job.job_id}: {_first_words(job.error, ERROR_CHARACTERS)}"
        for job in jobs
        if job.error and job.state.value in ("failed", "interrupted", "abandoned")
    ]
    return Group(found, *starts)


def _first_words(text: str, most: int = ERROR_CHARACTERS) -> str:
    """The start of an error (``hvdr jobs show N`` prints it whole)."""
    return text if len(text) <= most else text[: most - 1].rstrip() + "…"


def _progress(job: Job) -> str:
    """Bytes as a bar and a percentage when the job moves data, else its steps;
    then how long it took (or has run)."""
    percent = job.percent
    if percent is None:
        finished = ("succeeded", "skipped")
        done = sum(1 for step in job.steps if step.state.value in finished)
        said = f"{done}/{len(job.steps)} steps"
    else:
        filled = round(percent / 20)
        said = "█" * filled + "░" * (5 - filled) + f" {percent:.0f}%"
    if job.finished_at is not None:
        said += f", {job.finished_at - job.started_at:.1f} s"
    return said


def _when(at: float | None, *, short: bool = False) -> str:
    """A time in UTC: the time of day (``short``), or the date and time."""
    if at is None:
        return ""
    shape = "%H:%M:%S" if short else "%Y-%m-%d %H:%M:%S"
    return datetime.fromtimestamp(at, UTC).strftime(shape)


def _show(args: argparse.Namespace) -> int:
    try:
        store = _reading(args)
    except ReplicationError as error:
        return _refused(args, error)
    if store is None:
        return _refused(args, JobNotFound(f"no job {args.job}: {NO_JOBS_YET}"))
    with store:
        try:
            job = store.job(args.job)
        except ReplicationError as error:
            return _refused(args, error)
    console = Console()
    console.print(table((job,), errors=False))
    steps = Table(title=f"job {job.job_id}: steps")
    for column in ("#", "run", "group", "vm", "step", "state", "started", "ended"):
        steps.add_column(column, no_wrap=column != "step")
    said = []
    for step in job.steps:
        group = "" if step.group is None else str(step.group)
        steps.add_row(
            str(step.index), str(step.run), group,
            step.vm or "", step.name, step.state.value,
            _when(step.started_at, short=True), _when(step.finished_at, short=True),
        )  # fmt: skip
        if step.error or step.note:
            what = "error" if step.error else "note"
            said.append(f"step {step.index} {what}: {step.error or step.note}")
    console.print(steps)
    # Errors and notes whole, below the table: a column of their own would be cut
    # to a few characters a line on a terminal of 80 columns.
    for line in said:
        print(line)
    if job.error and not any(step.error == job.error for step in job.steps):
        print(f"job {job.job_id} {job.state.value}: {job.error}")
    elif job.error:
        print(f"job {job.job_id} {job.state.value}: the error of its step above")
    return ExitStatus.OK


def _resume(args: argparse.Namespace) -> int:
    def work(orchestrator: Orchestrator) -> int:
        started = time.monotonic()
        try:
            job = orchestrator.resume(args.job)
        except PlanFailed as failed:
            print(
                f"hvdr jobs: error: job {failed.job_id} failed again: "
                f"{one_line(failed)}",
                file=sys.stderr,
            )
            return ExitStatus.FAILED
        took = time.monotonic() - started
        print(f"job {job.job_id}: {job.kind} of {job.target!r} {job.state.value} "
              f"(run {job.run}, {took:.1f} s)")  # fmt: skip
        return ExitStatus.OK

    return with_orchestrator(args, work)


def _abandon(args: argparse.Namespace) -> int:
    def work(orchestrator: Orchestrator) -> int:
        job = orchestrator.abandon(args.job, args.reason)
        print(f"job {job.job_id}: {job.kind} of {job.target!r} abandoned: {job.error}")
        return ExitStatus.OK

    return with_orchestrator(args, work)


def _refused(args: argparse.Namespace, error: ReplicationError) -> int:
    print(f"hvdr {args.command}: error: {one_line(error)}", file=sys.stderr)
    return ExitStatus.USAGE if isinstance(error, REFUSALS) else ExitStatus.FAILED
