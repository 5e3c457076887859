"""Resumable uploads at a replica server: a file arrives in chunks, each made durable.

An initial copy's disk image (gigabytes) and a cycle's sealed logs reach the server in
chunks of at most the server's request limit. A connection cut mid-way must not send
the client back to byte 0, and a chunk that was acknowledged must survive a power cut
of the server. So each upload keeps two files under ``<location>/uploads/<vm>/``::

    <key>.part   the bytes received so far
    <key>.ack    the acknowledged length: 8 bytes, little-endian, plus their CRC32C

A chunk at ``offset`` is accepted only when ``offset`` is the acknowledged length (the
client asks for it after a cut, :meth:`Uploads.received`). The part file is first
truncated to that length (bytes of a chunk that was never acknowledged go), the chunk
is written and checked against the CRC32C the client sent, the part file is
``fdatasync``-ed, and only then is the new length written to ``<key>.ack`` atomically
(temporary file, fsync, rename, directory fsync). The acknowledgement is the commit
point: after a power cut the part file may hold more than it says, never less.

A hole (a run of zeros the client did not read, ``SEEK_HOLE``) travels as its length
only and is made by extending the part file, so a sparse image stays sparse.

A finished upload is handed to the replica store's delivery (:meth:`Uploads.finish`);
keys are validated names, so a hostile disk name cannot leave the VM's folder.

**One request at a time per VM's uploads.** The server runs requests in threads, and
two chunks of one upload (a client's retry racing its own first attempt, or two
clients) would otherwise truncate and write the same part file and its
acknowledgement's temporary file at once; a chunk racing the replica's re-creation
would survive into the new replica. Every step on a VM's uploads holds that VM's
lock (:meth:`Uploads.holding`): the second chunk then finds the first acknowledged
and is refused with the offset to resume from.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import google_crc32c

from engine.errors import InvalidConfiguration, StorageFull
from engine.names import safe_child, validate_disk_name, validate_vm_name
from engine.storage import durable_file
from engine.storage import files as filesystem
from engine.storage.durable_file import is_storage_full

UPLOADS: Final = "uploads"
PART_SUFFIX: Final = ".part"
ACK_SUFFIX: Final = ".ack"
_ACK: Final = struct.Struct("<QI")


class OffsetMismatch(InvalidConfiguration):
    """A chunk did not start where the upload stands; ``received`` says where."""

    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received


def initial_key(disk: str) -> str:
    """The upload key of an initial copy's image of ``disk``."""
    return f"initial.{validate_disk_name(disk)}"


def log_key(cycle_id: object, disk: str) -> str:
    """The upload key of cycle ``cycle_id``'s log of ``disk``."""
    if isinstance(cycle_id, bool) or not isinstance(cycle_id, int) or cycle_id < 0:
        msg = f"cycle_id={cycle_id!r} must be an int >= 0"
        raise InvalidConfiguration(msg)
    return f"cycle-{cycle_id}.{validate_disk_name(disk)}"


LOG_SLACK_BYTES: Final = 1024 * 1024
"""Framing and header room a cycle's log may take beyond twice its disk."""


def upload_disk(key: str) -> str:
    """The disk an upload key (:func:`initial_key`, :func:`log_key`) is for."""
    return key.partition(".")[2]


def upload_bytes_max(key: str, disk_bytes: int) -> int:
    """The most an upload for a disk of ``disk_bytes`` may hold, so that a chunk (a
    hole is a few bytes of request) can never make a file no disk needs: an initial
    copy's image is the disk; a cycle's log is at most twice it (a log past half its
    disk is never shipped, the cycle resynchronises; a resynchronisation's log holds
    each block once, each record's framing small beside a block) plus header room."""
    if key.startswith("initial."):
        return disk_bytes
    return 2 * disk_bytes + LOG_SLACK_BYTES


class Uploads:
    """The uploads of one storage location."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        self._guard = threading.Lock()
        # Each VM's lock and how many threads hold or await it: dropped when none
        # does, so a server that runs for months keeps no lock per VM it once had.
        self._locks: dict[str, tuple[threading.RLock, int]] = {}

    @contextmanager
    def holding(self, vm_name: str) -> Iterator[None]:
        """Hold the uploads of ``vm_name``: no other thread writes, finishes or
        discards one of them until the block ends (re-entrant). One lock per VM,
        not per upload, so that forgetting all of a VM's uploads (a new replica, a
        promote) cannot interleave with a chunk of one of them."""
        with self._guard:
            lock, users = self._locks.get(vm_name, (threading.RLock(), 0))
            self._locks[vm_name] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[vm_name]
                if users == 1:
                    del self._locks[vm_name]
                else:
                    self._locks[vm_name] = (lock, users - 1)

    def held(self) -> int:
        """How many VMs' uploads some thread holds or awaits now (tests)."""
        with self._guard:
            return len(self._locks)

    def received(self, vm_name: str, key: str) -> int:
        """The acknowledged length of upload ``key`` (0: none yet)."""
        with self.holding(vm_name):
            path = self._ack_path(vm_name, key)
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                return 0
            if len(raw) != _ACK.size:
                return 0  # never written whole (the rename is atomic): start again
            length, crc = _ACK.unpack(raw)
            if crc != google_crc32c.value(raw[:8]):
                return 0
            return int(length)

    def write(
        self,
        vm_name: str,
        key: str,
        offset: int,
        data: bytes,
        *,
        crc32c: int | None,
        hole: int = 0,
    ) -> int:
        """Append ``data`` (or a hole of ``hole`` zero bytes) at ``offset``; return
        the new acknowledged length. Refused unless ``offset`` is the acknowledged
        length."""
        with self.holding(vm_name):
            received = self.received(vm_name, key)
            if offset != received:
                msg = f"upload {key!r} of VM {vm_name!r} stands at byte {received}, "
                msg += f"not {offset}: resume from byte {received}"
                raise OffsetMismatch(msg, received)
            if data and hole:
                msg = "a chunk carries bytes or a hole, not both"
                raise InvalidConfiguration(msg)
            if crc32c is not None and google_crc32c.value(data) != crc32c:
                msg = (
                    f"chunk at byte {offset} of upload {key!r} of VM {vm_name!r} does "
                )
                msg += "not match its CRC32C (damaged in transit): send it again"
                raise InvalidConfiguration(msg)
            folder = self._folder(vm_name)
            end = offset + (len(data) or hole)
            try:
                filesystem.make_directory_durably(folder)
                self._write_part(folder / f"{key}{PART_SUFFIX}", offset, data, end)
                self._acknowledge(vm_name, key, end)
            except OSError as error:
                if is_storage_full(error):
                    msg = "the replica server's storage is full receiving upload "
                    msg += f"{key!r} of VM {vm_name!r} (byte {offset} of it); "
                    msg += f"{received} bytes stay acknowledged: free space and the "
                    msg += "upload resumes there"
                    raise StorageFull(msg) from error
                raise
            return end

    def finish(self, vm_name: str, key: str, size: int) -> Path:
        """The complete upload's part file, checked to hold ``size`` bytes (hold
        the upload, :meth:`holding`, until it is handed over)."""
        with self.holding(vm_name):
            received = self.received(vm_name, key)
            if received != size:
                msg = f"upload {key!r} of VM {vm_name!r} holds {received} acknowledged "
                msg += f"bytes, not {size}: send the rest from byte {received}"
                raise OffsetMismatch(msg, received)
            path = self._folder(vm_name) / f"{key}{PART_SUFFIX}"
            if not path.is_file() or path.stat().st_size < size:
                msg = f"upload {key!r} of VM {vm_name!r} is missing its data "
                msg += f"({str(path)!r}): send it again from byte 0"
                self.discard(vm_name, key)
                raise OffsetMismatch(msg, 0)
            descriptor = filesystem.current().open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                filesystem.current().ftruncate(descriptor, size)
            finally:
                os.close(descriptor)
            return path

    def discard(self, vm_name: str, key: str) -> None:
        """Forget upload ``key`` (acknowledgement first, so it reads as empty)."""
        with self.holding(vm_name):
            folder = self._folder(vm_name)
            fs = filesystem.current()
            fs.unlink(folder / f"{key}{ACK_SUFFIX}", missing_ok=True)
            fs.unlink(folder / f"{key}{PART_SUFFIX}", missing_ok=True)
            if folder.exists():
                filesystem.fsync_directory(folder)

    def discard_vm(self, vm_name: str) -> None:
        """Forget every upload of ``vm_name``."""
        with self.holding(vm_name):
            filesystem.remove_tree_durably(self._folder(vm_name))

    # -- internals ---------------------------------------------------------------------

    def _folder(self, vm_name: str) -> Path:
        return safe_child(self._root, UPLOADS, validate_vm_name(vm_name))

    def _ack_path(self, vm_name: str, key: str) -> Path:
        return safe_child(self._folder(vm_name), f"{key}{ACK_SUFFIX}")

    def _write_part(self, path: Path, offset: int, data: bytes, end: int) -> None:
        fs = filesystem.current()
        created = not path.exists()
        descriptor = fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC)
        try:
            fs.ftruncate(descriptor, offset)  # what was never acknowledged goes
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += fs.pwrite(descriptor, view[done:], offset + done)
            if end > offset + len(data):
                fs.ftruncate(descriptor, end)  # a hole
            fs.fdatasync(descriptor)
        finally:
            os.close(descriptor)
        if created:
            filesystem.fsync_directory(path.parent)

    def _acknowledge(self, vm_name: str, key: str, length: int) -> None:
        packed = struct.pack("<Q", length)
        raw = packed + struct.pack("<I", google_crc32c.value(packed))
        durable_file.write_file_atomically(self._ack_path(vm_name, key), raw)
