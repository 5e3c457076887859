"""The target side of one VM: replica disk images and the recovery points kept for them.

A replica store owns one directory under a site's storage root::

    <root>/<vm_name>/
        store.json                  identity (disks and sizes, retention) + catalogue
        intent.json                 present only while a cycle is being applied
        replica/<disk>.img          one raw, sparse image per disk: the newest point
        undo/<recovery_point_id>.undo   restores that point from its successor
        undo/origin.undo            in-flight undo of a cycle applied with no point yet

**Invariants.** The replica images always hold the newest committed recovery point,
except while ``intent.json`` exists. Every retained point except the newest has an undo
image; the newest needs none (the replica is it). A cycle (one sealed log per disk, all
disks cut at one point on the source) is applied to every disk or to none.

**Applying a cycle** (:meth:`ReplicaStore.apply_cycle`), in this order:

1. verify every log fully (CRCs, disk id, epoch, ranges and, within one epoch, that
   each disk's log starts right after the newest point's last record); any damage
   refuses the cycle with nothing changed;
2. read the current bytes of every extent the cycle touches, on all disks, into the undo
   image; write it under a temporary name, fsync, rename (durable before any replica
   byte changes);
3. preallocate the touched extents in the replica (``posix_fallocate``: space only, no
   content change), so that applying, and rolling back, never need new space;
4. write ``intent.json`` (the cycle, its logs, its undo image, the point to commit);
5. apply each disk's records in order and fsync each image;
6. commit: rewrite ``store.json`` with the new point (and the oldest points beyond the
   retention count merged away) by temporary file, fsync and rename. The rename is the
   commit point;
7. delete the applied logs, then the intent, then the merged points' undo images.

A failure in 2-4 leaves the replica untouched; a failure in 5-6 (storage full, a log
damaged since it was verified) rolls the replica back from the undo image before the
error is raised, so a full disk leaves the replica at the previous point. Re-applying
a committed cycle returns its point and changes nothing (idempotent).

**Retention and reading old points.** Merging the oldest point away deletes its undo
image; the replica does not change. :meth:`ReplicaStore.materialize` copies the
replica (sparse) elsewhere and applies undo images newest first down to the chosen
point, never touching the replica: test failover and failover start from that copy.

**Pinning a point for a drill** (:meth:`ReplicaStore.pin`, :meth:`ReplicaStore.unpin`).
A drill reads an older point through the undo chain (``engine/replica/point_view.py``)
instead of copying it, so that chain must stay whole while cycles keep arriving: while
a point is pinned, the retention merge of ``apply_cycle`` never merges away the pinned
point nor any newer one, and the catalogue may grow past the retention count. The pin
is a field of ``store.json`` (``pinned_recovery_point_id``), written atomically as
every commit is; ``unpin`` drops it and merges back down to the retention count in that
same rewrite, then deletes the undo images no point needs (a crash in between leaves
them as debris for :meth:`ReplicaStore.recover`). One pin at a time;
``discard_recovery_points`` refuses while one is held.

**Catalogue storage: one JSON file replaced atomically**, not SQLite. The store has one
writer and one tiny document (the disks and at most a few thousand points) that must
change in step with files beside it; a rename gives exactly the all-or-nothing switch we
need, the file is readable with any tool when diagnosing a site, and the per-site
SQLite control database (``engine/control/store.py``) stays the single place that
needs a database. The catalogue there mirrors this one; this file is the authority for
the data.

**Opening has no side effects; recovering is the owner's** (:meth:`ReplicaStore.open`,
:meth:`ReplicaStore.recover`). ``open`` loads and validates ``store.json``, an
``intent.json`` if one is there, and the files the catalogue needs (each replica image
at its size, the undo image of every retained point but the newest), and changes no
file: a status read can never finish or undo work behind its owner's back. While an
intent waits (:attr:`ReplicaStore.pending_recovery`), every call that reads the replica
or changes the store refuses with "recover() first"; the catalogue and the statistics
stay readable. Only the owner, once, when the engine opens, calls ``recover``: the
apply is **rolled forward** when the cycle's logs are still there and verify (they
were complete and checked before the intent was written, they are deleted only after
the commit, and a record is an absolute write, so re-applying the whole cycle over a
partly applied replica gives the same bytes; finishing keeps the newer point, a smaller
RPO, and needs nothing from the source). Only when a log is gone or damaged since is
the replica **rolled back** with the undo image. Then the debris of a crash (temporary
files, undo images no point needs) is deleted. The report says what was done.

**Nothing read from a control file is trusted.** Recovery reads, and after a commit
deletes, the log paths ``intent.json`` names; each must be named ``<disk>.hrl`` and
resolve (symlinks followed) under the trusted root (by default the site root,
``root.parent``, which holds the inbox) and outside the replicas directory, or the
intent is :class:`DamagedState` and nothing is read or deleted
(``manifest.log_path_problem``); and the cleanup after a commit deletes a file only if
it reads as a change log of that disk. ``apply_cycle`` refuses logs elsewhere up
front, so the store never writes an intent its recovery would refuse.

**Damage is a typed error, never a healthy look.** A damaged, missing or mis-sized
store file (``store.json``, ``intent.json``, a replica image, ``undo/``, an undo image
a retained point or a rollback needs) raises :class:`DamagedState` naming the file and
what was found, from ``open`` or from the operation that needs the file. Never
:class:`CorruptRecord`: that one means a change log failed its checks, and the binding
answers it by distrusting the source's logs. A store directory without ``store.json``
is damage too ("the catalogue is missing"): :meth:`create` builds a store aside
(``.<vm_name>.creating``) and renames it into place, so no crash leaves one behind.

**Block digests** (:meth:`ReplicaStore.block_digests`): one BLAKE2b-128 digest per block
of a replica disk (``engine.storage.digests``, the definition the source side uses on
its own disks), for a resynchronisation that compares digests instead of bytes.

One writer at a time: the binding layer serialises a VM's operations, so the store
takes no lock of its own.
"""

from __future__ import annotations

import enum
import itertools
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from engine.clock import Clock
from engine.errors import (
    CorruptRecord,
    DamagedState,
    DiskRangeError,
    InvalidConfiguration,
    InvalidName,
    ReplicationError,
    StorageFull,
)
from engine.log.reader import read_header
from engine.names import safe_child
from engine.replica.apply import (
    logs_applied_by,
    preallocate,
    touched_regions,
    verify_cycle_logs,
    write_cycle,
)
from engine.replica.manifest import (
    ORIGIN_UNDO,
    ApplyIntent,
    StoreManifest,
    log_path_problem,
    validate_disks,
)
from engine.replica.recovery_point import (
    RecoveryPoint,
    RecoveryPointCatalogue,
    make_last_sequences,
    validate_retention_count,
)
from engine.replica.undo_image import (
    apply_undo_image,
    capture_extents,
    write_undo_image,
)
from engine.storage import durable_file, files
from engine.storage.digests import digest_blocks, digest_file_blocks
from engine.storage.disk import validate_block_bytes
from engine.storage.files import fsync_directory
from engine.storage.sparse_copy import PARTIAL_SUFFIX

STORE_FILE: Final = "store.json"
INTENT_FILE: Final = "intent.json"
DISK_SUFFIX: Final = ".img"
UNDO_SUFFIX: Final = ".undo"
CREATING_SUFFIX: Final = ".creating"
"""``<root>/.<vm_name>.creating``: a store being built by :meth:`ReplicaStore.create`
(hidden, so never a valid VM name), renamed to ``<root>/<vm_name>`` when complete."""

WHAT_TO_DO: Final = (
    "restore the file, or remove the VM's replica store and protect it afresh "
    "(initial replication)"
)

CrashPoint = Callable[[str], None]
"""Test hook called with the name of each step of an apply (see ``CRASH_POINTS``)."""

CRASH_POINTS: Final = (
    "verified",
    "undo_written",
    "intent_written",
    "disk_applied:*",
    "before_commit",
    "after_commit",
    "before_log_delete",
    "after_log_delete",
)
"""Steps at which ``apply_cycle`` calls its ``crash_point`` hook (``*`` = each disk)."""


class RecoveryAction(enum.Enum):
    """What :meth:`ReplicaStore.recover` did about an apply interrupted by a crash."""

    NONE = "none"  # no apply was interrupted
    ROLLED_FORWARD = "rolled_forward"  # the cycle was re-applied and committed
    ROLLED_BACK = "rolled_back"  # the replica was restored from the undo image
    CLEANED_UP = "cleaned_up"  # the cycle had committed; its intent and logs removed


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What :meth:`ReplicaStore.recover` found and did about an interrupted apply."""

    action: RecoveryAction
    cycle_id: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class UndoStep:
    """One link of the undo chain (:meth:`ReplicaStore.undo_chain`).

    ``path`` is the undo image of ``recovery_point_id``: the bytes the cycle
    ``cycle_id`` (the one that made the next point) overwrote.
    """

    recovery_point_id: int
    cycle_id: int
    path: Path


@dataclass(frozen=True, slots=True)
class ReplicaStoreStatistics:
    """Counters of one replica store (sizes from the disk, counts since open)."""

    vm_name: str
    disk_count: int
    recovery_point_count: int
    latest_recovery_point_id: int | None
    retention_count: int
    undo_bytes: int
    cycles_applied: int
    bytes_applied: int
    cycles_rolled_back: int


class ReplicaStore:
    """Replica images, undo images and the recovery-point catalogue of one VM."""

    def __init__(
        self,
        directory: Path,
        vm_name: str,
        disks: dict[str, int],
        clock: Clock,
        *,
        trusted_root: Path,
        replicas_root: Path,
    ) -> None:
        """Use :meth:`create` or :meth:`open`; this only binds loaded state.

        ``trusted_root`` and ``replicas_root`` are resolved (``os.path.realpath``).
        """
        self.directory = directory
        self.vm_name = vm_name
        self._disks = disks
        self._clock = clock
        self._trusted_root = trusted_root
        self._replicas_root = replicas_root
        self._retention_count = 1
        self._catalogue = RecoveryPointCatalogue()
        self._pinned: int | None = None
        self._cycles_applied = 0
        self._bytes_applied = 0
        self._cycles_rolled_back = 0

    @classmethod
    def create(
        cls,
        root: Path,
        vm_name: str,
        disks: Mapping[str, int],
        retention_count: int,
        clock: Clock,
        *,
        trusted_root: Path | None = None,
    ) -> ReplicaStore:
        """Create the store of ``vm_name`` under ``root``, its disks sparse and zero.

        The store is built in ``<root>/.<vm_name>.creating`` and renamed into place,
        so a failure leaves no store (the next create removes the leftover).
        ``trusted_root`` is where the logs of its cycles must lie (see :meth:`open`).
        """
        directory = safe_child(root, vm_name)
        trusted, replicas = _trusted_roots(root, trusted_root)
        if directory.exists() or directory.is_symlink():
            msg = f"vm_name={vm_name!r}: a replica store already exists at "
            msg += f"{str(directory)!r}; open it, or delete it to start over"
            raise InvalidConfiguration(msg)
        sizes = validate_disks(disks)
        store = cls(
            directory,
            vm_name,
            sizes,
            clock,
            trusted_root=trusted,
            replicas_root=replicas,
        )
        store._retention_count = validate_retention_count(retention_count)
        building = directory.with_name(f".{vm_name}{CREATING_SUFFIX}")
        files.remove_tree_durably(building)
        files.make_directory_durably(building / "replica")
        files.make_directory_durably(building / "undo")
        fs = files.current()
        for disk, size in sizes.items():
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            descriptor = fs.open(building / "replica" / (disk + DISK_SUFFIX), flags)
            try:
                fs.ftruncate(descriptor, size)
                fs.fsync(descriptor)
            finally:
                os.close(descriptor)
        fsync_directory(building / "replica")
        durable_file.write_file_atomically(
            building / STORE_FILE, store._manifest_bytes(store.catalogue, pinned=None)
        )
        fs.rename(building, directory)
        fsync_directory(directory.parent)
        return store

    @classmethod
    def open(
        cls,
        root: Path,
        vm_name: str,
        clock: Clock,
        *,
        trusted_root: Path | None = None,
    ) -> ReplicaStore:
        """Load and validate the store of ``vm_name`` under ``root``; change nothing.

        An apply a crash interrupted is left as it is: :attr:`pending_recovery` says
        so, and its owner calls :meth:`recover`. Raises InvalidConfiguration when
        there is no store, DamagedState when a file of it is damaged or missing
        (``store.json``, ``intent.json``, a replica image or its size, ``undo/``, the
        undo image of a retained point). ``trusted_root`` (default ``root.parent``,
        the site root) is where every log path in ``intent.json`` must resolve.
        """
        directory = safe_child(root, vm_name)
        trusted, replicas = _trusted_roots(root, trusted_root)
        if not directory.exists() and not directory.is_symlink():
            msg = f"vm_name={vm_name!r}: no replica store at {str(directory)!r}; "
            msg += "create it first (initial replication)"
            raise InvalidConfiguration(msg)
        path = directory / STORE_FILE
        if not directory.is_dir():
            msg = f"{str(directory)!r}, the replica store of VM {vm_name!r}, is not a "
            msg += f"directory; the store is damaged: {WHAT_TO_DO}"
            raise DamagedState(msg)
        if not path.exists() and not path.is_symlink():
            msg = f"{str(directory)!r}: the catalogue is missing (no {STORE_FILE}); "
            msg += f"the replica store of VM {vm_name!r} is damaged: {WHAT_TO_DO}"
            raise DamagedState(msg)
        manifest = StoreManifest.load(path, vm_name)
        store = cls(
            directory,
            vm_name,
            manifest.disks,
            clock,
            trusted_root=trusted,
            replicas_root=replicas,
        )
        store._retention_count = manifest.retention_count
        store._catalogue = manifest.catalogue
        store._pinned = manifest.pinned
        store._check_files()
        if store._intent_exists():
            store._load_intent()  # validated now: a damaged intent never looks healthy
        return store

    @property
    def disks(self) -> Mapping[str, int]:
        """The VM's disks and their sizes in bytes (read-only)."""
        return MappingProxyType(self._disks)

    @property
    def catalogue(self) -> RecoveryPointCatalogue:
        """The committed recovery points, oldest first (readable while pending)."""
        return self._catalogue

    @property
    def retention_count(self) -> int:
        """How many recovery points are kept before the oldest is merged away."""
        return self._retention_count

    @property
    def pinned(self) -> int | None:
        """The recovery point a drill holds (:meth:`pin`), or None."""
        return self._pinned

    @property
    def pending_recovery(self) -> bool:
        """Whether an interrupted apply waits for :meth:`recover` (an intent is there).

        While it does, reading the replica and every change refuse.
        """
        return self._intent_exists()

    def recover(self, *, crash_point: CrashPoint | None = None) -> RecoveryReport:
        """Finish or undo an interrupted apply, then delete a crash's debris.

        The owner's call, once, when the engine opens (nobody else's: it may change
        the replica). Rolls the apply forward when its logs are intact, back with the
        undo image when one is gone or damaged, or removes what a committed cycle
        left; then deletes temporary files and undo images no point needs. With
        nothing pending it only deletes debris (:attr:`RecoveryAction.NONE`). A failure
        raises and leaves the intent: calling again retries. ``crash_point`` is the
        test hook of :meth:`apply_cycle`, called while an apply is rolled forward.
        """
        report = self._recover(crash_point or _no_crash_point)
        self._remove_debris()
        return report

    # -- applying cycles ---------------------------------------------------------------

    def apply_cycle(
        self,
        cycle_id: int,
        logs: Mapping[str, Path],
        *,
        epoch: int,
        app_consistent: bool,
        expected_last_sequences: Mapping[str, int] | None = None,
        crash_point: CrashPoint | None = None,
        resync: bool = False,
    ) -> RecoveryPoint:
        """Apply one cycle (a sealed log per disk) to all disks or none; commit a point.

        ``expected_last_sequences`` (from the source's :class:`SealedLog`, when shipped
        with the logs) also refuses a log cut short at a record boundary. Re-applying a
        committed cycle returns its point and deletes those of the logs it applied.
        Logs must lie under the trusted root (InvalidConfiguration otherwise).
        ``crash_point`` is a test hook called at each step named in ``CRASH_POINTS``.
        """
        hook = crash_point or _no_crash_point
        _check_int("cycle_id", cycle_id)
        _check_int("epoch", epoch)
        self._refuse_if_pending(f"apply cycle {cycle_id}")
        log_names = {disk: os.path.abspath(path) for disk, path in logs.items()}
        self._check_log_paths(log_names)
        committed = self._catalogue.find_cycle(cycle_id)
        if committed is not None:
            durable_file.remove_durably(logs_applied_by(committed, logs))
            return committed
        if cycle_id <= self._catalogue.last_cycle_id:
            msg = f"cycle_id={cycle_id} is not newer than the last applied cycle "
            msg += f"{self._catalogue.last_cycle_id} and is no longer retained; "
            msg += "ship a newer cycle"
            raise InvalidConfiguration(msg)
        if set(logs) != set(self._disks):
            msg = f"logs={sorted(logs)} must name exactly the disks of VM "
            msg += f"{self.vm_name!r}: {sorted(self._disks)}"
            raise InvalidConfiguration(msg)
        previous = self._newest_point()
        sealed = verify_cycle_logs(
            logs,
            disks=self._disks,
            epoch=epoch,
            previous=previous,
            last_sequences=expected_last_sequences or {},
        )
        hook("verified")
        undo_name = ORIGIN_UNDO if previous is None else str(previous.recovery_point_id)
        point = RecoveryPoint(
            recovery_point_id=self._catalogue.next_recovery_point_id(),
            cycle_id=cycle_id,
            epoch=epoch,
            created_at=self._clock.now(),
            app_consistent=app_consistent,
            last_sequences=make_last_sequences(
                {disk: log.last_sequence for disk, log in sealed.items()}
            ),
            record_count=sum(log.record_count for log in sealed.values()),
            payload_bytes=sum(log.payload_bytes for log in sealed.values()),
            resync=resync,
        )
        intent = ApplyIntent(cycle_id, epoch, log_names, undo_name, point)
        self._prepare(intent, hook)
        return self._apply_and_commit(intent, hook)

    def _check_log_paths(self, log_names: Mapping[str, str]) -> None:
        for disk in sorted(log_names):
            problem = log_path_problem(
                log_names[disk],
                disk=disk,
                trusted_root=self._trusted_root,
                replicas_root=self._replicas_root,
            )
            if problem is not None:
                msg = f"logs[{disk!r}]={log_names[disk]!r} {problem}; a store takes "
                msg += "logs only from under its trusted root (the site root unless "
                msg += "open/create were given trusted_root): deliver them there"
                raise InvalidConfiguration(msg)

    def _prepare(self, intent: ApplyIntent, hook: CrashPoint) -> None:
        """Write the undo image and the intent; on failure leave nothing behind."""
        undo_path = self._undo_path(intent.undo)
        temporary = durable_file.temporary_path(undo_path)
        extents = touched_regions(intent.logs, epoch=intent.epoch)
        try:
            with temporary.open("wb") as target:
                write_undo_image(
                    target,
                    cycle_id=intent.cycle_id,
                    disks=sorted(self._disks),
                    extents=capture_extents(self._images(), extents),
                )
                target.flush()
                files.current().fsync(target.fileno())
            files.current().rename(temporary, undo_path)
            fsync_directory(undo_path.parent)
            hook("undo_written")
            preallocate(self._images(), extents)
            durable_file.write_file_atomically(
                self.directory / INTENT_FILE, intent.to_bytes()
            )
        except OSError as error:
            files.current().unlink(temporary, missing_ok=True)
            files.current().unlink(undo_path, missing_ok=True)
            raise _storage_error(error, f"preparing cycle {intent.cycle_id}") from error
        hook("intent_written")

    def _apply_and_commit(self, intent: ApplyIntent, hook: CrashPoint) -> RecoveryPoint:
        try:
            self._bytes_applied += write_cycle(
                self._images(),
                intent.logs,
                epoch=intent.epoch,
                disk_written=lambda disk: hook(f"disk_applied:{disk}"),
            )
            hook("before_commit")
            catalogue = self._catalogue.with_point(intent.point)
            retained = catalogue.retained(self._retention_count, pinned=self._pinned)
            temporary = self._write_store_temporary(retained, pinned=self._pinned)
            files.current().rename(temporary, self.directory / STORE_FILE)
        except (OSError, CorruptRecord) as error:
            self._roll_back(intent)
            if isinstance(error, OSError):
                raise _storage_error(
                    error, f"applying cycle {intent.cycle_id}"
                ) from error
            raise
        self._catalogue = retained
        self._cycles_applied += 1
        fsync_directory(self.directory)
        hook("after_commit")
        self._finish(intent, hook)
        return intent.point

    def _finish(self, intent: ApplyIntent, hook: CrashPoint) -> None:
        """Post-commit cleanup; idempotent, and redone by :meth:`recover`."""
        hook("before_log_delete")
        durable_file.remove_durably(
            [
                Path(name)
                for disk, name in intent.logs.items()
                if _is_log_of(Path(name), disk, intent.cycle_id, intent.epoch)
            ]
        )
        hook("after_log_delete")
        durable_file.remove_durably([self.directory / INTENT_FILE])
        self._remove_debris()

    def _roll_back(self, intent: ApplyIntent) -> None:
        """Restore the pre-cycle bytes from the undo image; drop the intent."""
        undo_path = self._undo_path(intent.undo)
        _apply_undo(
            undo_path,
            cycle_id=intent.cycle_id,
            images=self._images(),
            doing=f"roll cycle {intent.cycle_id} back",
        )
        durable_file.remove_durably([self.directory / INTENT_FILE, undo_path])
        self._cycles_rolled_back += 1

    # -- recovery ----------------------------------------------------------------------

    def _recover(self, hook: CrashPoint) -> RecoveryReport:
        if not self._intent_exists():
            return RecoveryReport(RecoveryAction.NONE, None, "no apply interrupted")
        intent = self._load_intent()
        if intent.cycle_id <= self._catalogue.last_cycle_id:
            self._finish(intent, hook)
            reason = "the cycle was committed; removed its intent and logs"
            return RecoveryReport(RecoveryAction.CLEANED_UP, intent.cycle_id, reason)
        try:
            verify_cycle_logs(
                {disk: Path(name) for disk, name in intent.logs.items()},
                disks=self._disks,
                epoch=intent.epoch,
                previous=self._newest_point(),
                last_sequences=dict(intent.point.last_sequences),
            )
        except (OSError, CorruptRecord) as error:
            self._roll_back(intent)
            reason = f"a log of the cycle is gone or damaged ({error}); rolled back"
            return RecoveryReport(RecoveryAction.ROLLED_BACK, intent.cycle_id, reason)
        try:
            self._apply_and_commit(intent, hook)
        except (OSError, ReplicationError) as error:
            committed = self._catalogue.last_cycle_id >= intent.cycle_id
            if committed or self._intent_exists():
                raise  # a cleanup or the rollback itself failed: recover() retries it
            reason = f"re-applying failed ({error}); rolled back"
            return RecoveryReport(RecoveryAction.ROLLED_BACK, intent.cycle_id, reason)
        reason = "the cycle's logs were intact; re-applied and committed"
        return RecoveryReport(RecoveryAction.ROLLED_FORWARD, intent.cycle_id, reason)

    def _load_intent(self) -> ApplyIntent:
        """Read ``intent.json``: its paths checked, its point the catalogue's next."""
        path = self.directory / INTENT_FILE
        intent = ApplyIntent.load(
            path,
            disks=self._disks,
            trusted_root=self._trusted_root,
            replicas_root=self._replicas_root,
        )
        if intent.cycle_id > self._catalogue.last_cycle_id:  # not committed yet
            newest = self._newest_point()
            undo = ORIGIN_UNDO if newest is None else str(newest.recovery_point_id)
            next_id = self._catalogue.next_recovery_point_id()
            if intent.point.recovery_point_id != next_id or intent.undo != undo:
                msg = f"{str(path)!r} is damaged: it would commit recovery_point_id="
                msg += f"{intent.point.recovery_point_id} with undo={intent.undo!r}; "
                msg += "after the catalogue's newest point the cycle's point is "
                msg += f"{next_id} and its undo image {undo!r}: {WHAT_TO_DO}"
                raise DamagedState(msg)
        return intent

    def _remove_debris(self) -> None:
        """Delete temporary files and undo images no retained point needs."""
        needed = {
            self._undo_path(str(i)) for i in self._catalogue.recovery_point_ids[:-1]
        }
        if self._intent_exists():
            needed.add(self._undo_path(self._load_intent().undo))
        debris = [
            path
            for path in self._undo_directory().iterdir()
            if path not in needed and not path.is_dir()
        ]
        for directory in (self.directory, self.directory / "replica"):
            debris += directory.glob("*" + durable_file.TEMPORARY_SUFFIX)
        debris += (self.directory / "replica").glob("*" + PARTIAL_SUFFIX)
        durable_file.remove_durably(debris)

    def _check_files(self) -> None:
        """Check by ``stat`` (nothing read or changed) the files the catalogue needs."""
        for name in ("replica", "undo"):
            if not (self.directory / name).is_dir():
                msg = f"{str(self.directory / name)!r} is missing or not a directory; "
                msg += f"the replica store of VM {self.vm_name!r} is damaged: "
                msg += WHAT_TO_DO
                raise DamagedState(msg)
        for disk, size in self._disks.items():
            found = self._image_status(disk)
            if found.st_size != size:
                msg = f"replica image {str(self._disk_path(disk))!r} is "
                msg += f"{found.st_size} bytes; {STORE_FILE} says disk {disk!r} has "
                msg += f"{size}: the image is damaged: {WHAT_TO_DO}"
                raise DamagedState(msg)
        for point in self._catalogue.points[:-1]:
            undo = self._undo_path(str(point.recovery_point_id))
            if not undo.is_file():
                msg = f"undo image {str(undo)!r}, needed to materialize recovery "
                msg += f"point {point.recovery_point_id} (and any older one), is "
                msg += f"missing: the store is damaged: {WHAT_TO_DO}"
                raise DamagedState(msg)

    def _image_status(self, disk: str) -> os.stat_result:
        """The replica image's status; DamagedState when missing or not a file."""
        lexical = self.directory / "replica" / (disk + DISK_SUFFIX)
        try:
            found = self._disk_path(disk).stat()
        except (OSError, InvalidName) as error:
            msg = f"replica image {str(lexical)!r} of disk {disk!r} is missing or "
            msg += f"unreadable ({error}): the store is damaged: {WHAT_TO_DO}"
            raise DamagedState(msg) from error
        if not stat.S_ISREG(found.st_mode):
            msg = f"replica image {str(lexical)!r} of disk {disk!r} is not a regular "
            msg += f"file: the store is damaged: {WHAT_TO_DO}"
            raise DamagedState(msg)
        return found

    # -- reading points ----------------------------------------------------------------

    def materialize(self, recovery_point_id: int, target_dir: Path) -> dict[str, Path]:
        """Write images equal to ``recovery_point_id`` into ``target_dir``; return them.

        The replica is only read. Files already in ``target_dir`` are never overwritten.
        """
        self._refuse_if_pending(f"materialize recovery point {recovery_point_id}")
        self._catalogue.get(recovery_point_id)
        files.make_directory_durably(target_dir)
        images = {
            disk: safe_child(target_dir, disk + DISK_SUFFIX) for disk in self._disks
        }
        taken = sorted(str(path) for path in images.values() if path.exists())
        if taken:
            msg = f"target_dir={str(target_dir)!r} already holds {taken}; "
            msg += "choose an empty directory"
            raise InvalidConfiguration(msg)
        try:
            self._materialize_into(recovery_point_id, images)
        except (OSError, ReplicationError):
            durable_file.remove_durably(list(images.values()))
            raise
        return images

    def _materialize_into(
        self, recovery_point_id: int, images: dict[str, Path]
    ) -> None:
        for disk, image in images.items():
            self._image_status(disk)
            durable_file.copy_file_atomically(self._disk_path(disk), image)
        # Step back one point at a time, newest first: the undo image of point P
        # turns P's successor into P.
        points = self._catalogue.points
        for point in self._catalogue.newer_than(recovery_point_id):
            predecessor = points[points.index(point) - 1]
            _apply_undo(
                self._undo_path(str(predecessor.recovery_point_id)),
                cycle_id=point.cycle_id,
                images=images,
                doing=f"materialize recovery point {recovery_point_id}",
            )

    def read(self, disk: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes of the replica of ``disk`` from ``offset``."""
        self._refuse_if_pending(f"read disk {disk!r} of the replica")
        size = self._disk_size(disk)
        if offset < 0 or length < 0 or offset + length > size:
            msg = f"offset={offset}, length={length} on disk {disk!r} must satisfy "
            msg += f"0 <= offset and offset + length <= {size}"
            raise DiskRangeError(msg)
        path = self._disk_path(disk)
        try:
            with path.open("rb") as image:
                image.seek(offset)
                data = image.read(length)
        except FileNotFoundError:
            self._image_status(disk)  # raises DamagedState naming the image
            raise
        if len(data) != length:
            msg = f"replica image {str(path)!r} ended before byte {offset + length} "
            msg += f"of its {size}: the image is damaged: {WHAT_TO_DO}"
            raise DamagedState(msg)
        return data

    def block_digests(
        self,
        disk: str,
        block_bytes: int,
        *,
        start_block: int = 0,
        block_count: int | None = None,
    ) -> list[bytes]:
        """Return the digest of each block of the replica of ``disk`` (oldest first).

        ``engine.storage.digests.block_digest`` of every ``block_bytes`` block from
        ``start_block``, ``block_count`` of them (default: to the end of the disk).
        ``block_bytes`` must be a power of two from 512 B to 1 MiB dividing the disk
        size (InvalidConfiguration); the blocks must lie within the disk
        (DiskRangeError). Reads 1 MiB at a time; holes are not read.
        """
        self._refuse_if_pending(f"compute block digests of disk {disk!r}")
        size = self._disk_size(disk)
        block_bytes = validate_block_bytes(block_bytes)
        if size % block_bytes:
            msg = f"block_bytes={block_bytes} must divide the size of disk {disk!r} "
            msg += f"({size} bytes); choose a smaller power of two"
            raise InvalidConfiguration(msg)
        total = size // block_bytes
        start = _block_number("start_block", start_block)
        if block_count is None:
            count = max(0, total - start)
        else:
            count = _block_number("block_count", block_count)
        if start + count > total or start > total:
            msg = f"start_block={start}, block_count={block_count} on disk {disk!r} "
            msg += f"must lie within its {total} blocks of {block_bytes} bytes"
            raise DiskRangeError(msg)
        self._image_status(disk)
        try:
            return digest_file_blocks(
                self._disk_path(disk),
                block_bytes=block_bytes,
                first_block=start,
                block_count=count,
            )
        except FileNotFoundError:
            self._image_status(disk)  # raises DamagedState naming the image
            raise

    def digests_of_blocks(
        self, disk: str, block_bytes: int, blocks: Sequence[int]
    ) -> list[bytes]:
        """Return the digest of each listed block of ``disk``, in the order listed.

        As :meth:`block_digests`, for the blocks a targeted resynchronisation compares;
        a block outside the disk is DiskRangeError naming the disk and its blocks.
        """
        self.block_digests(disk, block_bytes, block_count=0)  # its checks, no read
        total = self._disk_size(disk) // block_bytes
        wrong = [b for b in blocks if isinstance(b, bool) or not isinstance(b, int)]
        if wrong:
            msg = f"blocks must be ints (got {wrong[:4]!r} among them)"
            raise InvalidConfiguration(msg)
        outside = [block for block in blocks if not 0 <= block < total]
        if outside:
            msg = f"blocks {outside[:8]} of disk {disk!r} must lie within its {total} "
            msg += f"blocks of {block_bytes} bytes (0 to {total - 1})"
            raise DiskRangeError(msg)
        try:
            return digest_blocks(self._disk_path(disk), block_bytes, blocks)
        except FileNotFoundError:
            self._image_status(disk)  # raises DamagedState naming the image
            raise

    def install_initial_copy(
        self, images: Mapping[str, Path], *, consume: bool = False
    ) -> None:
        """Replace replica disks with initial-copy images (before any point).

        ``images`` names some or all of the disks (a restart finishes an install that
        moved some already). Each disk is swapped in atomically; the set is not (a
        failed initial copy is simply redone, since no recovery point depends on it).
        With ``consume`` the images are moved into place (a rename when they are on
        the store's filesystem) instead of copied.
        """
        self._refuse_if_pending("install an initial copy")
        if self._catalogue.points:
            msg = f"VM {self.vm_name!r} already has recovery points "
            msg += f"{list(self._catalogue.recovery_point_ids)}; an initial copy may "
            msg += "only seed a store without any (discard them first)"
            raise InvalidConfiguration(msg)
        sizes = {disk: Path(path).stat().st_size for disk, path in images.items()}
        if not sizes or any(self._disks.get(d) != size for d, size in sizes.items()):
            msg = f"images with sizes {sizes} must match the disks of VM "
            msg += f"{self.vm_name!r} (some or all of them): {dict(self._disks)}"
            raise InvalidConfiguration(msg)
        for disk, path in images.items():
            try:
                if consume:
                    durable_file.move_or_copy(Path(path), self._disk_path(disk))
                else:
                    durable_file.copy_file_atomically(Path(path), self._disk_path(disk))
            except OSError as error:
                raise _storage_error(error, f"installing {disk!r}") from error

    def discard_recovery_points(self) -> None:
        """Delete every recovery point (a committed failover); the replica stays.

        Refused (InvalidConfiguration) while a point is pinned: a drill reads it.
        """
        self._refuse_if_pending("discard the recovery points")
        if self._pinned is not None:
            msg = f"VM {self.vm_name!r}: cannot discard the recovery points while "
            msg += f"recovery point {self._pinned} is pinned by a drill (test "
            msg += "failover); clean up the drill first (cleanup_drill unpins it)"
            raise InvalidConfiguration(msg)
        self._write_store_file(self._catalogue.without_points(), pinned=None)
        self._catalogue = self._catalogue.without_points()
        self._remove_debris()

    # -- pinning a point for a drill ---------------------------------------------------

    def pin(self, recovery_point_id: int) -> None:
        """Keep ``recovery_point_id`` and every newer point until :meth:`unpin`.

        Durable once it returns (``store.json`` replaced atomically). Pinning the
        pinned point again changes nothing; pinning another one while a point is
        pinned is InvalidConfiguration (one drill at a time); a point the catalogue
        does not hold is RecoveryPointNotFound.
        """
        self._refuse_if_pending(f"pin recovery point {recovery_point_id!r}")
        _check_int("recovery_point_id", recovery_point_id)
        if self._pinned == recovery_point_id:
            return
        if self._pinned is not None:
            msg = f"recovery_point_id={recovery_point_id}: VM {self.vm_name!r} "
            msg += f"already has recovery point {self._pinned} pinned by a drill; "
            msg += "one drill at a time: clean that one up first (cleanup_drill)"
            raise InvalidConfiguration(msg)
        self._catalogue.get(recovery_point_id)
        self._write_pin(recovery_point_id, f"pinning point {recovery_point_id}")

    def unpin(self) -> None:
        """Release the pin and merge back down to the retention count, durably.

        One atomic rewrite of ``store.json`` drops the pin and the points retention
        kept only for it; then their undo images are deleted (a crash before that
        leaves them as debris :meth:`recover` deletes). Without a pin it only
        deletes such debris, so it may be called again after a crash.
        """
        self._refuse_if_pending("unpin")
        if self._pinned is not None:
            self._write_pin(None, f"unpinning point {self._pinned}")
        self._remove_debris()

    def undo_chain(self, recovery_point_id: int) -> tuple[UndoStep, ...]:
        """The undo images from ``recovery_point_id`` to the newest point, oldest first.

        Applied newest first to a copy of the replica they give the point (what
        :meth:`materialize` does); read oldest first, the first one holding a byte
        holds the point's value of it, and a byte none holds is the replica's.
        """
        self._refuse_if_pending(f"read recovery point {recovery_point_id}")
        self._catalogue.get(recovery_point_id)
        points = self._catalogue.points
        start = self._catalogue.recovery_point_ids.index(recovery_point_id)
        return tuple(
            UndoStep(
                point.recovery_point_id,
                successor.cycle_id,
                self._undo_path(str(point.recovery_point_id)),
            )
            for point, successor in itertools.pairwise(points[start:])
        )

    def _write_pin(self, pinned: int | None, doing: str) -> None:
        catalogue = self._catalogue.retained(self._retention_count, pinned=pinned)
        try:
            self._write_store_file(catalogue, pinned=pinned)
        except OSError as error:
            if durable_file.is_storage_full(error):
                msg = f"storage full while {doing} ({error.strerror}); {STORE_FILE} "
                msg += "was left as it was: free space and retry"
                raise StorageFull(msg) from error
            raise
        self._catalogue = catalogue
        self._pinned = pinned

    def statistics(self) -> ReplicaStoreStatistics:
        """Return the store's counters (readable while an apply is pending)."""
        undo_bytes = sum(p.stat().st_size for p in self._undo_directory().iterdir())
        points = self._catalogue.points
        return ReplicaStoreStatistics(
            vm_name=self.vm_name,
            disk_count=len(self._disks),
            recovery_point_count=len(points),
            latest_recovery_point_id=points[-1].recovery_point_id if points else None,
            retention_count=self._retention_count,
            undo_bytes=undo_bytes,
            cycles_applied=self._cycles_applied,
            bytes_applied=self._bytes_applied,
            cycles_rolled_back=self._cycles_rolled_back,
        )

    # -- helpers -----------------------------------------------------------------------

    def _newest_point(self) -> RecoveryPoint | None:
        return self._catalogue.points[-1] if self._catalogue.points else None

    def _images(self) -> dict[str, Path]:
        return {disk: self._disk_path(disk) for disk in self._disks}

    def _intent_exists(self) -> bool:
        path = self.directory / INTENT_FILE
        return path.exists() or path.is_symlink()

    def _refuse_if_pending(self, doing: str) -> None:
        if self._intent_exists():
            msg = f"VM {self.vm_name!r}: cannot {doing} while an interrupted apply is "
            msg += f"pending ({str(self.directory / INTENT_FILE)!r}); its owner must "
            msg += "call recover() first (the engine does when it opens)"
            raise ReplicationError(msg)

    def _disk_size(self, disk: str) -> int:
        if disk not in self._disks:
            msg = f"disk={disk!r} is not a disk of VM {self.vm_name!r}; "
            msg += f"choices: {sorted(self._disks)}"
            raise InvalidConfiguration(msg)
        return self._disks[disk]

    def _disk_path(self, disk: str) -> Path:
        self._disk_size(disk)
        return safe_child(self.directory, "replica", disk + DISK_SUFFIX)

    def _undo_path(self, name: str) -> Path:
        return safe_child(self.directory, "undo", name + UNDO_SUFFIX)

    def _undo_directory(self) -> Path:
        directory = self.directory / "undo"
        if not directory.is_dir():
            msg = f"{str(directory)!r} is missing or not a directory; the replica "
            msg += f"store of VM {self.vm_name!r} is damaged: {WHAT_TO_DO}"
            raise DamagedState(msg)
        return directory

    def _manifest_bytes(
        self, catalogue: RecoveryPointCatalogue, *, pinned: int | None
    ) -> bytes:
        return StoreManifest(
            self.vm_name, self._disks, self._retention_count, catalogue, pinned
        ).to_bytes()

    def _write_store_temporary(
        self, catalogue: RecoveryPointCatalogue, *, pinned: int | None
    ) -> Path:
        path = self.directory / STORE_FILE
        temporary = durable_file.temporary_path(path)
        try:
            with temporary.open("wb") as target:
                target.write(self._manifest_bytes(catalogue, pinned=pinned))
                target.flush()
                files.current().fsync(target.fileno())
        except OSError:
            files.current().unlink(temporary, missing_ok=True)
            raise
        return temporary

    def _write_store_file(
        self, catalogue: RecoveryPointCatalogue, *, pinned: int | None
    ) -> None:
        temporary = self._write_store_temporary(catalogue, pinned=pinned)
        files.current().rename(temporary, self.directory / STORE_FILE)
        fsync_directory(self.directory)


def _trusted_roots(root: Path, trusted_root: Path | None) -> tuple[Path, Path]:
    """Return the resolved trusted root (default ``root.parent``) and ``root``."""
    replicas = Path(os.path.realpath(root))
    chosen = (
        Path(os.path.abspath(root)).parent if trusted_root is None else trusted_root
    )
    trusted = Path(os.path.realpath(chosen))
    if trusted.is_relative_to(replicas):
        msg = f"trusted_root={str(chosen)!r} resolves to {str(trusted)!r}, inside the "
        msg += f"replicas directory {str(replicas)!r}: logs never live there; give "
        msg += "the site root (the default, root.parent) or its inbox"
        raise InvalidConfiguration(msg)
    return trusted, replicas


def _apply_undo(
    path: Path, *, cycle_id: int, images: Mapping[str, Path], doing: str
) -> None:
    """Apply a store's own undo image; its damage or absence is DamagedState."""
    try:
        apply_undo_image(path, cycle_id=cycle_id, images=images)
    except CorruptRecord as error:
        msg = f"{error}. It is a file of the replica store, needed to {doing}: "
        msg += WHAT_TO_DO
        raise DamagedState(msg) from error
    except FileNotFoundError as error:
        msg = f"{str(error.filename)!r} is missing, needed to {doing}: the replica "
        msg += f"store is damaged: {WHAT_TO_DO}"
        raise DamagedState(msg) from error


def _is_log_of(path: Path, disk: str, cycle_id: int, epoch: int) -> bool:
    """Whether ``path`` is ``disk``'s log of this cycle: in a ``cycle-<id>`` folder,
    a change log of that disk and epoch. Only such files are ever deleted."""
    if path.parent.name != f"cycle-{cycle_id}":
        return False
    try:
        with path.open("rb") as stream:
            header, _ = read_header(stream, path)
    except (OSError, ReplicationError):
        return False
    return header.disk_id == disk and header.epoch == epoch


def _no_crash_point(step: str) -> None:
    """Default hook: no crash is simulated."""


def _check_int(argument: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"{argument}={value!r} must be an int >= 0 (got {type(value).__name__})"
        raise InvalidConfiguration(msg)


def _block_number(argument: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{argument}={value!r} must be an int (got {type(value).__name__})"
        raise InvalidConfiguration(msg)
    if value < 0:
        msg = f"{argument}={value} must be >= 0: blocks are numbered from 0"
        raise DiskRangeError(msg)
    return value


def _storage_error(error: OSError, doing: str) -> Exception:
    if durable_file.is_storage_full(error):
        msg = f"storage full while {doing} ({error.strerror}); the replica was "
        msg += "left in its previous state (the previous recovery point): free "
        msg += "space and retry"
        return StorageFull(msg)
    return error
