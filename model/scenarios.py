"""The seed's procedures as data: sequences of calls that the model must accept.

Each scenario is a named tuple of ``Call``s on a one-VM model (or a two-VM model with a
recovery plan), written from the product's procedures (docs/behaviour.md): protect,
failover and failback (planned, unplanned), a drill, a cancel, a recovery plan. The
demo walks them, the tests replay them, ``tests/traces/`` stores them as trace files,
and the diagrams take the happy path from ``FAILOVER_AND_FAILBACK`` by replaying it, so
no picture states an edge the model does not take.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.action import Call
from model.state import ModelConfig, RecoveryPlan, Site

NO_APP = (("app_consistent", False),)


def _vm(action: str, *args: tuple[str, str | int | bool], vm: int = 0) -> Call:
    return Call(action, vm=vm, args=tuple(args))


def protect(vm: int = 0, disks: int = 2) -> tuple[Call, ...]:
    """Enable, copy every disk (writes meanwhile), complete, then one delta cycle."""
    return (
        _vm("enable_protection", vm=vm),
        _vm("write", vm=vm),
        *(_vm("copy_disk", vm=vm) for _ in range(disks)),
        _vm("complete_initial_replication", vm=vm),
        _vm("replicate", *NO_APP, vm=vm),
    )


def planned_failover(vm: int = 0) -> tuple[Call, ...]:
    """Shut down and sync, fail over on the replica, the VM starts, commit."""
    return (
        _vm("planned_failover", vm=vm),
        _vm("failover", vm=vm),
        _vm("complete_failover", vm=vm),
        _vm("commit", vm=vm),
    )


@dataclass(frozen=True)
class Scenario:
    """A named procedure: its configuration and its calls."""

    name: str
    summary: str
    config: ModelConfig
    calls: tuple[Call, ...]


ONE_VM = ModelConfig(vm_count=1, fault_budget=2, write_lag_max=2)

FAILOVER_AND_FAILBACK = Scenario(
    "failover_and_failback",
    "protect, planned failover to the secondary, commit, reverse replication, "
    "planned failover back, commit, reverse replication again: protected, "
    "primary active",
    ONE_VM,
    (
        *protect(),
        _vm("write"),
        *planned_failover(),
        _vm("reverse_replication"),
        _vm("write"),
        _vm("replicate", *NO_APP),
        *planned_failover(),
        _vm("reverse_replication"),
        _vm("write"),
        _vm("replicate", *NO_APP),
    ),
)

UNPLANNED_FAILOVER = Scenario(
    "unplanned_failover",
    "the primary crashes with a write not yet shipped; unplanned failover from the "
    "latest point loses it; commit; the primary returns; reverse replication "
    "resynchronises and reconciles the loss",
    ONE_VM,
    (
        *protect(),
        _vm("write"),
        Call("crash_site", site=Site.PRIMARY),
        _vm("unplanned_failover", ("point", "latest"), ("shutdown", "skip")),
        _vm("complete_failover"),
        _vm("commit"),
        Call("recover_site", site=Site.PRIMARY),
        _vm("reverse_replication"),
        _vm("complete_resynchronization"),
        _vm("write"),
        _vm("replicate", *NO_APP),
    ),
)

DRILL = Scenario(
    "test_failover_drill",
    "a drill from the latest point while delta cycles continue; the test VM's writes "
    "stay in the test copy; cleanup returns to protected",
    ONE_VM,
    (
        *protect(),
        _vm("start_test_failover", ("point", 0)),
        _vm("write_test_vm"),
        _vm("write"),
        _vm("replicate", *NO_APP),
        _vm("cleanup_test_failover"),
    ),
)

CANCELLED_FAILOVER = Scenario(
    "cancelled_failover",
    "a planned failover cancelled after the shutdown: replication is stopped for good; "
    "only disable then enable (a fresh initial replication) protects the VM again",
    ONE_VM,
    (
        *protect(),
        _vm("planned_failover"),
        _vm("cancel_failover"),
        _vm("write"),
        _vm("disable_protection"),
        *protect(),
    ),
)

TWO_VM_PLAN = ModelConfig(
    vm_count=2,
    fault_budget=1,
    write_lag_max=1,
    plans=(RecoveryPlan("app-then-db", ((1,), (0,))),),
    plan_operations=("planned_failover", "commit", "reverse_replication"),
)

RECOVERY_PLAN = Scenario(
    "recovery_plan",
    "a recovery plan fails two VMs over group by group (vm1 first, then vm0), commits "
    "them, then starts reverse replication",
    TWO_VM_PLAN,
    (
        *protect(vm=0),
        *protect(vm=1),
        Call("run_plan", plan=0, args=(("operation", "planned_failover"),)),
        Call("plan_step", plan=0),
        Call("plan_step", plan=0),
        Call("run_plan", plan=0, args=(("operation", "commit"),)),
        Call("plan_step", plan=0),
        Call("plan_step", plan=0),
        Call("run_plan", plan=0, args=(("operation", "reverse_replication"),)),
        Call("plan_step", plan=0),
        Call("plan_step", plan=0),
    ),
)

SCENARIOS: tuple[Scenario, ...] = (
    FAILOVER_AND_FAILBACK,
    UNPLANNED_FAILOVER,
    DRILL,
    CANCELLED_FAILOVER,
    RECOVERY_PLAN,
)

WALKTHROUGH = Scenario(
    "walkthrough",
    "protect a sample VM, write, replicate, drill, planned failover, commit, reverse, "
    "failback, then an unplanned failover after the primary crashes",
    ONE_VM,
    (
        *protect(),
        _vm("write"),
        _vm("replicate", *NO_APP),
        _vm("start_test_failover", ("point", 0)),
        _vm("write_test_vm"),
        _vm("cleanup_test_failover"),
        *planned_failover(),
        _vm("reverse_replication"),
        _vm("write"),
        _vm("replicate", *NO_APP),
        *planned_failover(),
        _vm("reverse_replication"),
        _vm("write"),
        _vm("replicate", *NO_APP),
        _vm("write"),
        Call("crash_site", site=Site.PRIMARY),
        _vm("unplanned_failover", ("point", "latest"), ("shutdown", "skip")),
        _vm("complete_failover"),
        _vm("commit"),
        Call("recover_site", site=Site.PRIMARY),
        _vm("reverse_replication"),
        _vm("complete_resynchronization"),
    ),
)
