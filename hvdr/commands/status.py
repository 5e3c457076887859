"""``hvdr status``: every VM's replication health (Measure-VMReplication's view).

Per VM: the model's phase and the Hyper-V Replica state it matches, health (Normal,
Warning or Critical) with the reason, the last replication and how long ago, the
recovery points (count, latest, latest app-consistent), the active site and the
change-log bytes not yet shipped. Health is judged against the configuration's
replication frequency (``[replication]``; the rules: ``docs/orchestration.md``).
``--json`` prints the same for scripts. The exit status is 0 whatever the health
(it is what the table says), 2 for bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Final

from rich.console import Console, Group
from rich.table import Table

from engine.orchestration.health import VmHealth
from engine.orchestration.orchestrator import Orchestrator
from hvdr.commands.operator import EXITS, add_config, with_orchestrator
from hvdr.status import ExitStatus, examples

STYLES = {"Normal": "green", "Warning": "yellow", "Critical": "bold red"}


def register(subparsers: Any) -> None:
    """Add ``hvdr status``."""
    parser = subparsers.add_parser(
        "status",
        help="every VM's replication health, state and recovery points",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        epilog=examples(
            ("hvdr status", "the table"),
            ("hvdr status --json", "the same as JSON, for scripts"),
        )
        + "\n"
        + EXITS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    def work(orchestrator: Orchestrator) -> int:
        found = orchestrator.health()
        if args.json:
            print(json.dumps([vm.to_json() for vm in found], indent=2))
        else:
            Console(highlight=False).print(table(found))
        return ExitStatus.OK

    return with_orchestrator(args, work)


def table(found: tuple[VmHealth, ...]) -> Group:
    """The health table (a row per VM), then each VM's phase, health and reason."""
    shown = Table(title=f"replication health ({len(found)} VM(s))")
    for column in ("VM", "state", "health", "last", "points", "active", "unshipped"):
        shown.add_column(column, justify="right" if column == "unshipped" else "left")
    for vm in found:
        points = str(vm.recovery_point_count)
        if vm.latest_app_consistent_point is not None:
            points += f" (app {vm.latest_app_consistent_point.recovery_point_id})"
        shown.add_row(
            vm.name,
            vm.replication_state,
            f"[{STYLES[vm.health.value]}]{vm.health.value}[/]",
            _last(vm),
            points,
            vm.active_site or "?",
            "?" if vm.unshipped_log_bytes is None else f"{vm.unshipped_log_bytes:,} B",
        )
    reasons = [
        f"{vm.name} ({vm.phase}): [{STYLES[vm.health.value]}]{vm.health.value}[/]: "
        f"{vm.reason}"
        for vm in found
    ]
    return Group(shown, *reasons)


NEVER_REPLICATED: Final = frozenset({"unprotected", "initial_replication"})


def _last(vm: VmHealth) -> str:
    """How long ago the last replication was (``--json``: its time)."""
    if vm.last_replication_at is None:
        # No point kept and no cycle seen: after a commit (its points deleted) or a
        # stop, "never" would be wrong; the reason line says where the VM stands.
        return "never" if vm.phase in NEVER_REPLICATED else "-"
    return f"{vm.lag_seconds or 0.0:.0f} s ago"
