"""Resumable uploads at a replica server: a file arrives in chunks, durable in runs.

An initial copy's disk image (gigabytes) and a cycle's sealed logs reach the server in
chunks of at most the server's request limit. A connection cut mid-way must not send
the client back to byte 0, and what the server says has survived a power cut must
have. So each upload keeps two files under ``<location>/uploads/<vm>/``::

    <key>.part   the bytes received so far
    <key>.ack    the durable length: 8 bytes, little-endian, plus their CRC32C

and, in the server's memory, its **position** (:class:`Position`): ``received``, the
bytes written and checked so far (the next chunk must start there), and ``durable``,
the part of them that survives a power cut. A chunk at ``offset`` is accepted only
when ``offset`` is ``received`` (the client asks for it after a cut,
:meth:`Uploads.position`). The part file is first truncated to that length (bytes of
a chunk that was never accepted go), the chunk is checked against the CRC32C the
client sent and written. Every :data:`DURABLE_EVERY_BYTES` (and when the upload is
finished) the part file is ``fdatasync``-ed and only then its length written to
``<key>.ack`` atomically (temporary file, fsync, rename, directory fsync): after a
power cut the part file may hold more than the acknowledgement says, never less.

Why not make every chunk durable before answering it: nothing the client does
depends on it. The source keeps its image (a snapshot) and its sealed logs until the
replica has applied the cycle, and a finished upload is synced whole before it is
handed over (:meth:`Uploads.finish`), so a chunk lost in a power cut is only sent
again. Syncing each chunk made the server's disk wait for the network and the
network for the disk, one after the other, chunk by chunk (``docs/benchmarks.md``);
syncing in long runs lets the kernel write back while the next chunks arrive, and
bounds what a power cut sends again. A server that restarts (a crash, a kill, a
stop) forgets the positions it held in memory and stands at the durable length.

A hole (a run of zeros the client did not read, ``SEEK_HOLE``) travels as its length
only, before the chunk's bytes (``hole`` zeros, then the bytes), and is made by
extending the part file, so a sparse image stays sparse.

A finished upload is handed to the replica store's delivery (:meth:`Uploads.finish`);
keys are validated names, so a hostile disk name cannot leave the VM's folder.

**One request at a time per VM's uploads.** The server runs requests in threads, and
two chunks of one upload (a client's retry racing its own first attempt, or two
clients) would otherwise truncate and write the same part file and its
acknowledgement's temporary file at once; a chunk racing the replica's re-creation
would survive into the new replica. Every step on a VM's uploads holds that VM's
lock (:meth:`Uploads.holding`): the second chunk then finds the first accepted
and is refused with the offset to resume from.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
DURABLE_EVERY_BYTES: Final = 256 * 1024 * 1024
"""An upload is made durable (``fdatasync``, then its acknowledgement) each time this
many bytes have arrived since it last was, and when it is finished: what a power cut
of the server sends again, at most."""


@dataclass(frozen=True)
class Position:
    """Where an upload stands: ``received`` bytes written and checked (the next
    chunk starts there), of which the first ``durable`` survive a power cut."""

    received: int
    durable: int


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

    def __init__(self, root: Path, *, durable_every: int = DURABLE_EVERY_BYTES) -> None:
        if isinstance(durable_every, bool) or not isinstance(durable_every, int):
            msg = f"durable_every={durable_every!r} must be an int >= 1"
            raise InvalidConfiguration(msg)
        if durable_every < 1:
            msg = f"durable_every={durable_every!r} must be an int >= 1"
            raise InvalidConfiguration(msg)
        self._root = Path(root)
        self._durable_every = durable_every
        # Each upload's position while this process has written to it (forgotten at
        # a restart: the acknowledgement file is the position then).
        self._positions: dict[tuple[str, str], Position] = {}
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
        """The bytes of upload ``key`` received and checked so far (0: none yet):
        where its next chunk starts."""
        return self.position(vm_name, key).received

    def position(self, vm_name: str, key: str) -> Position:
        """Where upload ``key`` stands (:class:`Position`)."""
        with self.holding(vm_name):
            known = self._positions.get((vm_name, key))
            if known is not None:
                return known
            durable = self._acknowledged(vm_name, key)
            return Position(durable, durable)

    def write(
        self,
        vm_name: str,
        key: str,
        offset: int,
        data: bytes,
        *,
        crc32c: int | None,
        hole: int = 0,
    ) -> Position:
        """Write ``hole`` zero bytes, then ``data``, at ``offset``; return the new
        position. Refused unless ``offset`` is where the upload stands."""
        return self.write_pieces(
            vm_name, key, offset, [data], crc32c=crc32c, hole=hole, length=len(data)
        )

    def write_pieces(
        self,
        vm_name: str,
        key: str,
        offset: int,
        pieces: Iterable[bytes],
        *,
        crc32c: int | None,
        hole: int = 0,
        length: int,
    ) -> Position:
        """:meth:`write` of a chunk of ``length`` bytes arriving in ``pieces`` (a
        request body as it is read): each written as it comes, the chunk accepted
        only once all ``length`` bytes came and match ``crc32c``. Refused before
        anything is written unless ``offset`` is where the upload stands."""
        with self.holding(vm_name):
            position = self.position(vm_name, key)
            if offset != position.received:
                received = position.received
                msg = f"upload {key!r} of VM {vm_name!r} stands at byte {received}, "
                msg += f"not {offset}: resume from byte {received}"
                raise OffsetMismatch(msg, received)
            if crc32c is None and length:
                msg = "an upload chunk's bytes need their CRC32C"
                raise InvalidConfiguration(msg)
            folder = self._folder(vm_name)
            end = offset + hole + length
            part = folder / f"{key}{PART_SUFFIX}"
            durable = position.durable
            existed = part.exists()
            try:
                filesystem.make_directory_durably(folder)
                try:
                    found, came = self._write_part(part, offset, hole, pieces, length)
                except BaseException:
                    self._undo_chunk(part, offset, existed=existed)
                    raise
                if came != length or (length and found != crc32c):
                    self._undo_chunk(part, offset, existed=existed)
                if came != length:
                    msg = f"chunk at byte {offset} of upload {key!r} of VM "
                    msg += f"{vm_name!r} ended after {came} of its {length} bytes: "
                    msg += "send it again"
                    raise InvalidConfiguration(msg)
                if length and found != crc32c:
                    msg = f"chunk at byte {offset} of upload {key!r} of VM "
                    msg += f"{vm_name!r} does not match its CRC32C (damaged in "
                    msg += "transit): send it again"
                    raise InvalidConfiguration(msg)
                if end - durable >= self._durable_every:
                    self._make_durable(vm_name, key, part, end)
                    durable = end
            except OSError as error:
                # What this chunk wrote is not accepted: the next one truncates it.
                if is_storage_full(error):
                    msg = "the replica server's storage is full receiving upload "
                    msg += f"{key!r} of VM {vm_name!r} (byte {offset} of it); "
                    msg += f"{offset} bytes stay received ({durable} durable): free "
                    msg += "space and the upload resumes there"
                    raise StorageFull(msg) from error
                raise
            accepted = Position(end, durable)
            self._positions[(vm_name, key)] = accepted
            return accepted

    def make_durable(self) -> int:
        """Make every upload this process received more of than is durable durable
        (a clean stop: the server resumes each where it stood); how many. A sync
        that fails leaves that upload at its last durable length."""
        synced = 0
        for (vm_name, key), position in list(self._positions.items()):
            if position.received == position.durable:
                continue
            with self.holding(vm_name):
                if self._positions.get((vm_name, key)) != position:
                    continue  # changed meanwhile: its own request made it durable
                part = self._folder(vm_name) / f"{key}{PART_SUFFIX}"
                try:
                    self._make_durable(vm_name, key, part, position.received)
                except OSError:
                    continue
                self._positions[(vm_name, key)] = Position(
                    position.received, position.received
                )
                synced += 1
        return synced

    def finish(self, vm_name: str, key: str, size: int) -> Path:
        """The complete upload's part file, checked to hold ``size`` bytes and
        synced (hold the upload, :meth:`holding`, until it is handed over)."""
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
            fs = filesystem.current()
            descriptor = fs.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                fs.ftruncate(descriptor, size)
                fs.fdatasync(descriptor)  # whole and durable before it is handed over
            finally:
                os.close(descriptor)
            return path

    def discard(self, vm_name: str, key: str) -> None:
        """Forget upload ``key`` (acknowledgement first, so it reads as empty)."""
        with self.holding(vm_name):
            self._positions.pop((vm_name, key), None)
            folder = self._folder(vm_name)
            fs = filesystem.current()
            fs.unlink(folder / f"{key}{ACK_SUFFIX}", missing_ok=True)
            fs.unlink(folder / f"{key}{PART_SUFFIX}", missing_ok=True)
            if folder.exists():
                filesystem.fsync_directory(folder)

    def discard_vm(self, vm_name: str) -> None:
        """Forget every upload of ``vm_name``."""
        with self.holding(vm_name):
            for known in [k for k in self._positions if k[0] == vm_name]:
                del self._positions[known]
            filesystem.remove_tree_durably(self._folder(vm_name))

    # -- internals ---------------------------------------------------------------------

    def _folder(self, vm_name: str) -> Path:
        return safe_child(self._root, UPLOADS, validate_vm_name(vm_name))

    def _ack_path(self, vm_name: str, key: str) -> Path:
        return safe_child(self._folder(vm_name), f"{key}{ACK_SUFFIX}")

    def _acknowledged(self, vm_name: str, key: str) -> int:
        """The durable length the acknowledgement file records (0: none, or one
        whose part file no longer holds it: moved into the inbox, or lost)."""
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
        part = path.with_name(f"{key}{PART_SUFFIX}")
        try:
            held = part.stat().st_size
        except FileNotFoundError:
            return 0
        return int(length) if held >= length else 0

    def _write_part(
        self, path: Path, offset: int, hole: int, pieces: Iterable[bytes], most: int
    ) -> tuple[int, int]:
        """Write the hole, then the pieces (no more than ``most`` bytes of them);
        their CRC32C and how many bytes came."""
        fs = filesystem.current()
        created = not path.exists()
        descriptor = fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC)
        crc = 0
        came = 0
        try:
            fs.ftruncate(descriptor, offset)  # what was never accepted goes
            if hole:
                fs.ftruncate(descriptor, offset + hole)  # the hole: a sparse run
            at = offset + hole
            for piece in pieces:
                if came + len(piece) > most:
                    return crc, came + len(piece)  # more than announced: refused
                crc = google_crc32c.extend(crc, piece)
                view = memoryview(piece)
                done = 0
                while done < len(view):
                    done += fs.pwrite(descriptor, view[done:], at + done)
                at += len(piece)
                came += len(piece)
        finally:
            os.close(descriptor)
        if created:
            filesystem.fsync_directory(path.parent)
        return crc, came

    def _undo_chunk(self, part: Path, offset: int, *, existed: bool) -> None:
        """A refused chunk leaves the upload as it was accepted: its bytes go (the
        part file back to ``offset``, or gone when the chunk made it)."""
        fs = filesystem.current()
        try:
            if not existed:
                fs.unlink(part, missing_ok=True)
                return
            descriptor = fs.open(part, os.O_WRONLY | os.O_CLOEXEC)
            try:
                fs.ftruncate(descriptor, offset)
            finally:
                os.close(descriptor)
        except OSError:
            pass  # the next chunk truncates it to where the upload stands anyway

    def _make_durable(self, vm_name: str, key: str, part: Path, length: int) -> None:
        """Sync the part file, then record ``length`` as durable."""
        fs = filesystem.current()
        descriptor = fs.open(part, os.O_WRONLY | os.O_CLOEXEC)
        try:
            fs.fdatasync(descriptor)
        finally:
            os.close(descriptor)
        packed = struct.pack("<Q", length)
        raw = packed + struct.pack("<I", google_crc32c.value(packed))
        durable_file.write_file_atomically(self._ack_path(vm_name, key), raw)
