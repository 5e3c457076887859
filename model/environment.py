"""The world's actions: workload writes, and faults with their repairs.

Faults (a site crash, the link lost, a VMM server disconnected from the vault, storage
full, a change log overflowed or damaged) each spend one unit of the trace's fault
budget, and only kinds enabled in the configuration occur; repairs are free, so every
fault can be undone. The workload writes to the active copy while the VM runs there
(not between a failover's completion and its commit: the workload reaches the replica
VM only after commit); a divergent copy left running by a failed shutdown takes writes
of its own; a drill's test VM takes writes that must never reach the replica.

Writes are bounded (``ModelConfig.write_lag_max``): the workload waits while any copy
lags that many writes, or a recovery point that many times the number of points kept,
which keeps the loss figures exact (see ``model.state``) while letting cycles go on
until the oldest point is merged away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from model import loss
from model.action import ActionSpec, Actor, Context, Guard, Scope, SystemEffect
from model.guards import within_bound
from model.lifecycle import STEADY, Phase
from model.state import Copy, FaultKind, LogHealth, Site, SystemState, VmState

#: Phases in which a change log is being kept and can overflow or be damaged.
TRACKING_PHASES = frozenset(
    {*STEADY, Phase.INITIAL_REPLICATION, Phase.REPLICATION_PAUSED, Phase.TEST_FAILOVER}
)

#: Phases the VM is shut down in on purpose: a recovered site does not restart it.
SHUT_DOWN_FOR_FAILOVER = frozenset({Phase.FAILOVER_PREPARED, Phase.FAILING_OVER})


def _within_lag(vm: VmState, lag_max: int, points_max: int) -> bool:
    """Every copy lags fewer than ``lag_max`` writes, every recovery point fewer than
    ``lag_max * points_max`` (so cycles can go on until the oldest point is merged)."""
    copies = (vm.other, vm.test_copy, vm.frozen_other)
    if any(copy is not None and copy.behind >= lag_max for copy in copies):
        return False
    return all(point.copy.behind < lag_max * points_max for point in vm.points)


def _write(ctx: Context) -> VmState:
    vm = ctx.vm

    def advanced(copy: Copy | None) -> Copy | None:
        return None if copy is None else copy.advanced()

    points = tuple(replace(point, copy=point.copy.advanced()) for point in vm.points)
    return replace(
        vm,
        other=advanced(vm.other),
        test_copy=advanced(vm.test_copy),
        frozen_other=advanced(vm.frozen_other),
        points=points,
    )


WORKLOAD_RUNS = Guard(
    "workload_runs",
    lambda ctx: (
        ctx.vm.active in ctx.vm.running
        and ctx.state.site(ctx.vm.active).up
        and ctx.vm.phase is not Phase.FAILED_OVER
    ),
    lambda ctx: (
        "the workload does not write here: the VM is not running at its active site, "
        "or the failover is not committed yet"
    ),
)


def _copies_within_lag(ctx: Context) -> bool:
    config = ctx.config
    return _within_lag(ctx.vm, config.write_lag_max, config.recovery_points_max)


def _write_test(ctx: Context) -> VmState:
    assert ctx.vm.test_copy is not None
    test = ctx.vm.test_copy
    return replace(
        ctx.vm,
        test_copy=replace(test, divergent=test.divergent + 1, from_test=True),
    )


def _stale_write(ctx: Context) -> VmState:
    return loss.stale_write(ctx.vm)


def _spoil_log(health: LogHealth) -> Callable[[Context], VmState]:
    def effect(ctx: Context) -> VmState:
        return replace(ctx.vm, log=health)

    return effect


LOG_IN_USE = Guard(
    "log_in_use",
    lambda ctx: (
        ctx.vm.phase in TRACKING_PHASES
        and ctx.vm.log is LogHealth.USABLE
        and ctx.vm.other is not None
        and ctx.vm.other.behind > 0
        and ctx.state.site(ctx.vm.active).up
    ),
    lambda ctx: (
        "no change log with unshipped records is being kept at a site that is up "
        "(a host that is down neither grows nor checks its logs)"
    ),
)


def _env_vm(
    name: str,
    doc: str,
    effect: Callable[[Context], VmState],
    guards: tuple[Guard, ...],
    fault: FaultKind | None = None,
) -> ActionSpec:
    return ActionSpec(
        name=name,
        scope=Scope.VM,
        actor=Actor.ENVIRONMENT,
        doc=doc,
        guards=guards,
        fault=None if fault is None else (lambda ctx: fault),
        vm_effect=effect,
    )


def _bounded(attribute: str) -> Callable[[Context], bool]:
    def check(ctx: Context) -> bool:
        copy = getattr(ctx.vm, attribute)
        return copy is not None and copy.divergent < ctx.config.write_lag_max

    return check


VM_ENVIRONMENT: tuple[ActionSpec, ...] = (
    _env_vm("write", "The workload writes to the active copy.", _write, (
        WORKLOAD_RUNS,
        within_bound("copies_within_lag", _copies_within_lag,
                     "a copy already lags write_lag_max writes"),
    )),
    _env_vm("write_stale_copy", "A divergent copy still running takes a write.",
            _stale_write, (
        Guard("divergent_copy_runs",
              lambda ctx: ctx.vm.active.other in ctx.vm.running
              and ctx.state.site(ctx.vm.active.other).up,
              lambda ctx: "no divergent copy runs at the other site"),
        within_bound("stale_within_bound", _bounded("other"),
                     "the divergent copy already holds write_lag_max writes"),
    )),
    _env_vm("write_test_vm", "The drill's test VM takes a write.", _write_test, (
        Guard("test_vm_runs",
              lambda ctx: ctx.vm.test_copy is not None
              and ctx.state.site(ctx.vm.active.other).up,
              lambda ctx: "no test VM is running"),
        within_bound("test_within_bound", _bounded("test_copy"),
                     "the test VM already holds write_lag_max writes"),
    )),
    _env_vm("overflow_log", "A change log grows past half its disk.",
            _spoil_log(LogHealth.OVERFLOWED), (LOG_IN_USE,), FaultKind.LOG_OVERFLOW),
    _env_vm("damage_log", "A change log fails its integrity checks.",
            _spoil_log(LogHealth.DAMAGED), (LOG_IN_USE,), FaultKind.LOG_DAMAGE),
)  # fmt: skip


#: How a site action that would change nothing is explained, by (flag, new value).
_ALREADY = {
    ("up", False): "is already down",
    ("up", True): "is already up",
    ("connected", False): "is already disconnected from the vault",
    ("connected", True): "is already connected to the vault",
    ("storage_full", True): "already has full storage",
    ("storage_full", False): "already has free storage",
}


def _site_flag(flag: str, value: bool) -> SystemEffect:  # noqa: FBT001
    def effect(ctx: Context) -> SystemState:
        assert ctx.call.site is not None
        site = ctx.state.site(ctx.call.site)
        state = ctx.state.with_site(ctx.call.site, replace(site, **{flag: value}))
        if flag == "up":
            vms = tuple(_placed(vm, ctx.call.site, up=value) for vm in state.vms)
            state = replace(state, vms=vms)
        return state

    return effect


def _placed(vm: VmState, site: Site, *, up: bool) -> VmState:
    """A crashed host stops its VMs; a recovered one restarts those active there."""
    if not up:
        return replace(vm, running=vm.running - {site})
    if vm.active is site and vm.phase not in SHUT_DOWN_FOR_FAILOVER:
        return replace(vm, running=vm.running | {site})
    return vm


def _site_action(
    name: str,
    doc: str,
    flag: str,
    *,
    value: bool,
    fault: FaultKind | None,
) -> ActionSpec:
    def check(ctx: Context) -> bool:
        assert ctx.call.site is not None
        return bool(getattr(ctx.state.site(ctx.call.site), flag)) is not value

    def explain(ctx: Context) -> str:
        assert ctx.call.site is not None
        return f"the {ctx.call.site.value} site {_ALREADY[(flag, value)]}"

    return ActionSpec(
        name=name,
        scope=Scope.SITE,
        actor=Actor.ENVIRONMENT,
        doc=doc,
        guards=(Guard(f"would_change_{flag}", check, explain),),
        fault=None if fault is None else (lambda ctx: fault),
        system_effect=_site_flag(flag, value),
    )


def _link(*, up: bool) -> SystemEffect:
    return lambda ctx: replace(ctx.state, link_up=up)


SITE_ENVIRONMENT: tuple[ActionSpec, ...] = (
    _site_action("crash_site", "A site's hosts go down.", "up",
                 value=False, fault=FaultKind.SITE_CRASH),
    _site_action("recover_site", "A site's hosts come back.", "up",
                 value=True, fault=None),
    _site_action("disconnect_vault", "A site's VMM server loses the vault.",
                 "connected", value=False,
                 fault=FaultKind.VAULT_DISCONNECT),
    _site_action("reconnect_vault", "A site's VMM server reconnects.",
                 "connected", value=True, fault=None),
    _site_action("fill_storage", "A site's replica storage fills up.",
                 "storage_full", value=True,
                 fault=FaultKind.STORAGE_FULL),
    _site_action("free_storage", "Room is made on a site's storage.",
                 "storage_full", value=False, fault=None),
)  # fmt: skip

LINK_ENVIRONMENT: tuple[ActionSpec, ...] = (
    ActionSpec(
        name="cut_link",
        scope=Scope.SYSTEM,
        actor=Actor.ENVIRONMENT,
        doc="The link between the sites goes down.",
        guards=(Guard("link_up", lambda ctx: ctx.state.link_up,
                      lambda ctx: "the link is already down"),),
        fault=lambda ctx: FaultKind.LINK_LOSS,
        system_effect=_link(up=False),
    ),
    ActionSpec(
        name="repair_link",
        scope=Scope.SYSTEM,
        actor=Actor.ENVIRONMENT,
        doc="The link between the sites comes back.",
        guards=(Guard("link_down", lambda ctx: not ctx.state.link_up,
                      lambda ctx: "the link is already up"),),
        system_effect=_link(up=True),
    ),
)  # fmt: skip
