"""The change log of one disk: what was written since the last cut, in order.

What it owns: one file beside each disk, ``<disk>.hrl`` (:func:`log_path_for`), written
by :class:`ChangeLog` and read by :func:`read_sealed_log` and :func:`verify_sealed_log`
(which live in ``engine/log/reader.py`` with the parser and the record scanner,
and are re-exported here: import everything about logs from this module). It knows
nothing of disks, transport or the lifecycle; it never imports ``model``.

Format (``engine/log/format.py``, ``docs/change-log-format.md``): a header naming
the disk, the replication epoch and the first sequence number, protected by a CRC32C;
then append-only records ``(sequence, offset, length, crc, payload)``. The header makes
a log impossible to apply to the wrong disk or after a failover changed the epoch; the
per-record CRC and the consecutive sequence numbers make damage and gaps detectable;
the length prefix lets a reader skip to the next record without a parser.

Lifecycle of a log: *current* (appended to under the writer's lock), *sealed* (fsynced,
renamed aside by :meth:`ChangeLog.seal`, which starts a fresh log at the original path
continuing the sequence), *shipped*, *applied*, then deleted by its consumer.

Two kinds of reader, because the two situations differ:

- **reopen** (:meth:`ChangeLog.open`, after a crash): a torn or damaged *tail* is what a
  crash leaves behind; it is cut at the last whole record and reported
  (:class:`TailReport`: bytes dropped and the reason), as LevelDB's reader reports to
  its ``Reporter``. A damaged *header* is not a tail: :class:`CorruptRecord`. The
  records kept are then read back (:meth:`ChangeLog.records`) to be replayed onto the
  disk: the log is the disk's write-ahead record.
- **sealed** (:func:`read_sealed_log`, :func:`verify_sealed_log`): a sealed log was
  fsynced before it was renamed, so it must be whole; any damage at all raises
  :class:`CorruptRecord` (or :class:`LogMismatch` for another disk or epoch) and no
  damaged record is ever returned.

Invariants: sequence numbers are consecutive from the header's ``first_sequence``; the
writer's ``size_bytes`` is always the end of the last whole record; a failed append
leaves the file exactly as it was (truncated back) and raises :class:`StorageFull`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import google_crc32c

from engine.errors import DiskRangeError, InvalidConfiguration
from engine.log.format import (
    FORMAT_VERSION,
    HEADER_CRC,
    LOG_LIMIT_DIVISOR,
    LOG_SUFFIX,
    OFFSET_MAX,
    RECORD_COVERED,
    RECORD_HEADER,
    RECORD_PAYLOAD_BYTES_MAX,
    RECORD_PAYLOAD_BYTES_MIN,
    SEQUENCE_MAX,
)
from engine.log.reader import (
    REASON_BAD_DISK_ID,
    REASON_BAD_MAGIC,
    REASON_ENDS_EARLY,
    REASON_HEADER_CHECKSUM,
    REASON_LENGTH_TOO_LARGE,
    REASON_PAST_DISK_END,
    REASON_RECORD_CHECKSUM,
    REASON_SEQUENCE_GAP,
    REASON_TORN_PAYLOAD,
    REASON_TORN_RECORD_HEADER,
    REASON_TRUNCATED_HEADER,
    REASON_UNSUPPORTED_VERSION,
    REASON_WRONG_DISK,
    REASON_WRONG_EPOCH,
    REASON_ZERO_LENGTH,
    STREAM_BUFFER_BYTES,
    LogDamage,
    LogHeader,
    LogRecord,
    SealedLog,
    TailReport,
    check_identity,
    raise_corrupt,
    read_header,
    read_sealed_log,
    scan_records,
    validate_identity,
    verify_sealed_log,
)
from engine.log.rotation import (
    PreparedLog,
    PreparedSeal,
    encode_header,
    encode_record,
    finish_interrupted_seal,
    fresh_path,
    rotate,
    write_fresh_log,
)
from engine.storage import files
from engine.storage.disk import Buffer, require_buffer, require_int, storage_error
from engine.storage.files import fsync_directory

__all__ = [
    "REASON_BAD_DISK_ID",
    "REASON_BAD_MAGIC",
    "REASON_ENDS_EARLY",
    "REASON_HEADER_CHECKSUM",
    "REASON_LENGTH_TOO_LARGE",
    "REASON_PAST_DISK_END",
    "REASON_RECORD_CHECKSUM",
    "REASON_SEQUENCE_GAP",
    "REASON_TORN_PAYLOAD",
    "REASON_TORN_RECORD_HEADER",
    "REASON_TRUNCATED_HEADER",
    "REASON_UNSUPPORTED_VERSION",
    "REASON_WRONG_DISK",
    "REASON_WRONG_EPOCH",
    "REASON_ZERO_LENGTH",
    "ChangeLog",
    "ChangeLogStatistics",
    "LogHeader",
    "LogRecord",
    "PreparedLog",
    "PreparedSeal",
    "SealedLog",
    "TailReport",
    "encode_header",
    "encode_record",
    "log_limit_bytes",
    "log_path_for",
    "read_sealed_log",
    "verify_sealed_log",
]


def log_path_for(disk_path: Path) -> Path:
    """Where the change log of the disk image at ``disk_path`` lives."""
    disk_path = Path(disk_path)
    return disk_path.with_name(disk_path.name + LOG_SUFFIX)


def log_limit_bytes(disk_size_bytes: int) -> int:
    """Log file size past which a log forces resynchronisation (half the disk).

    Compared with :attr:`ChangeLog.size_bytes` (header and record framing included),
    not with the payload: see ``LOG_LIMIT_DIVISOR``.
    """
    require_int(disk_size_bytes, argument="disk_size_bytes")
    if disk_size_bytes <= 0:
        msg = f"disk_size_bytes={disk_size_bytes!r} must be positive"
        raise InvalidConfiguration(msg)
    return disk_size_bytes // LOG_LIMIT_DIVISOR


@dataclass(frozen=True)
class ChangeLogStatistics:
    """Counters of the current log (a seal starts them again)."""

    first_sequence: int
    next_sequence: int
    record_count: int
    payload_bytes: int
    file_bytes: int


class ChangeLog:
    """The writer of one disk's change log. Thread-safe: one lock orders appends
    and seals, so a seal falls between two appends, never inside one."""

    def __init__(
        self,
        path: Path,
        descriptor: int,
        header: LogHeader,
        *,
        end: int,
        record_count: int,
        payload_bytes: int,
        tail_report: TailReport | None,
    ) -> None:
        self._path = path
        self._descriptor = descriptor
        self._header = header
        self._end = end
        self._record_count = record_count
        self._payload_bytes = payload_bytes
        self._tail_report = tail_report
        self._last_record_start: int | None = None
        self._lock = threading.Lock()
        self._files = files.current()

    @classmethod
    def create(
        cls, path: Path, *, disk_id: str, epoch: int, first_sequence: int
    ) -> Self:
        """Start a new, empty log at ``path``; refuse to overwrite one."""
        if Path(path).exists():
            msg = f"path={str(path)!r} already exists; open() it or remove it"
            raise InvalidConfiguration(msg)
        prepared = cls.prepare(
            path, disk_id=disk_id, epoch=epoch, first_sequence=first_sequence
        )
        try:
            return cls.adopt(prepared)
        except BaseException:
            prepared.drop()
            raise

    @staticmethod
    def prepare(
        path: Path, *, disk_id: str, epoch: int, first_sequence: int
    ) -> PreparedLog:
        """Write a new, empty log for ``path`` aside (``<path>.new``), durably.

        :meth:`adopt` renames it into place (replacing a log there); until then the
        log at ``path``, if any, is untouched. A caller that must switch logs between
        two writes prepares outside its lock and adopts under it.
        """
        path = Path(path)
        disk_id, epoch = validate_identity(disk_id, epoch)
        first_sequence = require_int(first_sequence, argument="first_sequence")
        if not 0 <= first_sequence <= SEQUENCE_MAX:
            msg = f"first_sequence={first_sequence!r} must be between 0 and 2**64 - 1"
            raise InvalidConfiguration(msg)
        header = LogHeader(FORMAT_VERSION, disk_id, epoch, first_sequence)
        descriptor, end = write_fresh_log(path, header)
        return PreparedLog(path, header, descriptor, end)

    @classmethod
    def adopt(cls, prepared: PreparedLog, *, sync_directory: bool = True) -> Self:
        """Rename a prepared log into place (replacing any log there); the writer.

        Without ``sync_directory`` the rename is durable only once the caller fsyncs
        the directory (for writers that make no durability promise of their own).
        """
        path = prepared.path
        files.current().rename(fresh_path(path), path)
        if sync_directory:
            fsync_directory(path.parent)
        log = cls(
            path,
            prepared.descriptor,
            prepared.header,
            end=prepared.end,
            record_count=0,
            payload_bytes=0,
            tail_report=None,
        )
        prepared.descriptor = -1  # owned by the log now
        return log

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        disk_id: str,
        epoch: int,
        before_cut: Callable[[TailReport], None] | None = None,
    ) -> Self:
        """Reopen the log at ``path`` after a restart; cut and report a damaged tail.

        Also finishes a seal a crash interrupted: when only the fresh log exists (the
        old one was already renamed to its sealed path), the fresh one is moved into
        place; when both exist, the fresh one is debris and removed.

        ``before_cut`` is called with the report *before* the tail is cut: a caller
        that must remember the damage durably does so while the evidence is still in
        the file, so a crash between the cut and its note cannot forget it. If it
        raises, nothing is cut and the error propagates.
        """
        path = Path(path)
        disk_id, epoch = validate_identity(disk_id, epoch)
        finish_interrupted_seal(path)
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as error:
            msg = f"path={str(path)!r} does not exist; create() the log first"
            raise InvalidConfiguration(msg) from error
        try:
            file_bytes = os.fstat(descriptor).st_size
            with open(path, "rb", buffering=STREAM_BUFFER_BYTES) as stream:
                header, end = read_header(stream, path)
                check_identity(header, path, disk_id, epoch)
                record_count = payload_bytes = 0
                tail_report = None
                try:
                    for frame in scan_records(
                        stream,
                        start=end,
                        file_bytes=file_bytes,
                        first_sequence=header.first_sequence,
                        keep_payloads=False,
                    ):
                        end = frame.end
                        record_count += 1
                        payload_bytes += frame.length
                except LogDamage as damage:
                    tail_report = TailReport(file_bytes - end, damage.reason)
            if tail_report is not None:
                if before_cut is not None:
                    before_cut(tail_report)
                files.current().ftruncate(descriptor, end)
                files.current().fsync(descriptor)
        except BaseException:
            os.close(descriptor)
            raise
        return cls(
            path,
            descriptor,
            header,
            end=end,
            record_count=record_count,
            payload_bytes=payload_bytes,
            tail_report=tail_report,
        )

    @property
    def path(self) -> Path:
        """Where the current log lives (unchanged by :meth:`seal`)."""
        return self._path

    @property
    def header(self) -> LogHeader:
        """The current log's header."""
        return self._header

    @property
    def tail_report(self) -> TailReport | None:
        """What :meth:`open` cut from the tail, or ``None`` when the log was whole."""
        return self._tail_report

    @property
    def next_sequence(self) -> int:
        """Sequence number the next append will get."""
        return self._header.first_sequence + self._record_count

    @property
    def record_count(self) -> int:
        """Records in the current log."""
        return self._record_count

    @property
    def size_bytes(self) -> int:
        """Size of the current log file, header and framing (see log_limit_bytes)."""
        return self._end

    @property
    def payload_bytes(self) -> int:
        """Bytes of tracked writes in the current log (without their framing)."""
        return self._payload_bytes

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._descriptor < 0

    def statistics(self) -> ChangeLogStatistics:
        """A snapshot of the current log's counters."""
        with self._lock:
            return ChangeLogStatistics(
                first_sequence=self._header.first_sequence,
                next_sequence=self._header.first_sequence + self._record_count,
                record_count=self._record_count,
                payload_bytes=self._payload_bytes,
                file_bytes=self._end,
            )

    def records(self) -> Iterator[LogRecord]:
        """Yield the whole records of the current log, in order (for replay on reopen).

        Reads the file up to :attr:`size_bytes` through its own stream; do not append
        while iterating. Raises :class:`CorruptRecord` if the file no longer holds
        what this writer wrote (something else changed it).
        """
        with self._lock:
            self._open_descriptor()
            end = self._end
            first_sequence = self._header.first_sequence
        with open(self._path, "rb", buffering=STREAM_BUFFER_BYTES) as stream:
            header, start = read_header(stream, self._path)
            check_identity(header, self._path, self._header.disk_id, self._header.epoch)
            try:
                for frame in scan_records(
                    stream,
                    start=start,
                    file_bytes=end,
                    first_sequence=first_sequence,
                    keep_payloads=True,
                ):
                    assert frame.payload is not None
                    yield LogRecord(frame.sequence, frame.offset, frame.payload)
            except LogDamage as damage:
                raise_corrupt(self._path, damage.position, damage.reason, damage.detail)

    def append(self, offset: int, data: Buffer) -> int:
        """Append one record; return its sequence number.

        On any I/O failure the file is truncated back to where it was and the error
        raised (StorageFull when there is no room).
        """
        if type(data) is not bytes:
            data = bytes(require_buffer(data, argument="data"))
        if type(offset) is not int:
            offset = require_int(offset, argument="offset")
        length = len(data)
        if not RECORD_PAYLOAD_BYTES_MIN <= length <= RECORD_PAYLOAD_BYTES_MAX:
            msg = (
                f"len(data)={length} must be between {RECORD_PAYLOAD_BYTES_MIN} and "
                f"{RECORD_PAYLOAD_BYTES_MAX}; split larger writes"
            )
            raise InvalidConfiguration(msg)
        if not 0 <= offset <= OFFSET_MAX - length:
            msg = f"offset={offset!r} must be between 0 and 2**64 - 1 - len(data)"
            raise DiskRangeError(msg)
        lock = self._lock
        lock.acquire()  # not ``with``: half the cost on the hot path, same safety
        try:
            descriptor = self._descriptor
            if descriptor < 0:
                self._open_descriptor()  # raises the typed error
            sequence = self._header.first_sequence + self._record_count
            assert sequence <= SEQUENCE_MAX
            covered = RECORD_COVERED.pack(sequence, offset, length)
            crc = google_crc32c.extend(google_crc32c.value(covered), data)
            start = self._end
            frame_bytes = RECORD_HEADER.size + length
            buffers = [covered, HEADER_CRC.pack(crc), data]
            try:
                written = self._files.pwritev(descriptor, buffers, start)
                if written < frame_bytes:  # rare: finish with plain writes
                    frame = encode_record(sequence, offset, data)
                    while written < frame_bytes:
                        chunk = frame[written:]
                        written += self._files.pwrite(
                            descriptor, chunk, start + written
                        )
            except OSError as error:
                self._files.ftruncate(descriptor, start)
                action = f"appending to change log {str(self._path)!r}"
                raise storage_error(error, action) from error
            self._last_record_start = start
            self._end = start + frame_bytes
            self._record_count += 1
            self._payload_bytes += length
            return sequence
        finally:
            lock.release()

    def retract(self, sequence: int) -> None:
        """Remove the record just appended (its write did not happen after all).

        Only the most recent append can be retracted, once.
        """
        with self._lock:
            descriptor = self._open_descriptor()
            start = self._last_record_start
            if start is None or sequence != self.next_sequence - 1:
                msg = (
                    f"sequence={sequence!r} cannot be retracted: only the last append "
                    f"({self.next_sequence - 1}) can, once"
                )
                raise InvalidConfiguration(msg)
            self._files.ftruncate(descriptor, start)
            self._payload_bytes -= self._end - start - RECORD_HEADER.size
            self._record_count -= 1
            self._end = start
            self._last_record_start = None

    def sync(self) -> None:
        """Make every appended record durable (``fdatasync``)."""
        self._files.fdatasync(self._open_descriptor())

    def seal(
        self,
        sealed_path: Path,
        *,
        defer_sync: bool = False,
        sequences_skipped: int = 0,
    ) -> SealedLog:
        """Close the current log for shipping and continue in a fresh one.

        Fsyncs the log, renames it to ``sealed_path``, and starts an empty log at the
        original path whose first sequence is the next one. Atomic with respect to
        appends (they wait on the lock). The fresh log is written before anything is
        renamed, so a full disk refuses the seal and changes nothing. It is
        :meth:`prepare_seal` then :meth:`commit_seal`; a caller sealing several logs
        at one cut prepares them all first, so that a full disk refuses the cut
        before any log moved.

        With ``defer_sync`` nothing is fsynced here (the cut stays short for writers
        waiting on it); the caller must call :meth:`make_seal_durable` before it relies
        on the sealed log. Only for writers that make no durability promise of their
        own: a durable write acknowledged after the cut needs the rename durable first.

        ``sequences_skipped`` starts the fresh log that many sequence numbers later: a
        resynchronisation puts its own records before the sealed ones in the cycle it
        ships, and the next cycle must continue after all of them.
        """
        prepared = self.prepare_seal(
            sealed_path, defer_sync=defer_sync, sequences_skipped=sequences_skipped
        )
        try:
            return self.commit_seal(prepared)
        except BaseException:
            self.abort_seal(prepared)
            raise

    def prepare_seal(
        self,
        sealed_path: Path,
        *,
        defer_sync: bool = False,
        sequences_skipped: int = 0,
    ) -> PreparedSeal:
        """The part of :meth:`seal` that needs space: the fresh log, written aside.

        Appends must not happen between this and :meth:`commit_seal` (the caller
        holds its cut lock); :meth:`abort_seal` undoes it.
        """
        if isinstance(sequences_skipped, bool) or not isinstance(
            sequences_skipped, int
        ):
            msg = f"sequences_skipped={sequences_skipped!r} must be an int >= 0"
            raise InvalidConfiguration(msg)
        if sequences_skipped < 0:
            msg = f"sequences_skipped={sequences_skipped!r} must be an int >= 0"
            raise InvalidConfiguration(msg)
        sealed_path = Path(sealed_path)
        with self._lock:
            descriptor = self._open_descriptor()
            if sealed_path.exists():
                msg = f"sealed_path={str(sealed_path)!r} already exists; choose another"
                raise InvalidConfiguration(msg)
            if not defer_sync:
                self._files.fsync(descriptor)
            old_header = self._header
            header = LogHeader(
                FORMAT_VERSION,
                old_header.disk_id,
                old_header.epoch,
                self.next_sequence + sequences_skipped,
            )
            fresh_descriptor, fresh_end = write_fresh_log(
                self._path, header, sync=not defer_sync
            )
            return PreparedSeal(
                sealed_path, header, fresh_descriptor, fresh_end, defer_sync
            )

    def abort_seal(self, prepared: PreparedSeal) -> None:
        """Drop a prepared seal that will not be committed; the log stays current."""
        with self._lock:
            if prepared.fresh_descriptor >= 0:
                os.close(prepared.fresh_descriptor)
                prepared.fresh_descriptor = -1
            self._files.unlink(fresh_path(self._path), missing_ok=True)

    def commit_seal(self, prepared: PreparedSeal) -> SealedLog:
        """Move the log to its sealed path and the prepared fresh log into place."""
        sealed_path = prepared.sealed_path
        with self._lock:
            descriptor = self._open_descriptor()
            old_header = self._header
            assert prepared.header.first_sequence >= self.next_sequence
            rotate(self._path, sealed_path)
            if not prepared.defer_sync:
                _sync_seal_directories(self._path, sealed_path)
            sealed = SealedLog(
                path=sealed_path,
                header=old_header,
                record_count=self._record_count,
                first_sequence=old_header.first_sequence,
                last_sequence=old_header.first_sequence + self._record_count - 1,
                payload_bytes=self._payload_bytes,
                file_bytes=self._end,
            )
            os.close(descriptor)
            self._descriptor = prepared.fresh_descriptor
            prepared.fresh_descriptor = -1  # owned by the log now
            self._header = prepared.header
            self._end = prepared.fresh_end
            self._record_count = 0
            self._payload_bytes = 0
            self._tail_report = None
            self._last_record_start = None
            return sealed

    def make_seal_durable(self, sealed: SealedLog) -> None:
        """Finish a seal made with ``defer_sync``: the sealed log, the fresh log's
        header and both renames become durable. Appends may go on meanwhile."""
        descriptor = os.open(sealed.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._files.fsync(descriptor)
        finally:
            os.close(descriptor)
        self._files.fsync(self._open_descriptor())
        _sync_seal_directories(self._path, sealed.path)

    def close(self) -> None:
        """Release the file; idempotent. Call :meth:`sync` first for durability."""
        with self._lock:
            if self._descriptor >= 0:
                descriptor, self._descriptor = self._descriptor, -1
                os.close(descriptor)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _open_descriptor(self) -> int:
        if self._descriptor < 0:
            msg = f"change log {str(self._path)!r} is closed; open() it again"
            raise InvalidConfiguration(msg)
        return self._descriptor


def _sync_seal_directories(path: Path, sealed_path: Path) -> None:
    """Make a seal's renames durable: the sealed log's directory first.

    A power cut between the two syncs then leaves the sealed log under both names
    (the cut, never recorded, is completed again from it), never under none: were
    the log's own directory synced first, the records of the sealed log would be
    lost with both its names.
    """
    if sealed_path.parent.resolve() != path.parent.resolve():
        fsync_directory(sealed_path.parent)
    fsync_directory(path.parent)
