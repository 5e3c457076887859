"""The crash campaign: every distinct crash point, by SIGKILL and by power cut.

``crash_points`` names the crash points of the three failover scenarios (an engine
operation, its call, the named step it passed, a file operation or a hook, the
file's role, before or after). This campaign crashes occurrences of them:

- **kill**: a forked child runs the scenario and SIGKILLs itself before or after the
  file operation (``KillingFileSystem``) or at the named hook (the engine's
  ``crash_point`` seam); the engine is reopened and ``failover_scenario``'s
  properties 0 to 4 are checked (the operation finished or rolled back by itself,
  no acknowledged write lost, every point a past state, failback reaches the last
  writes, no resynchronisation needed);
- **power**: the child cuts the power before the file operation
  (``PowerLossFileSystem``) or at the hook (``cut_now``); then it writes every crash
  state its budget allows (``engine.storage.crash_states``: drop all not durable,
  keep all, each change kept or dropped alone, prefixes, seeded subsets) into a fresh
  tree each, and rewrites its own tree to "drop all"; each state is reopened and
  checked (a write not flushed may be lost only if the engine says a
  resynchronisation is needed).

``python tests/crash/crash_campaign.py`` (``make crash-sweep``) runs the full
campaign (each distinct point once, kill and power, up to 16 states per power cut,
``durable_writes=False``) and prints every point, its states and their results,
then the totals per operation and mode; it exits 1 on a violation, on a listed
operation not crashed both ways, or below 100 distinct points per mode.
``--occurrences N`` crashes up to N occurrences of each point, ``--states N`` sets
the states per cut, ``--durable`` runs with ``durable_writes=True`` (a census of
its own); ``--sampled`` runs the default test's selection (six points per listed
operation and mode), and ``--json`` prints the results as JSON for a test to read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Run as a script: this worktree's engine and the sweeps' modules beside this one.
sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).parent)]

from crash_points import OPERATIONS, Census, Label, Occurrence, census  # noqa: E402
from crash_scenario import Problem, Report  # noqa: E402
from crash_sweep import MEMORY_FILE_SYSTEM, WORKERS, run_child_text  # noqa: E402
from failover_scenario import PLANS, Progress, check_after_crash, run_scenario  # noqa: E402

from engine.storage import files  # noqa: E402
from engine.testing import KillingFileSystem, PowerCut, PowerLossFileSystem  # noqa: E402

SCENARIOS: Final = tuple(PLANS)
DISTINCT_POINTS_MIN: Final = 100  # per mode: the acceptance
STATES_FULL: Final = 16  # crash states per power cut in the full campaign
STATES_SAMPLED: Final = 6  # and in the default test's
SAMPLED_PER_OPERATION: Final = 6  # distinct points per operation and mode, sampled

Task = tuple[str, str, int, bool, str]  # (mode, scenario, index, hook, when)


@dataclass(frozen=True)
class Settings:
    """What a campaign crashes: a sample or every distinct point, how many
    occurrences of each, how many crash states per power cut, which write mode."""

    sampled: bool = False
    occurrences: int = 1
    states: int = STATES_FULL
    durable: bool = False
    plans: tuple[str, ...] = SCENARIOS  # the scenarios crashed (all by default)


Outcome = list[tuple[str, list[Problem]]]  # per crash state: (its name, problems)


# -- choosing the points ---------------------------------------------------------------


def distinct(censuses: Sequence[Census], mode: str) -> dict[Label, list[Occurrence]]:
    """The distinct crash points of ``mode`` and their occurrences, in trace order
    (a power cut is before an operation, or at a hook)."""
    found: dict[Label, list[Occurrence]] = {}
    for counted in censuses:
        for occurrence in counted.occurrences:
            if mode == "power" and occurrence.label.when == "after":
                continue
            found.setdefault(occurrence.label, []).append(occurrence)
    return found


def select(
    censuses: Sequence[Census], mode: str, settings: Settings
) -> list[tuple[Label, Occurrence]]:
    """Full: ``settings.occurrences`` occurrences of every distinct point (the
    first, then spread evenly). Sampled: for each operation,
    ``SAMPLED_PER_OPERATION`` of its points spread evenly (a hook first), once."""
    points = distinct(censuses, mode)
    if not settings.sampled:
        return [
            (label, occurrence)
            for label, found in points.items()
            for occurrence in _occurrences(found, settings.occurrences)
        ]
    by_operation: dict[str, list[Label]] = defaultdict(list)
    for label in points:
        if label.operation in OPERATIONS:
            by_operation[label.operation].append(label)
    chosen = []
    for labels in by_operation.values():
        hooks = [label for label in labels if label.kind == "hook"]
        others = [label for label in labels if label.kind != "hook"]
        picked = _spread(hooks, 1) + _spread(others, SAMPLED_PER_OPERATION - 1)
        if len(picked) < SAMPLED_PER_OPERATION:
            rest = [label for label in labels if label not in picked]
            picked += _spread(rest, SAMPLED_PER_OPERATION - len(picked))
        chosen += [(label, points[label][0]) for label in picked]
    return chosen


def _occurrences(found: Sequence[Occurrence], count: int) -> list[Occurrence]:
    """The first of ``found``, then up to ``count - 1`` more spread evenly."""
    if len(found) <= count:
        return list(found)
    stride = (len(found) - 1) / (count - 1) if count > 1 else 0
    return [found[round(stride * n)] for n in range(count)]


def _spread(items: Sequence[Label], count: int) -> list[Label]:
    """``count`` of ``items``, evenly spaced."""
    if len(items) <= count:
        return list(items)
    stride = len(items) / count
    return [items[int(stride * n + stride / 2)] for n in range(count)]


# -- one crash point -------------------------------------------------------------------


def run_task(directory: Path, task: Task, settings: Settings) -> Outcome:
    """Crash at ``task``, reopen, check; one outcome per crash state."""
    mode, scenario, index, hook, when = task
    durable = settings.durable
    sites = directory / "sites"
    sites.mkdir(parents=True)
    if mode == "kill":
        body = _kill_body(scenario, sites, index, hook=hook, when=when, durable=durable)
    else:
        body = _power_body(scenario, directory, index, hook=hook, settings=settings)
    status, text = run_child_text(body)
    progress = Progress.parse(text)
    code = os.waitstatus_to_exitcode(status)
    if mode == "kill":
        if code != -signal.SIGKILL:
            return [
                ("kill", [("child", "the child was not killed", str(progress.notes))])
            ]
        problems = check_after_crash(
            scenario, directory, progress, durable=durable, killed=True
        )
        return [("kill", problems)]
    if code != 0 or not any(note.startswith("cut ") for note in progress.notes):
        problem = ("child", "the scenario did not reach the cut", str(progress.notes))
        return [("drop all", [problem])]
    outcome: Outcome = [
        ("drop all", check_after_crash(
            scenario, directory, progress, durable=durable, killed=False
        )),
    ]  # fmt: skip
    for note in progress.notes:
        if note.startswith("state "):
            # Each state in turn where the scenario ran: the engine's files name
            # absolute paths (an apply's intent names its logs), as a reboot keeps.
            number, _, name = note.removeprefix("state ").partition(" ")
            shutil.rmtree(sites)
            shutil.rmtree(directory / "points", ignore_errors=True)
            (directory / f"state-{number}" / "sites").rename(sites)
            problems = check_after_crash(
                scenario, directory, progress, durable=durable, killed=False
            )
            outcome.append((name, problems))
    return outcome


def _kill_body(
    scenario: str, sites: Path, index: int, *, hook: bool, when: str, durable: bool
) -> Callable[[Report], None]:
    """The child of a kill: SIGKILL at the ``index``-th hook call, or before or
    after the ``index``-th file operation."""
    calls = [0]

    def crash(name: str) -> None:
        calls[0] += 1
        if calls[0] == index:
            os.kill(os.getpid(), signal.SIGKILL)

    def body(report: Report) -> None:
        if hook:
            run_scenario(
                scenario, sites, durable_writes=durable, report=report,
                crash_point=crash,
            )  # fmt: skip
            return
        killing = KillingFileSystem(
            index, when="before" if when == "before" else "after"
        )
        with files.use(killing):
            run_scenario(scenario, sites, durable_writes=durable, report=report)

    return body


def _power_body(
    scenario: str, directory: Path, index: int, *, hook: bool, settings: Settings
) -> Callable[[Report], None]:
    """The child of a power cut: cut at the ``index``-th hook call or before the
    ``index``-th file operation; write each crash state beside the sites (reported
    as ``state <n> <what it keeps>``), then rewrite the sites to "drop all"."""
    sites = directory / "sites"

    def body(report: Report) -> None:
        simulation = PowerLossFileSystem([sites], crash_at=None if hook else index)
        calls = [0]

        def crash(name: str) -> None:
            calls[0] += 1
            if hook and calls[0] == index:
                simulation.cut_now(f"hook {name}")

        try:
            with files.use(simulation):
                run_scenario(
                    scenario, sites, durable_writes=settings.durable,
                    report=report, crash_point=crash,
                )  # fmt: skip
        except PowerCut as cut:
            pending = simulation.pending()
            states = pending.states(settings.states, seed=index)
            for number, state in enumerate(states[1:], start=1):
                pending.write(state, [directory / f"state-{number}" / "sites"])
                report(f"state {number} {pending.describe(state)}")
            simulation.power_cut()
            report(f"cut {cut}")

    return body


# -- running many, two at a time -------------------------------------------------------


def run_all(
    directory: Path, tasks: Sequence[Task], settings: Settings
) -> list[Outcome]:
    """Every task on ``WORKERS`` forked workers; outcomes in the tasks' order."""
    pids = []
    for worker in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            _work(directory, tasks, worker, settings)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    outcomes: list[Outcome] = [
        [("-", [("sweep", "the worker stopped before this point", "")])]
    ] * len(tasks)
    for worker in range(WORKERS):
        path = directory / f"worker-{worker}.json"
        if path.exists():
            for number, outcome in json.loads(path.read_text()):
                outcomes[number] = [
                    (name, [(a, b, c) for a, b, c in problems])
                    for name, problems in outcome
                ]
    return outcomes


def _work(
    directory: Path, tasks: Sequence[Task], worker: int, settings: Settings
) -> None:
    results = []
    try:
        for number in range(worker, len(tasks), WORKERS):
            place = directory / f"task-{number}"
            try:
                outcome = run_task(place, tasks[number], settings)
            except Exception as error:  # a fault of the campaign: report it, go on
                outcome = [
                    ("-", [("sweep", "the campaign itself raised", repr(error))])
                ]
            results.append((number, outcome))
            shutil.rmtree(place, ignore_errors=True)
    finally:
        (directory / f"worker-{worker}.json").write_text(json.dumps(results))
        os._exit(0)


# -- the campaign and its report -------------------------------------------------------


def campaign(directory: Path, settings: Settings) -> dict[str, object]:
    """Count, choose, crash, check: the results as plain data."""
    started = time.perf_counter()
    censuses = [
        census(name, directory / f"census-{name}", durable=settings.durable)
        for name in settings.plans
    ]
    rows: list[dict[str, object]] = []
    tasks: list[Task] = []
    for mode in ("kill", "power"):
        for label, occurrence in select(censuses, mode, settings):
            when = label.when
            tasks.append(
                (mode, occurrence.scenario, occurrence.index, occurrence.hook, when)
            )
            rows.append({"mode": mode, "label": list(label), "text": label.text()})
    outcomes = run_all(directory, tasks, settings)
    for row, task, outcome in zip(rows, tasks, outcomes, strict=True):
        row["scenario"], row["index"] = task[1], task[2]
        row["states"] = [[name, problems] for name, problems in outcome]
    distinct_count = {mode: len(distinct(censuses, mode)) for mode in ("kill", "power")}
    return {
        "rows": rows,
        "distinct": distinct_count,
        "seconds": round(time.perf_counter() - started, 1),
        "sampled": settings.sampled,
        "settings": {
            "occurrences": settings.occurrences,
            "states": settings.states,
            "durable_writes": settings.durable,
        },
    }


def format_report(result: dict[str, object]) -> str:
    """Every point crashed, its states and their results; then the totals."""
    rows: list[dict[str, object]] = result["rows"]  # type: ignore[assignment]
    lines = []
    for row in rows:
        states: list[list[object]] = row["states"]  # type: ignore[assignment]
        verdicts = []
        for name, problems in states:
            verdicts.append(f"{name}: {'ok' if not problems else 'VIOLATION'}")
        where = f"[{row['scenario']} #{row['index']}]"
        lines.append(f"{row['mode']:5} {row['text']} {where}")
        lines.append("        " + " | ".join(verdicts))
        for name, problems in states:
            for check, what, detail in problems:  # type: ignore[attr-defined]
                lines.append(f"        !! {name}: {check} {what}: {detail}")
    lines.append("")
    lines += totals(result)
    return "\n".join(lines)


def totals(result: dict[str, object]) -> list[str]:
    """Distinct points crashed per operation and mode, crashes, states, violations."""
    rows: list[dict[str, object]] = result["rows"]  # type: ignore[assignment]
    points: dict[tuple[str, str], set[str]] = defaultdict(set)
    crashes: Counter[str] = Counter()
    states: Counter[tuple[str, str]] = Counter()
    bad: Counter[str] = Counter()
    for row in rows:
        operation = str(row["label"][0])  # type: ignore[index]
        key = (operation, str(row["mode"]))
        points[key].add(str(row["text"]))
        crashes[operation] += 1
        found: list[list[object]] = row["states"]  # type: ignore[assignment]
        states[key] += len(found)
        bad[operation] += sum(1 for _, problems in found if problems)
    operations = sorted({operation for operation, _ in points})
    ordered: list[str] = [op for op in OPERATIONS if op in operations]
    ordered += [op for op in operations if op not in OPERATIONS]
    header = f"{'operation':22} {'kill points':>11} {'power points':>12} "
    header += f"{'crashes':>8} {'power states':>12} {'violations':>10}"
    lines = [header]

    def line(name: str, kill: int, power: int, runs: int, cut: int, wrong: int) -> str:
        return f"{name:22} {kill:>11} {power:>12} {runs:>8} {cut:>12} {wrong:>10}"

    for operation in ordered:
        kill, power = (operation, "kill"), (operation, "power")
        lines.append(
            line(operation, len(points[kill]), len(points[power]),
                 crashes[operation], states[power], bad[operation])
        )  # fmt: skip
    total_kill = sum(
        len(found) for (_, mode), found in points.items() if mode == "kill"
    )
    total_power = sum(len(v) for (_, mode), v in points.items() if mode == "power")
    cut = sum(n for (_, mode), n in states.items() if mode == "power")
    lines.append(
        line("total", total_kill, total_power, sum(crashes.values()), cut,
             sum(bad.values()))
    )  # fmt: skip
    settings = result.get("settings", {})
    kind = "sampled" if result["sampled"] else "full"
    lines.append(
        f"distinct crash points in the scenarios: {result['distinct']}; {kind} "
        f"campaign {settings}, {result['seconds']} s"
    )
    return lines


def crashed_points(result: dict[str, object]) -> Counter[str]:
    """Distinct points crashed per mode."""
    rows: list[dict[str, object]] = result["rows"]  # type: ignore[assignment]
    return Counter(
        str(mode) for mode, _ in {(row["mode"], row["text"]) for row in rows}
    )


def uncovered(result: dict[str, object]) -> list[str]:
    """The listed operations not crashed by one of the modes."""
    rows: list[dict[str, object]] = result["rows"]  # type: ignore[assignment]
    seen = {(row["label"][0], row["mode"]) for row in rows}  # type: ignore[index]
    return [
        f"{operation} by {mode}"
        for operation in OPERATIONS
        for mode in ("kill", "power")
        if (operation, mode) not in seen
    ]


def violations(result: dict[str, object]) -> int:
    rows: list[dict[str, object]] = result["rows"]  # type: ignore[assignment]
    total = 0
    for row in rows:
        states: list[tuple[str, list[str]]] = row["states"]  # type: ignore[assignment]
        total += sum(1 for _, problems in states if problems)
    return total


def main(arguments: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sampled", action="store_true", help="the default test's")
    parser.add_argument(
        "--occurrences", type=int, default=1, help="occurrences of each point"
    )
    parser.add_argument(
        "--states", type=int, default=None, help="crash states per power cut"
    )
    parser.add_argument(
        "--durable", action="store_true", help="durable_writes=True (default: off)"
    )
    parser.add_argument(
        "--plan", action="append", choices=SCENARIOS,
        help="crash only this scenario (repeatable; default: every one)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON only")
    options = parser.parse_args(arguments)
    default_states = STATES_SAMPLED if options.sampled else STATES_FULL
    settings = Settings(
        sampled=options.sampled,
        occurrences=options.occurrences,
        states=options.states or default_states,
        durable=options.durable,
        plans=tuple(options.plan or SCENARIOS),
    )
    base = MEMORY_FILE_SYSTEM if os.access(MEMORY_FILE_SYSTEM, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="hvdr-campaign-", dir=base) as directory:
        result = campaign(Path(directory), settings)
    if options.json:
        print(json.dumps(result))
        return 0
    print(format_report(result))
    crashed = crashed_points(result)
    failed = bool(violations(result))
    if settings.plans == SCENARIOS:
        failed = failed or bool(uncovered(result))
    if not options.sampled and settings.plans == SCENARIOS:
        failed = failed or min(crashed.values()) < DISTINCT_POINTS_MIN
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
