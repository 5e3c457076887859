"""Starting and rotating change-log files: encoding, the fresh log, the seal's renames.

What a seal does on disk, apart from the writer's bookkeeping (``writer.py``):

1. a **fresh log** (header only) is written beside the current one under
   ``<log>.new`` and fsynced (:func:`write_fresh_log`): the one step that needs
   space, so a full disk refuses the seal before anything moved;
2. the current log is renamed to its sealed path, then the fresh log to the
   original path (:func:`rotate`); if the second rename fails the first is undone;
3. after a crash between the two renames, reopening finds only ``<log>.new`` and
   moves it into place; with both present the seal never happened and the fresh
   log is debris (:func:`finish_interrupted_seal`).

A crash therefore leaves either no new log or a whole one, never a torn header.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import google_crc32c

from engine.errors import InvalidConfiguration
from engine.log.format import HEADER_CRC, HEADER_FIXED, MAGIC, RECORD_COVERED
from engine.log.reader import LogHeader
from engine.storage import files
from engine.storage.disk import storage_error
from engine.storage.files import fsync_directory


def encode_header(header: LogHeader) -> bytes:
    """The header's bytes, CRC included (for the writer and for tests)."""
    raw_id = header.disk_id.encode("ascii")
    fixed = HEADER_FIXED.pack(
        MAGIC, header.format_version, len(raw_id), header.epoch, header.first_sequence
    )
    covered = fixed + raw_id
    return covered + HEADER_CRC.pack(google_crc32c.value(covered))


def encode_record(sequence: int, offset: int, data: bytes) -> bytes:
    """One record's bytes, header and payload (for the writer's fallback and tests)."""
    covered = RECORD_COVERED.pack(sequence, offset, len(data))
    crc = google_crc32c.extend(google_crc32c.value(covered), data)
    return covered + HEADER_CRC.pack(crc) + data


@dataclass(slots=True)
class PreparedSeal:
    """A seal whose fresh log is written aside, waiting for its renames."""

    sealed_path: Path
    header: LogHeader
    fresh_descriptor: int  # -1 once the log owns it or the seal was aborted
    fresh_end: int
    defer_sync: bool


@dataclass(slots=True)
class PreparedLog:
    """A new log written aside (``<log>.new``, durable), waiting to be renamed in."""

    path: Path
    header: LogHeader
    descriptor: int  # -1 once a ChangeLog owns it or it was dropped
    end: int

    def drop(self) -> None:
        """Give the new log up: close it and delete it."""
        if self.descriptor >= 0:
            os.close(self.descriptor)
            self.descriptor = -1
        files.current().unlink(fresh_path(self.path), missing_ok=True)


def fresh_path(path: Path) -> Path:
    """Where a fresh log for ``path`` is written before it is renamed into place."""
    return path.with_name(path.name + ".new")


def rotate(path: Path, sealed_path: Path) -> None:
    """Rename the log at ``path`` to ``sealed_path`` and the fresh log into its place.

    On failure the log at ``path`` stays the current one, as if nothing happened.
    """
    fs = files.current()
    try:
        fs.rename(path, sealed_path)
    except OSError as error:
        if error.errno == errno.EXDEV:
            msg = (
                f"sealed_path={str(sealed_path)!r} must be on the same filesystem as "
                f"the log {str(path)!r} (a seal is a rename)"
            )
            raise InvalidConfiguration(msg) from error
        raise
    try:
        fs.rename(fresh_path(path), path)
    except BaseException:
        fs.rename(sealed_path, path)  # undo: the current log stays current
        raise


def finish_interrupted_seal(path: Path) -> None:
    """Complete or undo what a crash left of :func:`rotate` (see ChangeLog.open)."""
    fresh = fresh_path(path)
    if not fresh.exists():
        return
    if path.exists():
        files.current().unlink(
            fresh
        )  # crashed before the first rename: the seal never happened
    else:
        files.current().rename(
            fresh, path
        )  # crashed between the renames: the fresh log is whole
    fsync_directory(path.parent)


def write_fresh_log(
    path: Path, header: LogHeader, *, sync: bool = True
) -> tuple[int, int]:
    """Write a header-only log at a temporary name beside ``path``, durably.

    Returns ``(descriptor, size)``; the caller renames it into place. A crash leaves
    either no new log or a whole one, never a torn header.
    """
    temporary = fresh_path(path)
    raw = encode_header(header)
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    fs = files.current()
    descriptor = fs.open(temporary, flags, 0o600)
    try:
        written = 0
        while written < len(raw):  # a short write means the storage is filling up
            written += fs.pwrite(descriptor, raw[written:], written)
        if sync:
            fs.fsync(descriptor)
    except OSError as error:
        os.close(descriptor)
        fs.unlink(temporary, missing_ok=True)
        raise storage_error(error, f"creating change log {str(path)!r}") from error
    return descriptor, len(raw)
