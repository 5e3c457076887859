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

**Targeted: compare only what may have diverged** (``candidates``). After an unplanned
failover the engine knows every block that may differ between the new source and the
old one: the blocks of the old source's logs never shipped
(``engine.log.extents.blocks_touched_by_log``), the blocks rolled back at the target to
reach the chosen point (``engine.replica.undo_blocks.blocks_in_undo_image``) and the
blocks the new source wrote since. Given one :class:`BlockSet` per disk, step 2
compares only those blocks (the target sends only their digests:
``block_digests(..., blocks=...)``) and the cost follows what diverged, not the
disks' size. Step 1 hands over the logs it replaces (``SourceDisks.start_tracking``,
``on_retired``), and their blocks are compared too: the writes up to the restart are
covered to the instant, with no window between a caller reading the logs and step 1.
Writes after it are in the fresh logs (step 4), as for a full comparison.

The candidates must name every block that may differ that is not in those logs:
a block neither named nor logged is not compared, and stays as the target has it (a
waiting cycle the caller discards before the resynchronisation is such a case). When
the logs cannot vouch for the writes up to the restart (not every disk tracked, the
logs untrusted, a replaced log damaged), the comparison falls back to every block
and the report says so (``full_comparison``).

A resynchronisation ships its cycle even when no block differed if the replica has no
point yet; otherwise an empty one is dropped (as the model says, the points stay). The
restarted tracking at the new epoch and the cut record tell a restarted engine how far
the comparison got (``engine/binding/restart.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final

from engine.errors import CorruptRecord, DamagedState, InvalidConfiguration
from engine.log.extents import blocks_touched_by_log
from engine.log.writer import ChangeLog, SealedLog, read_sealed_log
from engine.source.disks import LogState, RetiredLogs, SourceDisks
from engine.source.outbox import CutRecord, Outbox
from engine.storage import files as filesystem
from engine.storage.block_set import BlockSet
from engine.storage.digests import block_digest
from engine.storage.disk import VirtualDisk
from engine.transport.interface import ReplicaTarget

COMPARE_CHUNK_BYTES: Final = 1 << 20  # large reads; digests per block within a chunk


@dataclass(frozen=True)
class ResyncReport:
    """What a resynchronisation compared and sent.

    ``blocks_candidate`` counts the blocks the caller's candidate sets named (0 when
    none were given); ``full_comparison`` says every block was compared (no
    candidates, or the fallback when the logs could not vouch for them).
    """

    cycle_id: int
    recovery_point_id: int | None  # the point the resynchronised replica holds
    blocks_compared: int
    blocks_sent: int
    bytes_sent: int
    sealed: Mapping[str, SealedLog]
    blocks_candidate: int = 0
    full_comparison: bool = True


@dataclass(frozen=True)
class _Comparison:
    """What step 2 compares on one disk: runs of blocks, and the replica's digests
    of those blocks in the same order."""

    runs: Iterable[tuple[int, int]]  # (first block, block count), ascending
    digests: Iterator[bytes]
    block_count: int


def prepare_resync(
    disks: SourceDisks,
    replica: ReplicaTarget,
    outbox: Outbox,
    *,
    cycle_id: int,
    epoch: int,
    progress: Callable[[str, int, int], None] | None = None,
    candidates: Mapping[str, BlockSet] | None = None,
) -> ResyncReport:
    """Compare while the guest writes; build and record the cycle at ``epoch``.

    The returned report has no recovery point yet: the caller ships the cycle.
    ``progress`` is called with (disk, bytes compared, bytes to compare).
    ``candidates`` (one set per disk, every disk) limits the comparison to those
    blocks and the blocks logged up to the restart of tracking (see the module's
    docstring); ``None`` compares every block.
    """
    vm = outbox.vm_name
    images = disks.images()
    chosen = _checked_candidates(candidates, images)
    if chosen is not None and disks.log_state is LogState.UNTRUSTED:
        chosen = None  # the logs cannot say what the source wrote: compare all
    asked = {  # before anything changes: a refused request leaves all as it was
        disk: _ask(replica, vm, disk, image, None if chosen is None else chosen[disk])
        for disk, image in sorted(images.items())
    }
    directory = outbox.open_cycle(cycle_id)
    tracked = directory / "tracked"
    handed: list[dict[str, BlockSet] | None] = []  # the replaced logs' blocks
    geometry = {disk: (i.size_bytes, i.block_bytes) for disk, i in images.items()}
    disks.start_tracking(  # step 1
        epoch,
        dict.fromkeys(images, 0),
        on_retired=None if chosen is None else partial(_read, geometry, handed),
    )
    images = disks.images()  # tracking reopened the images
    logged = handed[0] if handed else None
    comparisons = {
        disk: _plan(replica, vm, disk, image, asked[disk], chosen, logged)
        for disk, image in sorted(images.items())
    }
    resync_logs: dict[str, ChangeLog] = {}
    try:
        sent = sent_bytes = 0
        for disk, image in sorted(images.items()):  # step 2
            log = ChangeLog.create(
                directory / f"{disk}.resync", disk_id=disk, epoch=epoch,
                first_sequence=0,
            )  # fmt: skip
            resync_logs[disk] = log
            report = None if progress is None else partial(progress, disk)
            disk_sent = _log_differences(image, comparisons[disk], log, report)
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
        CutRecord(
            cycle_id, epoch, app_consistent=False, last_sequences=last, resync=True
        )
    )
    return ResyncReport(
        cycle_id=cycle_id,
        recovery_point_id=None,
        blocks_compared=sum(c.block_count for c in comparisons.values()),
        blocks_sent=sent,
        bytes_sent=sent_bytes,
        sealed=sealed,
        blocks_candidate=sum(len(c) for c in (candidates or {}).values()),
        full_comparison=chosen is None or logged is None,
    )


def _checked_candidates(
    candidates: Mapping[str, BlockSet] | None, images: Mapping[str, VirtualDisk]
) -> dict[str, BlockSet] | None:
    """Validate the caller's candidates: a set for every disk, of that disk."""
    if candidates is None:
        return None
    if sorted(candidates) != sorted(images):
        msg = f"candidates name disks {sorted(candidates)}; they must name every disk "
        msg += f"of the VM, {sorted(images)} (an empty BlockSet for a disk that did "
        msg += "not diverge), or be None to compare every block"
        raise InvalidConfiguration(msg)
    for disk, image in images.items():
        blocks = candidates[disk]
        geometry = (blocks.size_bytes, blocks.block_bytes)
        if geometry != (image.size_bytes, image.block_bytes):
            msg = f"candidates[{disk!r}] is for a disk of {blocks.size_bytes} bytes in "
            msg += f"blocks of {blocks.block_bytes}; disk {disk!r} has "
            msg += f"{image.size_bytes} bytes in blocks of {image.block_bytes}"
            raise InvalidConfiguration(msg)
    return dict(candidates)


def _ask(
    replica: ReplicaTarget,
    vm: str,
    disk: str,
    image: VirtualDisk,
    blocks: BlockSet | None,
) -> list[bytes]:
    """The replica's digests of ``blocks`` of ``disk`` (``None``: every block)."""
    chosen = None if blocks is None else list(blocks)
    digests = replica.block_digests(vm, disk, image.block_bytes, blocks=chosen)
    expected = image.block_count if chosen is None else len(chosen)
    if len(digests) != expected:
        what = "blocks" if chosen is None else "blocks asked"
        msg = f"the replica sent {len(digests)} digests for disk {str(image.path)!r} "
        msg += f"of {expected} {what}: the replica disk is not this disk"
        raise DamagedState(msg)
    return digests


def _read(
    geometry: Mapping[str, tuple[int, int]],
    found: list[dict[str, BlockSet] | None],
    retired: RetiredLogs,
) -> None:
    """Append the blocks the logs step 1 replaced touched, per disk, to ``found``;
    ``None`` when they cannot vouch for every write up to the restart (the
    comparison falls back). Called before those logs are deleted."""
    if not retired.trusted or sorted(retired.paths) != sorted(geometry):
        found.append(None)
        return
    blocks = {}
    try:
        for disk, (size_bytes, block_bytes) in geometry.items():
            path = retired.paths[disk]
            blocks[disk] = blocks_touched_by_log(path, block_bytes, size_bytes)
    except CorruptRecord:
        found.append(None)
        return
    found.append(blocks)


def _plan(
    replica: ReplicaTarget,
    vm: str,
    disk: str,
    image: VirtualDisk,
    asked: list[bytes],
    chosen: Mapping[str, BlockSet] | None,
    logged: Mapping[str, BlockSet] | None,
) -> _Comparison:
    """What step 2 compares on ``disk``: every block, or the candidates and the
    blocks logged up to step 1 (the digests of the latter asked for now)."""
    if chosen is None or logged is None:
        digests = asked if chosen is None else _ask(replica, vm, disk, image, None)
        return _Comparison([(0, image.block_count)], iter(digests), image.block_count)
    candidate = chosen[disk]
    extra = logged[disk].difference(candidate)
    extra_digests = _ask(replica, vm, disk, image, extra) if len(extra) else []
    compared = candidate.union(extra)
    ordered = _in_order(compared, candidate, asked, extra_digests)
    return _Comparison(compared.runs(), ordered, len(compared))


def _in_order(
    compared: BlockSet, first: BlockSet, first_digests: list[bytes], rest: list[bytes]
) -> Iterator[bytes]:
    """The digest of each block of ``compared``, ascending: from ``first_digests``
    for the blocks of ``first``, else from ``rest`` (both ascending too)."""
    from_first, from_rest = iter(first_digests), iter(rest)
    for block in compared:
        yield next(from_first) if block in first else next(from_rest)


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
    comparison: _Comparison,
    log: ChangeLog,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Append every compared block of ``source`` whose digest differs; count them.

    ``progress`` is called with (bytes compared, bytes to compare) after each chunk.
    """
    block = source.block_bytes
    per_chunk = max(1, COMPARE_CHUNK_BYTES // block)
    total = comparison.block_count * block
    done = sent = 0
    for first, count in comparison.runs:
        for chunk_first in range(first, first + count, per_chunk):
            blocks = min(per_chunk, first + count - chunk_first)
            start = chunk_first * block
            ours = memoryview(source.read(start, blocks * block))
            for index in range(blocks):
                piece = ours[index * block : (index + 1) * block]
                if block_digest(piece) != next(comparison.digests):
                    log.append(start + index * block, bytes(piece))
                    sent += 1
            done += blocks * block
            if progress is not None:
                progress(done, total)
    assert done == total, (done, total)
    return sent
