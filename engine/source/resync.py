"""Resynchronisation: compare both copies block by block and send only what differs.

When the change logs cannot be trusted (past their limit, damaged, a torn tail after a
crash, tracking lost on a full disk), the replica is brought back by comparison, as
Hyper-V Replica does: every block of every source disk is compared with the replica and
only the differing blocks travel. They are written as one ordinary cycle (one log per
disk, a **new epoch**, so no log of the old epoch can ever be applied after it) and the
replica store applies it like any other: all disks or none, undo image first, a new
recovery point at the end. Older points stay valid: they are past states of the source.

Cost: both copies are read once (in chunks of ``COMPARE_CHUNK_BYTES``, equal chunks
skipped without a per-block loop); only differing blocks are written to the log and
shipped. This is the fallback DESIGN.md describes; the targeted resynchronisation after
an unplanned failover (sending exactly the blocks known to differ) comes with failover.

This module reads the replica through the replica store, which the in-process engine
holds directly; a transport between hosts will carry per-block digests instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.log.writer import ChangeLog, SealedLog
from engine.replica.store import ReplicaStore
from engine.storage import files
from engine.storage.disk import VirtualDisk
from engine.transport.in_process import Transport

COMPARE_CHUNK_BYTES: Final = 1 << 20  # large reads; equal chunks cost one comparison


@dataclass(frozen=True)
class ResyncSides:
    """What a resynchronisation reads, writes and ships through."""

    vm_name: str
    source_disks: Mapping[str, VirtualDisk]
    replica: ReplicaStore
    outbox: Callable[[str, int], Path]
    transport: Transport
    source_site: str
    target_site: str


@dataclass(frozen=True)
class ResyncReport:
    """What a resynchronisation compared and sent."""

    cycle_id: int
    recovery_point_id: int | None  # None: nothing differed, no new point was needed
    blocks_compared: int
    blocks_sent: int
    bytes_sent: int
    sealed: Mapping[str, SealedLog]


def resynchronize_disks(sides: ResyncSides, cycle_id: int, epoch: int) -> ResyncReport:
    """Compare; log the differing blocks at ``epoch``; ship and apply them."""
    outbox = sides.outbox(sides.vm_name, cycle_id)
    files.make_directory_durably(outbox)
    sealed: dict[str, SealedLog] = {}
    compared = sent = 0
    for disk, source in sorted(sides.source_disks.items()):
        building = outbox / f"{disk}.building"
        log = ChangeLog.create(building, disk_id=disk, epoch=epoch, first_sequence=0)
        try:
            disk_compared, disk_sent = _log_differences(
                source, sides.replica, disk, log
            )
            sealed[disk] = log.seal(outbox / f"{disk}.hrl")
        finally:
            log.close()
            files.current().unlink(
                building, missing_ok=True
            )  # the fresh log seal() started
        compared += disk_compared
        sent += disk_sent
    point_id: int | None = None
    if sent or not sides.replica.catalogue.points:
        logs = {disk: log.path for disk, log in sealed.items()}
        delivered = sides.transport.ship_cycle(
            sides.source_site, sides.target_site, sides.vm_name, cycle_id, logs
        )
        point = sides.replica.apply_cycle(
            cycle_id,
            delivered,
            epoch=epoch,
            app_consistent=False,
            expected_last_sequences={d: s.last_sequence for d, s in sealed.items()},
        )
        point_id = point.recovery_point_id
    files.remove_tree_durably(outbox)
    block_bytes = min(source.block_bytes for source in sides.source_disks.values())
    return ResyncReport(
        cycle_id=cycle_id,
        recovery_point_id=point_id,
        blocks_compared=compared,
        blocks_sent=sent,
        bytes_sent=sent * block_bytes,
        sealed=sealed,
    )


def _log_differences(
    source: VirtualDisk, replica: ReplicaStore, disk: str, log: ChangeLog
) -> tuple[int, int]:
    """Append every block of ``source`` that differs from the replica; count them."""
    block = source.block_bytes
    chunk = max(block, COMPARE_CHUNK_BYTES - COMPARE_CHUNK_BYTES % block)
    compared = sent = 0
    for start in range(0, source.size_bytes, chunk):
        length = min(chunk, source.size_bytes - start)
        ours = source.read(start, length)
        theirs = replica.read(disk, start, length)
        compared += -(-length // block)
        if ours == theirs:
            continue
        for offset in range(0, length, block):
            piece = ours[offset : offset + block]
            if piece != theirs[offset : offset + block]:
                log.append(start + offset, piece)
                sent += 1
    return compared, sent
