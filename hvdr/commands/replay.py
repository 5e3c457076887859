"""``hvdr replay FILE``: run a trace file step by step on the model.

Prints each step: the call, then the whole abstract state after it with the
fields it changed highlighted (``hvdr.counterexample``), or the refusal in the
model's words (a refused step leaves the state as it was and the replay goes on);
after each step every ALWAYS and STEP property of the catalogue is checked, and a
violation is printed in red with the fields the property reads and their values.
``--quiet`` prints only refusals and violations. A trace written by ``hvdr
check`` or ``hvdr fuzz`` on a mutant names the mutant in its header, and replays on
that mutant.

A step the model refuses (a misspelt action, a step in the wrong phase) fails the
replay unless its line marks it as an expected refusal (``"expect": "refused"``,
docs/trace-format.md), and so does a marked step the model takes: the same rule
holds with ``--engine``, checked on the model before the engine starts.

Exit status (``hvdr.status``): 0 every property held and every step did what the
trace says; 1 a property failed or a step did not; 2 the file is not a trace
(unreadable, malformed, a header in the middle, no steps: one line naming the
file and line); 130 interrupted.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from hvdr import counterexample, results
from hvdr.status import ExitStatus, UsageError, check_output_path, examples
from invariants import mutation
from invariants import trace as traces
from invariants.conformance import CONFIG as ENGINE_CONFIG
from invariants.conformance import TraceError, replay_on_engine
from invariants.engine_mutants import BY_NAME as ENGINE_MUTANTS
from invariants.fields import JsonValue
from model.successor import RULES


def register(subparsers: Any) -> None:
    """Add the ``replay`` subcommand."""
    parser = subparsers.add_parser(
        "replay",
        help="run a trace file (JSON lines) step by step, checking everything",
        epilog=examples(
            (
                "hvdr replay counterexample.jsonl",
                "every step with the whole state after it, the changes highlighted",
            ),
            (
                "hvdr replay tests/traces/unplanned_failover.jsonl --quiet",
                "only refusals and violations",
            ),
            (
                "hvdr replay fuzz-counterexample.jsonl --json replay.json",
                "also write every step and its state as JSON",
            ),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, help="the trace file")
    parser.add_argument(
        "--quiet", action="store_true", help="print only refusals and violations"
    )
    parser.add_argument(
        "--engine",
        action="store_true",
        help="replay on a real engine on real files, comparing it with the model "
        "after every step (a one-VM trace of two disks, as hvdr fuzz --engine writes)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="also write the results, every step with the state after it, as JSON "
        "to FILE (schema: docs/json-results.md)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Replay the file; 1 if any property failed or a step was not as marked."""
    console = Console(highlight=False)
    check_output_path(args.json, "--json")
    trace = read_trace(args.file)
    if args.engine:
        if args.json is not None:
            msg = "--json: not with --engine (it writes the model replay's results)"
            raise UsageError(msg)
        return run_engine(trace, console)
    try:
        rules = mutation.header_rules(trace.mutant, str(args.file))
    except mutation.UnknownMutant as error:
        raise UsageError(str(error)) from None
    if trace.mutant is not None:
        console.print(f"[yellow]replaying on mutant {trace.mutant}[/yellow]")
    rows: list[counterexample.Shown] = []
    try:
        rows.extend(
            counterexample.steps(
                trace.config, trace.calls, rules, trace.expected_refusals
            )
        )
    except KeyboardInterrupt:
        done = max(0, len(rows) - 1)
        console.print(
            f"[yellow]interrupted after {done} of {len(trace.calls)} steps[/yellow]"
        )
        write_json(console, args, trace, rows, ExitStatus.INTERRUPTED, (0, 0))
        return ExitStatus.INTERRUPTED
    if not args.quiet:
        console.print(counterexample.render(trace.config, rows))
    violated = contradicted = 0
    for row in rows[1:]:
        contradicted += show_step(console, row, quiet=args.quiet)
        for invariant in row.violated:
            violated += 1
            for line in counterexample.failure_lines(
                trace.config, rows, invariant, row.number
            ):
                console.print(line, style="red", markup=False)
    status = summary(console, len(trace.calls), violated, contradicted)
    write_json(console, args, trace, rows, status, (violated, contradicted))
    return status


def write_json(
    console: Console,
    args: argparse.Namespace,
    trace: traces.Trace,
    rows: list[counterexample.Shown],
    status: int,
    counts: tuple[int, int],
) -> None:
    """With ``--json FILE``, write the replay's results (``hvdr.results``)."""
    if args.json is None:
        return
    failure: dict[str, JsonValue] | None = None
    broken = [(row, row.violated[0]) for row in rows if row.violated]
    if broken:
        failure = {
            "property": results.invariant_json(broken[0][1]),
            "steps": results.counterexample_steps(rows[: broken[0][0].number + 1]),
        }
    body = results.replay_body(args.file, rows, *counts)
    document = results.document(
        "replay", status, trace.config, trace.mutant, body, failure
    )
    results.write(args.json, document)
    console.print(
        f"results written to {args.json} (docs/json-results.md)", soft_wrap=True
    )


def read_trace(path: Path) -> traces.Trace:
    """The trace in ``path``; UsageError (one line, the file and the line) if it is
    not one, or has no steps."""
    try:
        trace = traces.read(path)
    except OSError as error:
        msg = f"{path}: cannot read the trace: {error.strerror}"
        raise UsageError(msg) from None
    except ValueError as error:  # TraceFormatError: the file and line are in it
        raise UsageError(str(error)) from None
    if not trace.calls:
        msg = (
            f"{path}: the trace has no steps; a trace is an optional header line, "
            "then one call per line (docs/trace-format.md)"
        )
        raise UsageError(msg)
    return trace


def show_step(
    console: Console, step: traces.Step | counterexample.Shown, *, quiet: bool
) -> int:
    """1 for a step that is not what the trace says, else 0; with ``quiet``
    (no step blocks printed) print such a step, and a refusal the trace expects."""
    unexpected = step.unexpected
    if unexpected is not None:
        if not quiet and isinstance(step, counterexample.Shown):
            return 1  # its block said so
        console.print(
            f"[red]{step.number:3} {step.call}  not as the trace says: "
            f"{escape(unexpected)}[/red]"
        )
        return 1
    if step.refused is not None and quiet:
        console.print(f"{step.number:3} {step.call}  [yellow]refused, as expected: "
                      f"{escape(str(step.refused))}[/yellow]")  # fmt: skip
    return 0


def summary(console: Console, steps: int, violated: int, contradicted: int) -> int:
    """The last line and the exit status."""
    if contradicted:
        console.print(
            f"[red]{contradicted} of {steps} step(s) did not do what the trace "
            'says: mark a step the model must refuse with "expect": "refused", '
            "or fix it (docs/trace-format.md)[/red]"
        )
    if violated:
        console.print("[red]violated[/red]")
    if violated or contradicted:
        return ExitStatus.FAILED
    console.print("[green]all properties held[/green]")
    return ExitStatus.OK


def run_engine(trace: traces.Trace, console: Console) -> int:
    """Replay ``trace`` on the engine; 1 when the engine leaves the model."""
    config = trace.config
    differs = [
        f"{name}={getattr(config, name)!r} (the engine's model has "
        f"{getattr(ENGINE_CONFIG, name)!r})"
        for name in ENGINE_CONFIG.__dataclass_fields__
        if name != "vm_names" and getattr(config, name) != getattr(ENGINE_CONFIG, name)
    ]
    if differs:
        msg = (
            "the engine replays traces of its own model (one VM of two disks, "
            f"as hvdr fuzz --engine writes them); this one has {'; '.join(differs)}"
        )
        raise UsageError(msg)
    mutant = None
    if trace.mutant is not None:
        mutant = ENGINE_MUTANTS.get(trace.mutant)
        if mutant is None:
            msg = f"unknown engine mutant {trace.mutant!r} in the header; known: "
            msg += f"{', '.join(sorted(ENGINE_MUTANTS))}"
            raise UsageError(msg)
        console.print(f"[yellow]replaying with engine mutant {mutant.name}[/yellow]")
    # The trace's own marks first, on the model alone: a refusal the trace does not
    # expect fails it before any engine starts, as it does without --engine.
    steps = traces.replay(config, trace.calls, RULES, trace.expected_refusals)
    surprises = [step for step in steps if step.unexpected is not None]
    contradicted = sum(show_step(console, step, quiet=True) for step in surprises)
    if contradicted:
        return summary(console, len(trace.calls), 0, contradicted)
    try:
        if mutant is not None:
            with mutant.plant():
                replayed, failure = replay_on_engine(trace.calls)
        else:
            replayed, failure = replay_on_engine(trace.calls)
    except TraceError as error:
        msg = f"cannot replay this trace on the engine: {error}"
        raise UsageError(msg) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: the engine's replay was cut short[/yellow]")
        return ExitStatus.INTERRUPTED
    console.print(f"{replayed} of {len(trace.calls)} steps replayed on the engine")
    if failure is None:
        console.print("[green]the engine followed the model at every step[/green]")
        return ExitStatus.OK
    console.print(f"[red]{escape(str(failure))}[/red]")
    return ExitStatus.FAILED
