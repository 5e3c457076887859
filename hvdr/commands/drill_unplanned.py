"""The drill's last act: an unplanned failover with the primary crashed.

The guest writes at the primary; cycles ship some of it; more is written and never
shipped; the primary's hosts go down (``crash_site``). The failover to the secondary
reports what the target can know: the writes of the points it rolls back, and a
*lower bound* labelled so, since the unshipped writes are only in the primary's logs.
The drill prints that, not its own count. Commit; the VM runs at the secondary.

The primary comes back (``recover_site``) and its logs are read: the loss is now
exact, and it must equal what the versions say was lost (the writes the primary
acknowledged that the replica VM does not hold), which the old primary's disks must
still hold. Reverse replication then resynchronises only the blocks that may differ
(the lost writes' blocks and what the new source wrote since), and the drill checks
the count sent against the blocks the versions say differ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from hvdr.commands.workload import BLOCK_BYTES, expected_image

if TYPE_CHECKING:
    from engine.binding.loss_report import LossReport
    from hvdr.commands.engine_drill import Drill


def run(drill: Drill) -> None:
    """Crash, fail over, commit, recover, reconcile, reverse with a resync."""
    drill.section("unplanned failover: the primary site crashes")
    drill.cycles("secondary", 2)
    drill.workload.wait_for(200)  # written at the primary, never shipped
    engine = drill.engine
    drill.crash_site("primary")
    written = drill.workload.wait_parked()
    version, refusal = drill.workload.refusals[-1]
    drill.console.print(
        f"the primary site is down: the guest's write {version:,} was refused "
        f"({escape(str(refusal))})"
    )
    report = engine.unplanned_failover(drill.vm)
    bound = report.loss
    assert bound is not None  # a completed failover always has its report
    drill.console.print(f"loss report: {escape(bound.summary())}")
    replica_vm = drill.holding(drill.active_copy())
    assert report.recovery_point_id is not None  # it completed: a point was chosen
    point_held = drill.points["secondary", report.recovery_point_id].newest
    drill.console.print(f"the replica VM reads {replica_vm.describe()}")
    drill.verify.check(
        "unplanned failover: the replica VM holds exactly its recovery point",
        replica_vm.exact and replica_vm.newest == point_held,
        f"replica VM: {replica_vm.describe()}; point {report.recovery_point_id}: "
        f"writes 1..{point_held:,}",
    )
    drill.verify.check(
        "unplanned failover with the primary down: the loss is reported as a lower "
        "bound, labelled so (no exact figure)",
        not bound.exact and bound.writes_lost is None and "lower bound" in bound.note,
        f"exact {bound.exact}, writes lost {bound.writes_lost}, at least "
        f"{bound.writes_lost_at_least}: {bound.note!r}",
    )
    drill.workload.fork(kept=replica_vm.newest, written=written)
    commit = engine.commit(drill.vm)
    drill.console.print(
        f"commit: {commit.recovery_points_deleted} recovery points deleted; the VM "
        f"runs at the {commit.active_site} site, protected: "
        f"{engine.status(drill.vm).protected} (not after an unplanned failover, until "
        "reverse replication)"
    )
    drill.workload.resume()
    drill.workload.wait_for(100)
    reconcile(drill, bound, written, replica_vm.newest)
    resynchronise(drill, written)


def reconcile(drill: Drill, bound: LossReport, written: int, kept: int) -> None:
    """The primary recovers: the exact loss, against the versions."""
    drill.section("the primary site recovers: reconciliation")
    engine = drill.engine
    outcomes = drill.recover_site("primary")
    for vm, outcome in outcomes.items():
        drill.console.print(f"recovered {vm}: {escape(outcome)}")
    loss = engine.reconcile(drill.vm)
    assert loss is not None  # the failover's report is kept until reverse
    drill.console.print(f"loss report: {escape(loss.summary())}")
    if loss.window_start is not None and loss.window_end is not None:
        drill.console.print(
            f"window of lost writes: {loss.window_end - loss.window_start:.3f} s "
            "(from the chosen point to the primary's last acknowledged write)"
        )
    lost = written - kept
    old_copy = drill.image_copy("primary")
    holds = old_copy == expected_image(drill.workload.placement, range(1, written + 1))
    drill.console.print(
        f"counted from the versions: the primary acknowledged writes 1..{written:,}, "
        f"the failover kept 1..{kept:,}: {lost:,} writes lost"
    )
    drill.verify.check(
        "the old primary's disks still hold every write it acknowledged",
        holds,
        f"primary's images hold exactly writes 1..{written:,}: {holds}",
    )
    drill.verify.check(
        "after reconciliation the loss is exact and equals the writes the versions "
        "say were lost",
        loss.exact
        and loss.writes_lost == lost
        and loss.bytes_lost == lost * BLOCK_BYTES,
        f"engine: {loss.writes_lost} writes, {loss.bytes_lost} bytes (exact "
        f"{loss.exact}); versions: {lost} writes, {lost * BLOCK_BYTES} bytes",
    )
    drill.verify.check(
        "the bound reported at failover was a true lower bound",
        bound.writes_lost_at_least <= lost,
        f"at least {bound.writes_lost_at_least} ≤ {lost} lost",
    )


def resynchronise(drill: Drill, written: int) -> None:
    """Reverse replication after the unplanned failover: a targeted resync."""
    drill.section("reverse replication: targeted resynchronisation")
    engine = drill.engine
    workload = drill.workload
    assert workload.lost is not None
    lost = range(workload.lost[0], workload.lost[1] + 1)
    before = workload.acknowledged
    reverse = engine.reverse_replication(drill.vm)
    after = workload.attempted
    resync = reverse.resync
    disks = drill.workload.placement.disks
    total = sum(size // BLOCK_BYTES for size in disks.values())
    if resync is None:
        drill.verify.check("reverse replication resynchronised", False, "no resync")  # noqa: FBT003
        return
    drill.console.print(
        f"compared {resync.blocks_compared:,} of the disks' {total:,} blocks "
        f"({resync.blocks_compared / total:.1%}; candidates named: "
        f"{resync.blocks_candidate:,}, full comparison: {resync.full_comparison}), "
        f"sent {resync.blocks_sent:,} ({resync.bytes_sent:,} bytes) → recovery point "
        f"{resync.recovery_point_id}; phase {reverse.phase}"
    )
    since = range(written + 1, before + 1)
    low = len(workload.blocks_of(lost) | workload.blocks_of(since))
    high = len(
        workload.blocks_of(lost) | workload.blocks_of(range(written + 1, after + 1))
    )
    drill.verify.check(
        "the resynchronisation compared only the blocks that may differ and sent "
        "those that do",
        not resync.full_comparison
        and resync.blocks_compared < total
        and low <= resync.blocks_sent <= high,
        f"compared {resync.blocks_compared:,} of {total:,}; sent "
        f"{resync.blocks_sent:,}; the versions say {low:,}..{high:,} differ (the "
        f"{len(lost):,} lost writes' blocks and those written since the failover, "
        "the guest writing throughout)",
    )
    assert resync.recovery_point_id is not None  # blocks were sent: a new point
    drill.remember_point("primary", resync.recovery_point_id)
    drill.cycles("primary", 1)
    final = workload.pause()  # the last cycle, then copies that do not move
    cycle = engine.replicate(drill.vm)
    assert cycle is not None
    source = drill.active_copy()
    replica = drill.point_copy("primary", cycle.recovery_point_id)
    seen = drill.holding(source)
    status = engine.status(drill.vm)
    drill.verify.check(
        "after the resynchronisation the primary's replica equals the source, "
        "byte for byte",
        source == replica and seen.exact and seen.newest == final and status.protected,
        f"source {seen.describe()}; replica point {cycle.recovery_point_id} equal: "
        f"{source == replica}; phase {status.phase}, protected {status.protected}",
    )
