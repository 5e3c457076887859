"""The replica interface in-process: the target site's storage root is on this machine.

:class:`InProcessReplica` implements :class:`~engine.transport.interface.ReplicaTarget`
for embedding, tests and fuzzing. It owns the replica stores under the target site's
``replicas/`` folder and the ``inbox/`` they are fed from (``delivery.py``), exactly
as a replica server will on another host, so the source side cannot tell the two apart.

Its ``link_up`` switch plays the network: while it is ``False`` every transfer raises
:class:`TransportError` naming both sites and nothing reaches the target; ``reachable``
says so first, which is what the model is shown.

**Owner-only recovery.** :meth:`InProcessReplica.open` is the one place an apply that a
crash interrupted is finished or undone (``ReplicaStore.recover``) and inbox debris is
removed: the engine that owns the target site calls it once when it opens. Every other
call only reads or does what it is asked; :meth:`status` has no side effects.

**Threads.** Calls that change a replica are serialised by one lock; :meth:`status`
takes no lock (each store's catalogue is an immutable value swapped whole), so an
operator's status read never waits for an apply.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.clock import Clock
from engine.errors import (
    DamagedState,
    InvalidConfiguration,
    ReplicationError,
    TransportError,
)
from engine.names import safe_child, validate_site_name, validate_vm_name
from engine.replica import drill, promote
from engine.replica.manifest import validate_disks
from engine.replica.point_view import PointView
from engine.replica.recovery_point import RecoveryPoint, validate_retention_count
from engine.replica.store import CrashPoint, ReplicaStore
from engine.storage import files as filesystem
from engine.storage.block_set import BlockSet
from engine.transport import delivery
from engine.transport.interface import (
    CycleShipment,
    DiskReader,
    Progress,
    ReplicaStatus,
    TestVmDisks,
)

REPLICAS: Final = "replicas"
DRILLS: Final = "drills"
"""The target's isolated area: one folder per VM with an open drill."""
VMS: Final = "vms"
DISK_SUFFIX: Final = ".img"


@dataclass(frozen=True, slots=True)
class TransportStatistics:
    """What an in-process replica has received and refused since it was opened."""

    cycles_shipped: int
    initial_copies_shipped: int  # disk images
    files_shipped: int
    bytes_shipped: int
    transfers_refused: int


class InProcessReplica:
    """The replicas held at a target site whose storage root is on this machine."""

    def __init__(
        self,
        source_site: str,
        target_site: str,
        root: Path,
        clock: Clock,
        *,
        link_up: bool = True,
        crash_point: CrashPoint | None = None,
    ) -> None:
        """Use :meth:`open` (which finishes interrupted applies); this only binds."""
        self._source_site = validate_site_name(source_site)
        self._target_site = validate_site_name(target_site)
        if source_site == target_site:
            msg = f"source_site and target_site are both {source_site!r}; "
            msg += "replication needs two different sites"
            raise InvalidConfiguration(msg)
        self._root = Path(root)
        self._clock = clock
        self.link_up = link_up
        self._crash = crash_point
        self._lock = threading.RLock()
        self._stores: dict[str, ReplicaStore] = {}
        self._drills: dict[str, _LockedTestVm] = {}
        self._damaged: dict[str, DamagedState] = {}
        self._recovered: dict[str, str] = {}
        self._cycles_shipped = 0
        self._initial_copies_shipped = 0
        self._files_shipped = 0
        self._bytes_shipped = 0
        self._transfers_refused = 0

    @classmethod
    def open(
        cls,
        source_site: str,
        target_site: str,
        root: Path,
        clock: Clock,
        *,
        link_up: bool = True,
        crash_point: CrashPoint | None = None,
    ) -> InProcessReplica:
        """Open the target's replicas; finish or undo what a crash interrupted."""
        replica = cls(
            source_site, target_site, root, clock,
            link_up=link_up, crash_point=crash_point,
        )  # fmt: skip
        replica._recover_all()
        return replica

    @property
    def site_name(self) -> str:
        """The target site."""
        return self._target_site

    @property
    def recovered(self) -> Mapping[str, str]:
        """What :meth:`open` finished or undid, per VM."""
        return dict(self._recovered)

    def reachable(self) -> bool:
        """Whether the link to the target is up."""
        return self.link_up

    def memoised(self) -> AbstractContextManager[None]:
        """Nothing to save: every answer is read from this machine's files."""
        return contextlib.nullcontext()

    # -- the replica interface ---------------------------------------------------------

    def create_replica(
        self, vm_name: str, disks: Mapping[str, int], retention_count: int
    ) -> None:
        """Create an empty replica store for ``vm_name`` (replacing any earlier one)."""
        with self._lock:
            self.remove_replica(vm_name)
            self._stores[vm_name] = ReplicaStore.create(
                self._replicas, vm_name, disks, retention_count, self._clock
            )

    def remove_replica(self, vm_name: str) -> None:
        """Delete the replica store of ``vm_name``, its inbox and any drill."""
        validate_vm_name(vm_name)
        with self._lock:
            found = self._drills.pop(vm_name, None)
            if found is not None:
                found.close()
            filesystem.remove_tree_durably(self._drill_area(vm_name))
            self._stores.pop(vm_name, None)
            self._damaged.pop(vm_name, None)
            filesystem.remove_tree_durably(safe_child(self._replicas, vm_name))
            filesystem.remove_tree_durably(delivery.vm_inbox(self._root, vm_name))

    def send_disk_image(
        self,
        vm_name: str,
        disk: str,
        image: Path,
        *,
        progress: Progress | None = None,
    ) -> None:
        """Deliver one disk image of an initial copy into the inbox."""
        with self._lock:
            self._check_link(f"disk {disk!r} of VM {vm_name!r}")
            self._owned_store(vm_name)
            copied = delivery.deliver_disk_image(
                self._root, vm_name, disk, image, progress=progress
            )
            self._bytes_shipped += copied.bytes_copied
            self._files_shipped += 1
            self._initial_copies_shipped += 1

    def receive_disk_image(self, vm_name: str, disk: str, received: Path) -> None:
        """Take one disk image of an initial copy that arrived whole under the root
        (a replica server's finished upload): moved into the inbox, not copied."""
        with self._lock:
            self._owned_store(vm_name)
            size = received.stat().st_size
            delivery.accept_disk_image(self._root, vm_name, disk, received)
            self._bytes_shipped += size
            self._files_shipped += 1
            self._initial_copies_shipped += 1

    def install_initial_copy(self, vm_name: str) -> None:
        """Swap the delivered images in (a restart may find some moved already)."""
        with self._lock:
            store = self._owned_store(vm_name)
            if store.catalogue.points:
                return
            directory = delivery.initial_copy_directory(self._root, vm_name)
            images = {
                disk: directory / f"{disk}{delivery.IMAGE_SUFFIX}"
                for disk in store.disks
            }
            present = {disk: path for disk, path in images.items() if path.exists()}
            if present:
                store.install_initial_copy(present, consume=True)
            filesystem.remove_tree_durably(directory)

    def apply_cycle(
        self, vm_name: str, shipment: CycleShipment, *, take_logs: bool = False
    ) -> RecoveryPoint:
        """Deliver the cycle's logs, then have the store verify and apply them.
        ``take_logs``: the logs are files under this site's root that were received
        whole and synced (a replica server's uploads): moved into the inbox, not
        copied."""
        with self._lock:
            self._check_link(f"cycle {shipment.cycle_id} of VM {vm_name!r}")
            store = self._owned_store(vm_name)
            deliver = delivery.accept_cycle if take_logs else delivery.deliver_cycle
            delivered, size = deliver(
                self._root, vm_name, shipment.cycle_id, shipment.logs
            )
            if self._crash is not None:
                self._crash("shipped")
            try:
                point = store.apply_cycle(
                    shipment.cycle_id,
                    delivered,
                    epoch=shipment.epoch,
                    app_consistent=shipment.app_consistent,
                    expected_last_sequences=shipment.last_sequences,
                    crash_point=self._crash,
                    resync=shipment.resync,
                )
            except ReplicationError:
                # Refused before any replica byte changed (a log failed its checks, an
                # argument was wrong), or rolled back: nothing to finish, so nothing
                # of the delivery stays. An apply to finish keeps the logs it needs.
                if not store.pending_recovery:
                    delivery.remove_delivered(self._root, vm_name, shipment.cycle_id)
                raise
            delivery.remove_delivered(self._root, vm_name, shipment.cycle_id)
            self._cycles_shipped += 1
            self._files_shipped += len(delivered)
            self._bytes_shipped += size
            return point

    def block_digests(
        self,
        vm_name: str,
        disk: str,
        block_bytes: int,
        *,
        blocks: Sequence[int] | None = None,
        start_block: int = 0,
        block_count: int | None = None,
    ) -> list[bytes]:
        """One digest per block of the replica of ``disk``, or per listed block;
        ``start_block`` and ``block_count`` take a part of the disk (a replica
        server answers a disk in parts)."""
        with self._lock:
            self._check_link(f"digests of disk {disk!r} of VM {vm_name!r}")
            store = self._owned_store(vm_name)
            if blocks is None:
                return store.block_digests(
                    disk, block_bytes, start_block=start_block, block_count=block_count
                )
            return store.digests_of_blocks(disk, block_bytes, blocks)

    def status(self, vm_name: str, *, quick: bool = False) -> ReplicaStatus:
        """The replica of ``vm_name``: exists, points (no side effects; ``quick``
        changes nothing in process)."""
        validate_vm_name(vm_name)
        damage = self._damaged.get(vm_name)
        if damage is not None:
            raise damage
        store = self._stores.get(vm_name)
        if store is None:
            with self._lock:
                if not safe_child(self._replicas, vm_name).exists():
                    return ReplicaStatus(vm_name, exists=False)
                store = self._store(vm_name)
        catalogue = store.catalogue
        return ReplicaStatus(
            vm_name,
            exists=True,
            points=catalogue.points,
            last_cycle_id=catalogue.last_cycle_id,
            disks=dict(store.disks),
            recovered=self._recovered.get(vm_name),
        )

    # -- the target-side half of a failover --------------------------------------------

    def start_test_failover(self, vm_name: str, recovery_point_id: int) -> None:
        """Pin the point and open a test VM on differencing disks under ``drills/``."""
        with self._lock:
            store = self._owned_store(vm_name)
            area = self._drill_area(vm_name)
            if store.pinned == recovery_point_id and (area / drill.DRILL_FILE).exists():
                self._drills[vm_name] = _LockedTestVm(
                    drill.open_drill(store, area), self._lock
                )
                return
            if store.pinned is not None or area.exists():
                drill.cleanup_drill(store, area)  # a start a crash cut short
            self._drills[vm_name] = _LockedTestVm(
                drill.start_drill(store, recovery_point_id, area, _block_of(store)),
                self._lock,
            )

    def test_vm(self, vm_name: str) -> TestVmDisks:
        """The open drill's test VM (reopened after a restart)."""
        with self._lock:
            found = self._drills.get(vm_name)
            if found is None:
                store = self._owned_store(vm_name)
                found = _LockedTestVm(
                    drill.open_drill(store, self._drill_area(vm_name)), self._lock
                )
                self._drills[vm_name] = found
            return found

    def cleanup_test_failover(self, vm_name: str) -> None:
        """Close and delete the test VM and its overlay; unpin (idempotent)."""
        with self._lock:
            found = self._drills.pop(vm_name, None)
            if found is not None:
                found.close(keep=False)  # deleted next: not flushed (a full disk)
            drill.cleanup_drill(self._owned_store(vm_name), self._drill_area(vm_name))

    def point_reader(self, vm_name: str, recovery_point_id: int) -> DiskReader:
        """A view of the replica at the point (reads serialised with applies)."""
        with self._lock:
            view = PointView(self._owned_store(vm_name), recovery_point_id)
            return _LockedReader(view, self._lock)

    def promote_replica(
        self, vm_name: str, recovery_point_id: int, block_bytes: int
    ) -> Mapping[str, BlockSet]:
        """Make the point the VM's disks under ``vms/`` here; the store goes."""
        with self._lock:
            directory = safe_child(self._replicas, vm_name)
            if directory.exists():
                store = self._owned_store(vm_name)
                if store.pinned is not None:
                    drill.cleanup_drill(store, self._drill_area(vm_name))
                store.catalogue.get(recovery_point_id)
            self._stores.pop(vm_name, None)
            self._drills.pop(vm_name, None)
            blocks = promote.promote(
                directory, self._vm_directory(vm_name), vm_name, recovery_point_id,
                block_bytes,
            )  # fmt: skip
            filesystem.remove_tree_durably(delivery.vm_inbox(self._root, vm_name))
            return blocks

    def adopt_copy(
        self, vm_name: str, disks: Mapping[str, int], retention_count: int
    ) -> None:
        """The VM's disks under ``vms/`` here become its replica (no point yet).

        Refused with :class:`InvalidConfiguration` when the arguments are not a VM
        name, disks and a retention count, or when there is no copy here to adopt
        (no replica store and none of its disks); :class:`DamagedState` when only
        some of its disks are here."""
        vm_name = validate_vm_name(vm_name)
        disks = validate_disks(disks)  # before any of their names reaches a path
        retention_count = validate_retention_count(retention_count)
        with self._lock:
            folder = self._vm_directory(vm_name)
            images = {disk: folder / f"{disk}{DISK_SUFFIX}" for disk in disks}
            present = {disk: path for disk, path in images.items() if path.exists()}
            directory = safe_child(self._replicas, vm_name)
            if not directory.exists():
                if not present:
                    msg = f"VM {vm_name!r} has no copy at site "
                    msg += f"{self._target_site!r} to adopt: neither a replica nor "
                    msg += f"its disks {sorted(images)} (a reverse adopts the disks "
                    msg += "the VM ran on at its old source)"
                    raise InvalidConfiguration(msg)
                if len(present) != len(images):
                    missing = sorted(set(images) - set(present))
                    msg = f"VM {vm_name!r}: the copy to adopt at site "
                    msg += f"{self._target_site!r} lacks the disks {missing}"
                    raise DamagedState(msg)
                self._stores[vm_name] = ReplicaStore.create(
                    self._replicas, vm_name, disks, retention_count, self._clock
                )
            store = self._owned_store(vm_name)
            if present and not store.catalogue.points:
                store.install_initial_copy(present, consume=True)
            filesystem.remove_tree_durably(folder)

    def store(self, vm_name: str) -> ReplicaStore:
        """The replica store of ``vm_name`` (target-side tools and tests only)."""
        with self._lock:
            return self._store(vm_name)

    def statistics(self) -> TransportStatistics:
        """What was received and refused."""
        return TransportStatistics(
            cycles_shipped=self._cycles_shipped,
            initial_copies_shipped=self._initial_copies_shipped,
            files_shipped=self._files_shipped,
            bytes_shipped=self._bytes_shipped,
            transfers_refused=self._transfers_refused,
        )

    # -- internals ---------------------------------------------------------------------

    @property
    def _replicas(self) -> Path:
        return self._root / REPLICAS

    def _drill_area(self, vm_name: str) -> Path:
        return safe_child(self._root, DRILLS, vm_name)

    def _vm_directory(self, vm_name: str) -> Path:
        return safe_child(self._root, VMS, vm_name)

    def _check_link(self, what: str) -> None:
        if not self.link_up:
            self._transfers_refused += 1
            msg = f"link from site {self._source_site!r} to site "
            msg += f"{self._target_site!r} is down: {what} was not sent; retry when "
            msg += "it is up"
            raise TransportError(msg)

    def _store(self, vm_name: str) -> ReplicaStore:
        validate_vm_name(vm_name)
        damage = self._damaged.get(vm_name)
        if damage is not None:
            raise damage
        store = self._stores.get(vm_name)
        if store is None:
            if not safe_child(self._replicas, vm_name).exists():
                msg = f"VM {vm_name!r} has no replica at site {self._target_site!r} "
                msg += f"({str(safe_child(self._replicas, vm_name))!r} is missing); "
                msg += "enable protection first"
                raise InvalidConfiguration(msg)
            store = ReplicaStore.open(self._replicas, vm_name, self._clock)
            self._stores[vm_name] = store
        return store

    def _owned_store(self, vm_name: str) -> ReplicaStore:
        """The store, with an apply that failed earlier in this run finished or undone
        first (a full disk can fail an apply's rollback too): we are its owner."""
        store = self._store(vm_name)
        if store.pending_recovery:
            report = store.recover(crash_point=self._crash)
            self._recovered[vm_name] = f"{report.action.value}: {report.reason}"
        return store

    def _recover_all(self) -> None:
        """Open every store, finish or undo interrupted applies, drop inbox debris."""
        if self._replicas.exists():
            for directory in sorted(self._replicas.iterdir()):
                self._recover_one(directory.name)
        inbox = self._root / delivery.INBOX
        if inbox.is_dir():
            for vm_directory in sorted(inbox.iterdir()):
                if not vm_directory.is_dir() or vm_directory.is_symlink():
                    filesystem.remove_tree_durably(vm_directory)  # a stray entry
                    continue
                for entry in sorted(vm_directory.iterdir()):
                    if entry.name != delivery.INITIAL_COPY:
                        filesystem.remove_tree_durably(entry)

    def _recover_one(self, vm_name: str) -> None:
        try:
            validate_vm_name(vm_name)
            store = ReplicaStore.open(self._replicas, vm_name, self._clock)
            report = store.recover(crash_point=self._crash)
        except DamagedState as damage:
            self._damaged[vm_name] = damage
            return
        except InvalidConfiguration:
            return  # not a replica store (a stray entry): ignored
        self._stores[vm_name] = store
        if report.cycle_id is not None:
            self._recovered[vm_name] = f"{report.action.value}: {report.reason}"


def _block_of(store: ReplicaStore) -> int:
    """The overlay's block size: the largest power of two up to 64 KiB dividing every
    disk of the store (a drill's writes are copied on write in these units)."""
    size = 64 * 1024
    while any(disk % size for disk in store.disks.values()) and size > 512:
        size //= 2
    return size


class _LockedReader:
    """A point view whose reads wait for an apply in progress (one lock)."""

    def __init__(self, view: PointView, lock: threading.RLock) -> None:
        self._view = view
        self._lock = lock

    def read(self, disk: str, offset: int, length: int) -> bytes:
        with self._lock:
            return self._view.read(disk, offset, length)


class _LockedTestVm:
    """A drill's test VM whose reads and writes wait for an apply in progress."""

    def __init__(self, vm: drill.TestVm, lock: threading.RLock) -> None:
        self._vm = vm
        self._lock = lock

    def read(self, disk: str, offset: int, length: int) -> bytes:
        with self._lock:
            return self._vm.read(disk, offset, length)

    def write(self, disk: str, offset: int, data: bytes) -> None:
        with self._lock:
            self._vm.write(disk, offset, data)

    def flush(self) -> None:
        with self._lock:
            self._vm.flush()

    def close(self, *, keep: bool = True) -> None:
        with self._lock:
            self._vm.close(keep=keep)
