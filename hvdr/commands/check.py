"""``hvdr check``: explore every reachable state of a bounded model, check everything.

Runs ``invariants.explorer.explore`` with a progress display, then prints the
statistics (states, transitions, depth, time, states/s, peak memory, the symmetry
reduction factor when it applied), the SOMETIMES witnesses never reached, and the
verdict. On a violation, a deadlock or an unrecoverable state it prints the
shortest trace, writes it as a trace file (``--trace-out``, replayable with ``hvdr
replay``) and draws it on the lifecycle (``--svg``), and exits with status 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from hvdr import overlays
from hvdr.model_options import add_model_arguments, config_from_args, rules_from_args
from invariants import trace as traces
from invariants.explorer import Report, Statistics, explore
from invariants.kinds import Violation
from invariants.mutants import MUTANTS


def register(subparsers: Any) -> None:
    """Add the ``check`` subcommand."""
    parser = subparsers.add_parser(
        "check", help="explore the bounded model exhaustively; check every property"
    )
    add_model_arguments(parser)
    parser.add_argument("--max-states", type=int, help="stop after this many states")
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
        "--list-mutants", action="store_true", help="list the mutants and exit"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Explore; print; write the counterexample; 1 on a problem, else 0."""
    console = Console()
    if args.list_mutants:
        for mutant in MUTANTS:
            console.print(f"{mutant.name}: {mutant.summary}")
        return 0
    try:
        config = config_from_args(args)
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        return 2
    rules = rules_from_args(args)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("exploring", total=None)

        def show(statistics: Statistics) -> None:
            progress.update(
                task,
                description=f"{statistics.states:,} states, depth "
                f"{statistics.depth}, {statistics.states_per_second:,.0f} states/s",
            )

        report = explore(
            config, rules, max_states=args.max_states, progress=show,
            progress_every=20_000,
        )  # fmt: skip
    console.print(statistics_table(report))
    return verdict(console, report, args)


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
    rows.append(("complete", "yes" if report.complete else "no (stopped early)"))
    for name, value in rows:
        table.add_row(name, value)
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
    if not problems and not report.deadlocks:
        status = "OK" if report.complete else "no problem found (incomplete)"
        console.print(f"[green]{status}[/green]")
        return 0 if report.complete else 1
    calls = problems[0].trace if problems else report.deadlock_traces[0]
    for violation in problems:
        console.print(f"[red]{violation}[/red]")
    write_counterexample(console, report, calls, args)
    return 1


def write_counterexample(
    console: Console,
    report: Report,
    calls: tuple[Any, ...],
    args: argparse.Namespace,
) -> None:
    """Write the trace file and the SVG (or DOT) picture of the path."""
    trace = traces.Trace(report.config, calls, args.mutant)
    traces.write(args.trace_out, trace)
    console.print(f"trace written to {args.trace_out} (hvdr replay {args.trace_out})")
    graph = overlays.trace_graph(
        report.config, calls, "counterexample", rules_from_args(args)
    )
    svg = overlays.render_svg(graph)
    if svg is None:
        path = args.svg.with_suffix(".dot")
        path.write_text(graph.source, encoding="utf-8")
    else:
        path = args.svg
        path.write_text(svg, encoding="utf-8")
    console.print(f"path drawn in {path}")
