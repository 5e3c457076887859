"""Resynchronisation, the source's half: send only the blocks whose digests differ.

When the change logs cannot be trusted (past their limit, damaged, a torn tail after a
crash, an unclean shutdown, tracking lost on a full disk), the replica is brought back
by comparison, as Hyper-V Replica does. The target sends one digest per block of each
replica disk (``ReplicaTarget.block_digests``, ``engine.storage.digests``); the source
digests its own blocks and logs only those that differ, as one ordinary cycle at a
**new epoch** (no log of the old epoch can ever be applied after it). The target
applies it like any other: all disks or none, undo image first, a new recovery point
at the end. Older points stay valid: they are past states of the source.

**The guest keeps writing during the comparison**, as during an initial copy:

1. tracking restarts at the new epoch (fresh logs), under the cut lock, briefly: from
   this moment every write is in a log;
2. every block is compared while writes go on (a block read while it is being written
   is rewritten by the log below); each differing block is appended, with the bytes
   read, to a per-disk *resynchronisation log* in the cycle's outbox folder;
3. the cut: under the cut lock, the tracked logs are sealed (the fresh ones continue
   after the resynchronisation's records, ``sequences_skipped``);
4. after the lock, each tracked log's records are appended to the resynchronisation
   log behind the differing blocks, and that log is sealed as the disk's log of the
   cycle; the cut record is written.

Applying differing blocks first and then every write since step 1, in order, gives the
source at the cut: a block written since step 1 ends with its last write before the
cut; any other block was unchanged since step 1, so the comparison read its value at
the cut. Guest writes wait only for steps 1 and 3.

A resynchronisation ships its cycle even when no block differed if the replica has no
point yet; otherwise an empty one is dropped (as the model says, the points stay). The
restarted tracking at the new epoch and the cut record tell a restarted engine how far
the comparison got (``engine/binding/restart.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final

from engine.errors import DamagedState
from engine.log.writer import ChangeLog, SealedLog, read_sealed_log
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
    progress: Callable[[str, int, int], None] | None = None,
) -> ResyncReport:
    """Compare while the guest writes; build and record the cycle at ``epoch``.

    The returned report has no recovery point yet: the caller ships the cycle.
    ``progress`` is called with (disk, bytes compared, bytes total).
    """
    vm = outbox.vm_name
    images = disks.images()
    theirs = {
        disk: replica.block_digests(vm, disk, image.block_bytes)
        for disk, image in sorted(images.items())
    }
    directory = outbox.open_cycle(cycle_id)
    tracked = directory / "tracked"
    disks.start_tracking(epoch, dict.fromkeys(images, 0))  # step 1
    images = disks.images()  # tracking reopened the images
    resync_logs: dict[str, ChangeLog] = {}
    try:
        compared = sent = sent_bytes = 0
        for disk, image in sorted(images.items()):  # step 2
            log = ChangeLog.create(
                directory / f"{disk}.resync", disk_id=disk, epoch=epoch,
                first_sequence=0,
            )  # fmt: skip
            resync_logs[disk] = log
            report = None if progress is None else partial(progress, disk)
            disk_compared, disk_sent = _log_differences(
                image, theirs[disk], log, report
            )
            compared += disk_compared
            sent += disk_sent
            sent_bytes += disk_sent * image.block_bytes
        skipped = {disk: log.record_count for disk, log in resync_logs.items()}
        # step 3: the cut (seal() takes the cut lock itself, after syncing the logs)
        cut = disks.seal(tracked, sequences_skipped=skipped)
        sealed = {  # step 4
            disk: _append_and_seal(
                log, cut[disk], skipped[disk], directory / f"{disk}.hrl"
            )
            for disk, log in resync_logs.items()
        }
    finally:
        for disk, log in resync_logs.items():
            log.close()
            filesystem.current().unlink(directory / f"{disk}.resync", missing_ok=True)
    filesystem.remove_tree_durably(tracked)
    last = {disk: log.last_sequence for disk, log in sealed.items()}
    outbox.record_cut(
        CutRecord(cycle_id, epoch, app_consistent=False, last_sequences=last)
    )
    return ResyncReport(
        cycle_id=cycle_id,
        recovery_point_id=None,
        blocks_compared=compared,
        blocks_sent=sent,
        bytes_sent=sent_bytes,
        sealed=sealed,
    )


def _append_and_seal(
    log: ChangeLog, tracked: SealedLog, skipped: int, target: Path
) -> SealedLog:
    """Append the writes of the tracked log behind the differing blocks; seal.

    The tracked log started at sequence 0 and its successor at ``skipped`` past its
    end, so the sealed cycle ends exactly where the live log goes on.
    """
    disk = tracked.header.disk_id
    epoch = tracked.header.epoch
    for record in read_sealed_log(tracked.path, disk_id=disk, epoch=epoch):
        log.append(record.offset, record.data)
    assert log.next_sequence == tracked.last_sequence + 1 + skipped, disk
    sealed = log.seal(target)
    filesystem.current().unlink(log.path, missing_ok=True)  # the fresh log seal made
    return sealed


def _log_differences(
    source: VirtualDisk,
    digests: list[bytes],
    log: ChangeLog,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Append every block of ``source`` whose digest differs; count them.

    ``progress`` is called with (bytes compared, bytes total) after each chunk.
    """
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
        if progress is not None:
            progress(start + len(ours), source.size_bytes)
    return source.block_count, sent
