"""Resynchronisation, the source's half: send only the blocks whose digests differ.

When the change logs cannot be trusted (past their limit, damaged, a torn tail after a
crash, an unclean shutdown, tracking lost on a full disk), the replica is brought back
by comparison, as Hyper-V Replica does. The target sends one digest per block of each
replica disk (``ReplicaTarget.block_digests``, ``engine.storage.digest``); the source
digests its own blocks and logs only those that differ, as one ordinary cycle at a
**new epoch** (no log of the old epoch can ever be applied after it). The target
applies it like any other: all disks or none, undo image first, a new recovery point
at the end. Older points stay valid: they are past states of the source.

The cut: the digests are fetched first (the replica changes only through this VM's
operations, which are serialised); then, under the disks' cut lock, the source disks
are made durable (what is compared must be what a power cut leaves), every block is
compared, the differing ones logged and sealed, the cut recorded, and tracking
restarted at the new epoch, so no write falls between the comparison and the fresh
logs. The cycle is shipped after the lock is released. Guest writes wait for the
comparison (a read of every source block); they never wait for the transfer.

A resynchronisation always ships its cycle, even when no block differs: the new point
at the new epoch is what tells a restarted engine that the comparison was finished, so
a crash after it never forces a second full comparison.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from engine.errors import DamagedState
from engine.log.writer import ChangeLog, SealedLog
from engine.source.disks import SourceDisks
from engine.source.outbox import CutRecord, Outbox
from engine.storage import files as filesystem
from engine.storage.digests import block_digest
from engine.storage.disk import VirtualDisk
from engine.transport.interface import ReplicaTarget

COMPARE_CHUNK_BYTES: Final = 1 << 20  # large reads; digests per block within a chunk


@dataclass(frozen=True)
class ResyncReport:
    """What a resynchronisation compared and sent."""

    cycle_id: int
    recovery_point_id: int | None  # the point the resynchronised replica holds
    blocks_compared: int
    blocks_sent: int
    bytes_sent: int
    sealed: Mapping[str, SealedLog]


def prepare_resync(
    disks: SourceDisks,
    replica: ReplicaTarget,
    outbox: Outbox,
    *,
    cycle_id: int,
    epoch: int,
) -> ResyncReport:
    """Compare, log the differing blocks at ``epoch``, seal and record the cut.

    Tracking restarts at ``epoch`` under the same hold of the cut lock. The returned
    report has no recovery point yet: the caller ships the cycle.
    """
    vm = outbox.vm_name
    images = disks.images()
    theirs = {
        disk: replica.block_digests(vm, disk, image.block_bytes)
        for disk, image in sorted(images.items())
    }
    sealed: dict[str, SealedLog] = {}
    compared = sent = sent_bytes = 0
    with disks.lock:
        # What is compared must be what the source keeps: without durable writes the
        # page cache may hold writes a power cut would take from the source, after
        # the comparison sent them to the replica.
        disks.flush()
        directory = outbox.open_cycle(cycle_id)
        for disk, image in sorted(disks.images().items()):
            building = directory / f"{disk}.building"
            log = ChangeLog.create(
                building, disk_id=disk, epoch=epoch, first_sequence=0
            )
            try:
                disk_compared, disk_sent = _log_differences(image, theirs[disk], log)
                sealed[disk] = log.seal(directory / f"{disk}.hrl")
            finally:
                log.close()
                filesystem.current().unlink(building, missing_ok=True)
            compared += disk_compared
            sent += disk_sent
            sent_bytes += disk_sent * image.block_bytes
        last = {disk: log.last_sequence for disk, log in sealed.items()}
        outbox.record_cut(
            CutRecord(cycle_id, epoch, app_consistent=False, last_sequences=last)
        )
        disks.start_tracking(
            epoch, {disk: sequence + 1 for disk, sequence in last.items()}
        )
    return ResyncReport(
        cycle_id=cycle_id,
        recovery_point_id=None,
        blocks_compared=compared,
        blocks_sent=sent,
        bytes_sent=sent_bytes,
        sealed=sealed,
    )


def _log_differences(
    source: VirtualDisk, digests: list[bytes], log: ChangeLog
) -> tuple[int, int]:
    """Append every block of ``source`` whose digest differs; count them."""
    block = source.block_bytes
    if len(digests) != source.block_count:
        msg = f"the replica sent {len(digests)} digests for disk {str(source.path)!r} "
        msg += f"of {source.block_count} blocks: the replica disk is not this disk"
        raise DamagedState(msg)
    chunk = max(block, COMPARE_CHUNK_BYTES - COMPARE_CHUNK_BYTES % block)
    sent = 0
    for start in range(0, source.size_bytes, chunk):
        ours = memoryview(source.read(start, min(chunk, source.size_bytes - start)))
        first = start // block
        for index in range(len(ours) // block):
            piece = ours[index * block : (index + 1) * block]
            if block_digest(piece) != digests[first + index]:
                log.append(start + index * block, bytes(piece))
                sent += 1
    return source.block_count, sent
