"""``hvdr fuzz``: guided stateful fuzzing of the model with Hypothesis.

Runs ``invariants.fuzz.fuzz`` (examples start from reachable states, rules follow
the model's enabled calls, every property checked after every step), then prints
the steps per second and the lifecycle edges covered, naming those never taken. On
a failure it prints the shrunk trace with the whole state at each step
(``hvdr.counterexample``), writes it as a trace file (``--trace-out``) for ``hvdr
replay``, draws it on the lifecycle (``--svg``), and exits with status 1.
``--report FILE.html`` writes the coverage picture: the lifecycle with each edge
coloured by how often it was taken.

Every run has a seed: ``--seed N``, or a random one, printed first so that
``--seed N`` repeats the run. Failures are kept in an example database
(``--database``: ``.hvdr/examples`` by default, a redis:// URL shared by workers on
several machines, or none; ``invariants.databases``) and replayed first by the next
run, whatever its seed: a failure found once fails again at once until it is fixed.
The same seed with the same database contents repeats a run exactly.

For long campaigns the same state machine runs under HypoFuzz through the pytest
wrapper in ``tests/stateful/`` (see README).

Exit status (``hvdr.status``): 0 no property failed in every example asked for; 1
one failed; 2 bad usage (``--examples 0``, a bad ``--config``: one line); 3 the
run stopped at ``--timeout`` before the examples asked for; 130 interrupted (the
figures so far are printed). Off a terminal a plain line per batch shows progress.
"""

from __future__ import annotations

import argparse
import html
import math
import secrets
from pathlib import Path
from typing import Any

from hypothesis.database import ExampleDatabase
from rich.console import Console
from rich.markup import escape

from hvdr import counterexample, overlays, results
from hvdr.model_options import (
    add_model_arguments,
    config_from_args,
    rules_from_args,
    whole_number,
)
from hvdr.status import ExitStatus, UsageError, check_outputs, examples
from invariants import trace as traces
from invariants.conformance import CONFIG as ENGINE_CONFIG
from invariants.conformance import ConformanceReport, Coverage, fuzz_engine
from invariants.databases import (
    DEFAULT_DATABASE,
    DatabaseUnavailable,
    example_database,
)
from invariants.engine_mutants import BY_NAME as ENGINE_MUTANTS
from invariants.fuzz import FuzzReport, fuzz
from invariants.interrupts import StopRequest, stop_requests
from invariants.kinds import Violation
from model import ModelConfig

#: Seeds drawn when none is given are below this (short enough to type again).
SEED_LIMIT = 2**32


def register(subparsers: Any) -> None:
    """Add the ``fuzz`` subcommand."""
    parser = subparsers.add_parser(
        "fuzz",
        help="guided stateful fuzzing of the model (Hypothesis)",
        epilog=examples(
            ("hvdr fuzz", "200 examples of up to 50 steps on the default model"),
            (
                "hvdr fuzz --vms 2 --examples 1000 --timeout 60",
                "a longer run of two VMs, stopped after a minute",
            ),
            (
                "hvdr fuzz --mutant commit_keeps_recovery_points",
                "find, shrink and draw the counterexample of a broken model",
            ),
            (
                "hvdr fuzz --report coverage.html --json result.json",
                "also write the coverage page and the results as JSON",
            ),
            (
                "hvdr fuzz --engine --examples 20",
                "drive the real engine beside the model, on real files",
            ),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--examples", type=whole_number(1), default=200, metavar="N", help="default 200"
    )
    parser.add_argument(
        "--steps", type=whole_number(1), default=50, metavar="N", help="per example; 50"
    )
    parser.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="the run's seed (default: a random one, printed first, so that "
        "--seed N repeats the run)",
    )
    parser.add_argument(
        "--database",
        metavar="DIR|URL|none",
        default=str(DEFAULT_DATABASE),
        help="the example database: failures found are saved there and replayed "
        "first on the next run; a directory (default: %(default)s), a redis:// URL "
        "that workers on several machines share, or none",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="stop between batches after this long (exit 3 if examples remain)",
    )
    parser.add_argument("--report", type=Path, help="write an HTML coverage report")
    parser.add_argument(
        "--trace-out",
        type=Path,
        default=Path("fuzz-counterexample.jsonl"),
        help="where to write a failing trace (default: fuzz-counterexample.jsonl)",
    )
    parser.add_argument(
        "--svg",
        type=Path,
        default=Path("fuzz-counterexample.svg"),
        help="where to draw the shrunk counterexample on the lifecycle (default: "
        "fuzz-counterexample.svg; DOT text beside it without Graphviz's dot)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="also write the results as JSON to FILE (schema: docs/json-results.md)",
    )
    parser.add_argument(
        "--engine",
        action="store_true",
        help="conformance: drive the real engine beside the model, on real files "
        "(one VM of two disks; --examples, --steps, --seed, --timeout apply)",
    )
    parser.add_argument(
        "--engine-mutant",
        choices=sorted(ENGINE_MUTANTS),
        help="plant this engine bug first (the run must fail); implies --engine",
    )
    parser.add_argument(
        "--no-shrink",
        action="store_true",
        help="report the first failing example as found, unshrunk (faster; a deep "
        "configuration's shrinking can take most of the run)",
    )
    parser.set_defaults(handler=run)


def positive_seconds(text: str) -> float:
    """An argparse ``type``: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        msg = f"{text!r} is not allowed; give a number of seconds above 0"
        raise argparse.ArgumentTypeError(msg)
    return value


def run(args: argparse.Namespace) -> int:
    """Fuzz; print the figures; the status of ``hvdr.status``."""
    console = Console(highlight=False)
    check_outputs(
        (args.trace_out, "--trace-out"),
        (args.report, "--report"),
        (args.svg, "--svg"),
        (args.json, "--json"),
    )
    database = open_database(args.database)
    if args.seed is None:
        args.seed = random_seed()
    if args.engine or args.engine_mutant:
        if args.json is not None:
            msg = "--json: not with --engine (it writes the model fuzzer's results)"
            raise UsageError(msg)
        return run_engine(args, console, database)
    config = config_from_args(args)
    announce(console, args)

    def plain(done: int, steps: int) -> None:
        print(f"progress: {done}/{args.examples} examples, {steps:,} steps", flush=True)

    options: dict[str, Any] = {
        "examples": args.examples, "steps": args.steps, "seed_value": args.seed,
        "timeout_seconds": args.timeout, "interruptible": True,
        "database": database, "label": args.mutant or "model", "beyond": True,
        "shrink": not args.no_shrink,
    }  # fmt: skip
    if console.is_terminal:
        with console.status("fuzzing"):
            report = fuzz(config, rules_from_args(args), **options)
    else:
        report = fuzz(config, rules_from_args(args), progress=plain, **options)
    covered = len(report.edges) - len(report.untaken)
    console.print(
        f"{examples_run(report, args.examples)}, {report.steps:,} steps "
        f"(+{report.prefix_steps:,} "
        f"replaying starting states) in "
        f"{report.seconds:.1f} s: {report.steps_per_second:,.0f} steps/s; "
        f"lifecycle edges taken: {covered}/{len(report.edges)}"
    )
    console.print(from_database(report, args.database), end="")
    for trigger, source, dest in report.untaken:
        console.print(
            f"[yellow]  never taken: {trigger}: {source.value} → {dest.value}"
        )
    if report.beyond is not None:
        console.print(report.beyond.line())
    if args.report is not None:
        write_report(args.report, report)
        console.print(f"coverage report written to {args.report}")
    if report.failure is None:
        status = unfinished(
            console, report.examples, args, interrupted=report.interrupted
        )
    else:
        status = show_failure(console, config, report.failure, args)
    if args.json is not None:
        failure = None
        if report.failure is not None:
            failure = results.counterexample_json(
                config, report.failure.trace, report.failure.invariant,
                rules_from_args(args),
            )  # fmt: skip
        body = results.fuzz_body(report, args.examples, args.seed)
        document = results.document("fuzz", status, config, args.mutant, body, failure)
        results.write(args.json, document)
        console.print(
            f"results written to {args.json} (docs/json-results.md)", soft_wrap=True
        )
    return status


def show_failure(
    console: Console, config: ModelConfig, failure: Violation, args: argparse.Namespace
) -> int:
    """Print the shrunk counterexample, write its trace, draw it; status 1."""
    console.print(f"[red]{escape(str(failure))}[/red]")
    rules = rules_from_args(args)
    counterexample.show(console, config, failure.trace, failure.invariant, rules)
    trace = traces.Trace(config, failure.trace, args.mutant)
    traces.write(args.trace_out, trace)
    console.print(f"trace written to {args.trace_out} (hvdr replay {args.trace_out})")
    graph = overlays.trace_graph(
        config, failure.trace, "fuzz counterexample (shrunk)", rules,
        failure.invariant.name,
    )  # fmt: skip
    console.print(
        f"path drawn in {overlays.write_drawing(graph, args.svg)}", soft_wrap=True
    )
    return ExitStatus.FAILED


def examples_run(report: FuzzReport, asked: int) -> str:
    """How many examples ran: the batches' count, or, when a failure stopped the
    run, the examples Hypothesis really ran (its shrinking, or the database's
    replay, included)."""
    if report.failure is None:
        return f"{report.examples} examples"
    ran = f"{report.runs} examples run"
    if not report.from_database:
        ran += " with shrinking"
    return ran + f" (the failure stopped the {asked} asked)"


def from_database(report: FuzzReport, database: str) -> str:
    """A line saying the failure is the database's, replayed (else nothing)."""
    if not report.from_database:
        return ""
    return (
        f"the failure below is one an earlier run saved in the example database "
        f"({database}): it failed again when replayed, before any example was "
        "generated (--database none searches afresh)\n"
    )


def announce(console: Console, args: argparse.Namespace) -> None:
    """The run's seed and example database, first, so a run can be repeated."""
    console.print(f"seed {args.seed} (--seed {args.seed} repeats this run)")
    console.print(f"example database: {args.database}")


def random_seed() -> int:
    """A seed for a run that names none: random, so that runs differ."""
    return secrets.randbelow(SEED_LIMIT)


def open_database(spec: str) -> ExampleDatabase | None:
    """The ``--database`` named (``invariants.databases``); a usage error if it
    cannot be opened."""
    try:
        return example_database(spec)
    except DatabaseUnavailable as error:
        msg = f"--database: {error}"
        raise UsageError(msg) from None


def unfinished(
    console: Console, done: int, args: argparse.Namespace, *, interrupted: bool
) -> int:
    """0 when every example asked for ran; else say why not (130, or 3)."""
    if interrupted:
        console.print(
            f"[yellow]interrupted after {done} of {args.examples} examples; no "
            "property failed in those[/yellow]"
        )
        return ExitStatus.INTERRUPTED
    if done < args.examples:
        console.print(
            f"[yellow]incomplete: --timeout {args.timeout:g} s ended the run after "
            f"{done} of {args.examples} examples; no property failed in those. "
            "Raise --timeout, or leave it out to run every example[/yellow]"
        )
        return ExitStatus.INCOMPLETE
    console.print("[green]no property failed[/green]")
    return ExitStatus.OK


def write_report(path: Path, report: FuzzReport) -> None:
    """An HTML page: the coverage picture, its legend and the table of edge counts.

    The picture fills the window's width (its SVG keeps Graphviz's ``viewBox``), and
    the legend under the heading says what each colour means, as the picture's does.
    """
    graph = overlays.coverage_graph(report.coverage, "edges taken by hvdr fuzz")
    svg = overlays.render_svg(graph)
    if svg is None:
        picture = f"<pre>{html.escape(graph.source)}</pre>"
    else:
        picture = f'<div class="picture">{overlays.scalable_svg(svg)}</div>'
    most = max(report.coverage.values(), default=1)
    legend = "\n".join(
        f'<li><span class="swatch" style="background: {color}"></span>{words}</li>'
        for color, words in overlays.shade_bands(most)
    )
    rows = "\n".join(
        f"<tr><td>{html.escape(trigger)}</td><td>{source.value}</td>"
        f"<td>{dest.value}</td><td>{report.coverage.get((trigger, source, dest), 0)}"
        "</td></tr>"
        for trigger, source, dest in report.edges
    )
    covered = len(report.edges) - len(report.untaken)
    never = "".join(
        f"<li>{html.escape(trigger)}: {source.value} → {dest.value}</li>"
        for trigger, source, dest in report.untaken
    )
    untaken = f"<p>Never taken:</p><ul>{never}</ul>" if never else ""
    path.write_text(
        f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hvdr fuzz coverage</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 1em; }}
.picture svg {{ max-width: 100%; }}
.legend {{ list-style: none; padding: 0; }}
.legend li {{ margin: 0.2em 0; }}
.swatch {{ display: inline-block; width: 2.5em; height: 0.6em; margin-right: 0.6em;
  vertical-align: middle; }}
.swatch.never {{ border-top: 3px dotted {overlays.NEVER_COLOR}; height: 0; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 0.1em 0.5em; }}
</style></head>
<body><h1>hvdr fuzz: lifecycle coverage</h1>
<p>{report.examples} examples, {report.steps} steps (+{report.prefix_steps} to reach
the starting states), {report.seconds:.1f} s,
{report.steps_per_second:.0f} steps/s; edges taken {covered}/{len(report.edges)}.</p>
<p>Each arrow of the lifecycle is coloured by how often the run took its edges, the
most taken edge of the arrow deciding (numbers in brackets: the count per source
phase; hover over an arrow for the edges it stands for):</p>
<ul class="legend" id="legend">
{legend}
<li><span class="swatch never"></span>never taken (an arrow that stands for several
edges marks each one never taken with "(never)")</li>
</ul>
{untaken}
{picture}
<table border="1"><tr><th>trigger</th><th>from</th><th>to</th><th>taken</th></tr>
{rows}
</table></body></html>
""",
        encoding="utf-8",
    )


#: Options of the model's fuzzer that mean nothing with --engine.
MODEL_ONLY = (
    "config", "vms", "disks", "lag", "points", "budget", "faults", "app_points",
    "mutant", "report",
)  # fmt: skip


def run_engine(
    args: argparse.Namespace, console: Console, database: ExampleDatabase | None
) -> int:
    """Conformance fuzzing of the engine against the model; 1 on a failure."""
    ignored = [f"--{name.replace('_', '-')}" for name in MODEL_ONLY
               if getattr(args, name, None) is not None]  # fmt: skip
    if ignored:
        msg = (
            f"{', '.join(ignored)}: not with --engine (the engine is held to one "
            "model: one VM of two disks, every fault; plant engine bugs with "
            "--engine-mutant)"
        )
        raise UsageError(msg)
    mutant = ENGINE_MUTANTS.get(args.engine_mutant or "")
    announce(console, args)

    def progress(done: int, coverage: Coverage) -> None:
        console.print(
            f"  {done}/{args.examples} examples, {coverage.steps:,} steps, "
            f"{len(coverage.edges)} lifecycle edges"
        )

    with stop_requests() as stop:
        if mutant is not None:
            console.print(f"[yellow]engine mutant planted: {mutant.name}[/yellow]")
            with mutant.plant():
                report = _fuzz_engine(args, progress, stop, database)
        else:
            report = _fuzz_engine(args, progress, stop, database)
    interrupted = stop.asked and report.examples < args.examples
    for line in describe_engine_report(report):
        console.print(line)
    if report.failure is None and report.coverage.steps == 0:
        console.print(
            "[yellow]no engine step was drawn beyond the starting states: nothing "
            "was tested; raise --steps or --examples[/yellow]"
        )
        return ExitStatus.INCOMPLETE
    if report.failure is None:
        if report.examples < args.examples:
            return unfinished(console, report.examples, args, interrupted=interrupted)
        console.print("[green]the engine followed the model at every step[/green]")
        return ExitStatus.OK
    console.print(f"[red]{report.failure}[/red]")
    trace = traces.Trace(
        ENGINE_CONFIG, report.failure.calls, None if mutant is None else mutant.name
    )
    # The fuzzer draws refused operations on purpose (the engine must refuse them
    # too): the trace marks them, so replaying it does not take them for mistakes.
    traces.write(args.trace_out, traces.mark_refusals(trace))
    console.print(
        f"trace written to {args.trace_out} (hvdr replay --engine {args.trace_out})"
    )
    return ExitStatus.FAILED


def _fuzz_engine(
    args: argparse.Namespace,
    progress: Any,
    stop: StopRequest,
    database: ExampleDatabase | None,
) -> ConformanceReport:
    return fuzz_engine(
        examples=args.examples,
        steps=args.steps,
        seed_value=args.seed,
        timeout_seconds=args.timeout,
        shrink=not args.no_shrink,
        progress=progress,
        stop=stop,
        database=database,
        label=args.engine_mutant or "engine",
    )


def describe_engine_report(report: ConformanceReport) -> list[str]:
    """The figures of a conformance run: steps, edges, operations, refusals."""
    coverage = report.coverage
    edges = sorted(coverage.edges.items())
    lines = [
        (
            f"{report.examples} examples, {coverage.steps:,} engine steps (+"
            f"{coverage.prefix_steps:,} reaching starting states) in "
            f"{report.seconds:.1f} s; lifecycle edges taken on the engine: {len(edges)}"
        )
    ]
    for (trigger, source, dest), count in edges:
        lines.append(f"  {trigger}: {source} → {dest}: {count}")
    operations = ", ".join(f"{op} {n}" for op, n in sorted(coverage.operations.items()))
    lines.append(f"operations done: {operations}")
    refusals = ", ".join(f"{op} {n}" for op, n in sorted(coverage.refusals.items()))
    lines.append(f"refusals matched: {refusals or 'none'}")
    lines.append(
        "cycle replies lost after the target committed (found out, not shipped "
        f"again): {coverage.replies_lost}"
    )
    failback = any(
        trigger == "reverse_replication" and source == "committed"
        for (trigger, source, _), _count in edges
    )
    lines.append(f"failback (reverse replication after commit) covered: {failback}")
    return lines
