"""``hvdr check``: explore every reachable state of a bounded model, check everything.

Runs ``invariants.explorer.explore`` with a progress display, then prints the
statistics (states, transitions, depth and, when the search is complete, the
diameter, time, states/s, peak memory, the symmetry reduction factor when it
applied), how often each action fired with those that never did, the SOMETIMES
witnesses never reached, and the verdict. On a violation, a deadlock or an
unrecoverable state it prints the shortest trace with the whole state at each step
(``hvdr.counterexample``), writes it as a trace file (``--trace-out``, replayable
with ``hvdr replay``) and draws it on the lifecycle (``--svg``), and exits with
status 1.

``--mutate`` runs the generated mutants instead (``hvdr.commands.mutate``) and
``--only NAME`` reruns one of them.

Limits: a run stops cleanly at ``--max-states`` states or ``--max-memory`` MiB of
peak memory (both on by default, ``unlimited`` lifts them), prints the statistics
so far and the flag that lifts the limit, and exits with status 3: nothing failed
in the part searched, but the part is not the whole. Ctrl-C does the same with
status 130, and says where the search was (depth, queue, the trace to the state).

Progress: on a terminal, a live line (rich); otherwise a plain line every
``PLAIN_PROGRESS_SECONDS`` (states, queue, depth, states/s, memory), so a CI log
shows a long run moving.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import graphviz
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from hvdr import counterexample, overlays, results, state_graph
from hvdr.commands import mutate
from hvdr.model_options import (
    add_model_arguments,
    config_from_args,
    rules_from_args,
    whole_number,
)
from hvdr.status import ExitStatus, UsageError, check_outputs, examples
from invariants import mutation
from invariants import trace as traces
from invariants.explorer import Report, Statistics, Stop, explore
from invariants.fields import JsonValue
from invariants.kinds import Violation
from invariants.mutants import MUTANTS
from invariants.rule_mutants import OPERATORS, generate
from model import ModelConfig
from model.successor import Rules

#: States a run explores at most unless told otherwise: about fourteen times the
#: two-VM acceptance run's 720,162 states (8 s), about 100 s at 100,000 states/s,
#: so a run of a
#: size nobody meant (a third VM, a larger budget) stops within minutes.
DEFAULT_MAX_STATES = 10_000_000

#: Peak memory (MiB) a run may reach unless told otherwise: the search keeps every
#: state (160-210 bytes each, with its edges; docs/benchmarks.md), and a run past
#: the machine's memory is killed without a word; 4 GiB fits a developer's machine
#: with room for the rest.
DEFAULT_MAX_MEMORY_MIB = 4_096

#: Seconds between plain progress lines when stdout is not a terminal.
PLAIN_PROGRESS_SECONDS = 5.0

#: How often (in states) the explorer reports, for either kind of progress.
PROGRESS_EVERY_STATES = 5_000

#: The word that lifts a limit.
UNLIMITED = "unlimited"


def limit(text: str) -> int | None:
    """An argparse ``type``: a whole number of at least 1, or 'unlimited'."""
    if text == UNLIMITED:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"{text!r} is not allowed; give a whole number >= 1, or {UNLIMITED!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


limit.__name__ = f"whole number >= 1 or {UNLIMITED!r}"


def register(subparsers: Any) -> None:
    """Add the ``check`` subcommand."""
    parser = subparsers.add_parser(
        "check",
        help="explore the bounded model exhaustively; check every property",
        epilog=examples(
            (
                "hvdr check",
                "the default model: one VM, every fault, budget 1 (3,604 states)",
            ),
            ("hvdr check --vms 2", "the acceptance run: two VMs (720,162 states)"),
            (
                "hvdr check --mutant commit_keeps_recovery_points",
                "a broken model fails; its counterexample is shown and written",
            ),
            (
                "hvdr check --budget 0 --dot states.dot",
                "also write the state graph of a small model as DOT",
            ),
            (
                "hvdr check --json result.json",
                "also write the results as JSON (docs/json-results.md)",
            ),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--max-states",
        type=limit,
        default=DEFAULT_MAX_STATES,
        metavar="N",
        help=f"stop cleanly (exit 3) after N states (default {DEFAULT_MAX_STATES:,}; "
        f"'{UNLIMITED}' lifts it)",
    )
    parser.add_argument(
        "--max-memory",
        type=limit,
        default=DEFAULT_MAX_MEMORY_MIB,
        metavar="MIB",
        help=f"stop cleanly (exit 3) at this peak memory in MiB (default "
        f"{DEFAULT_MAX_MEMORY_MIB:,}; '{UNLIMITED}' lifts it)",
    )
    parser.add_argument(
        "--trace-out",
        type=Path,
        default=Path("counterexample.jsonl"),
        help="where to write a counterexample (default: counterexample.jsonl)",
    )
    parser.add_argument(
        "--svg",
        type=Path,
        default=Path("counterexample.svg"),
        help="where to draw a counterexample (default: counterexample.svg)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="also write the results as JSON to FILE (schema: docs/json-results.md)",
    )
    parser.add_argument(
        "--dot",
        type=Path,
        metavar="FILE",
        help="also write the state graph (every state, every call) as DOT text to "
        "FILE, for small models only (see --dot-max-states)",
    )
    parser.add_argument(
        "--dot-max-states",
        type=whole_number(1),
        default=None,
        metavar="N",
        help=f"with --dot: refuse a graph of more than N states (default "
        f"{state_graph.DEFAULT_STATES_MAX:,})",
    )
    parser.add_argument(
        "--list-mutants",
        action="store_true",
        help="list the mutants (hand-written, then generated) and exit",
    )
    parser.add_argument(
        "--mutate",
        action="store_true",
        help="run the generated mutants at the default bounds; print the kill rate "
        "per operator and every survivor",
    )
    parser.add_argument(
        "--operator",
        action="append",
        metavar="OP",
        help=f"with --mutate: only this operator's mutants ({', '.join(OPERATORS)})",
    )
    parser.add_argument(
        "--only",
        metavar="NAME",
        help="with --mutate: rerun one generated mutant and write its counterexample "
        "(the same as --mutant NAME)",
    )
    parser.set_defaults(handler=run)


def refuse_lone_flags(args: argparse.Namespace) -> None:
    """UsageError for a flag that means something only with another one, given
    without it (it would be ignored); then the default of --dot-max-states."""
    for flag, value, needs in (
        ("--operator", args.operator, args.mutate),
        ("--dot-max-states", args.dot_max_states, args.dot is not None),
    ):
        if value is not None and not needs:
            wanted = "--mutate" if flag == "--operator" else "--dot FILE"
            msg = f"{flag} works only with {wanted}, which is not given"
            raise UsageError(msg)
    if args.dot_max_states is None:
        args.dot_max_states = state_graph.DEFAULT_STATES_MAX


def run(args: argparse.Namespace) -> int:
    """Explore; print; write the counterexample; the status of ``hvdr.status``."""
    refuse_lone_flags(args)
    console = Console()
    check_outputs(
        (args.trace_out, "--trace-out"),
        (args.svg, "--svg"),
        (args.json, "--json"),
        (args.dot, "--dot"),
    )
    for flag, value in (("--json", args.json), ("--dot", args.dot)):
        if value is not None and (args.list_mutants or args.mutate):
            msg = f"{flag}: not with --list-mutants or --mutate (it writes one check)"
            raise UsageError(msg)
    if args.list_mutants:
        for mutant in MUTANTS:
            console.print(f"{mutant.name}: {mutant.summary}")
        for generated in generate().mutants:
            console.print(f"{generated.name}: {generated.summary}", highlight=False)
        return ExitStatus.OK
    if args.mutate and args.only is None:
        return mutate.run(console, args)
    if args.only is not None:
        if mutation.lookup(args.only) is None:
            msg = f"--only {args.only!r}: no such mutant (hvdr check --list-mutants)"
            raise UsageError(msg)
        args.mutant = args.only
    config = config_from_args(args)
    rules = rules_from_args(args)
    graph = None if args.dot is None else dump_graph(config, rules, args)
    memory = None if args.max_memory is None else args.max_memory * 2**20
    with progress_display(console) as show:
        report = explore(
            config, rules, max_states=args.max_states, max_memory_bytes=memory,
            interruptible=True, progress=show, progress_every=PROGRESS_EVERY_STATES,
        )  # fmt: skip
    console.print(statistics_table(report))
    console.print(coverage_table(report))
    if report.never_fired:
        console.print(
            f"[yellow]never fired ({len(report.never_fired)}): "
            f"{', '.join(report.never_fired)}[/yellow]"
        )
    status = verdict(console, report, args)
    if graph is not None:
        args.dot.write_text(graph.source, encoding="utf-8")
        console.print(f"state graph written to {args.dot} (DOT)", soft_wrap=True)
    if args.json is not None:
        results.write(args.json, json_result(report, status, args))
        console.print(
            f"results written to {args.json} (docs/json-results.md)", soft_wrap=True
        )
    return status


def dump_graph(
    config: ModelConfig, rules: Rules, args: argparse.Namespace
) -> graphviz.Digraph:
    """The DOT drawing of the state graph; UsageError past --dot-max-states."""
    try:
        graph = state_graph.search(config, rules, args.dot_max_states)
    except state_graph.TooLarge:
        msg = (
            f"--dot {str(args.dot)!r}: the state graph has more than "
            f"{args.dot_max_states:,} states, too many to draw; choose a smaller "
            "model, or raise the limit with --dot-max-states N"
        )
        raise UsageError(msg) from None
    title = (
        f"hvdr check: {len(graph.states):,} states, {len(graph.edges):,} "
        "transitions (no symmetry reduction)"
    )
    return state_graph.dot(graph, title)


def json_result(
    report: Report, status: int, args: argparse.Namespace
) -> dict[str, JsonValue]:
    """The ``--json`` document of one check (``hvdr.results``)."""
    failure = None
    if report.violations:
        first = report.violations[0]
        failure = results.counterexample_json(
            report.config, first.trace, first.invariant, rules_from_args(args)
        )
    elif report.deadlock_traces:
        failure = results.counterexample_json(
            report.config, report.deadlock_traces[0], None, rules_from_args(args)
        )
    body = results.check_body(report)
    return results.document("check", status, report.config, args.mutant, body, failure)


@contextmanager
def progress_display(console: Console) -> Iterator[Callable[[Statistics], None]]:
    """A progress callback: a live rich line on a terminal, else plain lines."""
    if not console.is_terminal:
        last = time.perf_counter()

        def plain(statistics: Statistics) -> None:
            nonlocal last
            now = time.perf_counter()
            if now - last >= PLAIN_PROGRESS_SECONDS:
                last = now
                print(f"progress: {progress_text(statistics)}", flush=True)

        yield plain
        return
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("exploring", total=None)

        def live(statistics: Statistics) -> None:
            progress.update(task, description=progress_text(statistics))

        yield live


def progress_text(statistics: Statistics) -> str:
    """States, queue, depth, rate and memory, in one line."""
    return (
        f"{statistics.states:,} states, {statistics.queued:,} queued, depth "
        f"{statistics.depth}, {statistics.states_per_second:,.0f} states/s, "
        f"{statistics.peak_memory_bytes / 2**20:,.0f} MiB"
    )


def statistics_table(report: Report) -> Table:
    """The statistics of one exploration, one row per figure."""
    statistics = report.statistics
    table = Table(title="hvdr check", show_header=False)
    config = report.config
    faults = ", ".join(sorted(fault.value for fault in config.faults)) or "none"
    sizes = (
        f"{config.vm_count} VM(s), {config.disks_per_vm} disks, "
        f"lag {config.write_lag_max}, points {config.recovery_points_max}, "
        f"budget {config.fault_budget}, plans {len(config.plans)}"
    )
    rows = [
        ("configuration", sizes),
        ("faults", faults),
        ("states", f"{statistics.states:,}"),
        ("transitions", f"{statistics.transitions:,}"),
        ("depth", str(statistics.depth)),
        ("diameter", diameter_text(report)),
        ("seconds", f"{statistics.seconds:.1f}"),
        ("states/s", f"{statistics.states_per_second:,.0f}"),
        ("peak memory", f"{statistics.peak_memory_bytes / 2**20:,.0f} MiB"),
    ]  # fmt: skip
    if statistics.unreduced_states is not None:
        reduction = (
            f"{statistics.unreduced_states:,} states without it: factor "
            f"{statistics.symmetry_factor:.2f}"
        )
        rows.append(("symmetry reduction", reduction))
    if report.complete:
        complete = "yes"
    elif report.stopped_by is not None:
        complete = f"no ({report.stopped_by.value}; {statistics.queued:,} queued)"
    else:
        complete = "no (stopped at the first violation)"
    rows.append(("complete", complete))
    for name, value in rows:
        table.add_row(name, value)
    return table


def diameter_text(report: Report) -> str:
    """The diameter, or why it is not known."""
    if report.diameter is None:
        return "unknown: the search is incomplete"
    return f"{report.diameter} (the longest shortest path from the initial state)"


#: Action columns side by side in the coverage table.
COVERAGE_COLUMNS = 2


def coverage_table(report: Report) -> Table:
    """How many transitions each action labels, several actions to a row."""
    part = "" if report.complete else " (in the part searched)"
    table = Table(title=f"action coverage: transitions per action{part}")
    for _ in range(COVERAGE_COLUMNS):
        table.add_column("action")
        table.add_column("fired", justify="right")
    counts = report.action_counts
    rows = -(-len(counts) // COVERAGE_COLUMNS)
    for row in range(rows):
        cells: list[str] = []
        for name, count in counts[row::rows]:
            cells += [name, f"{count:,}" if count else "[yellow]0[/yellow]"]
        table.add_row(*cells)
    return table


def verdict(console: Console, report: Report, args: argparse.Namespace) -> int:
    """Print what was found; write and draw the first counterexample."""
    if report.unwitnessed:
        console.print(
            "[yellow]never reached (SOMETIMES): "
            + ", ".join(report.unwitnessed)
            + "[/yellow]"
        )
    console.print(
        f"violations: {len(report.violations)}, deadlocks: {report.deadlocks}, "
        f"unrecoverable states: {report.unrecoverable}"
    )
    problems: list[Violation] = list(report.violations)
    for calls in report.deadlock_traces[:1]:
        console.print("[red]deadlock (no call enabled) after:[/red]")
        console.print(" → ".join(str(call) for call in calls))
    if problems or report.deadlocks:
        calls = problems[0].trace if problems else report.deadlock_traces[0]
        for violation in problems:
            console.print(f"[red]{violation}[/red]")
        invariant = problems[0].invariant if problems else None
        counterexample.show(
            console, report.config, calls, invariant, rules_from_args(args)
        )
        name = None if invariant is None else invariant.name
        write_counterexample(console, report, calls, args, name)
        return ExitStatus.FAILED
    if report.complete:
        console.print("[green]OK[/green]")
        return ExitStatus.OK
    return incomplete(console, report, args)


def incomplete(console: Console, report: Report, args: argparse.Namespace) -> int:
    """Say why the search stopped, where, and how to go further (3, or 130)."""
    statistics = report.statistics
    where = (
        f"at depth {statistics.depth} with {statistics.queued:,} states queued; "
        f"the state it was expanding is reached by {len(report.stopped_at)} steps:"
    )
    path = " → ".join(str(call) for call in report.stopped_at) or "(the initial state)"
    if report.stopped_by is Stop.INTERRUPTED:
        console.print(f"[yellow]interrupted {where}[/yellow]")
        console.print(path)
        console.print("no property failed in the part searched")
        return ExitStatus.INTERRUPTED
    if report.stopped_by is Stop.MEMORY_LIMIT:
        hit = f"the memory limit of {args.max_memory:,} MiB (--max-memory)"
        lift = "raise it with --max-memory MIB, or lift it with --max-memory unlimited"
    else:
        hit = f"the state limit of {args.max_states:,} states (--max-states)"
        lift = "raise it with --max-states N, or lift it with --max-states unlimited"
    console.print(f"[yellow]search incomplete: stopped at {hit} {where}[/yellow]")
    console.print(path)
    console.print(f"no property failed in the part searched; {lift}")
    return ExitStatus.INCOMPLETE


def write_counterexample(
    console: Console,
    report: Report,
    calls: tuple[Any, ...],
    args: argparse.Namespace,
    failed: str | None,
) -> None:
    """Write the trace file and the SVG (or DOT) picture of the path (``failed``:
    the property its last step broke)."""
    trace = traces.Trace(report.config, calls, args.mutant)
    traces.write(args.trace_out, trace)
    console.print(f"trace written to {args.trace_out} (hvdr replay {args.trace_out})")
    graph = overlays.trace_graph(
        report.config, calls, "counterexample", rules_from_args(args), failed
    )
    path = overlays.write_drawing(graph, args.svg)
    console.print(f"path drawn in {path}", soft_wrap=True)
