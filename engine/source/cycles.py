"""Delta cycles at the source: cut all disks at one point, ship what waits, in order.

:class:`CycleRunner` owns the mechanics of one VM's cycles, below the binding (which
asks the model first). A cycle is:

1. **cut**: a cycle id is taken from the control state (never handed twice), the
   outbox directory made durably, every disk's log sealed under the disks' cut lock
   (so the cut falls between two writes for all disks at once), then the cut record
   written; guest writes wait only for the seal;
2. **ship**: each waiting cycle, oldest first, goes to the target through the replica
   interface, which applies it whole or not at all; then it leaves the outbox.

What can go wrong, and what happens:

- the link or the target's storage fails: the cycle stays in the outbox and is shipped
  first by the next cycle, so nothing is lost or reordered;
- a waiting cycle the target has already applied (its id is not above the target's
  last applied cycle: an outbox restored from a backup) is dropped, and said;
- a cycle whose cut was interrupted (no cut record) is completed right after a restart,
  before any write (whatever operation cut it: a cycle, a planned failover's final
  sync, reverse replication's first cycle), by sealing the disks that were not
  sealed, unless the logs are
  untrusted (after a power loss they may have lost different records on different
  disks); at any other time it would mix two moments across disks, so it is refused;
- a cycle the target refuses as damaged (:class:`CorruptRecord`) can no longer carry
  its changes: the verdict "logs untrusted" is made durable FIRST, and only then are
  the waiting cycles discarded, so a crash in between loses nothing silently; if the
  verdict cannot be written (a full disk) the cycles stay and the error is raised.

It never imports ``model``.
"""

from __future__ import annotations

from pathlib import Path

from engine.clock import Clock
from engine.control.store import ControlStore
from engine.errors import CorruptRecord
from engine.log.reader import read_header
from engine.log.writer import log_path_for, verify_sealed_log
from engine.source.disks import LogState, SourceDisks
from engine.source.outbox import CutRecord, Outbox
from engine.source.shipping import CrashPoint, CycleReport, no_crash, ship_cycle
from engine.storage import files
from engine.transport.interface import ReplicaTarget


class CycleRunner:
    """The cycles of one VM at its source site."""

    def __init__(
        self,
        disks: SourceDisks,
        outbox: Outbox,
        replica: ReplicaTarget,
        control: ControlStore,
        clock: Clock,
        *,
        crash: CrashPoint = no_crash,
    ) -> None:
        self.vm_name = outbox.vm_name
        self._disks = disks
        self._outbox = outbox
        self._replica = replica
        self._control = control
        self._clock = clock
        self._crash = crash
        self.cycles_applied = 0
        self.bytes_shipped = 0
        self.cycles_dropped = 0
        self.last_cycle: CycleReport | None = None

    def run(self, *, app_consistent: bool, epoch: int) -> list[CycleReport]:
        """Ship what waits, then cut and ship a new cycle when there is anything
        to send (or when the replica has no point yet)."""
        reports = self.ship_waiting()
        status = self._replica.status(self.vm_name)
        if self._disks.pending().records > 0 or not status.points:
            record = self.cut(
                app_consistent=app_consistent, epoch=epoch, applied=status.last_cycle_id
            )
            reports.append(self._ship(record))
        return reports

    def take_cycle_id(self, applied: int | None = None) -> int:
        """A cycle id above every cycle the target has applied (``applied``: the
        last, as the caller just read it)."""
        last = (
            self._replica.status(self.vm_name).last_cycle_id
            if applied is None
            else applied
        )
        # Above it even if the control file was restored from an older backup.
        return self._control.take_cycle_id(self.vm_name, above=last)

    def cut(
        self, *, app_consistent: bool, epoch: int, applied: int | None = None
    ) -> CutRecord:
        """Seal every disk at one point into a new outbox cycle; record the cut
        (``applied``: the target's last applied cycle, as the caller just read it)."""
        cycle_id = self.take_cycle_id(applied)
        directory = self._outbox.open_cycle(cycle_id)
        try:
            sealed = self._disks.seal(directory)
        except BaseException:
            # A disk sealed before the failure holds records only this cycle has:
            # keep it (seal() distrusted the logs; the next run refuses the cycle
            # as interrupted and discards it once the verdict is durable).
            if not any(directory.glob("*.hrl")):
                self._outbox.remove(cycle_id)
            raise
        last = {disk: log.last_sequence for disk, log in sealed.items()}
        record = CutRecord(cycle_id, epoch, app_consistent, last)
        try:
            self._outbox.record_cut(record)
        except BaseException as error:
            self._disks.distrust(
                f"cycle {cycle_id}: its cut could not be recorded ({error}); "
                "resynchronisation needed"
            )
            self._outbox.remove(cycle_id)
            raise
        return record

    def ship_waiting(self, *, finish_cut: bool = False) -> list[CycleReport]:
        """Ship every waiting cycle, oldest first."""
        reports = []
        for cycle_id in self._outbox.waiting():
            applied = self._replica.status(self.vm_name).last_cycle_id
            if cycle_id <= applied:
                self._outbox.remove(cycle_id)  # applied already (a restored outbox)
                self.cycles_dropped += 1
                continue
            record = self._record(cycle_id, finish_cut=finish_cut)
            reports.append(self._ship(record))
        return reports

    def finish_interrupted_cuts(self) -> None:
        """Right after a restart, before any write: complete the cut of every waiting
        cycle a crash interrupted, without shipping (an operation rolled back or
        finished by the restart leaves them for the next cycle). Refused as
        :class:`CorruptRecord`, the logs distrusted and the cycles discarded, when
        the logs are untrusted."""
        for cycle_id in self._outbox.waiting():
            self._record(cycle_id, finish_cut=True)

    def _record(self, cycle_id: int, *, finish_cut: bool) -> CutRecord:
        try:
            record = self._outbox.cut_record(cycle_id, self._disks.paths)
            if record is not None:
                return record
            if not finish_cut:
                msg = f"cycle {cycle_id} of VM {self.vm_name!r} has no cut record: its "
                msg += "cut was interrupted and cannot be completed consistently now"
                raise CorruptRecord(msg)
            if self._disks.log_state is LogState.UNTRUSTED:
                # After a power loss the logs may have lost different records on
                # different disks: sealing them now would not be one moment.
                msg = f"cycle {cycle_id} of VM {self.vm_name!r}: its cut was "
                msg += "interrupted and the logs are untrusted "
                msg += f"({self._disks.problem}); it cannot be completed"
                raise CorruptRecord(msg)
            return self._finish_cut(cycle_id)
        except CorruptRecord as damage:
            self._distrust_and_discard(cycle_id, damage)
            raise

    def _finish_cut(self, cycle_id: int) -> CutRecord:
        """Seal the disks a crash left unsealed (no write has happened since)."""
        logs = self._outbox.logs(cycle_id, self._disks.paths)
        for disk, path in logs.items():
            if path.exists() and self._seal_undone(disk, path):
                files.current().unlink(path)  # a copy of the current log: sealed again
        missing = [disk for disk, path in logs.items() if not path.exists()]
        if missing:
            self._disks.seal(self._outbox.path(cycle_id), missing)
        epoch = self._control.vm(self.vm_name).epoch
        last = {
            disk: verify_sealed_log(Path(path), disk_id=disk, epoch=epoch).last_sequence
            for disk, path in logs.items()
        }
        record = CutRecord(cycle_id, epoch, app_consistent=False, last_sequences=last)
        self._outbox.record_cut(record)
        return record

    def _seal_undone(self, disk: str, sealed: Path) -> bool:
        """Whether a power cut undid the seal of ``disk`` at the source only: the
        current log starts where the sealed one does and the sealed one holds
        records (it is the same log, left under both names by the cut), so the
        disk must be sealed again. (A sealed log with no record starts where its
        successor does too; then either is the same empty log.)"""
        with sealed.open("rb") as stream:
            header, _ = read_header(stream, sealed)
        found = verify_sealed_log(sealed, disk_id=disk, epoch=header.epoch)
        current = log_path_for(self._disks.paths[disk])
        with current.open("rb") as stream:
            current_header, _ = read_header(stream, current)
        return (
            found.record_count > 0
            and found.first_sequence == current_header.first_sequence
        )

    def _ship(self, record: CutRecord) -> CycleReport:
        try:
            _, report = ship_cycle(
                self._replica, self._outbox, record, clock=self._clock,
                crash=self._crash,
            )  # fmt: skip
        except CorruptRecord as damage:
            self._distrust_and_discard(record.cycle_id, damage)
            raise
        self.cycles_applied += 1
        self.bytes_shipped += report.bytes_shipped
        self.last_cycle = report
        return report

    def _distrust_and_discard(self, cycle_id: int, damage: CorruptRecord) -> None:
        """The verdict first, durably; only then drop what the logs can't carry."""
        self._disks.distrust(f"cycle {cycle_id} refused: {damage}")
        self._outbox.discard()
        damage.add_note(
            "the next cycle marks the VM for resynchronization (resynchronize then "
            "compares and sends blocks)"
        )
