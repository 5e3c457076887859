"""``hvdr run``: keep every VM replicating at its configured frequency until stopped.

Each VM gets the configuration's ``[replication]`` policy; the scheduler runs each
cycle when it is due (app-consistent ones at their interval), one line per cycle (for
a VM the model refuses to replicate, its refusal once until it changes). SIGINT
(Ctrl-C) or SIGTERM stops it between steps: the cycle under way finishes (the VMs
after it in the round are not started), then it prints the health table and exits 0.
While it runs it owns the sites (their locks): another ``hvdr`` command on the same
configuration is refused, naming it, until it stops. ``--ticks N`` stops after N
rounds (a script, a test).
"""

from __future__ import annotations

import argparse
import signal
import threading
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from rich.console import Console

from engine.orchestration.orchestrator import Orchestrator
from engine.orchestration.scheduler import CycleOutcome, Outcome
from hvdr.commands import status
from hvdr.commands.operator import EXITS, add_config, with_orchestrator
from hvdr.model_options import whole_number
from hvdr.status import ExitStatus, examples


def register(subparsers: Any) -> None:
    """Add ``hvdr run``."""
    parser = subparsers.add_parser(
        "run",
        help="replicate every VM at its frequency until SIGINT or SIGTERM",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        epilog=examples(
            ("hvdr run", "replicate until Ctrl-C"),
            ("hvdr run --ticks 1", "one round of the cycles due now, then stop"),
        )
        + "\n"
        + EXITS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config(parser)
    parser.add_argument(
        "--ticks", type=whole_number(1), default=None, metavar="N",
        help="stop after N rounds (default: run until stopped)",
    )  # fmt: skip
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def stopping(signum: int, _frame: FrameType | None) -> None:
        print(f"hvdr run: {signal.Signals(signum).name}: stopping after this step")
        stop.set()

    previous = {
        signum: signal.signal(signum, stopping)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return with_orchestrator(args, lambda found: _loop(found, args, stop))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _loop(
    orchestrator: Orchestrator, args: argparse.Namespace, stop: threading.Event
) -> int:
    names = orchestrator.schedule_all()
    print(
        f"hvdr run: {len(names)} VM(s), {_frequencies(orchestrator, names)} "
        f"(SIGINT or SIGTERM stops between steps)",
        flush=True,
    )
    ticks = 0
    skipped: dict[str, str | None] = {}  # VM -> the refusal last printed for it
    while not stop.is_set():
        for cycle in orchestrator.scheduler.tick(stop).cycles:
            if cycle.outcome is Outcome.SKIPPED:
                # The model's refusal once, not every round while it stands.
                if skipped.get(cycle.vm) == cycle.reason:
                    continue
                skipped[cycle.vm] = cycle.reason
            else:
                skipped.pop(cycle.vm, None)
            print(_line(orchestrator, cycle), flush=True)
        ticks += 1
        if args.ticks is not None and ticks >= args.ticks:
            break
        if orchestrator.clock.wait_until(orchestrator.scheduler.next_wake_at(), stop):
            break
    Console(highlight=False).print(status.table(orchestrator.health()))
    print(f"hvdr run: stopped after {ticks} round(s)", flush=True)
    return ExitStatus.OK


def _frequencies(orchestrator: Orchestrator, names: tuple[str, ...]) -> str:
    """``a cycle every 30 s``, or per frequency the VMs that have it."""
    config = orchestrator.config
    by_frequency: dict[int, list[str]] = {}
    for vm in names:
        by_frequency.setdefault(config.policy_of(vm).frequency_seconds, []).append(vm)
    if len(by_frequency) <= 1:
        seconds = next(iter(by_frequency), config.policy.frequency_seconds)
        return f"a cycle every {seconds} s"
    said = "; ".join(
        f"every {seconds} s: {', '.join(vms)}"
        for seconds, vms in sorted(by_frequency.items())
    )
    return f"cycles {said}"


def _line(orchestrator: Orchestrator, cycle: CycleOutcome) -> str:
    at = datetime.fromtimestamp(orchestrator.clock.now(), UTC).strftime("%H:%M:%S")
    said = f"{at} {cycle.vm}: {cycle.outcome.value}"
    if cycle.recovery_point_id is not None:
        said += f", recovery point {cycle.recovery_point_id}"
    if cycle.app_consistent:
        said += " (app-consistent)"
    if cycle.reason:
        said += f": {cycle.reason}"
    return said
