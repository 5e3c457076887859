"""``hvdr plan``: recovery plans, ordered groups of VMs run as one job.

``create`` defines a plan (its groups in order, the VMs of a group run together);
``show`` prints one, or every plan; ``failover --test | --planned | --unplanned``,
``cleanup`` (of a test failover), ``commit`` and ``reverse`` run the operation over the
plan, group by group; a VM that fails stops the plan before the next group, and
``resume JOB`` takes the same job up again once the cause is fixed, skipping what
already succeeded (``docs/orchestration.md``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from engine.errors import PlanFailed
from engine.orchestration.orchestrator import Orchestrator
from engine.orchestration.recovery_plans import RecoveryPlan
from hvdr.commands.operator import (
    add_config,
    one_line,
    register_group,
    with_orchestrator,
)
from hvdr.status import ExitStatus, UsageError, examples

#: action -> (the plan operation, help)
RUNS = {
    "commit": ("commit", "commit the failover of every VM of the plan"),
    "reverse": ("reverse_replication", "reverse replication of every VM of the plan"),
    "cleanup": ("cleanup_test_failover", "end the plan's test failover"),
}


def register(subparsers: Any) -> None:
    """Add ``hvdr plan`` and its actions."""
    inner = register_group(
        subparsers,
        "plan",
        "recovery plans: groups of VMs failed over, committed, reversed in order",
        __doc__.split("\n\n")[1].replace("\n", " "),
        examples(
            (
                "hvdr plan create shop --group db --group app1,app2",
                "the database first, then both application servers together",
            ),
            ("hvdr plan failover shop --planned", "a planned failover of the plan"),
            ("hvdr plan resume 7", "take failed job 7 up again once fixed"),
        ),
    )
    create = inner.add_parser("create", help="define a plan (or --replace one)")
    create.add_argument("plan", metavar="PLAN", help="the plan's name")
    create.add_argument(
        "--group", action="append", required=True, metavar="VM[,VM...]",
        help="one group of VMs, in order; repeat for each group",
    )  # fmt: skip
    create.add_argument(
        "--replace", action="store_true", help="replace it if it exists"
    )
    add_config(create)
    create.set_defaults(handler=_create)
    show = inner.add_parser("show", help="show a plan, or every plan")
    show.add_argument("plan", metavar="PLAN", nargs="?", help="the plan's name")
    add_config(show)
    show.set_defaults(handler=_show)
    failover = inner.add_parser("failover", help="fail the plan's VMs over, in order")
    failover.add_argument("plan", metavar="PLAN", help="the plan's name")
    kind = failover.add_mutually_exclusive_group(required=True)
    kind.add_argument("--test", action="store_true", help="a drill of every VM")
    kind.add_argument("--planned", action="store_true", help="no loss, in order")
    kind.add_argument(
        "--unplanned", action="store_true", help="from each VM's latest point"
    )
    add_config(failover)
    failover.set_defaults(handler=_failover)
    for action, (operation, help_text) in RUNS.items():
        parser = inner.add_parser(action, help=help_text)
        parser.add_argument("plan", metavar="PLAN", help="the plan's name")
        add_config(parser)
        parser.set_defaults(handler=_run, operation=operation)
    resume = inner.add_parser("resume", help="take a failed or interrupted plan job up")
    resume.add_argument("job", type=int, metavar="JOB", help="the job's number")
    add_config(resume)
    resume.set_defaults(handler=_resume)


def _create(args: argparse.Namespace) -> int:
    for text in args.group:
        if any(not vm.strip() for vm in text.split(",")):
            msg = f"--group {text!r}: a VM name is empty (a comma too many?); give "
            msg += "VM names separated by commas, e.g. --group web,db"
            raise UsageError(msg)
    groups = [text.split(",") for text in args.group]

    def work(orchestrator: Orchestrator) -> int:
        plan = orchestrator.create_plan(args.plan, groups, replace=args.replace)
        print(f"plan {plan.name!r}: {_groups(plan.groups)}")
        return ExitStatus.OK

    return with_orchestrator(args, work)


def _show(args: argparse.Namespace) -> int:
    def work(orchestrator: Orchestrator) -> int:
        plans = (
            (orchestrator.plan(args.plan),)
            if args.plan is not None
            else orchestrator.plans()
        )
        if not plans:
            print("no recovery plans yet (hvdr plan create)")
        for plan in plans:
            print(f"plan {plan.name!r}: {_groups(plan.groups)}")
            for number, group in enumerate(plan.groups, start=1):
                phases = ", ".join(
                    f"{vm} {orchestrator.engine.status(vm).phase}" for vm in group
                )
                print(f"  group {number}: {phases}")
        return ExitStatus.OK

    return with_orchestrator(args, work)


def _failover(args: argparse.Namespace) -> int:
    if args.test:
        args.operation = "test_failover"
    elif args.planned:
        args.operation = "planned_failover"
    else:
        args.operation = "unplanned_failover"
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    def work(orchestrator: Orchestrator) -> int:
        try:
            job = orchestrator.run_plan(args.plan, args.operation)
        except PlanFailed as failed:
            print(
                f"hvdr plan: error: job {failed.job_id} failed: {one_line(failed)}",
                file=sys.stderr,
            )
            return ExitStatus.FAILED
        _said(orchestrator, job.job_id)
        return ExitStatus.OK

    return with_orchestrator(args, work)


def _resume(args: argparse.Namespace) -> int:
    def work(orchestrator: Orchestrator) -> int:
        job = orchestrator.jobs.job(args.job)
        if not job.kind.startswith("plan_"):
            msg = f"job {args.job} is a {job.kind} job, not a plan's: resume it with "
            msg += f"'hvdr jobs resume {args.job}'"
            raise UsageError(msg)
        try:
            orchestrator.resume(args.job)
        except PlanFailed as failed:
            print(
                f"hvdr plan: error: job {failed.job_id} failed: {one_line(failed)}",
                file=sys.stderr,
            )
            return ExitStatus.FAILED
        _said(orchestrator, args.job)
        return ExitStatus.OK

    return with_orchestrator(args, work)


def _said(orchestrator: Orchestrator, job_id: int) -> None:
    job = orchestrator.jobs.job(job_id)
    ran = sum(1 for step in job.steps if step.state.value == "succeeded")
    skipped = sum(1 for step in job.steps if step.state.value == "skipped")
    print(
        f"job {job.job_id}: {job.kind} of {job.target!r} {job.state.value}: "
        f"{ran} step(s) ran, {skipped} skipped"
    )
    # The plan as the job ran it (it may have been replaced since).
    recorded = job.params.get("plan")
    plan = (
        RecoveryPlan.from_json(recorded)
        if isinstance(recorded, Mapping)
        else orchestrator.plan(job.target)
    )
    for number, group in enumerate(plan.groups, start=1):
        phases = ", ".join(
            f"{vm} {orchestrator.engine.status(vm).phase}" for vm in group
        )
        print(f"  group {number}: {phases}")


def _groups(groups: tuple[tuple[str, ...], ...]) -> str:
    return " then ".join("[" + ", ".join(group) + "]" for group in groups)
