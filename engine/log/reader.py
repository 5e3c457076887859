"""Reading change logs: the header parser, the record scanner and the strict readers.

What it owns: turning the bytes of a ``<disk>.hrl`` file back into records, and deciding
what is damage. The writer (``engine/log/writer.py``) reuses the same parser and scanner
when it reopens a log after a crash, so there is exactly one definition of "a valid
record"; this module never writes a file and never imports ``model``.

The scanner checks, for each record and in this order: a whole 24-byte record header; a
length within ``[RECORD_PAYLOAD_BYTES_MIN, RECORD_PAYLOAD_BYTES_MAX]`` and within the
bytes left in the file (both before anything is read, so a damaged length cannot cause
a large allocation); the CRC32C over the header fields and the payload; and finally
that the sequence number is the next expected one. It stops at the first failure with a
reason (one of the ``REASON_*`` strings below) and the byte position of the record.

Readers of a *sealed* log (:func:`read_sealed_log`, :func:`verify_sealed_log`) treat
any failure as :class:`CorruptRecord`: a sealed log was fsynced before it was renamed,
so it must be whole, and a damaged record is never returned. A header for another disk
or epoch is :class:`LogMismatch`. The writer's reopen instead cuts the tail at the
failure and reports it (:class:`TailReport`), since a torn tail is what crashes leave.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, NoReturn

import google_crc32c

from engine.errors import CorruptRecord, InvalidConfiguration, InvalidName, LogMismatch
from engine.log.format import (
    DISK_ID_BYTES_MAX,
    EPOCH_MAX,
    FORMAT_VERSION,
    HEADER_CRC,
    HEADER_FIXED,
    MAGIC,
    RECORD_COVERED,
    RECORD_HEADER,
    RECORD_PAYLOAD_BYTES_MAX,
    RECORD_PAYLOAD_BYTES_MIN,
    SCAN_CHUNK_BYTES,
)
from engine.names import validate_name
from engine.storage.disk import require_int

REASON_TRUNCATED_HEADER: Final = "truncated header"
REASON_BAD_MAGIC: Final = "bad magic"
REASON_UNSUPPORTED_VERSION: Final = "unsupported format version"
REASON_BAD_DISK_ID: Final = "bad disk id"
REASON_HEADER_CHECKSUM: Final = "header checksum mismatch"
REASON_TORN_RECORD_HEADER: Final = "torn record header"
REASON_TORN_PAYLOAD: Final = "torn payload"
REASON_ZERO_LENGTH: Final = "zero-length record"
REASON_LENGTH_TOO_LARGE: Final = "record length exceeds limit"
REASON_RECORD_CHECKSUM: Final = "record checksum mismatch"
REASON_SEQUENCE_GAP: Final = "sequence gap"
REASON_PAST_DISK_END: Final = "record past disk end"
REASON_ENDS_EARLY: Final = "log ends before its last sequence"
REASON_WRONG_DISK: Final = "wrong disk id"
REASON_WRONG_EPOCH: Final = "wrong epoch"

STREAM_BUFFER_BYTES: Final = 1024 * 1024  # sequential scans: few, large reads


@dataclass(frozen=True)
class LogHeader:
    """What a log's header says: its format, disk, epoch and first sequence number."""

    format_version: int
    disk_id: str
    epoch: int
    first_sequence: int


@dataclass(frozen=True)
class LogRecord:
    """One tracked write: ``data`` was written at byte ``offset`` of the disk."""

    sequence: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class TailReport:
    """What reopening a log cut from its end, and why (one of the ``REASON_*``)."""

    bytes_dropped: int
    reason: str


@dataclass(frozen=True)
class SealedLog:
    """A log closed for shipping: where it is and what it holds.

    ``last_sequence == first_sequence - 1`` when it holds no record.
    """

    path: Path
    header: LogHeader
    record_count: int
    first_sequence: int
    last_sequence: int
    payload_bytes: int
    file_bytes: int


def validate_identity(disk_id: object, epoch: object) -> tuple[str, int]:
    """Validate a caller's expected disk id and epoch (typed errors)."""
    name = validate_name(disk_id, argument="disk_id")
    value = require_int(epoch, argument="epoch")
    if not 0 <= value <= EPOCH_MAX:
        msg = f"epoch={value!r} must be between 0 and 2**64 - 1"
        raise InvalidConfiguration(msg)
    return name, value


def raise_corrupt(path: Path, position: int, reason: str, detail: str) -> NoReturn:
    """Raise :class:`CorruptRecord` naming the log, the byte, the reason and detail."""
    msg = (
        f"change log {str(path)!r} is damaged at byte {position}: {reason} "
        f"({detail}); nothing from it may be applied: resynchronise the disk"
    )
    raise CorruptRecord(msg)


def read_header(stream: BinaryIO, path: Path) -> tuple[LogHeader, int]:
    """Parse and check the header at the stream's start; return it and its size."""
    fixed = stream.read(HEADER_FIXED.size)
    if len(fixed) < HEADER_FIXED.size:
        raise_corrupt(path, 0, REASON_TRUNCATED_HEADER, f"{len(fixed)} bytes")
    magic, version, id_bytes, epoch, first_sequence = HEADER_FIXED.unpack(fixed)
    if magic != MAGIC:
        raise_corrupt(path, 0, REASON_BAD_MAGIC, f"found {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        detail = f"found {version}, this reader knows {FORMAT_VERSION}"
        raise_corrupt(path, 8, REASON_UNSUPPORTED_VERSION, detail)
    if not 1 <= id_bytes <= DISK_ID_BYTES_MAX:
        detail = f"length {id_bytes}, allowed 1 to {DISK_ID_BYTES_MAX}"
        raise_corrupt(path, 10, REASON_BAD_DISK_ID, detail)
    rest = stream.read(id_bytes + HEADER_CRC.size)
    header_bytes = HEADER_FIXED.size + id_bytes + HEADER_CRC.size
    if len(rest) < id_bytes + HEADER_CRC.size:
        detail = f"{HEADER_FIXED.size + len(rest)} of {header_bytes} bytes"
        raise_corrupt(path, 0, REASON_TRUNCATED_HEADER, detail)
    raw_id = rest[:id_bytes]
    (stored_crc,) = HEADER_CRC.unpack_from(rest, id_bytes)
    if google_crc32c.value(fixed + raw_id) != stored_crc:
        raise_corrupt(path, 0, REASON_HEADER_CHECKSUM, f"stored {stored_crc:#010x}")
    try:
        disk_id = validate_name(raw_id.decode("ascii"), argument="disk_id")
    except (UnicodeDecodeError, InvalidName):
        raise_corrupt(path, HEADER_FIXED.size, REASON_BAD_DISK_ID, f"found {raw_id!r}")
    return LogHeader(version, disk_id, epoch, first_sequence), header_bytes


def check_identity(header: LogHeader, path: Path, disk_id: str, epoch: int) -> None:
    """Raise :class:`LogMismatch` unless the header is for this disk and epoch."""
    if header.disk_id != disk_id:
        msg = (
            f"change log {str(path)!r}: {REASON_WRONG_DISK}: it belongs to disk "
            f"{header.disk_id!r}, expected {disk_id!r}; remove the stray log"
        )
        raise LogMismatch(msg)
    if header.epoch != epoch:
        msg = (
            f"change log {str(path)!r}: {REASON_WRONG_EPOCH}: it was written in epoch "
            f"{header.epoch}, expected {epoch}; a stale log from before a failover or "
            "a disable: resynchronise"
        )
        raise LogMismatch(msg)


@dataclass(frozen=True)
class Frame:
    """One valid record as the scanner found it (``payload`` only when kept)."""

    sequence: int
    offset: int
    length: int
    payload: bytes | None
    end: int


class LogDamage(Exception):
    """Raised by :func:`scan_records` at the first invalid record; callers turn it into
    a :class:`TailReport` (reopen) or a :class:`CorruptRecord` (sealed readers)."""

    def __init__(self, reason: str, position: int, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position
        self.detail = detail


def scan_records(
    stream: BinaryIO,
    *,
    start: int,
    file_bytes: int,
    first_sequence: int,
    keep_payloads: bool,
) -> Iterator[Frame]:
    """Yield every whole, valid record from ``start``; raise ``LogDamage`` at the first
    that is not. Lengths are checked against the limit and the bytes left *before*
    anything is read, so a damaged length cannot cause a large allocation."""
    position = start
    expected = first_sequence
    while position < file_bytes:
        left = file_bytes - position
        raw = stream.read(RECORD_HEADER.size)
        if len(raw) < RECORD_HEADER.size:
            raise LogDamage(REASON_TORN_RECORD_HEADER, position, f"{left} bytes left")
        sequence, offset, length, stored_crc = RECORD_HEADER.unpack(raw)
        if length < RECORD_PAYLOAD_BYTES_MIN:
            raise LogDamage(REASON_ZERO_LENGTH, position, f"sequence {sequence}")
        if length > RECORD_PAYLOAD_BYTES_MAX:
            detail = f"length {length} > {RECORD_PAYLOAD_BYTES_MAX}"
            raise LogDamage(REASON_LENGTH_TOO_LARGE, position, detail)
        if length > left - RECORD_HEADER.size:
            detail = f"length {length}, {left - RECORD_HEADER.size} bytes left"
            raise LogDamage(REASON_TORN_PAYLOAD, position, detail)
        crc = google_crc32c.value(raw[: RECORD_COVERED.size])
        payload: bytes | None = None
        if keep_payloads:
            payload = stream.read(length)
            got = len(payload)
            crc = google_crc32c.extend(crc, payload)
        else:
            got = 0
            while got < length:
                chunk = stream.read(min(SCAN_CHUNK_BYTES, length - got))
                if not chunk:
                    break
                got += len(chunk)
                crc = google_crc32c.extend(crc, chunk)
        if got < length:  # the file shrank while we read it
            raise LogDamage(REASON_TORN_PAYLOAD, position, f"read {got} of {length}")
        if crc != stored_crc:
            detail = f"sequence {sequence}, stored {stored_crc:#010x}, got {crc:#010x}"
            raise LogDamage(REASON_RECORD_CHECKSUM, position, detail)
        if sequence != expected:
            detail = f"expected sequence {expected}, found {sequence}"
            raise LogDamage(REASON_SEQUENCE_GAP, position, detail)
        position += RECORD_HEADER.size + length
        expected += 1
        yield Frame(sequence, offset, length, payload, position)


def read_sealed_log(
    path: Path,
    *,
    disk_id: str,
    epoch: int,
    expected_last_sequence: int | None = None,
) -> Iterator[LogRecord]:
    """Yield the records of a sealed log, in order, strictly.

    Any damage, torn tail or sequence gap raises :class:`CorruptRecord`, another disk
    or epoch :class:`LogMismatch`; a damaged record is never yielded. Records are
    yielded as they are checked: call :func:`verify_sealed_log` first when nothing may
    be applied from a log that turns out damaged. ``expected_last_sequence`` (from the
    shipped :class:`SealedLog`) also catches a log cut at a record boundary.
    """
    path = Path(path)
    disk_id, epoch = validate_identity(disk_id, epoch)
    with open(path, "rb", buffering=STREAM_BUFFER_BYTES) as stream:
        file_bytes = os.fstat(stream.fileno()).st_size
        header, start = read_header(stream, path)
        check_identity(header, path, disk_id, epoch)
        last_sequence = header.first_sequence - 1
        try:
            for frame in scan_records(
                stream,
                start=start,
                file_bytes=file_bytes,
                first_sequence=header.first_sequence,
                keep_payloads=True,
            ):
                assert frame.payload is not None
                last_sequence = frame.sequence
                yield LogRecord(frame.sequence, frame.offset, frame.payload)
        except LogDamage as damage:
            raise_corrupt(path, damage.position, damage.reason, damage.detail)
        _check_last_sequence(path, file_bytes, last_sequence, expected_last_sequence)


def verify_sealed_log(
    path: Path,
    *,
    disk_id: str,
    epoch: int,
    disk_size_bytes: int | None = None,
    expected_last_sequence: int | None = None,
) -> SealedLog:
    """Check a sealed log end to end without keeping payloads; describe it.

    Raises like :func:`read_sealed_log`, and also for a record that ends past
    ``disk_size_bytes`` when given. Memory use is one scan chunk, whatever the size.
    """
    path = Path(path)
    disk_id, epoch = validate_identity(disk_id, epoch)
    with open(path, "rb", buffering=STREAM_BUFFER_BYTES) as stream:
        file_bytes = os.fstat(stream.fileno()).st_size
        header, start = read_header(stream, path)
        check_identity(header, path, disk_id, epoch)
        record_count = payload_bytes = 0
        position = start
        try:
            for frame in scan_records(
                stream,
                start=start,
                file_bytes=file_bytes,
                first_sequence=header.first_sequence,
                keep_payloads=False,
            ):
                if disk_size_bytes is not None and (
                    frame.offset + frame.length > disk_size_bytes
                ):
                    detail = (
                        f"sequence {frame.sequence} writes [{frame.offset}, "
                        f"{frame.offset + frame.length}), disk has {disk_size_bytes}"
                    )
                    raise_corrupt(path, position, REASON_PAST_DISK_END, detail)
                record_count += 1
                payload_bytes += frame.length
                position = frame.end
        except LogDamage as damage:
            raise_corrupt(path, damage.position, damage.reason, damage.detail)
    last_sequence = header.first_sequence + record_count - 1
    _check_last_sequence(path, file_bytes, last_sequence, expected_last_sequence)
    return SealedLog(
        path=path,
        header=header,
        record_count=record_count,
        first_sequence=header.first_sequence,
        last_sequence=last_sequence,
        payload_bytes=payload_bytes,
        file_bytes=file_bytes,
    )


def _check_last_sequence(
    path: Path, file_bytes: int, last_sequence: int, expected: int | None
) -> None:
    if expected is not None and last_sequence != expected:
        detail = f"last sequence {last_sequence}, expected {expected}"
        raise_corrupt(path, file_bytes, REASON_ENDS_EARLY, detail)
