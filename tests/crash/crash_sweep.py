"""Running a crash sweep: one forked child per crash point, two workers, a report.

A crash point is ``(operation index, kind)``: kind ``""`` is a power cut before the
operation (:class:`~engine.testing.PowerLossFileSystem`), ``"before"`` and ``"after"``
a SIGKILL around it (:class:`~engine.testing.KillingFileSystem`). For each point a
forked child runs the scenario of ``crash_scenario`` in a fresh directory and crashes
(a power cut ends with ``power_cut()`` and the child's exit: its descriptors, locks
and SQLite connections die with it, as a real power loss ends the process); the parent
of that child then reopens the sites and checks the four properties.

Points run on ``WORKERS`` forked workers, each writing its results to a JSON file the
sweep reads back; a worker that dies leaves its remaining points reported as such.
:func:`format_report` groups the violations by what failed and shows the counting
run's trace around the first examples.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal

from crash_scenario import (
    VM,
    Problem,
    Progress,
    Report,
    check_after_crash,
    describe,
    drive_to_equality,
    open_engine,
    run_scenario,
)

from engine.errors import ReplicationError
from engine.orchestration.engine import ReplicationEngine
from engine.storage import files
from engine.testing import (
    CountingFileSystem,
    FullDiskFileSystem,
    KillingFileSystem,
    PowerCut,
    PowerLossFileSystem,
)

WORKERS: Final = 2  # the cores of the machine the sweeps are timed on

MEMORY_FILE_SYSTEM: Final = Path("/dev/shm")
"""tmpfs: an fsync costs nothing there (on ext4 fsyncs are three quarters of a run),
and neither sweep depends on its cost: a kill keeps the page cache, and the
power-loss simulation decides for itself what was durable."""

Point = tuple[int, str]  # (operation index, "" for a power cut | "before" | "after")


@contextmanager
def scratch_directory() -> Iterator[Path]:
    """A fresh directory for a sweep, on tmpfs where there is one; removed after."""
    base = MEMORY_FILE_SYSTEM if os.access(MEMORY_FILE_SYSTEM, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="hvdr-sweep-", dir=base) as directory:
        yield Path(directory)


def run_child(body: Callable[[Report], None]) -> tuple[int, Progress]:
    """Fork; the child runs ``body(report)`` and exits; return its wait status."""
    status, text = run_child_text(body)
    return status, Progress.parse(text)


def run_child_text(body: Callable[[Report], None]) -> tuple[int, str]:
    """Fork; the child runs ``body(report)`` and exits; its wait status, its lines."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's stack
        os.close(read_end)
        code = 0
        try:
            body(lambda line: _send(write_end, line))
        except BaseException as error:  # reported to the parent
            _send(write_end, f"error {describe(error)}")
            code = 1
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        text = stream.read().decode()
    _, status = os.waitpid(pid, 0)
    return status, text


def _send(descriptor: int, line: str) -> None:
    """One line to the parent (newlines inside it flattened)."""
    os.write(descriptor, (line.replace("\n", " | ") + "\n").encode())


def count_operations(
    directory: Path, *, durable_writes: bool, reported: list[int] | None = None
) -> CountingFileSystem:
    """Run the whole scenario once under a counting layer; return it (trace).
    ``reported`` gets, for each line the scenario reports and each SQL statement
    but a query (SQLite writes through calls the layer does not see), how many
    operations had run then."""
    sites = directory / "sites"
    sites.mkdir(parents=True)
    counting = CountingFileSystem()

    def report(line: str) -> None:
        if reported is not None:
            reported.append(counting.operations)

    def statement(sql: str) -> None:
        if not sql.lstrip().upper().startswith("SELECT"):  # a write, or may be one
            report(sql)

    with files.use(counting), _sql_traced(statement):
        run_scenario(sites, durable_writes=durable_writes, report=report)
    return counting


@contextmanager
def _sql_traced(statement: Callable[[str], None]) -> Iterator[None]:
    """Every SQLite connection opened inside the block (the real one) calls
    ``statement`` with each SQL statement it runs (``set_trace_callback``)."""
    connect = sqlite3.connect

    def traced(*args: Any, **options: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = connect(*args, **options)
        connection.set_trace_callback(statement)
        return connection

    sqlite3.connect = traced  # type: ignore[assignment]
    try:
        yield
    finally:
        sqlite3.connect = connect


def power_loss_point(directory: Path, point: Point, *, durable: bool) -> list[Problem]:
    """Cut the power before operation ``point[0]``, reboot, check the properties."""
    sites = directory / "sites"
    sites.mkdir(parents=True)

    def body(report: Report) -> None:
        simulation = PowerLossFileSystem([sites], crash_at=point[0])
        try:
            with files.use(simulation):
                run_scenario(sites, durable_writes=durable, report=report)
        except PowerCut as cut:
            simulation.power_cut()
            report(f"cut {cut}")

    status, progress = run_child(body)
    cut = any(note.startswith("cut ") for note in progress.notes)
    if os.waitstatus_to_exitcode(status) != 0 or not cut:
        return [("child", "the scenario did not reach the cut", str(progress.notes))]
    return check_after_crash(directory, progress, durable=durable, killed=False)


def kill_point(directory: Path, point: Point, *, durable: bool) -> list[Problem]:
    """SIGKILL the scenario at ``point``, reopen, check the four properties."""
    sites = directory / "sites"
    sites.mkdir(parents=True)
    when: Literal["before", "after"] = "before" if point[1] == "before" else "after"

    def body(report: Report) -> None:
        with files.use(KillingFileSystem(point[0], when=when)):
            run_scenario(sites, durable_writes=durable, report=report)

    status, progress = run_child(body)
    if os.waitstatus_to_exitcode(status) != -signal.SIGKILL:
        return [("child", "the child was not killed", str(progress.notes))]
    return check_after_crash(directory, progress, durable=durable, killed=True)


def full_disk_point(directory: Path, point: Point, *, durable: bool) -> list[Problem]:
    """ENOSPC at operation ``point[0]``: a typed error, then, in the same process,
    replication resumes; then the four properties after a reopen."""
    sites = directory / "sites"
    sites.mkdir(parents=True)

    def body(report: Report) -> None:
        engines: list[ReplicationEngine] = []
        try:
            with files.use(FullDiskFileSystem(point[0])):
                run_scenario(
                    sites, durable_writes=durable, report=report, opened=engines.append
                )
        except ReplicationError as error:
            report(f"refused {describe(error)}")
            if not engines:  # refused while opening: open again, with space back
                engines.append(open_engine(sites, durable_writes=durable))
                if VM not in engines[0].vm_names():
                    return  # refused before the VM existed: nothing to resume
            for _, what, detail in drive_to_equality(engines[0]):
                report(f"stuck {what}: {detail}")
        except Exception as error:  # reported to the parent as a violation
            report(f"untyped {describe(error)}")

    status, progress = run_child(body)
    if os.waitstatus_to_exitcode(status) != 0:
        return [("child", "the scenario crashed", str(progress.notes))]
    problems: list[Problem] = []
    for note in progress.notes:
        if note.startswith("untyped "):
            problems.append(("(0)", "a full disk raised an untyped error", note))
        elif note.startswith("stuck "):
            problems.append(("(3)", "replication did not resume in-process", note))
    return problems + check_after_crash(
        directory, progress, durable=durable, killed=True
    )


PointRunner = Callable[[Path, Point], list[Problem]]


def sweep(
    directory: Path, points: Sequence[Point], run: PointRunner
) -> dict[Point, list[Problem]]:
    """Run every point (``WORKERS`` at a time); return the problems of each."""
    pids = []
    for worker in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            _work(directory, points[worker::WORKERS], run, worker)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    results: dict[Point, list[Problem]] = {}
    for worker in range(WORKERS):
        path = directory / f"worker-{worker}.json"
        for point, problems in json.loads(path.read_text()):
            results[(point[0], point[1])] = [tuple(p) for p in problems]
    missing = [point for point in points if point not in results]
    for point in missing:
        results[point] = [("sweep", "the worker stopped before this point", "")]
    return results


def _work(
    directory: Path, points: Sequence[Point], run: PointRunner, worker: int
) -> None:
    """One worker (a forked process): run its points, write the results, exit."""
    results = []
    try:
        for point in points:
            place = directory / f"{point[0]}{point[1]}"
            try:
                problems = run(place, point)
            except Exception as error:  # a fault of the sweep: report it, go on
                problems = [("sweep", "the sweep itself raised", describe(error))]
            results.append((point, problems))
            shutil.rmtree(place, ignore_errors=True)
    finally:  # whatever happens, report what was done and leave the process
        (directory / f"worker-{worker}.json").write_text(json.dumps(results))
        os._exit(0)


Trace = Sequence[tuple[int, str, str]]
"""A counting run's trace, paths relative to its sites directory."""


def relative_trace(
    counting: CountingFileSystem, sites: Path
) -> list[tuple[int, str, str]]:
    """The trace of ``counting`` with ``sites`` cut from every path."""
    root = str(sites)
    return [(t.index, t.operation, t.path.replace(root, "")) for t in counting.trace]


def format_report(
    title: str, results: Mapping[Point, list[Problem]], trace: Trace
) -> str:
    """The violations grouped by what failed, with examples and the trace around."""
    groups: dict[tuple[str, str], list[tuple[Point, str]]] = {}
    for point, problems in sorted(results.items()):
        for check, what, detail in problems:
            groups.setdefault((check, what), []).append((point, detail))
    failing = sum(1 for problems in results.values() if problems)
    lines = [f"{title}: {failing} of {len(results)} crash points violate a property"]
    for (check, what), items in sorted(groups.items()):
        spans = _ranges(items, sorted({point[0] for point in results}))
        lines.append(f"{check} {what}: {len(items)} points, {spans}")
        for point, detail in items[:2]:
            where = f"{point[0]} {point[1]}".rstrip()
            lines.append(f"    at {where}: {detail}")
            lines += _trace_around(trace, point[0])
    return "\n".join(lines)


def _ranges(items: Sequence[tuple[Point, str]], swept: Sequence[int]) -> str:
    """The operations of ``items`` as spans of consecutive swept operations."""
    position = {index: n for n, index in enumerate(swept)}
    spans: list[list[int]] = []
    for index in sorted({point[0] for point, _ in items}):
        if spans and position[index] == position[spans[-1][1]] + 1:
            spans[-1][1] = index
        else:
            spans.append([index, index])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
    return f"operations {text}"


def _trace_around(trace: Trace, index: int) -> Iterator[str]:
    for number, operation, path in trace[max(0, index - 3) : index + 1]:
        marker = ">>" if number == index else "  "
        yield f"      {marker} {number} {operation} {path}"


SYNCS: Final = frozenset({"fsync", "fdatasync", "fsync_directory"})
"""Operations that change nothing a kill keeps (the page cache is the same before
and after them)."""


def kill_points(counting: CountingFileSystem, reported: Collection[int]) -> list[Point]:
    """Before every operation, and after one only where a kill there can leave
    something no other point leaves.

    A kill keeps the page cache, so what it leaves is the operations done so far and
    the lines reported so far. A kill after operation N leaves what a kill before
    operation N+1 leaves when the scenario reported nothing in between (reads and
    computing change nothing a kill keeps): that point is swept once, as "before
    N+1". So "after N" is swept only when a line was reported after N and before
    N+1 (a kill after N then leaves fewer lines: checks bounded by what was in
    flight are stricter there), and after the last operation. A sync adds nothing
    either way: a kill after it leaves what a kill before it leaves (it changes no
    byte and no name in the page cache). docs/crash-testing.md, "The sweeps".
    """
    between = set(reported)
    last = counting.operations
    points: list[Point] = []
    for traced in counting.trace:
        points.append((traced.index, "before"))
        if traced.operation in SYNCS:
            continue
        if traced.index == last or traced.index in between:
            points.append((traced.index, "after"))
    return points


def kill_sweep_main(directory: Path, *, durable: bool) -> None:
    """The kill sweep's driver process: every operation, before and after; JSON out.

    Prints ``{"operations", "results": [[point, problems]], "trace"}`` on stdout.
    """
    reported: list[int] = []
    counting = count_operations(
        directory / "count", durable_writes=durable, reported=reported
    )
    points = kill_points(counting, reported)
    results = sweep(directory, points, partial(kill_point, durable=durable))
    outcome = {
        "operations": counting.operations,
        "results": sorted(results.items()),
        "trace": relative_trace(counting, directory / "count" / "sites"),
    }
    print(json.dumps(outcome))
