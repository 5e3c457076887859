"""One cycle's sealed logs as the target handles them: checked and applied together.

A cycle is one sealed change log per disk of a VM, all cut at one point on the source.
This module holds what the replica store does *with the logs* of a cycle, kept apart
from its bookkeeping (catalogue, undo images, intent):

- :func:`verify_cycle_logs` checks every log end to end before anything is written:
  CRCs, disk id, epoch, records inside the disk, an optional expected last sequence
  (which catches a log cut at a record boundary), and, within one epoch, that each log
  starts right after the previous recovery point's last record: a gap means records
  were lost, a repeat that a log is being applied twice, and both need a
  resynchronisation rather than a silent apply. Epochs only grow (a resynchronisation
  ships its blocks at a new one), so a cycle of an epoch older than the previous
  point's is refused too;
- :func:`touched_regions` lists, per disk, the union of the byte ranges the cycle
  writes (what the undo image must capture), and :func:`preallocate` reserves their
  space in the replica so that applying and rolling back never need new space;
- :func:`write_cycle` writes every record, disk by disk in name order, fsyncing each
  image. Records are absolute writes ``(offset, bytes)`` applied in sequence order, so
  writing a cycle again over a partly written replica gives the same bytes;
- :func:`logs_applied_by` tells which of a set of logs a committed point already holds
  (used to clean the inbox when a committed cycle is offered again).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from engine.errors import CorruptRecord, LogMismatch
from engine.log.writer import SealedLog, read_sealed_log, verify_sealed_log
from engine.replica.recovery_point import RecoveryPoint
from engine.replica.undo_image import merge_regions
from engine.storage import files


def verify_cycle_logs(
    logs: Mapping[str, Path],
    *,
    disks: Mapping[str, int],
    epoch: int,
    previous: RecoveryPoint | None,
    last_sequences: Mapping[str, int],
) -> dict[str, SealedLog]:
    """Verify every log of a cycle; return each disk's description, or raise."""
    if previous is not None and epoch < previous.epoch:
        msg = f"cycle of epoch={epoch} is older than the newest point "
        msg += f"{previous.recovery_point_id}, of epoch {previous.epoch}: its logs "
        msg += "describe writes against a basis the replica left behind and are never "
        msg += "applied; resynchronise"
        raise LogMismatch(msg)
    sealed = {}
    for disk in sorted(logs):
        log = verify_sealed_log(
            Path(logs[disk]),
            disk_id=disk,
            epoch=epoch,
            disk_size_bytes=disks[disk],
            expected_last_sequence=last_sequences.get(disk),
        )
        if previous is not None and previous.epoch == epoch:
            expected = previous.last_sequence(disk) + 1
            if log.first_sequence != expected:
                msg = f"log for disk {disk!r} starts at sequence "
                msg += f"{log.first_sequence}, expected {expected} (the point "
                msg += f"{previous.recovery_point_id} ends at {expected - 1}): "
                msg += "records are missing or repeated; resynchronise"
                raise LogMismatch(msg)
        sealed[disk] = log
    return sealed


def touched_regions(
    logs: Mapping[str, str], *, epoch: int
) -> dict[str, list[tuple[int, int]]]:
    """Return, per disk, the sorted, disjoint ``(start, end)`` ranges written."""
    return {
        disk: merge_regions(
            (record.offset, record.offset + len(record.data))
            for record in read_sealed_log(Path(path), disk_id=disk, epoch=epoch)
        )
        for disk, path in logs.items()
    }


def write_cycle(
    images: Mapping[str, Path],
    logs: Mapping[str, str],
    *,
    epoch: int,
    disk_written: Callable[[str], None],
) -> int:
    """Write every record into ``images`` (disk by disk, fsynced); return the bytes.

    ``disk_written(disk)`` is called after each disk is durable (a crash-test hook).
    """
    written = 0
    fs = files.current()
    for disk in sorted(images):
        descriptor = os.open(images[disk], os.O_WRONLY)
        try:
            for record in read_sealed_log(Path(logs[disk]), disk_id=disk, epoch=epoch):
                fs.pwrite(descriptor, record.data, record.offset)
                written += len(record.data)
            fs.fsync(descriptor)
        finally:
            os.close(descriptor)
        disk_written(disk)
    return written


def logs_applied_by(point: RecoveryPoint, logs: Mapping[str, Path]) -> list[Path]:
    """Return those of ``logs`` that are intact and end where ``point`` ends."""
    applied = []
    disks = {disk for disk, _ in point.last_sequences}
    for disk, path in logs.items():
        if disk not in disks or not Path(path).exists():
            continue
        try:
            log = verify_sealed_log(Path(path), disk_id=disk, epoch=point.epoch)
        except CorruptRecord:
            continue
        if log.last_sequence == point.last_sequence(disk):
            applied.append(Path(path))
    return applied


def preallocate(
    images: Mapping[str, Path], regions: Mapping[str, list[tuple[int, int]]]
) -> None:
    """Reserve space for ``regions`` in ``images`` without changing their content."""
    fs = files.current()
    for disk, ranges in regions.items():
        descriptor = os.open(images[disk], os.O_WRONLY)
        try:
            for start, end in ranges:
                fs.fallocate(descriptor, start, end - start)
        finally:
            os.close(descriptor)
