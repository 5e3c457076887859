"""The lifecycle's edge guards: named predicates over one VM's data.

These choose between edges of the same trigger (a delta cycle or a resynchronisation;
deltas or resynchronisation after a failover) and hold a phase change back until the
data allows it (no drill without a recovery point). Site, link and vault conditions are
not here: they are the actions' guards (``model.actions``).

Each guard is pure and cheap: the explorer evaluates them millions of times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from model.lifecycle import Phase, check_lifecycle
from model.state import FailoverKind, LogHealth, ModelConfig, VmState

EdgeGuard = Callable[[VmState, ModelConfig], bool]


def log_usable(vm: VmState, config: ModelConfig) -> bool:
    """The change logs can carry the next cycle (not overflowed, not damaged)."""
    return vm.log is LogHealth.USABLE


def log_unusable(vm: VmState, config: ModelConfig) -> bool:
    """The logs overflowed or are damaged: the next cycle must resynchronise."""
    return vm.log is not LogHealth.USABLE


def disks_left_to_copy(vm: VmState, config: ModelConfig) -> bool:
    """Initial replication has disks still to copy."""
    return vm.disks_copied < config.disks_per_vm


def all_disks_copied(vm: VmState, config: ModelConfig) -> bool:
    """Every disk of the VM reached the target in the initial copy."""
    return vm.disks_copied >= config.disks_per_vm


def recovery_point_exists(vm: VmState, config: ModelConfig) -> bool:
    """The target holds at least one recovery point to start a VM from."""
    return bool(vm.points)


def last_failover_unplanned(vm: VmState, config: ModelConfig) -> bool:
    """The failover being completed was unplanned (only then may the point change)."""
    return vm.failover_kind is FailoverKind.UNPLANNED


def other_copy_trusted(vm: VmState, config: ModelConfig) -> bool:
    """Deltas only: the other copy is known to be the new source's starting point
    (planned failover) and the logs can carry every write made since."""
    return vm.other_trusted and vm.log is LogHealth.USABLE


def other_copy_untrusted(vm: VmState, config: ModelConfig) -> bool:
    """The other copy may hold writes the active copy lacks (unplanned failover),
    or the logs cannot carry the writes since commit: resynchronise first."""
    return not other_copy_trusted(vm, config)


GUARDS: Mapping[str, EdgeGuard] = MappingProxyType(
    {
        guard.__name__: guard
        for guard in (
            log_usable,
            log_unusable,
            disks_left_to_copy,
            all_disks_copied,
            recovery_point_exists,
            last_failover_unplanned,
            other_copy_trusted,
            other_copy_untrusted,
        )
    }
)

#: What a refused edge guard means to an operator, for error messages.
GUARD_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "log_usable": "the change logs are unusable (overflowed or damaged): "
        "resynchronize first",
        "log_unusable": "the change logs are usable: no resynchronisation is due",
        "disks_left_to_copy": "every disk is already copied",
        "all_disks_copied": "the initial copy is not complete: disks remain to copy",
        "recovery_point_exists": "no recovery point exists yet: the initial copy must "
        "complete first",
        "last_failover_unplanned": "the recovery point is fixed after a planned "
        "failover (the final sync's point)",
        "other_copy_trusted": "the other copy may hold writes the active copy lacks, "
        "or the logs cannot carry the writes since commit",
        "other_copy_untrusted": "the other copy is the new source's starting point",
    }
)

#: Where a phase changes what a refused guard means (decision 4: a drill forbids the
#: resynchronisation that unusable logs call for, so the way on is its cleanup).
PHASE_GUARD_HINTS: Mapping[tuple[Phase, str], str] = MappingProxyType(
    {
        (Phase.TEST_FAILOVER, "log_usable"): "the change logs are unusable "
        "(overflowed or damaged) and a drill forbids resynchronising: clean up the "
        "test failover first (cleanup_test_failover), then resynchronize",
    }
)

check_lifecycle(GUARDS)
