"""What a change log touched and what it holds, without applying it.

What it owns: reading one ``<disk>.hrl`` file (sealed, or the current one of a disk,
perhaps with a torn tail) for two questions a failover asks of logs that were never
shipped: **which blocks did they touch** (:func:`blocks_touched_by_log`, a
:class:`~engine.storage.block_set.BlockSet`: the blocks a targeted resynchronisation
must compare) and **how much do they hold** (:func:`summarize_log`, a
:class:`LogSummary`: records, payload bytes, first and last sequence: what
reconciliation counts as the exact loss). :func:`read_log_extents` answers both in
one pass. Payloads are checksummed in chunks and never kept, so memory is one scan
chunk whatever the log's size.

It uses the reader's parser and scanner (``engine/log/reader.py``), so "a valid record"
has one definition. Where the readers differ is only the end of the file:

- a damaged *header* is :class:`CorruptRecord` (it is not a tail), and, when the caller
  names the disk or the epoch it expects, another one is :class:`LogMismatch`;
- a **torn tail** is what a crash leaves at the end of the current log, and is
  reported (:attr:`LogSummary.torn_tail`, bytes and reason), not raised: a record
  header or payload that runs past the end of the file, a zero-filled tail (only
  zero bytes from the damage to the end), or a checksum mismatch in a record that
  ends exactly at the end of the file (the last write, half landed). The torn record
  is not counted: the disk is written only after its record (``tracked_disk.py``), so
  in durable mode a torn record's write never reached the disk. A caller reading a
  ``sealed`` log says so: it was fsynced whole before its rename, so a tear there is
  damage like any other;
- any other damage (a checksum mismatch with bytes after the record, a sequence gap,
  a length past the limit, a record past the disk's end) is damage *before* the tail:
  :class:`CorruptRecord` naming the file, the byte and the reason. Nothing partial is
  returned: a set missing blocks would be worse than none.

Whether the logs hold every write at all is not a question a log can answer (a host
crash without durable writes may drop a record whole); ``SourceDisks.log_state`` says
whether they can be trusted, and a caller that cannot trust them compares every block.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from engine.log.format import RECORD_HEADER
from engine.log.reader import (
    REASON_PAST_DISK_END,
    REASON_RECORD_CHECKSUM,
    REASON_TORN_PAYLOAD,
    REASON_TORN_RECORD_HEADER,
    REASON_ZERO_LENGTH,
    STREAM_BUFFER_BYTES,
    LogDamage,
    LogHeader,
    TailReport,
    check_identity,
    raise_corrupt,
    read_header,
    scan_records,
    validate_identity,
)
from engine.storage.block_set import BlockSet
from engine.storage.disk import require_int

ZERO_CHECK_CHUNK_BYTES: Final = 1024 * 1024
"""A zero-filled tail is checked this many bytes at a time."""

TORN_AT_THE_END: Final = frozenset({REASON_TORN_RECORD_HEADER, REASON_TORN_PAYLOAD})
"""Failures that, by their nature, happen only at the end of the file."""


@dataclass(frozen=True, slots=True)
class LogSummary:
    """What one change log holds: its whole records, and a torn tail if it had one.

    ``last_sequence == first_sequence - 1`` when it holds no record.
    """

    path: Path
    header: LogHeader
    record_count: int
    payload_bytes: int
    first_sequence: int
    last_sequence: int
    torn_tail: TailReport | None


def blocks_touched_by_log(
    path: Path, block_bytes: int, disk_size: int, *, sealed: bool = False
) -> BlockSet:
    """The blocks of a disk of ``disk_size`` bytes that the log's records wrote.

    ``sealed``: the log was sealed (fsynced whole before its rename), so a torn tail
    is damage too (:class:`CorruptRecord`), as for ``read_sealed_log``.
    """
    blocks, _ = read_log_extents(path, block_bytes, disk_size, sealed=sealed)
    return blocks


def summarize_log(
    path: Path,
    *,
    disk_size: int | None = None,
    disk_id: str | None = None,
    epoch: int | None = None,
    sealed: bool = False,
) -> LogSummary:
    """Count the log's whole records and payload bytes (see the module's docstring).

    ``disk_size``, when given, also refuses a record past the disk's end; the other
    keywords are those of :func:`read_log_extents`.
    """
    if disk_size is not None:
        disk_size = require_int(disk_size, argument="disk_size")
    expected = (disk_id, epoch)
    return _scan(Path(path), disk_size, None, expected=expected, sealed=sealed)


def read_log_extents(
    path: Path,
    block_bytes: int,
    disk_size: int,
    *,
    disk_id: str | None = None,
    epoch: int | None = None,
    sealed: bool = False,
) -> tuple[BlockSet, LogSummary]:
    """The blocks the log touched and its summary, in one pass over the file.

    ``disk_id`` and ``epoch``, when given, are what the header must say
    (:class:`LogMismatch` otherwise); ``sealed`` refuses a torn tail too.
    """
    blocks = BlockSet(disk_size, block_bytes)
    summary = _scan(
        Path(path),
        disk_size,
        blocks.add_range,
        expected=(disk_id, epoch),
        sealed=sealed,
    )
    return blocks, summary


def _scan(
    path: Path,
    disk_size: int | None,
    visit: Callable[[int, int], None] | None,
    *,
    expected: tuple[str | None, int | None],
    sealed: bool,
) -> LogSummary:
    """Scan every whole record; call ``visit(offset, length)`` for each."""
    with open(path, "rb", buffering=STREAM_BUFFER_BYTES) as stream:
        file_bytes = os.fstat(stream.fileno()).st_size
        header, end = read_header(stream, path)
        _check_expected(header, path, *expected)
        record_count = payload_bytes = 0
        torn_tail = None
        try:
            for frame in scan_records(
                stream,
                start=end,
                file_bytes=file_bytes,
                first_sequence=header.first_sequence,
                keep_payloads=False,
            ):
                if disk_size is not None and frame.offset + frame.length > disk_size:
                    detail = f"sequence {frame.sequence} writes [{frame.offset}, "
                    detail += f"{frame.offset + frame.length}), disk has {disk_size}"
                    raise_corrupt(path, end, REASON_PAST_DISK_END, detail)
                if visit is not None:
                    visit(frame.offset, frame.length)
                record_count += 1
                payload_bytes += frame.length
                end = frame.end
        except LogDamage as damage:
            if sealed or not _is_torn_tail(stream, damage, file_bytes):
                raise_corrupt(path, damage.position, damage.reason, damage.detail)
            torn_tail = TailReport(file_bytes - end, damage.reason)
    return LogSummary(
        path=path,
        header=header,
        record_count=record_count,
        payload_bytes=payload_bytes,
        first_sequence=header.first_sequence,
        last_sequence=header.first_sequence + record_count - 1,
        torn_tail=torn_tail,
    )


def _check_expected(
    header: LogHeader, path: Path, disk_id: str | None, epoch: int | None
) -> None:
    """Raise :class:`LogMismatch` unless the header says what the caller expects."""
    if disk_id is None and epoch is None:
        return
    expected_disk, expected_epoch = validate_identity(
        header.disk_id if disk_id is None else disk_id,
        header.epoch if epoch is None else epoch,
    )
    check_identity(header, path, expected_disk, expected_epoch)


def _is_torn_tail(stream: BinaryIO, damage: LogDamage, file_bytes: int) -> bool:
    """Whether the first damage is a torn tail rather than damage before it."""
    if damage.reason in TORN_AT_THE_END:
        return True
    if damage.reason == REASON_ZERO_LENGTH:
        return _only_zeros(stream, damage.position, file_bytes)
    if damage.reason == REASON_RECORD_CHECKSUM:
        stream.seek(damage.position)
        raw = stream.read(RECORD_HEADER.size)
        if len(raw) < RECORD_HEADER.size:  # the file shrank since: torn, at the end
            return True
        length: int = RECORD_HEADER.unpack(raw)[2]
        return damage.position + RECORD_HEADER.size + length == file_bytes
    return False


def _only_zeros(stream: BinaryIO, start: int, end: int) -> bool:
    stream.seek(start)
    for _ in range(start, end, ZERO_CHECK_CHUNK_BYTES):
        chunk = stream.read(ZERO_CHECK_CHUNK_BYTES)
        if chunk.count(0) != len(chunk):
            return False
    return True
