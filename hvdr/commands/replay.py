"""``hvdr replay FILE``: run a trace file step by step on the model.

Prints each step: the call, then every VM's phase, active site, status and loss
report, or the refusal in the model's words (a refused step leaves the state as it
was and the replay goes on); after each step every ALWAYS and STEP property of the
catalogue is checked, and a violation is printed in red. A trace written by ``hvdr
check`` or ``hvdr fuzz`` on a mutant names the mutant in its header, and replays on
that mutant. Exit status: 1 when a property failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from invariants import trace as traces
from invariants.conformance import CONFIG as ENGINE_CONFIG
from invariants.conformance import TraceError, replay_on_engine
from invariants.engine_mutants import BY_NAME as ENGINE_MUTANTS
from invariants.mutants import BY_NAME as MUTANTS
from model import SystemState, is_protected
from model.successor import RULES


def register(subparsers: Any) -> None:
    """Add the ``replay`` subcommand."""
    parser = subparsers.add_parser(
        "replay", help="run a trace file (JSON lines) step by step, checking everything"
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
    parser.set_defaults(handler=run)


def describe(state: SystemState) -> str:
    """Every VM in one line: phase, active site, status, open loss report."""
    parts = []
    for index, vm in enumerate(state.vms):
        status = "protected" if is_protected(vm) else "not protected"
        text = f"vm{index}: {vm.phase.value}, active {vm.active.value}, {status}"
        if vm.last_failover is not None:
            record = vm.last_failover
            bound = "exact" if record.reported_exact else "at least"
            text += f", loss reported {bound} {record.reported_writes}"
        parts.append(text)
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Replay the file; 1 if any property failed."""
    console = Console(highlight=False)
    try:
        trace = traces.read(args.file)
    except (OSError, ValueError) as error:
        console.print(f"[red]cannot read {args.file}: {error}[/red]")
        return 2
    if args.engine:
        return run_engine(trace, console)
    rules = RULES
    if trace.mutant is not None:
        if trace.mutant not in MUTANTS:
            console.print(f"[red]unknown mutant {trace.mutant!r} in the header[/red]")
            return 2
        rules = MUTANTS[trace.mutant].rules
        console.print(f"[yellow]replaying on mutant {trace.mutant}[/yellow]")
    failed = False
    for step in traces.replay(trace.config, trace.calls, rules):
        if step.refused is not None:
            console.print(f"{step.number:3} {step.call}  [yellow]refused: "
                          f"{step.refused}[/yellow]")  # fmt: skip
            continue
        if not args.quiet:
            console.print(f"{step.number:3} {step.call}  → {describe(step.state)}")
        for invariant in step.violated:
            failed = True
            console.print(
                f"[red]    invariant {invariant.name!r} violated: "
                f"{invariant.message}[/red]"
            )
    console.print(
        "[red]violated[/red]" if failed else "[green]all properties held[/green]"
    )
    return 1 if failed else 0


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
        console.print(
            "[red]the engine replays traces of its own model (one VM of two disks, "
            f"as hvdr fuzz --engine writes them); this one has {'; '.join(differs)}"
            "[/red]"
        )
        return 2
    mutant = None
    if trace.mutant is not None:
        mutant = ENGINE_MUTANTS.get(trace.mutant)
        if mutant is None:
            console.print(
                f"[red]unknown engine mutant {trace.mutant!r} in the header; known: "
                f"{sorted(ENGINE_MUTANTS)}[/red]"
            )
            return 2
        console.print(f"[yellow]replaying with engine mutant {mutant.name}[/yellow]")
    try:
        if mutant is not None:
            with mutant.plant():
                replayed, failure = replay_on_engine(trace.calls)
        else:
            replayed, failure = replay_on_engine(trace.calls)
    except TraceError as error:
        console.print(f"[red]cannot replay this trace on the engine: {error}[/red]")
        return 2
    console.print(f"{replayed} of {len(trace.calls)} steps replayed on the engine")
    if failure is None:
        console.print("[green]the engine followed the model at every step[/green]")
        return 0
    console.print(f"[red]{failure}[/red]")
    return 1
