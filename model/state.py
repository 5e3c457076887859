"""The abstract system state: small, exact, frozen, and built for exhaustive search.

What the invariants see. Every value is a frozen dataclass or an enum, hashable, so the
explorer can store states in sets; nothing here changes a state in place.

**Versions as lags.** A write counter grows without bound, so copies are not stored as
versions. Each copy of a VM's disks is a ``Copy(behind, divergent)`` *relative to the
active copy* (the one the workload writes to): ``behind`` counts the active copy's
writes it lacks, ``divergent`` the writes it holds that the active copy never had (a
second running copy after a failed shutdown, or the drill's test VM). The active copy
itself is ``Copy(0, 0)`` and is not stored. A write to the active copy adds one to the
``behind`` of every other copy; a delta cycle sets the replica back to ``Copy(0, 0)``.
All disks of a VM move together (cycles cut every disk at one point), so one copy
summarises all of a VM's disks; the per-disk order is the engine's to keep.

**Bounded environment instead of saturation.** Lags are exact, never saturated: the
workload may write only while every copy lags by less than ``write_lag_max`` and every
recovery point by less than ``write_lag_max * recovery_points_max`` (enough for the
oldest point to be merged away), so the loss figures the invariants compare stay
exact. Recovery points are kept up to ``recovery_points_max`` (the oldest is merged
away, as the product does); environment faults are drawn from a budget of
``fault_budget`` per trace. Jobs keep no history here.

**What the abstraction cannot tell apart.** Two copies that lack the same number of
writes are equal even if the writes differ in size or place; which disk a write went to;
the time a recovery point was taken (only its order and its app-consistent flag); how
many bytes a resynchronisation sends; more than ``write_lag_max`` unshipped writes (the
workload waits instead); a site's disks partially full (full or not). A test of the
engine compares through this mapping, so these differences are the engine tests' to
check on real bytes.

**State no future step can observe is dropped**, so equal futures are one state: the
loss record lives from a failover's completion until it is final (reverse replication
after a planned failover, the reconciliation after an unplanned one), when it leaves as
``VmState.closed_report``, an observation outside equality; a cancelled failover drops
the logs and the recovery points, since only disable (which deletes them) leaves
``replication_stopped``.

Ghost variables (never read by guards or effects that the product could not compute):
``LossRecord.lost_writes`` counts what a failover really lost, ``frozen_other`` records
the replica as it stood when a failover was cancelled, ``Copy.from_test`` marks writes
made in a drill's test VM.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from model.lifecycle import INITIAL_PHASE, STEADY, Phase


class Site(enum.Enum):
    """The two VMM sites. The primary is where protection was first enabled."""

    PRIMARY = "primary"
    SECONDARY = "secondary"

    @property
    def other(self) -> Site:
        """The site across the link."""
        return Site.SECONDARY if self is Site.PRIMARY else Site.PRIMARY


class LogHealth(enum.Enum):
    """Whether the change logs can still carry the next delta cycle (decision 8)."""

    USABLE = "usable"
    OVERFLOWED = "overflowed"  # grew past half the disk: resynchronisation needed
    DAMAGED = "damaged"  # failed its checks: resynchronisation needed


class FailoverKind(enum.Enum):
    """Planned (shut down, final sync, zero loss) or unplanned (from a chosen point)."""

    PLANNED = "planned"
    UNPLANNED = "unplanned"


class FaultKind(enum.Enum):
    """Environment faults; each occurrence spends one unit of the fault budget."""

    SITE_CRASH = "site_crash"
    LINK_LOSS = "link_loss"
    VAULT_DISCONNECT = "vault_disconnect"
    STORAGE_FULL = "storage_full"
    LOG_OVERFLOW = "log_overflow"
    LOG_DAMAGE = "log_damage"
    SHUTDOWN_REFUSED = "shutdown_refused"
    FINAL_SYNC_CUT = "final_sync_cut"


ALL_FAULTS = frozenset(FaultKind)


@dataclass(frozen=True, slots=True)
class Copy:
    """A copy of a VM's disks relative to the active copy (see the module essay)."""

    behind: int = 0
    divergent: int = 0
    from_test: bool = False  # ghost: the divergent writes were made in a test VM

    def advanced(self) -> Copy:
        """This copy after one more write to the active copy."""
        return replace(self, behind=self.behind + 1)


@dataclass(frozen=True, slots=True)
class RecoveryPoint:
    """A past state of the source held at the target, newest first in a catalogue."""

    copy: Copy
    app_consistent: bool = False
    # ghost: the guest was quiesced (its writers flushed) when the cycle cut this point
    quiesced: bool = False


@dataclass(frozen=True, slots=True)
class LossRecord:
    """What the last failover lost: the truth, the report, and the reconciled figure.

    ``reported_writes`` is what the target could say when the replica VM started: exact
    when the old source was reachable and stopped, otherwise a lower bound (the writes
    it knows it discarded by choosing an older point). ``reconciled_writes`` is counted
    from the old source's change logs when reverse replication resynchronises; it
    stays None when those logs cannot tell (``logs_tell`` false: damaged or overflowed
    when it failed over), and the record closes with the target's bound.
    """

    kind: FailoverKind
    lost_writes: int  # ghost: acknowledged writes missing from the new active copy
    reported_writes: int
    reported_exact: bool
    reconciled_writes: int | None = None
    abandoned: bool = False  # disable gave a divergent copy up: never reconciled
    logs_tell: bool = True  # the old source's logs can count what it never shipped


@dataclass(frozen=True, slots=True)
class VmState:
    """One VM: phase, placement, copies, recovery points, loss record and ghosts.

    ``active`` is the site whose copy the workload writes; ``other`` the copy at the
    other site (the replica while replicating, the old source after a failover, None
    when there is none). ``points`` are the recovery points, newest first.
    ``chosen_point`` indexes ``points`` during a failover until commit.
    """

    phase: Phase = INITIAL_PHASE
    active: Site = Site.PRIMARY
    running: frozenset[Site] = frozenset({Site.PRIMARY})
    other: Copy | None = None
    disks_copied: int = 0
    points: tuple[RecoveryPoint, ...] = ()
    test_copy: Copy | None = None
    log: LogHealth = LogHealth.USABLE
    other_trusted: bool = True
    failover_kind: FailoverKind | None = None
    chosen_point: int | None = None
    last_failover: LossRecord | None = None
    frozen_other: Copy | None = None  # ghost: the replica at the cancel, kept in step
    # What the step that produced this state closed: the failover's final loss report
    # (an observation, like a job's output: it takes no part in equality or hashing).
    closed_report: LossRecord | None = field(default=None, compare=False, hash=False)

    @property
    def source(self) -> Site:
        """The site replication ships from: the active one."""
        return self.active

    @property
    def target(self) -> Site:
        """The site holding the replica and the recovery points."""
        return self.active.other

    @property
    def primary_active(self) -> bool:
        """True while the VM's direction is primary -> secondary."""
        return self.active is Site.PRIMARY


@dataclass(frozen=True, slots=True)
class SiteState:
    """One site: its hosts up, its VMM server connected to the vault, storage full."""

    up: bool = True
    connected: bool = True
    storage_full: bool = False


@dataclass(frozen=True, slots=True)
class RecoveryPlan:
    """Ordered groups of VM indices; one group's VMs run together (decision 11)."""

    name: str
    groups: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True)
class PlanRun:
    """A recovery plan in progress: the operation, the group it is at, and the VMs of
    that group that already succeeded (skipped when the plan resumes, decision 11)."""

    operation: str
    group: int = 0
    done: frozenset[int] = frozenset()


def _check_plan(plan: RecoveryPlan, vm_count: int) -> None:
    """ValueError naming what is wrong with ``plan``: no name, no group, an empty
    group, a VM index out of range, or a VM in two groups (or twice in one)."""
    if not plan.name:
        msg = "a recovery plan needs a name"
        raise ValueError(msg)
    if not plan.groups:
        msg = f"recovery plan {plan.name!r} has no group; give it at least one"
        raise ValueError(msg)
    seen: dict[int, int] = {}
    for number, group in enumerate(plan.groups, start=1):
        if not group:
            msg = f"recovery plan {plan.name!r}: group {number} is empty"
            raise ValueError(msg)
        for vm in group:
            if not 0 <= vm < vm_count:
                msg = (
                    f"recovery plan {plan.name!r} names VM index {vm!r}; "
                    f"valid indices are 0..{vm_count - 1}"
                )
                raise ValueError(msg)
            if vm in seen:
                where = (
                    f"twice in group {number}"
                    if seen[vm] == number
                    else f"in group {seen[vm]} and again in group {number}"
                )
                msg = (
                    f"recovery plan {plan.name!r}: VM {vm} is {where}; a VM belongs "
                    "to one group of a plan, once"
                )
                raise ValueError(msg)
            seen[vm] = number


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The static parameters of one model: sizes, bounds, faults and plans."""

    vm_count: int = 1
    disks_per_vm: int = 2
    write_lag_max: int = 2  # the workload waits while a copy lags this many writes
    recovery_points_max: int = 2  # older points are merged away, as the product does
    fault_budget: int = 2  # environment faults per trace
    faults: frozenset[FaultKind] = ALL_FAULTS
    app_consistent_points: bool = True  # offer app-consistent cycles as a choice
    plans: tuple[RecoveryPlan, ...] = ()
    plan_operations: tuple[str, ...] = ()
    vm_names: tuple[str, ...] = ()  # display names; vm0, vm1, ... when not given

    def __post_init__(self) -> None:
        checks: tuple[tuple[str, object, int], ...] = (
            ("vm_count", self.vm_count, 1),
            ("disks_per_vm", self.disks_per_vm, 1),
            ("write_lag_max", self.write_lag_max, 1),
            ("recovery_points_max", self.recovery_points_max, 1),
            ("fault_budget", self.fault_budget, 0),
        )
        for name, value, lowest in checks:
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                msg = f"{name}={value!r} must be an int >= {lowest}"
                raise ValueError(msg)
        for plan in self.plans:
            _check_plan(plan, self.vm_count)
        names = [plan.name for plan in self.plans]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            msg = f"recovery plans {twice} are named twice; give each plan its own name"
            raise ValueError(msg)
        if self.plans and not self.plan_operations:
            msg = (
                "recovery plans are given but no plan_operations: name the operations "
                "a plan may run (test_failover, planned_failover, commit, ...)"
            )
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class SystemState:
    """Both sites, the link, every VM and every plan run, and the faults left."""

    primary: SiteState = field(default_factory=SiteState)
    secondary: SiteState = field(default_factory=SiteState)
    link_up: bool = True
    vms: tuple[VmState, ...] = ()
    plan_runs: tuple[PlanRun | None, ...] = ()
    faults_left: int = 0

    def site(self, site: Site) -> SiteState:
        """The state of ``site``."""
        return self.primary if site is Site.PRIMARY else self.secondary

    def with_site(self, site: Site, value: SiteState) -> SystemState:
        """A copy with ``site`` replaced."""
        if site is Site.PRIMARY:
            return replace(self, primary=value)
        return replace(self, secondary=value)

    def with_vm(self, index: int, vm: VmState) -> SystemState:
        """A copy with VM ``index`` replaced."""
        vms = list(self.vms)
        vms[index] = vm
        return replace(self, vms=tuple(vms))

    def reachable(self, site: Site) -> bool:
        """Whether ``site`` can be operated on: up and connected to the vault."""
        state = self.site(site)
        return state.up and state.connected


def initial_state(config: ModelConfig) -> SystemState:
    """Every VM unprotected and running on the primary; everything healthy."""
    return SystemState(
        vms=tuple(VmState() for _ in range(config.vm_count)),
        plan_runs=tuple(None for _ in config.plans),
        faults_left=config.fault_budget,
    )


#: Phases in which the VM's status can be "protected" (decision 2).
_PROTECTABLE = frozenset(
    {
        *STEADY,
        Phase.REPLICATION_PAUSED,
        Phase.TEST_FAILOVER,
        Phase.FAILOVER_PREPARED,
        Phase.FAILING_OVER,
        Phase.FAILED_OVER,
        Phase.COMMITTED,
    }
)


def is_protected(vm: VmState) -> bool:
    """The derived status: the VM can be failed over without resynchronisation.

    True in the steady phases, while paused, during a drill and after a planned
    failover (the old source holds exactly the new source's starting point); false
    after an unplanned failover until reverse replication has resynchronised, and false
    while resynchronising (decision 2).
    """
    if vm.phase not in _PROTECTABLE or vm.other is None:
        return False
    return vm.other_trusted and vm.other.divergent == 0


class Health(enum.Enum):
    """Replication health as the product shows it."""

    NORMAL = "normal"
    WARNING = "warning"
    CRITICAL = "critical"


def health(state: SystemState, vm: VmState) -> Health:
    """Critical when the logs are unusable; warning when a cycle cannot run now and
    the replica lags, or may lag: while the source site is down, what it holds that
    was never shipped cannot be counted (the target never saw it), so its lag is
    unknown and shown as a warning."""
    if vm.phase in (Phase.UNPROTECTED, Phase.REPLICATION_STOPPED):
        return Health.NORMAL if vm.phase is Phase.UNPROTECTED else Health.CRITICAL
    if vm.log is not LogHealth.USABLE:
        return Health.CRITICAL
    blocked = (
        not state.link_up
        or not state.site(vm.source).up
        or not state.site(vm.target).up
        or state.site(vm.target).storage_full
    )
    lagging = vm.other is not None and vm.other.behind > 0
    unknown = vm.other is not None and not state.site(vm.source).up
    return Health.WARNING if blocked and (lagging or unknown) else Health.NORMAL
