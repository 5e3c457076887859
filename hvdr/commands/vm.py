"""``hvdr vm``: one VM's protection, operation by operation, each a job.

The operations are Hyper-V Replica's, in the words users know (``docs/operations.md``
maps each to its cmdlet): ``enable`` (Enable-VMReplication with the initial copy),
``suspend`` / ``resume`` / ``resynchronize`` (Suspend-, Resume-VMReplication
[-Resynchronize]), ``failover --test | --planned | --unplanned`` (Start-VMFailover
-AsTest, -Prepare then the failover, or from a chosen recovery point), ``cleanup``
(Stop-VMFailover of a test), ``change-point``, ``commit`` (Complete-VMFailover),
``cancel`` (Stop-VMFailover of a failover in progress), ``reverse`` (Set-VMReplication
-Reverse) and ``disable`` (Remove-VMReplication). ``create``, ``write`` and ``read``
stand in for the hypervisor: a VM and its disks, and the guest's writes.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from engine.binding.failover import CommitReport, DrillReport, FailoverReport
from engine.binding.reverse import ReverseReport
from engine.errors import ReplicationError
from engine.orchestration.orchestrator import Orchestrator
from engine.source.resync import ResyncReport
from engine.source.shipping import CycleReport
from hvdr.commands.operator import add_config, register_group, with_orchestrator
from hvdr.status import ExitStatus, UsageError, examples

CANCEL_WARNING: Final = (
    "cancelling a failover in progress stops it, and the VM is never replicated "
    "again: its replication stays stopped until it is disabled and enabled afresh "
    "(a new initial replication). Run again with --force to cancel."
)
SIZE_UNITS: Final = {"": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}

#: action -> (orchestrator operation, help)
SIMPLE: Final = {
    "enable": ("enable", "enable replication and run the initial replication"),
    "initial-replication": (
        "initial_replication",
        "finish an initial replication a restart interrupted",
    ),
    "suspend": ("suspend", "pause shipping (tracking goes on)"),
    "resume": ("resume", "resume shipping"),
    "resynchronize": ("resynchronize", "compare block digests, send what differs"),
    "complete-failover": (
        "complete_failover",
        "start the replica VM of a failover that waited for its VMM",
    ),
    "cleanup": ("cleanup_test_failover", "end a test failover (delete the test VM)"),
    "commit": ("commit", "commit the failover: every recovery point is deleted"),
    "reverse": ("reverse_replication", "replicate back, towards the other site"),
    "disable": ("disable", "disable replication (the VM's disks are kept)"),
}


def register(subparsers: Any) -> None:
    """Add ``hvdr vm`` and its actions."""
    inner = register_group(
        subparsers,
        "vm",
        "protect, replicate, fail over and fail back one VM (each a job)",
        __doc__.split("\n\n")[1].replace("\n", " "),
        examples(
            ("hvdr vm create web --disk os=16MiB", "a VM with one 16 MiB disk"),
            ("hvdr vm enable web", "protect it: the initial replication, point 1"),
            ("hvdr vm failover web --planned", "a planned failover: no loss"),
            (
                "hvdr vm failover web --unplanned --recovery-point app-consistent",
                "fail over from the latest app-consistent point",
            ),
        ),
    )
    create = _action(inner, "create", "create a VM and its disks (the hypervisor)")
    create.add_argument(
        "--disk", action="append", required=True, metavar="NAME=SIZE",
        help="a disk and its size (bytes, or with KiB, MiB, GiB); repeat for more",
    )  # fmt: skip
    create.set_defaults(handler=_create)
    write = _action(inner, "write", "write into a disk of the VM (the guest)")
    _disk_options(write)
    given = write.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", help="the bytes to write, as UTF-8 text")
    given.add_argument("--hex", help="the bytes to write, in hex")
    write.set_defaults(handler=_write)
    read = _action(inner, "read", "read from a disk of the VM where it runs")
    _disk_options(read)
    read.add_argument("--length", type=int, required=True, help="bytes to read")
    read.add_argument(
        "--hex", action="store_true",
        help="print the bytes as hex (default: as text when they are UTF-8, else "
        "the raw bytes)",
    )  # fmt: skip
    read.set_defaults(handler=_read)
    listing = _action(inner, "list", "the VMs and their phases", vm=False)
    listing.set_defaults(handler=_list)
    points = _action(inner, "points", "the VM's recovery points (ids for failover)")
    points.set_defaults(handler=_points)
    for action, (operation, help_text) in SIMPLE.items():
        parser = _action(inner, action, help_text)
        parser.set_defaults(handler=_simple, operation=operation)
    replicate = _action(inner, "replicate", "run one delta cycle now")
    replicate.add_argument(
        "--app-consistent", action="store_true", help="an app-consistent point"
    )
    replicate.set_defaults(handler=_replicate)
    failover = _action(inner, "failover", "fail the VM over to the other site")
    kind = failover.add_mutually_exclusive_group(required=True)
    kind.add_argument("--test", action="store_true", help="a drill (test failover)")
    kind.add_argument(
        "--planned", action="store_true", help="shut down, final sync, fail over"
    )
    kind.add_argument(
        "--unplanned", action="store_true", help="fail over from a recovery point"
    )
    failover.add_argument(
        "--recovery-point", default=None, metavar="latest|app-consistent|ID",
        help="the point (--test: ID or latest; --unplanned: default latest)",
    )  # fmt: skip
    failover.add_argument(
        "--shutdown-first", action="store_true",
        help="--unplanned: try to shut the source down and send its last changes",
    )  # fmt: skip
    failover.add_argument(
        "--prepare-only", action="store_true",
        help="--planned: stop once prepared (Start-VMFailover -Prepare)",
    )  # fmt: skip
    failover.set_defaults(handler=_failover)
    change = _action(
        inner, "change-point", "after an unplanned failover, before commit"
    )
    change.add_argument("point", type=int, metavar="ID", help="the recovery point")
    change.set_defaults(handler=_change_point)
    cancel = _action(inner, "cancel", "cancel a failover in progress (stops for good)")
    cancel.add_argument("--force", action="store_true", help="cancel nevertheless")
    cancel.set_defaults(handler=_cancel)


def _action(inner: Any, name: str, help_text: str, *, vm: bool = True) -> Any:
    parser = inner.add_parser(name, help=help_text, description=help_text)
    if vm:
        parser.add_argument("vm", metavar="VM", help="the VM's name")
    add_config(parser)
    return parser


def _disk_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--disk", required=True, help="the disk's name")
    parser.add_argument("--at", type=int, default=0, help="the offset (bytes)")


# -- handlers --------------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    disks: dict[str, int] = {}
    for text in args.disk:
        name, size = _disk_size(text)
        if name in disks:
            msg = f"--disk {text!r}: disk {name!r} is given twice (first as "
            msg += f"{disks[name]:,} bytes); give each disk once"
            raise UsageError(msg)
        disks[name] = size

    def work(orchestrator: Orchestrator) -> int:
        orchestrator.engine.create_vm(args.vm, disks)
        sizes = ", ".join(f"{disk} {size:,} bytes" for disk, size in disks.items())
        print(f"VM {args.vm!r} created: {sizes}; unprotected")
        return ExitStatus.OK

    return with_orchestrator(args, work)


def _write(args: argparse.Namespace) -> int:
    if args.text is not None:
        data = args.text.encode()
    else:
        try:
            data = bytes.fromhex(args.hex)
        except ValueError:
            msg = f"--hex {args.hex!r} is not hex (pairs of 0-9 a-f)"
            raise UsageError(msg) from None

    def work(orchestrator: Orchestrator) -> int:
        orchestrator.engine.write(args.vm, args.disk, args.at, data)
        orchestrator.engine.flush(args.vm)
        print(f"wrote {len(data)} bytes at {args.at} of disk {args.disk!r}")
        return ExitStatus.OK

    return with_orchestrator(args, work)


def _read(args: argparse.Namespace) -> int:
    def work(orchestrator: Orchestrator) -> int:
        data = orchestrator.engine.read(args.vm, args.disk, args.at, args.length)
        if args.hex:
            print(data.hex())
            return ExitStatus.OK
        try:
            print(data.decode("utf-8"))
        except UnicodeDecodeError:
            # Not text: the bytes as they are (never replaced), for `| xxd`.
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        return ExitStatus.OK

    return with_orchestrator(args, work)


def _list(args: argparse.Namespace) -> int:
    def work(orchestrator: Orchestrator) -> int:
        engine = orchestrator.engine
        for name in engine.vm_names():
            try:
                status = engine.status(name)
            except ReplicationError as error:
                # One damaged VM does not hide the others (hvdr status: Critical).
                print(f"{name}: cannot be read: {error}")
                continue
            points = len(status.recovery_points)
            print(
                f"{name}: {status.phase}, active at {status.active_site}, "
                f"{points} recovery point(s)"
            )
        return ExitStatus.OK

    return with_orchestrator(args, work)


def _simple(args: argparse.Namespace) -> int:
    return _run(args, args.operation)


def _replicate(args: argparse.Namespace) -> int:
    return _run(args, "replicate", app_consistent=args.app_consistent)


def _failover(args: argparse.Namespace) -> int:
    point = args.recovery_point
    if args.test:
        _only(args, "--test", shutdown_first=False, prepare_only=False)
        chosen = None if point in (None, "latest") else _point_id(point)
        return _run(args, "test_failover", point=chosen)
    if args.planned:
        _only(args, "--planned", shutdown_first=False)
        if point is not None:
            msg = "--recovery-point: a planned failover sends every change first; "
            msg += "it takes no point (use --unplanned to choose one)"
            raise UsageError(msg)
        return _run(args, "planned_failover", prepare_only=args.prepare_only)
    _only(args, "--unplanned", prepare_only=False)
    chosen_point: object = "latest"
    if point == "app-consistent":
        chosen_point = "latest_app_consistent"
    elif point not in (None, "latest"):
        chosen_point = _point_id(point)
    return _run(
        args,
        "unplanned_failover",
        point=chosen_point,
        shut_down_first=args.shutdown_first,
    )


def _change_point(args: argparse.Namespace) -> int:
    return _run(args, "change_recovery_point", point=args.point)


def _cancel(args: argparse.Namespace) -> int:
    if args.force:
        return _run(args, "cancel")

    def work(orchestrator: Orchestrator) -> int:
        # The model first: a cancel it refuses is its refusal, not a warning about
        # an operation that could not run anyway.
        orchestrator.engine.ask_first(args.vm, "cancel_failover")
        print(f"hvdr vm cancel: warning: {CANCEL_WARNING}", file=sys.stderr)
        return ExitStatus.USAGE

    return with_orchestrator(args, work)


def _points(args: argparse.Namespace) -> int:
    def work(orchestrator: Orchestrator) -> int:
        status = orchestrator.engine.status(args.vm)
        points = status.recovery_points
        if not points:
            print(f"{args.vm!r} ({status.phase}) has no recovery point")
            return ExitStatus.OK
        print(f"{args.vm!r} ({status.phase}): {len(points)} recovery point(s)")
        for point in points:
            kind = "app-consistent" if point.app_consistent else "crash-consistent"
            print(f"  {point.recovery_point_id}: {_utc(point.created_at)} UTC, {kind}")
        return ExitStatus.OK

    return with_orchestrator(args, work)


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _run(args: argparse.Namespace, operation: str, **arguments: object) -> int:
    def work(orchestrator: Orchestrator) -> int:
        job, result = orchestrator.run(operation, args.vm, **arguments)
        status = orchestrator.engine.status(args.vm)
        line = f"job {job.job_id}: {job.kind} of {args.vm!r} succeeded; "
        line += f"{args.vm!r} is {status.phase}, active at {status.active_site}"
        said = describe(result)
        print(line + (f"; {said}" if said else ""))
        return ExitStatus.OK

    return with_orchestrator(args, work)


def describe(result: object) -> str:
    """What an operation's report says, in a few words (nothing that varies from
    run to run, such as times)."""
    sayers: dict[type, Callable[[Any], str]] = {
        DrillReport: lambda r: f"test VM from recovery point {r.recovery_point_id}",
        FailoverReport: _failover_said,
        CommitReport: lambda r: (
            f"{r.recovery_points_deleted} recovery point(s) deleted"
        ),
        ReverseReport: lambda r: (
            f"replicating towards {r.target_site}"
            + (
                f", first recovery point {r.first_recovery_point_id}"
                if r.first_recovery_point_id is not None
                else ""
            )
        ),
        CycleReport: lambda r: f"recovery point {r.recovery_point_id}",
        ResyncReport: lambda r: f"{r.blocks_sent} of {r.blocks_compared} blocks sent",
    }
    sayer = sayers.get(type(result))
    return "" if sayer is None else sayer(result)


def _failover_said(report: FailoverReport) -> str:
    parts = []
    if report.recovery_point_id is not None:
        parts.append(f"from recovery point {report.recovery_point_id}")
    if report.waiting:
        parts.append(f"waiting: {report.waiting}")
    if report.loss is not None:
        parts.append(report.loss.summary())
    return "; ".join(parts)


def _only(args: argparse.Namespace, kind: str, **forbidden: bool) -> None:
    for option, value in forbidden.items():
        if getattr(args, option) and not value:
            flag = "--" + option.replace("_", "-")
            msg = f"{flag} does not go with {kind}"
            raise UsageError(msg)


def _point_id(text: str) -> int:
    if not (text.isascii() and text.isdecimal()):
        msg = f"--recovery-point {text!r}: give latest, app-consistent or a point's "
        msg += "id (a whole number; 'hvdr vm points VM' lists them)"
        raise UsageError(msg)
    return int(text)


def _disk_size(text: str) -> tuple[str, int]:
    found = re.fullmatch(r"([^=]+)=(\d+)(KiB|MiB|GiB)?", text)
    if found is None:
        msg = f"--disk {text!r}: give NAME=SIZE, the size in bytes or with KiB, MiB "
        msg += "or GiB (e.g. os=16MiB)"
        raise UsageError(msg)
    name, number, unit = found.groups()
    return name, int(number) * SIZE_UNITS[unit or ""]
