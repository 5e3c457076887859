"""``hvdr demo``: a walk-through of the protection lifecycle on the model.

Protects a sample VM, writes, replicates, runs a drill, fails over (planned), commits,
reverses, fails back, then fails over unplanned after a crash of the primary, printing
after each step the phase, the active site, the derived status, the health and any loss
report; then runs the engine drill on real files (``engine_drill.py``: the same
lifecycle, every copy checked against the writes it must hold), regenerates the
diagrams, and ends with the table of what the drill verified and the elapsed time. The
exit status is 1 when a check failed, 2 when ``--workdir`` already holds sites.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hvdr.commands import diagram, engine_drill
from hvdr.status import UsageError, examples
from model import apply, health, initial_state, is_protected
from model.scenarios import WALKTHROUGH
from model.state import LossRecord


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="walk through the lifecycle",
        epilog=examples(
            (
                "hvdr demo",
                "the lifecycle on the model, then a checked drill on real files",
            ),
            ("hvdr demo --model-only --no-diagrams", "the model's walk only"),
            (
                "hvdr demo --network",
                "the same drill, each site's replicas behind its own hvdr serve",
            ),
            (
                "hvdr demo --workdir /tmp/drill",
                "keep the drill's two site folders for a look",
            ),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--diagrams",
        type=Path,
        default=Path("diagrams"),
        help="where to regenerate the diagrams (default: diagrams)",
    )
    parser.add_argument(
        "--no-diagrams", action="store_true", help="skip the diagram regeneration"
    )
    parser.add_argument(
        "--model-only", action="store_true", help="skip the engine drill on real files"
    )
    parser.add_argument(
        "--network",
        action="store_true",
        help="put each site's replicas behind its own replica server (hvdr serve, "
        "one process per site, mutual TLS with generated certificates)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="run the engine drill's two sites under this folder and keep them "
        "(default: a temporary directory, removed after)",
    )
    parser.set_defaults(handler=run)


def describe_loss(record: LossRecord) -> str:
    """A loss record in words, honest about what was known when."""
    if record.reconciled_writes is not None:
        return (
            f"{record.kind.value} failover lost {record.reconciled_writes} write(s) "
            f"(reconciled; reported at failover: "
            f"{_reported(record)})"
        )
    return f"{record.kind.value} failover: {_reported(record)}"


def _reported(record: LossRecord) -> str:
    if record.reported_exact:
        return f"exactly {record.reported_writes}"
    return f"at least {record.reported_writes} (old source unreachable or running)"


def run(args: argparse.Namespace) -> int:
    """Print the walk-through, run the engine drill, regenerate the diagrams, then
    list what the drill verified; non-zero when a check failed."""
    started = time.perf_counter()
    console = Console(width=140)
    if args.network and args.model_only:
        msg = "--network runs the engine drill over replica servers; --model-only "
        msg += "skips that drill: give one of them"
        raise UsageError(msg)
    if not args.model_only and args.workdir is not None:
        try:
            engine_drill.check_workdir(args.workdir)
        except engine_drill.WorkdirInUse as refusal:
            console.print(f"[red]hvdr demo:[/red] {escape(str(refusal))}")
            return 2
    scenario = WALKTHROUGH
    console.print(f"[bold]hvdr demo[/bold]: {scenario.summary}")
    table = Table("#", "step", "phase", "active", "status", "health", "report")
    state = initial_state(scenario.config)
    for number, call in enumerate(scenario.calls, start=1):
        state = apply(scenario.config, state, call)
        vm = state.vms[0]
        record = vm.closed_report or vm.last_failover
        table.add_row(
            str(number),
            str(call),
            vm.phase.value,
            vm.active.value,
            "protected" if is_protected(vm) else "not protected",
            health(state, vm).value,
            describe_loss(record) if record is not None else "",
        )
    console.print(table)
    verification = None
    if not args.model_only:
        sites = None
        if args.network:
            # Imported only here: the other runs never load the web stack.
            from hvdr.commands.network_sites import NetworkSites  # noqa: PLC0415

            sites = NetworkSites()
        verification = engine_drill.run_drill(console, args.workdir, sites)
        if sites is not None:
            answered = ", ".join(
                f"{site} {count:,}" for site, count in sites.requests().items()
            )
            console.print(f"requests the replica servers answered: {answered}")
    status = 0
    if not args.no_diagrams:
        status = diagram.run(argparse.Namespace(format=None, out=args.diagrams))
    if verification is not None:
        console.print(verification.table())
        failed = verification.failed
        passed = len(verification.checks) - len(failed)
        console.print(f"{passed} of {len(verification.checks)} checks passed")
        if failed:
            status = status or 1
    console.print(f"elapsed: {time.perf_counter() - started:.1f} s")
    return status
