"""Crash sweeps of the failover scenarios: kills, power cuts, full disks, sampled.

The machinery is ``crash_sweep``'s (one forked child per crash point, ``WORKERS``
workers, the grouped report); the scenarios, the oracle and the checks are
``failover_scenario``'s. A counting run learns the scenario's operations and the step
each belongs to; :func:`sampled` then picks the crash points: every operation when
there are few enough, else a budget spread over the steps (each step at least once,
at its first operation, the rest in proportion to its operations, evenly inside
it), so that every operation of the failover half is crashed in some step of it.
The budget is each test's default, or ``HVDR_FAILOVER_POINTS`` (per scenario and
mode; ``HVDR_FAILOVER_POINTS=100000`` runs every point).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final, Literal

from crash_scenario import VM, Problem, Report, digest
from crash_scenario import describe as describe_error
from crash_sweep import Point, run_child_text, sweep
from failover_scenario import (
    Progress,
    active_images,
    check_after_crash,
    check_engine,
    check_state_free,
    open_engine,
    run_scenario,
)

from engine.binding.restart import NEVER_ABANDONED
from engine.errors import ReplicationError
from engine.orchestration.engine import ReplicationEngine
from engine.storage import files
from engine.storage.simulation import SPACE_OPERATIONS
from engine.testing import (
    CountingFileSystem,
    FullDiskFileSystem,
    KillingFileSystem,
    PowerCut,
    PowerLossFileSystem,
)

POINTS_VARIABLE: Final = "HVDR_FAILOVER_POINTS"


def budget(default: int) -> int:
    """The points per sweep: ``HVDR_FAILOVER_POINTS`` if set, else ``default``."""
    return int(os.environ.get(POINTS_VARIABLE, str(default)))


@dataclass(frozen=True)
class Counted:
    """A counting run: its trace (paths relative to its sites) and the first
    operation of each step."""

    operations: int
    trace: list[tuple[int, str, str]]
    step_starts: list[int]

    def step_of(self, index: int) -> int:
        """The step operation ``index`` belongs to (-1: opening the engine)."""
        found = [i for i, start in enumerate(self.step_starts) if start <= index]
        return found[-1] if found else -1


def count_operations(name: str, directory: Path, *, durable: bool) -> Counted:
    """Run scenario ``name`` once under a counting layer."""
    sites = directory / "sites"
    sites.mkdir(parents=True)
    counting = CountingFileSystem()
    starts: list[int] = []

    def report(line: str) -> None:
        if line.startswith("step "):
            starts.append(counting.operations + 1)

    with files.use(counting):
        run_scenario(name, sites, durable_writes=durable, report=report)
    root = str(sites)
    trace = [(t.index, t.operation, t.path.replace(root, "")) for t in counting.trace]
    return Counted(counting.operations, trace, starts)


def sampled(counted: Counted, indexes: Sequence[int], points_max: int) -> list[int]:
    """``indexes`` (operations of the counting run) when there are at most
    ``points_max``; else each step's first, then the rest spread in proportion."""
    if len(indexes) <= points_max:
        return list(indexes)
    by_step: dict[int, list[int]] = {}
    for index in indexes:
        by_step.setdefault(counted.step_of(index), []).append(index)
    chosen: set[int] = {found[0] for found in by_step.values()}
    left = max(0, points_max - len(chosen))
    for found in by_step.values():
        share = round(left * len(found) / len(indexes))
        if share and len(found) > 1:
            stride = len(found) / (share + 1)
            chosen.update(found[round(stride * (i + 1))] for i in range(share))
    return sorted(chosen)


# -- one crash point -------------------------------------------------------------------


def _progress(text: str) -> Progress:
    return Progress.parse(text)


def kill_point(
    directory: Path, point: Point, *, name: str, durable: bool
) -> list[Problem]:
    """SIGKILL scenario ``name`` at ``point``, reopen, check the properties."""
    sites = directory / "sites"
    sites.mkdir(parents=True)
    when: Literal["before", "after"] = "before" if point[1] == "before" else "after"

    def body(report: Report) -> None:
        with files.use(KillingFileSystem(point[0], when=when)):
            run_scenario(name, sites, durable_writes=durable, report=report)

    status, text = run_child_text(body)
    progress = _progress(text)
    if os.waitstatus_to_exitcode(status) != -signal.SIGKILL:
        return [("child", "the child was not killed", str(progress.notes))]
    return check_after_crash(name, directory, progress, durable=durable, killed=True)


def power_loss_point(
    directory: Path, point: Point, *, name: str, durable: bool
) -> list[Problem]:
    """Cut the power before operation ``point[0]``, reboot, check the properties."""
    sites = directory / "sites"
    sites.mkdir(parents=True)

    def body(report: Report) -> None:
        simulation = PowerLossFileSystem([sites], crash_at=point[0])
        try:
            with files.use(simulation):
                run_scenario(name, sites, durable_writes=durable, report=report)
        except PowerCut as cut:
            simulation.power_cut()
            report(f"cut {cut}")

    status, text = run_child_text(body)
    progress = _progress(text)
    cut = any(note.startswith("cut ") for note in progress.notes)
    if os.waitstatus_to_exitcode(status) != 0 or not cut:
        return [("child", "the scenario did not reach the cut", str(progress.notes))]
    return check_after_crash(name, directory, progress, durable=durable, killed=False)


def full_disk_point(
    directory: Path, point: Point, *, name: str, durable: bool
) -> list[Problem]:
    """ENOSPC at operation ``point[0]``: a typed error; in the same process, with
    space back, properties 0 to 3 hold and the lifecycle is driven to failback
    (property 4); after a reopen nothing is pending and the VM is where the drive
    left it."""
    sites = directory / "sites"
    sites.mkdir(parents=True)

    def body(report: Report) -> None:
        engines: list[ReplicationEngine] = []
        lines: list[str] = []

        def noted(line: str) -> None:
            lines.append(line)
            report(line)

        try:
            with files.use(FullDiskFileSystem(point[0])):
                run_scenario(
                    name, sites, durable_writes=durable, report=noted,
                    opened=engines.append,
                )  # fmt: skip
        except ReplicationError as error:
            report(f"refused {describe_error(error)}")
            progress = Progress.parse("\n".join(lines))
            _go_on(name, engines, sites, progress, durable=durable, report=report)
        except Exception as error:  # reported to the parent as a violation
            report(f"untyped {describe_error(error)}")

    status, text = run_child_text(body)
    progress = _progress(text)
    if os.waitstatus_to_exitcode(status) != 0:
        return [("child", "the scenario crashed", str(progress.notes))]
    problems: list[Problem] = []
    ended = None
    for note in progress.notes:
        if note.startswith("untyped "):
            problems.append(("(0)", "a full disk raised an untyped error", note))
        elif note.startswith("stuck "):
            check, _, rest = note.removeprefix("stuck ").partition(" ")
            what, _, detail = rest.partition(": ")
            problems.append((check, f"in-process: {what}", detail))
        elif note.startswith("ended "):
            ended = note.removeprefix("ended ")
    if not any(note.startswith("refused ") for note in progress.notes):
        return problems + check_after_crash(
            name, directory, progress, durable=durable, killed=True,
            resync_allowed=True,
        )  # fmt: skip
    return problems + _check_reopened(sites, ended, durable=durable)


def _go_on(
    name: str,
    engines: list[ReplicationEngine],
    sites: Path,
    progress: Progress,
    *,
    durable: bool,
    report: Report,
) -> None:
    """After a refusal, with space back: properties 0 to 4 on the same engine."""
    if not engines:  # refused while opening: open again
        engines.append(open_engine(sites, durable_writes=durable))
    engine = engines[0]
    if VM not in engine.vm_names():
        return  # refused before the VM existed: nothing to go on with
    try:
        problems = check_engine(
            name, engine, sites.parent, progress, durable=durable,
            resync_allowed=True, pending_allowed=NEVER_ABANDONED,
        )  # fmt: skip
    except ReplicationError as error:
        problems = [("(4)", "the engine raised", describe_error(error))]
    for check, what, detail in problems:
        report(f"stuck {check} {what}: {detail}")
    if not problems:
        report(f"ended {digest(active_images(engine))}")
    engine.close()


def _check_reopened(sites: Path, ended: str | None, *, durable: bool) -> list[Problem]:
    """After the in-process drive and a reopen: nothing pending, the VM protected at
    the primary on the bytes the drive ended with."""
    if ended is None:
        return []
    engine = open_engine(sites, durable_writes=durable)
    try:
        problems = [
            (check, f"after the reopen: {what}", detail)
            for check, what, detail in check_state_free(engine)
        ]
        status = engine.status(VM)
        if (status.phase, status.active_site) != ("protected", "primary"):
            detail = f"{status.phase} at {status.active_site}"
            problems.append(
                ("(4)", "after the reopen: not protected at the primary", detail)
            )
        elif digest(active_images(engine)) != ended:
            problems.append(("(4)", "after the reopen: the bytes changed", ""))
        return problems
    finally:
        engine.close()


# -- the kill sweep's driver process ---------------------------------------------------


def kill_sweep_main(
    directory: Path, *, name: str, durable: bool, points_max: int
) -> None:
    """Count, sample, kill at each point (before or after, alternately); JSON out.

    Prints ``{"operations", "results": [[point, problems]], "trace"}`` on stdout.
    """
    counted = count_operations(name, directory / "count", durable=durable)
    every = range(1, counted.operations + 1)
    indexes = sampled(counted, every, points_max)
    whens = ("before", "after")
    if len(indexes) == counted.operations and points_max >= 2 * counted.operations:
        points = [(index, when) for index in indexes for when in whens]
    else:
        points = [(index, whens[n % 2]) for n, index in enumerate(indexes)]
    runner = partial(kill_point, name=name, durable=durable)
    results = sweep(directory, points, runner)
    outcome = {
        "operations": counted.operations,
        "results": sorted(results.items()),
        "trace": counted.trace,
    }
    print(json.dumps(outcome))


def space_operations(counted: Counted) -> list[int]:
    """The operations of the counting run that need space."""
    return [
        index for index, operation, _ in counted.trace if operation in SPACE_OPERATIONS
    ]
