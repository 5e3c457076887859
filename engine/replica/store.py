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

**Catalogue storage: one JSON file replaced atomically**, not SQLite. The store has one
writer and one tiny document (the disks and at most a few thousand points) that must
change in step with files beside it; a rename gives exactly the all-or-nothing switch we
need, the file is readable with any tool when diagnosing a site, and the per-site
SQLite control database (``control_store.py``) stays the single place that needs a
database. The catalogue there mirrors this one; this file is the authority for the data.

**After a crash** (:meth:`ReplicaStore.open`), an ``intent.json`` left behind is
**rolled forward** when the cycle's logs are still there and verify: they were complete
and checked before the intent was written, they are deleted only after the commit, and a
record is an absolute write (offset, bytes), so re-applying the whole cycle over a
partly applied replica gives the same bytes. Finishing keeps the newer point (a smaller
RPO) and needs nothing from the source. Only when a log is gone or damaged since is the
replica **rolled back** with the undo image. The report says which was done.

One writer at a time: the binding layer serialises a VM's operations, so the store
takes no lock of its own.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from engine.clock import Clock
from engine.errors import (
    CorruptRecord,
    DiskRangeError,
    InvalidConfiguration,
    ReplicationError,
    StorageFull,
)
from engine.names import safe_child
from engine.replica.apply import (
    logs_applied_by,
    preallocate,
    touched_regions,
    verify_cycle_logs,
    write_cycle,
)
from engine.replica.manifest import ApplyIntent, StoreManifest, validate_disks
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
from engine.storage.files import fsync_directory

STORE_FILE: Final = "store.json"
INTENT_FILE: Final = "intent.json"
ORIGIN_UNDO: Final = "origin"
DISK_SUFFIX: Final = ".img"
UNDO_SUFFIX: Final = ".undo"

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
    """What :meth:`ReplicaStore.open` did about an apply interrupted by a crash."""

    NONE = "none"  # no apply was interrupted
    ROLLED_FORWARD = "rolled_forward"  # the cycle was re-applied and committed
    ROLLED_BACK = "rolled_back"  # the replica was restored from the undo image
    CLEANED_UP = "cleaned_up"  # the cycle had committed; its intent and logs removed


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What :meth:`ReplicaStore.open` found and did about an interrupted apply."""

    action: RecoveryAction
    cycle_id: int | None
    reason: str


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
        self, directory: Path, vm_name: str, disks: dict[str, int], clock: Clock
    ) -> None:
        """Use :meth:`create` or :meth:`open`; this only binds loaded state."""
        self.directory = directory
        self.vm_name = vm_name
        self._disks = disks
        self._clock = clock
        self._retention_count = 1
        self._catalogue = RecoveryPointCatalogue()
        self._recovery = RecoveryReport(RecoveryAction.NONE, None, "store created")
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
    ) -> ReplicaStore:
        """Create the store of ``vm_name`` under ``root``, its disks sparse and zero."""
        directory = safe_child(root, vm_name)
        if directory.exists():
            msg = f"vm_name={vm_name!r}: a replica store already exists at "
            msg += f"{str(directory)!r}; open it, or delete it to start over"
            raise InvalidConfiguration(msg)
        sizes = validate_disks(disks)
        store = cls(directory, vm_name, sizes, clock)
        store._retention_count = validate_retention_count(retention_count)
        files.make_directory_durably(directory / "replica")
        files.make_directory_durably(directory / "undo")
        fs = files.current()
        for disk, size in sizes.items():
            with store._disk_path(disk).open("wb") as image:
                image.truncate(size)
                fs.fsync(image.fileno())
        fsync_directory(directory / "replica")
        store._write_store_file(store.catalogue)
        fsync_directory(directory.parent)
        return store

    @classmethod
    def open(
        cls,
        root: Path,
        vm_name: str,
        clock: Clock,
        *,
        crash_point: CrashPoint | None = None,
    ) -> ReplicaStore:
        """Open an existing store, finishing or rolling back an interrupted apply.

        :attr:`recovery` then says what was done. ``crash_point`` is the test hook of
        :meth:`apply_cycle`, called while an interrupted apply is rolled forward.
        """
        directory = safe_child(root, vm_name)
        path = directory / STORE_FILE
        if not path.exists():
            msg = f"vm_name={vm_name!r}: no replica store at {str(directory)!r}; "
            msg += "create it first (initial replication)"
            raise InvalidConfiguration(msg)
        manifest = StoreManifest.load(path, vm_name)
        store = cls(directory, vm_name, manifest.disks, clock)
        store._retention_count = manifest.retention_count
        store._catalogue = manifest.catalogue
        store._recovery = store._recover(crash_point or _no_crash_point)
        store._remove_debris()
        return store

    @property
    def disks(self) -> Mapping[str, int]:
        """The VM's disks and their sizes in bytes (read-only)."""
        return MappingProxyType(self._disks)

    @property
    def catalogue(self) -> RecoveryPointCatalogue:
        """The committed recovery points, oldest first."""
        return self._catalogue

    @property
    def retention_count(self) -> int:
        """How many recovery points are kept before the oldest is merged away."""
        return self._retention_count

    @property
    def recovery(self) -> RecoveryReport:
        """What :meth:`open` did about an interrupted apply."""
        return self._recovery

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
    ) -> RecoveryPoint:
        """Apply one cycle (a sealed log per disk) to all disks or none; commit a point.

        ``expected_last_sequences`` (from the source's :class:`SealedLog`, when shipped
        with the logs) also refuses a log cut short at a record boundary. Re-applying a
        committed cycle returns its point and deletes those of the logs it applied.
        ``crash_point`` is a test hook called at each step named in ``CRASH_POINTS``.
        """
        hook = crash_point or _no_crash_point
        _check_int("cycle_id", cycle_id)
        _check_int("epoch", epoch)
        self._check_no_intent()
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
        )
        log_names = {disk: os.path.abspath(path) for disk, path in logs.items()}
        intent = ApplyIntent(cycle_id, epoch, log_names, undo_name, point)
        self._prepare(intent, hook)
        return self._apply_and_commit(intent, hook)

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
            retained = catalogue.retained(self._retention_count)
            temporary = self._write_store_temporary(retained)
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
        """Post-commit cleanup; idempotent, and redone by :meth:`open` after a crash."""
        hook("before_log_delete")
        durable_file.remove_durably([Path(name) for name in intent.logs.values()])
        hook("after_log_delete")
        durable_file.remove_durably([self.directory / INTENT_FILE])
        self._remove_debris()

    def _roll_back(self, intent: ApplyIntent) -> None:
        """Restore the pre-cycle bytes from the undo image; drop the intent."""
        undo_path = self._undo_path(intent.undo)
        apply_undo_image(undo_path, cycle_id=intent.cycle_id, images=self._images())
        durable_file.remove_durably([self.directory / INTENT_FILE, undo_path])
        self._cycles_rolled_back += 1

    # -- restart -----------------------------------------------------------------------

    def _recover(self, hook: CrashPoint) -> RecoveryReport:
        path = self.directory / INTENT_FILE
        if not path.exists():
            return RecoveryReport(RecoveryAction.NONE, None, "no apply interrupted")
        intent = ApplyIntent.load(path)
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
            if committed or (self.directory / INTENT_FILE).exists():
                raise  # a cleanup or the rollback itself failed: reopen retries it
            reason = f"re-applying failed ({error}); rolled back"
            return RecoveryReport(RecoveryAction.ROLLED_BACK, intent.cycle_id, reason)
        reason = "the cycle's logs were intact; re-applied and committed"
        return RecoveryReport(RecoveryAction.ROLLED_FORWARD, intent.cycle_id, reason)

    def _remove_debris(self) -> None:
        """Delete temporary files and undo images no retained point needs."""
        needed = {
            self._undo_path(str(i)) for i in self._catalogue.recovery_point_ids[:-1]
        }
        if (self.directory / INTENT_FILE).exists():
            intent = ApplyIntent.load(self.directory / INTENT_FILE)
            needed.add(self._undo_path(intent.undo))
        debris = [p for p in (self.directory / "undo").iterdir() if p not in needed]
        for directory in (self.directory, self.directory / "replica"):
            debris += directory.glob("*" + durable_file.TEMPORARY_SUFFIX)
        durable_file.remove_durably(debris)

    # -- reading points ----------------------------------------------------------------

    def materialize(self, recovery_point_id: int, target_dir: Path) -> dict[str, Path]:
        """Write images equal to ``recovery_point_id`` into ``target_dir``; return them.

        The replica is only read. Files already in ``target_dir`` are never overwritten.
        """
        self._check_no_intent()
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
            durable_file.copy_file_atomically(self._disk_path(disk), image)
        # Step back one point at a time, newest first: the undo image of point P
        # turns P's successor into P.
        points = self._catalogue.points
        for point in self._catalogue.newer_than(recovery_point_id):
            predecessor = points[points.index(point) - 1]
            undo_path = self._undo_path(str(predecessor.recovery_point_id))
            apply_undo_image(undo_path, cycle_id=point.cycle_id, images=images)

    def read(self, disk: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes of the replica of ``disk`` from ``offset``."""
        size = self._disk_size(disk)
        if offset < 0 or length < 0 or offset + length > size:
            msg = f"offset={offset}, length={length} on disk {disk!r} must satisfy "
            msg += f"0 <= offset and offset + length <= {size}"
            raise DiskRangeError(msg)
        with self._disk_path(disk).open("rb") as image:
            image.seek(offset)
            return image.read(length)

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
        self._check_no_intent()
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
        """Delete every recovery point (a committed failover); the replica stays."""
        self._check_no_intent()
        self._write_store_file(self._catalogue.without_points())
        self._catalogue = self._catalogue.without_points()
        self._remove_debris()

    def statistics(self) -> ReplicaStoreStatistics:
        """Return the store's counters."""
        undo_bytes = sum(p.stat().st_size for p in (self.directory / "undo").iterdir())
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

    def _check_no_intent(self) -> None:
        if (self.directory / INTENT_FILE).exists():
            msg = f"VM {self.vm_name!r}: an interrupted apply is pending at "
            msg += f"{str(self.directory)!r}; reopen the store to finish it"
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

    def _write_store_temporary(self, catalogue: RecoveryPointCatalogue) -> Path:
        manifest = StoreManifest(
            self.vm_name, self._disks, self._retention_count, catalogue
        )
        path = self.directory / STORE_FILE
        temporary = durable_file.temporary_path(path)
        try:
            with temporary.open("wb") as target:
                target.write(manifest.to_bytes())
                target.flush()
                files.current().fsync(target.fileno())
        except OSError:
            files.current().unlink(temporary, missing_ok=True)
            raise
        return temporary

    def _write_store_file(self, catalogue: RecoveryPointCatalogue) -> None:
        temporary = self._write_store_temporary(catalogue)
        files.current().rename(temporary, self.directory / STORE_FILE)
        fsync_directory(self.directory)


def _no_crash_point(step: str) -> None:
    """Default hook: no crash is simulated."""


def _check_int(argument: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"{argument}={value!r} must be an int >= 0 (got {type(value).__name__})"
        raise InvalidConfiguration(msg)


def _storage_error(error: OSError, doing: str) -> Exception:
    if durable_file.is_storage_full(error):
        msg = f"storage full while {doing} ({error.strerror}); the replica was "
        msg += "left in its previous state (the previous recovery point): free "
        msg += "space and retry"
        return StorageFull(msg)
    return error
