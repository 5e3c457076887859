"""Reverse replication, reconciliation with the old source, and what a resync compares.

After a committed failover the old source's copy still sits at its site, with its
change logs: what it wrote and never shipped (and, if a failed shutdown left it
running, what it wrote since). Reverse replication makes that copy the new replica:

1. **reconcile**: the old source's logs are read (its active logs and the sealed cycles
   in its outbox the target never applied): the exact loss (writes, payload bytes, the
   window to its last acknowledged write) replaces the bound in the loss report, which
   is written to the control state *before* anything is deleted;
2. after an unplanned failover, **the blocks that may differ** are saved beside the new
   source's disks, before the old logs go: the blocks of those unshipped records
   (``UNSHIPPED``); commit saved the blocks rolled back to reach the chosen point
   (``ROLLED_BACK``, by the target's promotion); the new source's own log adds what it
   wrote since. A resynchronisation compares exactly those blocks' digests
   (:func:`candidates`), sending only those that differ; if any of that knowledge is
   missing or its logs were untrusted, every block is compared (the fallback). The
   sets are used once: they are deleted before the comparison restarts tracking
   (which retires the new source's logs), so an attempt that fails or is cut short
   is followed by a full comparison, never by one that misses the retired logs;
3. the old copy stops (a divergent one's writes are lost, never merged: decision
   "only the active copy is replicated"), its logs and outbox are deleted, and the
   target adopts its disks as a replica store without points;
4. after a planned failover the old copy *is* the new source's starting point: a first
   cycle ships what the new source wrote since commit, and that is the first recovery
   point (decision 15), unless the new source's logs cannot vouch for every write
   since commit (untrusted, past their limit): then no cycle is shipped and the next
   one resynchronises, as the model says; after an unplanned failover the VM
   resynchronises, whose point is the first.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from engine.binding import loss_report
from engine.binding.details import VmDetails
from engine.binding.loss_report import LogCounts, LossReport
from engine.binding.sites import other_site
from engine.errors import CorruptRecord, DamagedState, ReplicationError
from engine.log.extents import blocks_touched_by_log
from engine.log.reader import read_header
from engine.log.writer import log_path_for, verify_sealed_log
from engine.replica.promote import ROLLED_BACK
from engine.replica.recovery_point import RecoveryPoint
from engine.source.disks import LogState, SourceDisks
from engine.source.outbox import Outbox
from engine.source.resync import ResyncReport
from engine.storage import durable_file
from engine.storage.block_set import BlockSet
from model import Phase

if TYPE_CHECKING:
    from engine.binding.protected_vm import ProtectedVm

UNSHIPPED: Final = ".unshipped.blocks"
"""Beside a disk image: the blocks of the old source's records never applied."""


@dataclass(frozen=True)
class ReverseReport:
    """Reverse replication done: deltas only, or a resynchronisation and its cost."""

    phase: str
    active_site: str
    target_site: str
    first_recovery_point_id: int | None
    resync: ResyncReport | None
    loss: LossReport | None


def reverse_replication(vm: ProtectedVm) -> ReverseReport:
    """Protect the VM again towards the other site (decision 6)."""
    with vm.operating():
        vm.ask_first("reverse_replication")
        control = vm.control()
        details = vm.details(control)
        active = control.active_site
        old = other_site(active)
        predicted = vm.decide("reverse_replication")
        trusted = details.other_trusted

        vm.step(
            "reverse_replication",
            lambda: _reverse_effect(vm, trusted=trusted),
            details=lambda: _after_reverse(vm, trusted=trusted),
        )
        vm.open_disks()
        resync = None
        if predicted.phase is Phase.RESYNCHRONIZING:
            resync = vm.resynchronize()
        points = vm.replica.status(vm.name).points
        final = vm.details().loss
        return ReverseReport(
            phase=vm.control().phase,
            active_site=active,
            target_site=old,
            first_recovery_point_id=points[0].recovery_point_id if points else None,
            resync=resync,
            loss=None if final is None else _from_json(final),
        )


def _reverse_effect(vm: ProtectedVm, *, trusted: bool) -> None:
    """Reconcile, save what may differ, stop the old copy, adopt it, first point."""
    old = other_site(vm.control().active_site)
    if vm.old_disks is not None:
        # Stopped first, under the cut lock: no write of a divergent copy can land
        # after the count (it would be lost without being reported).
        vm.old_disks.halt(f"VM {vm.name!r}: the old copy at site {old!r} was stopped")
        vm.old_disks.flush()
    report = reconcile(vm)
    if not trusted and vm.old_disks is not None:
        _save_unshipped(vm, vm.old_disks, report)
    drop_old_logs(vm)
    vm.sites.towards(old).adopt_copy(vm.name, vm.disk_sizes, vm.retention_count)
    if trusted and vm.disks.log_state is LogState.USABLE:
        # Deltas only: the first cycle's point is the first recovery point (decision
        # 15). Logs that cannot vouch for every write since commit make no point:
        # the model resynchronises instead (``reverse_deltas_only``).
        forget_candidates(vm)  # no resynchronisation will use them
        vm.run_cycles(app_consistent=False)


def _after_reverse(vm: ProtectedVm, *, trusted: bool) -> VmDetails:
    active = vm.control().active_site
    return VmDetails(
        running=frozenset({active}), other_trusted=trusted, loss=vm.details().loss
    )


def finish_reverse(vm: ProtectedVm, params: dict[str, object]) -> VmDetails:
    """A reverse replication a crash interrupted: its steps again (idempotent),
    after completing a first cycle's cut the crash interrupted (before any write)."""
    trusted = vm.details().other_trusted
    with contextlib.suppress(CorruptRecord):  # logs untrusted: said, cycles dropped
        vm.cycles.finish_interrupted_cuts()
    _reverse_effect(vm, trusted=trusted)
    return _after_reverse(vm, trusted=trusted)


def old_copy_runs(vm: ProtectedVm, details: VmDetails) -> bool:
    """Whether the old source's copy still runs, so may write more: it is running
    there and its disks were not halted."""
    old = details.old_site
    if old is None or old not in details.running:
        return False
    return vm.old_disks is None or vm.old_disks.halted is None


def reconcile(vm: ProtectedVm) -> LossReport | None:
    """Count the exact loss from the old source's logs, if they can be read now.

    Nothing is read from a site that is down or across a link that is down (the
    target asks the old source, as at failover time), and a report already exact with
    the old copy stopped stays as it is. The updated report is written to the control
    state.
    """
    control = vm.control()
    details = vm.details(control)
    if details.loss is None:
        return None
    report = _from_json(details.loss)
    old = details.old_site
    if old is None or vm.old_disks is None or not vm.sites.up(old):
        return report
    if not vm.sites.link_up:
        return report  # the old source is up but cannot be asked across the link
    if report.exact and old not in details.running and report.reconciled_at:
        return report
    if vm.old_disks.log_state is not LogState.USABLE:
        note = "the old source's change logs cannot be trusted (it crashed without "
        note += "making its writes durable, a log was damaged, or they grew past "
        note += "their limit and were given up): the loss stays a lower bound"
        updated = replace(report, note=note)
    else:
        counts = old_source_counts(
            vm, vm.old_disks, Outbox(vm.sites.storage(old), vm.name), (),
            newest_cycle_id=_int_or_none(details.loss.get("newest_cycle_id")),
        )  # fmt: skip
        updated = loss_report.reconciled(
            report, counts, now=vm.clock.now(),
            still_running=old_copy_runs(vm, details),
        )  # fmt: skip
    stored = {**details.loss, **updated.to_json()}
    holder = vm.sites.storage(control.active_site).control
    holder.update_details(vm.name, details.with_(loss=stored).to_json())
    return updated


def old_source_counts(
    vm: ProtectedVm,
    disks: SourceDisks,
    outbox: Outbox,
    points: tuple[RecoveryPoint, ...],
    *,
    newest_cycle_id: int | None = None,
) -> LogCounts:
    """What the old source logged that the target never applied (its logs only)."""
    newest = newest_cycle_id
    if newest is None:
        newest = points[-1].cycle_id if points else -1
    pending = disks.pending()
    records, size = pending.records, pending.payload_bytes
    logs = [log_path_for(path) for path in disks.paths.values()]
    for cycle_id in outbox.waiting():
        if cycle_id <= newest:
            continue
        for disk, path in outbox.logs(cycle_id, vm.disk_sizes).items():
            sealed = verify_sealed_log(path, disk_id=disk, epoch=_epoch_of(path))
            records += sealed.record_count
            size += sealed.payload_bytes
            logs.append(path)
    times = [os.stat(path).st_mtime for path in logs if path.exists()]
    return LogCounts(records, size, max(times) if times else None)


def _epoch_of(path: Path) -> int:
    with path.open("rb") as stream:
        header, _ = read_header(stream, path)
    return header.epoch


def _save_unshipped(
    vm: ProtectedVm, disks: SourceDisks, report: LossReport | None
) -> None:
    """Save, beside the new source's disks, the blocks of the old unshipped records."""
    if disks.log_state is LogState.UNTRUSTED or report is None:
        return  # unknown: the resynchronisation compares every block
    storage = vm.source_site
    saved = [
        Path(str(storage.disk_path(vm.name, disk)) + UNSHIPPED) for disk in disks.paths
    ]
    if all(path.exists() for path in saved):
        return  # saved before a crash; the logs may be gone since
    old_storage = vm.sites.storage(other_site(storage.name))
    outbox = Outbox(old_storage, vm.name)
    newest = (vm.details().loss or {}).get("newest_cycle_id", -1)
    for disk, image in disks.paths.items():
        size = vm.disk_sizes[disk]
        blocks = BlockSet(size, vm.block_bytes)
        log = log_path_for(image)
        if log.exists():
            blocks = blocks.union(blocks_touched_by_log(log, vm.block_bytes, size))
        for cycle_id in outbox.waiting():
            if isinstance(newest, int) and cycle_id <= newest:
                continue
            path = outbox.logs(cycle_id, [disk])[disk]
            blocks = blocks.union(
                blocks_touched_by_log(path, vm.block_bytes, size, sealed=True)
            )
        target = Path(str(storage.disk_path(vm.name, disk)) + UNSHIPPED)
        blocks.save(target)


def candidates(vm: ProtectedVm) -> dict[str, BlockSet] | None:
    """The blocks a resynchronisation must compare after a failover (None: all).

    The union of the blocks rolled back at commit and of the old source's unshipped
    records; None when either is missing (never after a failover, the knowledge was
    lost, or an earlier attempt already forgot it): every block is compared. What the
    new source logged since commit is compared by ``prepare_resync`` itself, from the
    logs its restart of tracking replaces.
    """
    storage = vm.source_site
    found: dict[str, BlockSet] = {}
    for disk, size in vm.disk_sizes.items():
        image = storage.disk_path(vm.name, disk)
        parts = [Path(str(image) + ROLLED_BACK), Path(str(image) + UNSHIPPED)]
        if not all(part.exists() for part in parts):
            return None
        geometry = {"size_bytes": size, "block_bytes": vm.block_bytes}
        try:
            blocks = BlockSet.load(parts[0], **geometry)
            found[disk] = blocks.union(BlockSet.load(parts[1], **geometry))
        except (DamagedState, ReplicationError):
            return None
    return found


def forget_candidates(vm: ProtectedVm, *, unshipped_only: bool = False) -> None:
    """The saved block sets can no longer name every block that may differ (a
    resynchronisation is about to restart tracking, or is done, or none will come);
    with ``unshipped_only``, only sets an older failover left."""
    storage = vm.source_site
    paths = []
    for disk in vm.disk_sizes:
        image = str(storage.disk_path(vm.name, disk))
        paths.append(Path(image + UNSHIPPED))
        if not unshipped_only:
            paths.append(Path(image + ROLLED_BACK))
    durable_file.remove_durably(paths)


def after_resync(vm: ProtectedVm) -> VmDetails:
    """The details once a resynchronisation made the replica equal: trusted again."""
    details = vm.details()
    return details.with_(other_trusted=True)


def after_disable(vm: ProtectedVm) -> VmDetails:
    """The details after disable: the VM runs at its active site only; a report of a
    divergent copy given up is closed as abandoned (decision 16)."""
    control = vm.control()
    details = vm.details(control)
    loss = details.loss
    if loss is not None and details.old_site is not None:
        report = loss_report.abandoned(_from_json(loss), now=vm.clock.now())
        loss = {**loss, **report.to_json()}
    return VmDetails(running=frozenset({control.active_site}), loss=loss)


def drop_old_logs(vm: ProtectedVm) -> None:
    """Stop the old copy and delete its change logs and outbox (never its disks)."""
    details = vm.details()
    old = details.old_site
    if old is None or not vm.sites.up(old):
        return
    disks = vm.old_disks
    if disks is not None:
        disks.halt(f"VM {vm.name!r}: the old copy at site {old!r} was stopped")
        disks.stop_tracking()
        disks.close()
        vm.old_disks = None
    Outbox(vm.sites.storage(old), vm.name).discard()


def old_logs_present(disks: SourceDisks) -> bool:
    """Whether the old source's copy still has its change logs (it kept tracking)."""
    return any(log_path_for(path).exists() for path in disks.paths.values())


def _from_json(loss: dict[str, object]) -> LossReport:
    return LossReport.from_json(dict(loss))


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None
