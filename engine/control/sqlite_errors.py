"""SQLite's errors as the control store reports them: full, busy, or damaged.

SQLite says "full" (``SQLITE_FULL``) when a write finds no room, but reports a failed
write of its WAL index (the ``-shm`` file) as a plain I/O error; on a site whose
storage has run out that is a full disk too, not a damaged file, and telling the
operator to restore a sound file from a backup would throw away replication state.
Busy and locked mean another connection held the file too long. Anything else means
the file is not what SQLite wrote: :class:`DamagedState` naming it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final

from engine.control.schema import damaged
from engine.errors import ReplicationError, StorageFull

BUSY_TIMEOUT_SECONDS: Final = 5.0
"""How long a writer waits for another connection's lock (a status reader, a second
engine process by mistake) before failing: long enough for any of our transactions."""


def sqlite_code(error: sqlite3.DatabaseError) -> int:
    """SQLite's primary result code of ``error`` (0 when it carries none)."""
    return (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF


STORAGE_LOW_BYTES: Final = 256 * 1024
"""Below this much free space, SQLite's "disk I/O error" means a full disk: SQLite
reports a failed write of its WAL index (``-shm``) as an I/O error, not as full."""


def storage_exhausted(error: sqlite3.DatabaseError, path: Path) -> bool:
    """Whether an SQLite I/O error is the storage under ``path`` running out."""
    if sqlite_code(error) != sqlite3.SQLITE_IOERR:
        return False
    try:
        status = os.statvfs(path.parent)
    except OSError:
        return False
    free = status.f_bavail * status.f_frsize
    return free < STORAGE_LOW_BYTES or (status.f_files > 0 and status.f_favail == 0)


def transient(error: sqlite3.DatabaseError) -> bool:
    """Whether ``error`` is about the moment (full, busy), not about the file."""
    codes = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return sqlite_code(error) in codes


def translate(error: sqlite3.DatabaseError, path: Path, site_name: str) -> Exception:
    """Our error for an SQLite error: full, busy, or else the file is damaged."""
    if sqlite_code(error) == sqlite3.SQLITE_FULL or storage_exhausted(error, path):
        msg = f"site {site_name!r}: its control state cannot be written, the storage "
        msg += f"is full ({error}); nothing changed: free space and retry"
        return StorageFull(msg)
    if transient(error):
        msg = f"control file {str(path)!r} stayed locked by another connection for "
        msg += f"more than {BUSY_TIMEOUT_SECONDS:g} s ({error}); nothing changed: "
        msg += "close the other program (an sqlite3 shell?) and retry"
        return ReplicationError(msg)
    return damaged(path, f"SQLite reports {error}")
