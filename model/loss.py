"""Completing a failover: moving the active site, re-basing copies, recording the loss.

When the replica VM starts from a recovery point, that point becomes the active copy,
so every other copy is re-expressed relative to it. Before a failover completes and
until commit no workload writes reach the new copy (the workload is reachable on the
replica VM after commit, as the seed says), so every copy then lies on one line of
history: the old source's. A copy's *position* on that line, relative to the active
copy, is ``divergent - behind`` (one of the two is zero on the line): positive when it
holds writes the active copy lacks, negative when it lags.

The loss record keeps three figures apart (docs/model.md: failovers report
data loss honestly):

* ``lost_writes`` (ghost): the acknowledged writes of the old source missing from the
  new active copy, kept by its own bookkeeping: set from the chosen point's lag when the
  failover completes, shifted when another point is chosen, one more for each write a
  still-running old copy acknowledges afterwards.
* ``reported_writes``: what the target can say when the VM starts. It is exact only if
  the old source is reachable (up, link up) and stopped, so it can answer with its last
  log position and will write no more; otherwise it is a lower bound: the writes the
  target knows it discards by starting from an older point than the newest it holds.
* ``reconciled_writes``: counted from the old source's change logs when reverse
  replication resynchronises (``model.vm_actions``). Only its logs say how many
  writes it made; the blocks a resynchronisation compares say where they landed, not
  how many there were. So when those logs were unusable as it failed over (damaged,
  overflowed: ``logs_tell`` false) no figure is ever exact: the record closes with the
  target's bound.
"""

from __future__ import annotations

from dataclasses import replace

from model.state import (
    Copy,
    LogHealth,
    LossRecord,
    RecoveryPoint,
    Site,
    SystemState,
    VmState,
)


def position(copy: Copy) -> int:
    """Where ``copy`` lies on the old source's line of history, relative to active."""
    assert copy.behind == 0 or copy.divergent == 0, copy
    return copy.divergent - copy.behind


def at_position(offset: int) -> Copy:
    """The copy at ``offset`` on the line: ahead (divergent) or behind."""
    return Copy(divergent=offset) if offset >= 0 else Copy(behind=-offset)


def _rebase_points(
    points: tuple[RecoveryPoint, ...], origin: int
) -> tuple[RecoveryPoint, ...]:
    return tuple(
        replace(point, copy=at_position(position(point.copy) - origin))
        for point in points
    )


def _report(
    vm: VmState, state: SystemState, old_site: Site, *, logs_tell: bool = True
) -> tuple[int, bool]:
    """What the target can tell at failover time: (writes, exact?). ``logs_tell``:
    the old source's logs can say what it never shipped (usable: not damaged, not
    overflowed)."""
    assert vm.other is not None
    reachable = state.site(old_site).up and state.link_up
    stopped = old_site not in vm.running
    if reachable and stopped and logs_tell:
        return vm.other.divergent, True
    newest = vm.points[0].copy if vm.points else Copy()
    return newest.divergent, False


def complete_failover(vm: VmState, state: SystemState) -> VmState:
    """The replica VM starts from the chosen point; the old source becomes other."""
    assert vm.chosen_point is not None
    assert vm.failover_kind is not None
    assert vm.test_copy is None
    chosen = vm.points[vm.chosen_point].copy
    assert chosen.divergent == 0, chosen
    origin = position(chosen)
    old_site = vm.active
    moved = replace(
        vm,
        active=old_site.other,
        running=vm.running | {old_site.other},
        other=at_position(-origin),  # the old source, relative to the chosen point
        points=_rebase_points(vm.points, origin),
        frozen_other=None,
        # The logs that count from here are the new source's, which start empty (it
        # takes no write before commit); the old source's stay with the old copy.
        log=LogHealth.USABLE,
    )
    reported, exact = _report(
        moved, state, old_site, logs_tell=vm.log is LogHealth.USABLE
    )
    record = LossRecord(
        kind=vm.failover_kind,
        lost_writes=chosen.behind,
        reported_writes=reported,
        reported_exact=exact,
        logs_tell=vm.log is LogHealth.USABLE,
    )
    return replace(moved, last_failover=record)


def change_point(vm: VmState, state: SystemState, index: int) -> VmState:
    """Before commit, restart the replica VM from point ``index`` instead."""
    assert vm.last_failover is not None
    assert vm.other is not None
    origin = position(vm.points[index].copy)
    moved = replace(
        vm,
        other=at_position(position(vm.other) - origin),
        points=_rebase_points(vm.points, origin),
        chosen_point=index,
    )
    reported, exact = _report(
        moved, state, vm.active.other, logs_tell=vm.last_failover.logs_tell
    )
    if vm.last_failover.reported_exact and not exact:
        # The stopped old source's unshipped writes were counted when it failed over
        # and it wrote nothing since: the figure for another point is exact too.
        reported, exact = moved.other.divergent if moved.other else 0, True
    record = replace(
        vm.last_failover,
        lost_writes=vm.last_failover.lost_writes - origin,
        reported_writes=reported,
        reported_exact=exact,
    )
    return replace(moved, last_failover=record)


def stale_write(vm: VmState) -> VmState:
    """A write acknowledged by the old copy still running after the failover."""
    assert vm.other is not None
    record = vm.last_failover
    if record is not None:
        record = replace(record, lost_writes=record.lost_writes + 1)
    other = replace(vm.other, divergent=vm.other.divergent + 1)
    return replace(vm, other=other, last_failover=record)
