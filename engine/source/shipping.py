"""Shipping a waiting cycle through the replica interface, and what it reports.

:func:`ship_cycle` hands one waiting cycle of the outbox (``outbox.py``) to the target
through :class:`~engine.transport.interface.ReplicaTarget`: the sealed logs and the last
sequence each must end at (from the cut record). The target delivers them, verifies
every record and applies the cycle to all disks or none; only then is the cycle removed
from the outbox. A transfer that fails may still have been applied (the reply was lost
on its way back): the source then asks the target whether it holds the cycle's point
before it reports the failure. The source reads only each log's header: verifying here
too would read every log once more per cycle (profiled: log scanning was a quarter of a
cycle's CPU).

Each step calls the ``crash`` seam with its name (``CYCLE_CRASH_POINTS``, and the
target's own steps), so tests can kill the process between any two steps. It never
imports ``model`` and never touches the replica store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.clock import Clock
from engine.errors import CorruptRecord, ReplicationError, TransportError
from engine.log.reader import read_header
from engine.replica.recovery_point import RecoveryPoint
from engine.source.outbox import CutRecord, Outbox
from engine.transport.interface import CycleShipment, ReplicaTarget

CrashPoint = Callable[[str], None]

#: Steps of a cycle at which the ``crash`` seam is called (besides the store's own).
CYCLE_CRASH_POINTS: Final = ("sealed", "shipped", "applied", "outbox_removed")


def no_crash(step: str) -> None:
    """The production seam: nothing happens between steps."""
    del step


@dataclass(frozen=True)
class CycleReport:
    """What one delta cycle did."""

    cycle_id: int
    recovery_point_id: int
    records: int
    bytes_shipped: int
    seconds: float


def ship_cycle(
    replica: ReplicaTarget,
    outbox: Outbox,
    record: CutRecord,
    *,
    clock: Clock,
    crash: CrashPoint = no_crash,
) -> tuple[RecoveryPoint, CycleReport]:
    """Ship and apply one waiting cycle; remove it from the outbox."""
    started = clock.now()
    logs = outbox.logs(record.cycle_id, record.last_sequences)
    missing = sorted(disk for disk, path in logs.items() if not path.exists())
    if missing:
        msg = f"cycle {record.cycle_id} of VM {outbox.vm_name!r} lacks the logs of "
        msg += f"{missing} although its cut was recorded"
        raise CorruptRecord(msg)
    first_sequences = {disk: _first_sequence(path) for disk, path in logs.items()}
    size = sum(path.stat().st_size for path in logs.values())
    crash("sealed")
    shipment = CycleShipment(
        cycle_id=record.cycle_id,
        epoch=record.epoch,
        app_consistent=record.app_consistent,
        logs=logs,
        last_sequences=record.last_sequences,
        resync=record.resync,
    )
    try:
        point = replica.apply_cycle(outbox.vm_name, shipment)
    except TransportError:
        landed = _landed(replica, outbox.vm_name, record.cycle_id)
        if landed is None:
            raise
        point = landed  # applied: only the reply was lost
    crash("applied")
    outbox.remove(record.cycle_id)
    crash("outbox_removed")
    records = sum(
        record.last_sequences[disk] - first + 1
        for disk, first in first_sequences.items()
    )
    report = CycleReport(
        cycle_id=record.cycle_id,
        recovery_point_id=point.recovery_point_id,
        records=records,
        bytes_shipped=size,
        seconds=clock.now() - started,
    )
    return point, report


def _landed(
    replica: ReplicaTarget, vm_name: str, cycle_id: int
) -> RecoveryPoint | None:
    """The point of ``cycle_id`` if the target applied it although the transfer
    failed (its reply was lost on the way back); None if it does not hold it or cannot
    say. Applying is idempotent, so a cycle left in doubt is simply shipped again
    otherwise, and the target answers with the point it already committed."""
    try:
        status = replica.status(vm_name)
    except ReplicationError:
        return None
    return next((p for p in status.points if p.cycle_id == cycle_id), None)


def _first_sequence(path: Path) -> int:
    """The first sequence number a sealed log's header declares (header checked)."""
    with path.open("rb") as stream:
        header, _ = read_header(stream, path)
    return header.first_sequence
