"""Change tracking in the write path: a disk whose every write is also logged.

What it owns: the pairing of one :class:`~engine.storage.disk.VirtualDisk` with its
:class:`~engine.log.writer.ChangeLog`, and the one lock that orders their writes. It is
the source side of replication's mechanics; it never imports ``model``.

Order of a write, under the lock:

1. append a record ``(sequence, offset, data)`` to the log;
2. (durable mode) make the log durable;
3. write the disk;
4. (durable mode) make the disk durable.

Logging first means a crash can leave a record for a write the disk never got, but
never a disk change without its record, which would be lost from replication silently.
The log is the write-ahead record: :meth:`TrackedDisk.resume` replays every record of
the current log onto the disk (records are absolute writes in order, so replaying is
idempotent), so a write whose record survived is on the disk too and the next cycle
never ships a state the source did not hold. A log whose tail was cut (a torn or
damaged last record) is not replayed: the disk may hold that write or later ones, and
the older records would roll them back; the caller distrusts such logs. Replay assumes
nothing but this class writes a tracked image while its log is current. In durable
mode each write costs two ``fdatasync`` calls; without it a host crash may keep a
disk write and lose its record (both were only in the page cache): the caller must
detect such a crash and resynchronise, as Hyper-V Replica does after an unexpected
shutdown (``engine/source/disks.py`` does).

Sealing (:meth:`TrackedDisk.seal_log`) takes the same lock, so it falls *between* two
writes: every write is wholly before the cut (in the sealed log and on the disk) or
wholly after it (in the fresh log).

Invariant: the log describes the disk. When the storage fills up, the disk write is
undone from the log: nothing landed → the record is retracted; only part landed → the
record is replaced by one for exactly the bytes that landed. If even that cannot be
recorded, or an interruption (``KeyboardInterrupt``) falls between the log and the disk
so nobody knows whether the write landed, :attr:`TrackedDisk.tracking_lost` becomes
true and only a resynchronisation can make the replica trustworthy again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from engine.errors import CorruptRecord, ReplicationError, StorageFull
from engine.log.format import RECORD_PAYLOAD_BYTES_MAX
from engine.log.writer import (
    REASON_PAST_DISK_END,
    ChangeLog,
    PreparedSeal,
    SealedLog,
    TailReport,
    log_limit_bytes,
    log_path_for,
)
from engine.storage.disk import Buffer, VirtualDisk, require_buffer


@dataclass(frozen=True)
class TrackedDiskStatistics:
    """Counters since this object was built (``log_*`` describe the current log).

    ``log_file_bytes`` (header and framing included) is what ``log_limit_bytes``
    bounds, not ``log_payload_bytes``.
    """

    writes: int
    bytes_written: int
    log_records: int
    log_payload_bytes: int
    log_file_bytes: int
    log_limit_bytes: int
    next_sequence: int
    tracking_lost: bool


class TrackedDisk:
    """A :class:`VirtualDisk` whose writes are recorded in its change log first."""

    def __init__(
        self, disk: VirtualDisk, log: ChangeLog, *, durable: bool = False
    ) -> None:
        self._disk = disk
        self._log = log
        self._durable = durable
        self._lock = threading.Lock()
        self._tracking_lost = False
        self._writes = 0
        self._bytes_written = 0
        self._log_limit_bytes = log_limit_bytes(disk.size_bytes)
        self._size_bytes = disk.size_bytes

    @classmethod
    def start(
        cls,
        disk: VirtualDisk,
        *,
        disk_id: str,
        epoch: int,
        first_sequence: int = 0,
        durable: bool = False,
    ) -> Self:
        """Start tracking ``disk`` in a new log beside it (``<disk>.hrl``)."""
        log = ChangeLog.create(
            log_path_for(disk.path),
            disk_id=disk_id,
            epoch=epoch,
            first_sequence=first_sequence,
        )
        return cls(disk, log, durable=durable)

    @classmethod
    def resume(
        cls,
        disk: VirtualDisk,
        *,
        disk_id: str,
        epoch: int,
        durable: bool = False,
        before_cut: Callable[[TailReport], None] | None = None,
    ) -> Self:
        """Resume tracking after a restart: reopen the log, replay it onto the disk.

        The log is the write-ahead record: a process killed between a record and its
        disk write left the log ahead of the disk. Every record of the current log is
        written to the disk again, in order (absolute writes: replaying is idempotent),
        so the log describes the disk before anything else happens. In durable mode the
        log is made durable before the replay and the disk after it.

        ``log.tail_report`` says what a damaged tail cost; ``before_cut`` is called
        before it is cut (see :meth:`ChangeLog.open`), and a log cut so is not replayed:
        the disk is the truth. A record past the end of the
        disk raises :class:`CorruptRecord`; a full disk raises :class:`StorageFull`
        (free space and resume again). On any error the log is closed and the disk is
        left open for the caller.
        """
        log = ChangeLog.open(
            log_path_for(disk.path), disk_id=disk_id, epoch=epoch, before_cut=before_cut
        )
        try:
            if log.tail_report is None:
                _replay(log, disk, durable=durable)
            # Else a record was cut from the end (torn, or damaged): the disk may hold
            # that write, or later ones over the same blocks, and replaying the older
            # records would roll them back. A torn append's disk write never happened
            # (the record comes first), so every record before it is on the disk
            # already; the logs are distrusted (the caller's before_cut) and a
            # resynchronisation makes the replica equal to the disk as it is.
        except BaseException:
            log.close()
            raise
        return cls(disk, log, durable=durable)

    @property
    def disk(self) -> VirtualDisk:
        """The disk written to."""
        return self._disk

    @property
    def log(self) -> ChangeLog:
        """The current change log (read its counters; do not append to it)."""
        return self._log

    @property
    def size_bytes(self) -> int:
        """Size of the disk."""
        return self._disk.size_bytes

    @property
    def durable(self) -> bool:
        """Whether each write is made durable (log, then disk) before returning."""
        return self._durable

    @property
    def tracking_lost(self) -> bool:
        """True once the log may not describe the disk: resynchronise."""
        return self._tracking_lost

    @property
    def log_over_limit(self) -> bool:
        """Whether the current log file outgrew half the disk (resynchronise instead).

        The file's size counts, header and record framing included: it is what is
        stored and shipped, and many small writes cost far more than their payload.
        """
        return self._log.size_bytes > self._log_limit_bytes

    def write(self, offset: int, data: Buffer) -> int:
        """Record then write ``data`` at ``offset``; return the last sequence used.

        Writes longer than one record's limit become several records, each logged
        and written in turn.
        """
        if type(data) is not bytes:
            data = bytes(require_buffer(data, argument="data"))
        length = len(data)
        if (
            type(offset) is not int
            or length == 0
            or not 0 <= offset <= self._size_bytes - length
        ):
            self._disk.check_range(offset, length)  # raises the typed error
        lock = self._lock
        lock.acquire()  # not ``with``: half the cost on the hot path, same safety
        try:
            if length <= RECORD_PAYLOAD_BYTES_MAX:
                sequence = self._write_record(offset, data)
            else:
                step = RECORD_PAYLOAD_BYTES_MAX
                for start in range(0, len(data), step):
                    chunk = data[start : start + step]
                    sequence = self._write_record(offset + start, chunk)
            self._writes += 1
            self._bytes_written += length
            return sequence
        finally:
            lock.release()

    def read(self, offset: int, length: int) -> bytes:
        """Read from the disk (reads are not tracked)."""
        return self._disk.read(offset, length)

    def flush(self) -> None:
        """Make every write so far durable: the log first, then the disk."""
        with self._lock:
            self._log.sync()
            self._disk.sync_data()

    def sync_log(self) -> None:
        """Make the log's records so far durable (writes may go on meanwhile)."""
        self._log.sync()

    def seal_log(
        self,
        sealed_path: Path,
        *,
        defer_sync: bool = False,
        sequences_skipped: int = 0,
    ) -> SealedLog:
        """Cut the log between two writes and continue in a fresh one.

        ``defer_sync`` (refused in durable mode) leaves the fsyncs to
        :meth:`make_seal_durable`, so the writers waiting on the cut wait less.
        """
        with self._lock:
            return self._log.seal(
                sealed_path,
                defer_sync=defer_sync and not self._durable,
                sequences_skipped=sequences_skipped,
            )

    def prepare_seal(
        self, sealed_path: Path, *, defer_sync: bool = False, sequences_skipped: int = 0
    ) -> PreparedSeal:
        """The part of a seal that needs space (see ``ChangeLog.prepare_seal``)."""
        with self._lock:
            return self._log.prepare_seal(
                sealed_path,
                defer_sync=defer_sync and not self._durable,
                sequences_skipped=sequences_skipped,
            )

    def commit_seal(self, prepared: PreparedSeal) -> SealedLog:
        """The renames of a prepared seal: the cut itself."""
        with self._lock:
            return self._log.commit_seal(prepared)

    def abort_seal(self, prepared: PreparedSeal) -> None:
        """Drop a prepared seal; the log stays current."""
        with self._lock:
            self._log.abort_seal(prepared)

    def make_seal_durable(self, sealed: SealedLog) -> None:
        """Finish a deferred seal (a no-op cost when it was synced already)."""
        self._log.make_seal_durable(sealed)

    def statistics(self) -> TrackedDiskStatistics:
        """A snapshot of the counters."""
        with self._lock:
            return TrackedDiskStatistics(
                writes=self._writes,
                bytes_written=self._bytes_written,
                log_records=self._log.record_count,
                log_payload_bytes=self._log.payload_bytes,
                log_file_bytes=self._log.size_bytes,
                log_limit_bytes=self._log_limit_bytes,
                next_sequence=self._log.next_sequence,
                tracking_lost=self._tracking_lost,
            )

    def close(self) -> None:
        """Close the log and the disk (call :meth:`flush` first for durability)."""
        with self._lock:
            self._log.close()
            self._disk.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _write_record(self, offset: int, data: bytes) -> int:
        """Log then write one record's worth; keep the log describing the disk."""
        sequence = self._log.append(offset, data)
        durable = self._durable
        try:
            if durable:
                self._log.sync()
            written = self._disk.write_some(offset, data)
        except (OSError, ReplicationError):  # raised only when nothing was written
            self._retract(sequence)
            raise
        except BaseException:  # interrupted: whether the write landed is unknown
            self._tracking_lost = True
            raise
        if written == len(data):
            if durable:
                self._disk.sync_data()
            return sequence
        raise self._record_partial_write(sequence, offset, data, written)

    def _record_partial_write(
        self, sequence: int, offset: int, data: bytes, written: int
    ) -> StorageFull:
        """The disk took only ``written`` bytes: make the log say exactly that.

        Returns the error for the caller to raise.
        """
        assert 0 < written < len(data)
        self._retract(sequence)
        try:
            self._log.append(offset, data[:written])
        except BaseException:
            self._tracking_lost = True
            raise
        msg = (
            f"writing {len(data)} bytes at offset {offset} of disk "
            f"{str(self._disk.path)!r}: the storage accepted only {written}; "
            "those are recorded in the change log"
        )
        return StorageFull(msg)

    def _retract(self, sequence: int) -> None:
        try:
            self._log.retract(sequence)
        except BaseException:
            self._tracking_lost = True
            raise


def _replay(log: ChangeLog, disk: VirtualDisk, *, durable: bool) -> None:
    """Write every record of ``log`` onto ``disk`` again, in order (see resume)."""
    if durable:
        log.sync()  # the records before the disk writes they describe
    size = disk.size_bytes
    for record in log.records():
        end = record.offset + len(record.data)
        if end > size:
            detail = f"sequence {record.sequence} writes [{record.offset}, {end}), "
            detail += f"disk {str(disk.path)!r} has {size} bytes"
            msg = (
                f"change log {str(log.path)!r}: {REASON_PAST_DISK_END} ({detail}); "
                "it cannot be replayed: resynchronise the disk"
            )
            raise CorruptRecord(msg)
        try:
            disk.write(record.offset, record.data)
        except StorageFull as error:
            error.add_note(
                f"replaying change log {str(log.path)!r} onto its disk: free space "
                "and reopen (the replay starts again; it is idempotent)"
            )
            raise
    if durable:
        disk.sync_data()
