"""The one-owner lock of a site: an operating-system lock on ``<root>/site.lock``.

Two engines driving one site would each believe their own control state and disks, and
interleave cycles, cuts and operations on the same files. A site therefore has one owner
at a time: :meth:`SiteLock.acquire` takes ``flock(LOCK_EX | LOCK_NB)`` on the lock file
and keeps the descriptor open for as long as the owner lives.

**Why flock**: the lock belongs to the open file description, not to the process, so

- a second :class:`SiteLock` in the *same* process (a second ``open()`` of the file)
  conflicts with the first, as another process does;
- the kernel releases it when the holder closes it (:meth:`SiteLock.release`) or
  dies, however it dies (``SIGKILL``, a crash): there is no stale lock to clean up,
  and no pid to trust. (A ``fork()``-ed child shares the description and so the lock
  until it exits; the descriptor is ``O_CLOEXEC``, so an ``exec``-ed program does not.)

While holding the lock the owner writes a one-line JSON description of itself into the
file (pid, host, program, since when), so that a refused opener can name the holder in
its :class:`~engine.errors.SiteLocked` message. The description is for people; the lock
is the kernel's. It is not fsynced: it matters only while its writer is alive, and the
page cache shows it to other processes. A refused opener may read the description of
a holder that has not written it yet, or of a previous, dead holder; the message then
says so.

The file is written through ``engine.storage.files`` (open, truncate, write); taking and
dropping the lock changes no file and goes to ``fcntl`` directly.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from engine.clock import Clock
from engine.errors import InvalidConfiguration, SiteLocked
from engine.storage import files
from engine.storage.disk import storage_error

LOCK_FILE: Final = "site.lock"
"""The lock file's name in a site's storage root."""

REPLICA_LOCK_FILE: Final = "replica.lock"
"""The lock of the replica stores under a root: held by whichever process applies to
them, an engine's in-process replica or a replica server (``engine.transport.http``),
so that neither recovers (finishes or undoes) an apply the other is making."""

REPLICA_LOCK_HOLDER: Final = "process (an engine or a replica server)"
"""What may hold :data:`REPLICA_LOCK_FILE`, for the refusal's "stop that ... first"."""

DESCRIPTION_BYTES_MAX: Final = 4096
"""How much of a holder's description a refused opener reads (it is one short line)."""


class SiteLock:
    """An exclusive lock on one site's storage root, held until :meth:`release`."""

    def __init__(self, path: Path, descriptor: int) -> None:
        """Use :meth:`acquire`; this only binds a descriptor that holds the lock."""
        self.path = path
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(
        cls,
        site_name: str,
        root: Path,
        clock: Clock,
        *,
        file_name: str = LOCK_FILE,
        holder: str = "engine",
        kind: str = "site",
    ) -> SiteLock:
        """Lock the site ``site_name`` at ``root`` (an existing directory) or refuse.

        Raises :class:`SiteLocked` naming the holder when another open file (in this
        process or another) holds the lock. Nothing else in ``root`` is read or
        created. ``file_name`` names another role's lock in the same root (a replica
        server's storage location, ``engine.transport.http.server``), ``holder`` what
        holds it in the refusal ("stop that engine first"), ``kind`` what is locked
        ("site"; "job store" for an orchestrator's jobs, ``engine.orchestration.jobs``).
        """
        path = Path(root) / file_name
        fs = files.current()
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            descriptor = fs.open(path, flags, 0o644)
        except OSError as error:
            full = storage_error(error, f"creating the lock file {str(path)!r}")
            if full is not error:
                raise full from error
            msg = f"{kind} {site_name!r}: its lock file {str(path)!r} cannot be opened "
            msg += f"({error}); it must be a regular file (not a symlink) the engine "
            msg += "may write"
            raise InvalidConfiguration(msg) from error
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                where = str(Path(root).resolve())
                msg = f"{kind} {site_name!r} at {where!r} is in use by "
                msg += _holder(descriptor)
                if file_name != LOCK_FILE:
                    msg += f" (its lock {str(path)!r})"
                msg += f"; stop that {holder} first, or open another {kind}"
                raise SiteLocked(msg) from None
            description = _describe(clock).encode()
            try:
                fs.ftruncate(descriptor, 0)
                fs.pwrite(descriptor, description, 0)
            except OSError as error:
                full = storage_error(error, f"writing the lock file {str(path)!r}")
                if full is not error:
                    raise full from error
                raise
        except BaseException:
            os.close(descriptor)
            raise
        return cls(path, descriptor)

    def release(self) -> None:
        """Drop the lock (idempotent); the next opener may take the site."""
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)


def _describe(clock: Clock) -> str:
    """The holder's description: who, where, running what, since when."""
    since = datetime.fromtimestamp(clock.now(), UTC).isoformat(timespec="seconds")
    # The interpreter, the script and its command word when it has one ("hvdr
    # run"), so that a refused opener can tell which command to stop; never the
    # other arguments (they may name files or hold secrets).
    words = [Path(sys.executable).name, *sys.argv[:1]]
    if len(sys.argv) > 1 and re.fullmatch(r"[a-z][a-z-]{0,23}", sys.argv[1]):
        words.append(sys.argv[1])
    program = " ".join(words)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "program": program,
        "since": since,
    }
    return json.dumps(record, sort_keys=True) + "\n"


def _holder(descriptor: int) -> str:
    """The holder as its description records it (or why it cannot be told)."""
    content = os.pread(descriptor, DESCRIPTION_BYTES_MAX, 0)
    try:
        record = json.loads(content)
        pid, host = record["pid"], record["host"]
        program, since = record["program"], record["since"]
    except (ValueError, TypeError, KeyError):
        found = content[:80]
        return f"a holder that has not described itself (the lock file holds {found!r})"
    return f"pid {pid} on host {host} ({program}) since {since}"
