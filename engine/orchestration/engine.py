"""The library's front: two sites, the replica interface between them, and the VMs.

``ReplicationEngine.open(primary_root, secondary_root)`` takes ownership of both sites
(each an OS lock: a second engine, in this process or another, is refused naming the
holder), reopens every VM where it was and finishes or rolls back what a crash
interrupted, first on the target (an interrupted apply) then per VM
(``ProtectedVm.recover``); what was done is listed in ``recovered``. A VM whose files
are damaged (its folder or a disk image missing, its replica gone) does not stop the
others: it is listed in ``damaged`` and every call on it raises that
:class:`~engine.errors.DamagedState`.

Each VM's operations go through its binding (``engine.binding``), which asks the model
first, so the engine can never do what the model forbids; a refusal is a
:class:`~engine.errors.TransitionNotAllowed` with the model's message. Operations may be
called from any thread; guest writes wait only for a cut.

The source side reaches the target only through the replica interface
(``engine.transport.interface``). In this version both sites' storage roots are on
this machine and the interface is in-process (``InProcessReplica``, its ``link_up``
switch playing the network); ``wrap_transport`` wraps it (a fault-injecting transport in
tests). The replica server between hosts fills the same seam.

**Roles as data.** Each VM's control row says which site is active and the direction;
its disks are in the control state. Nothing is inferred from site names or by globbing.

**Creating a VM is all or nothing**: the control row is written first with a pending
``create_vm`` operation, then the folder and the disks; a failure removes what was made
and the row, and a restart rolls back a creation a crash interrupted, so a name never
becomes unusable.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from engine.binding.protected_vm import (
    CrashPoint,
    CycleReport,
    Progress,
    ProtectedVm,
    VmStatistics,
    VmStatus,
)
from engine.clock import Clock, SystemClock
from engine.control.site import SiteStorage
from engine.errors import (
    DamagedState,
    InvalidConfiguration,
    ReplicationError,
    StorageFull,
)
from engine.names import validate_disk_name, validate_vm_name
from engine.replica.recovery_point import validate_retention_count
from engine.source.resync import ResyncReport
from engine.storage import files as filesystem
from engine.storage.disk import (
    BLOCK_BYTES_DEFAULT,
    VirtualDisk,
    storage_error,
    validate_block_bytes,
)
from engine.transport.in_process import InProcessReplica, TransportStatistics
from engine.transport.interface import ReplicaTarget

PRIMARY = "primary"
SECONDARY = "secondary"
DIRECTION = "primary->secondary"
RETENTION_COUNT_DEFAULT = 4  # recovery points kept per VM before merging the oldest
CREATE_VM = "create_vm"

TransportWrapper = Callable[[ReplicaTarget], ReplicaTarget]


@dataclass(frozen=True)
class EngineStatistics:
    """Counters of the whole engine: per VM, and the transport's."""

    vms: Mapping[str, VmStatistics]
    transport: TransportStatistics | None


class ReplicationEngine:
    """Replicates VM disk images from the primary site to the secondary."""

    def __init__(
        self,
        primary: SiteStorage,
        secondary: SiteStorage,
        transport: ReplicaTarget,
        clock: Clock,
        *,
        block_bytes: int,
        retention_count: int,
        durable_writes: bool,
        crash_point: CrashPoint | None = None,
    ) -> None:
        """Use :meth:`open`."""
        self.primary = primary
        self.secondary = secondary
        self.transport = transport
        self._clock = clock
        self._block_bytes = block_bytes
        self._retention_count = retention_count
        self._durable = durable_writes
        self._crash_point = crash_point
        self._vms: dict[str, ProtectedVm] = {}
        self._lock = threading.Lock()  # guards the set of VMs
        self.damaged: dict[str, DamagedState] = {}
        self.recovered: dict[str, str] = {}  # per VM: what reopening finished or undid
        self.target_recovered: dict[str, str] = {}  # per VM: the same at the target

    @classmethod
    def open(
        cls,
        primary_root: Path,
        secondary_root: Path,
        *,
        clock: Clock | None = None,
        block_bytes: int = BLOCK_BYTES_DEFAULT,
        retention_count: int = RETENTION_COUNT_DEFAULT,
        durable_writes: bool = False,
        link_up: bool = True,
        wrap_transport: TransportWrapper | None = None,
        crash_point: CrashPoint | None = None,
    ) -> Self:
        """Own both sites, reopen every VM, finish or roll back interrupted work.

        ``crash_point`` is a test seam (see ``engine.source.shipping``);
        ``wrap_transport`` wraps the in-process replica interface (fault injection).
        """
        block_bytes = validate_block_bytes(block_bytes)
        retention_count = validate_retention_count(retention_count)
        _check_roots(primary_root, secondary_root)
        _check_flag("durable_writes", durable_writes)
        _check_flag("link_up", link_up)
        clock = clock or SystemClock()
        primary, secondary = _open_sites(
            Path(primary_root), Path(secondary_root), clock
        )
        try:
            replica: ReplicaTarget = InProcessReplica.open(
                PRIMARY, SECONDARY, secondary.root, clock,
                link_up=link_up, crash_point=crash_point,
            )  # fmt: skip
            if wrap_transport is not None:
                replica = wrap_transport(replica)
            engine = cls(
                primary, secondary, replica, clock,
                block_bytes=block_bytes, retention_count=retention_count,
                durable_writes=durable_writes, crash_point=crash_point,
            )  # fmt: skip
            engine._reopen_vms()
        except BaseException:
            primary.close()
            secondary.close()
            raise
        return engine

    def _reopen_vms(self) -> None:
        recovered = getattr(self.transport, "recovered", {})
        self.target_recovered.update(recovered)
        control = self.primary.control
        for name in control.vm_names():
            pending = control.pending_operation(name)
            if pending is not None and pending.name == CREATE_VM:
                self._undo_creation(name)
                self.recovered[name] = "create_vm rolled back: create the VM again"
                continue
            try:
                vm = self._bind(name, control.vm_disks(name))
            except DamagedState as damage:
                self.damaged[name] = damage
                continue
            outcome = vm.recover()
            if outcome is not None:
                self.recovered[name] = outcome

    # -- VMs ---------------------------------------------------------------------------

    def create_vm(self, name: str, disks: Mapping[str, int]) -> None:
        """Create VM ``name`` at the primary with empty sparse disks (name -> bytes).

        All or nothing: on any failure nothing is left behind and the name stays free.
        """
        validate_vm_name(name)
        self._check_disks(disks)
        with self._lock:
            if name in self._vms or name in self.damaged:
                known = sorted(self.disk_sizes(name))
                msg = f"vm {name!r} already exists (disks {known}); choose another name"
                raise InvalidConfiguration(msg)
            same = [n for n in self.vm_names() if n.casefold() == name.casefold()]
            if same:
                msg = f"vm {name!r} differs from vm {same[0]!r} only in case; on "
                msg += "Windows and SMB shares they would be one folder: choose another"
                raise InvalidConfiguration(msg)
            directory = self.primary.vm_directory(name)
            if directory.exists():
                msg = f"vm {name!r}: {str(directory)!r} already exists but belongs to "
                msg += "no VM of this site; move it away or choose another name"
                raise InvalidConfiguration(msg)
            control = self.primary.control
            control.add_vm(
                name, phase="unprotected", active_site=PRIMARY, direction=DIRECTION,
                disks=dict(disks), creating=True,
            )  # fmt: skip
            try:
                filesystem.make_directory_durably(directory)
                for disk, size in disks.items():
                    VirtualDisk.create(
                        self.primary.disk_path(name, disk), size,
                        block_bytes=self._block_bytes,
                    ).close()  # fmt: skip
                pending = control.pending_operation(name)
                assert pending is not None
                assert pending.name == CREATE_VM
                control.complete_operation(pending.operation_id, "unprotected")
            except BaseException as error:
                self._undo_creation(name)
                note = f"vm {name!r} was not created; nothing was left behind"
                if isinstance(error, OSError | StorageFull):
                    typed = _typed_create_error(error, name)
                    typed.add_note(note)
                    raise typed from error
                error.add_note(note)
                raise
            self._bind(name, dict(disks))

    def _check_disks(self, disks: object) -> None:
        if not isinstance(disks, Mapping):
            msg = f"disks={disks!r} must be a mapping of disk name to size in bytes "
            msg += f"(got {type(disks).__name__}), e.g. {{'os': 64 << 20}}"
            raise InvalidConfiguration(msg)
        if not disks:
            msg = f"disks={dict(disks)!r}: a VM needs at least one disk (name -> bytes)"
            raise InvalidConfiguration(msg)
        folded = [str(disk).casefold() for disk in disks]
        if len(set(folded)) != len(folded):
            msg = f"disks={sorted(disks)} has names that differ only in case; on "
            msg += "Windows and SMB shares they would be one file: rename one"
            raise InvalidConfiguration(msg)
        for disk, size in disks.items():
            validate_disk_name(disk)
            if type(size) is not int or size <= 0:
                msg = f"disks[{disk!r}]={size!r} must be a positive int of bytes"
                raise InvalidConfiguration(msg)
            if size % self._block_bytes:
                msg = f"disks[{disk!r}]={size} must be a multiple of block_bytes="
                msg += f"{self._block_bytes}"
                raise InvalidConfiguration(msg)

    def _undo_creation(self, name: str) -> None:
        filesystem.remove_tree_durably(self.primary.vm_directory(name))
        self.primary.control.remove_vm(name)

    def vm_names(self) -> tuple[str, ...]:
        """The VMs this engine knows (damaged ones included), sorted."""
        return tuple(sorted({*self._vms, *self.damaged}))

    def disk_sizes(self, name: str) -> dict[str, int]:
        """The disks of VM ``name`` and their sizes, from the control state."""
        return self.primary.control.vm_disks(name)

    def vm(self, name: str) -> ProtectedVm:
        """The binding of VM ``name`` (for reads, writes and operations)."""
        if not isinstance(name, str):  # caller input: checked whatever the annotation
            kind = type(name).__name__  # type: ignore[unreachable]
            msg = f"vm={name!r} must be a VM name (str, got {kind}); known VMs: "
            msg += f"{list(self.vm_names())}"
            raise InvalidConfiguration(msg)
        found = self._vms.get(name)
        if found is not None:
            return found
        damage = self.damaged.get(name)
        if damage is not None:
            raise damage
        msg = f"vm {name!r} is unknown; known VMs: {list(self.vm_names())}"
        raise InvalidConfiguration(msg)

    # -- the operations, by VM name ----------------------------------------------------

    def write(self, vm: str, disk: str, offset: int, data: bytes) -> None:
        """The workload writes ``data`` at ``offset`` of ``disk`` (tracked)."""
        self.vm(vm).write(disk, offset, data)

    def read(self, vm: str, disk: str, offset: int, length: int) -> bytes:
        """Read the active copy."""
        return self.vm(vm).read(disk, offset, length)

    def enable_protection(self, vm: str, progress: Progress | None = None) -> None:
        """Enable replication and run the initial replication to its first point."""
        self.vm(vm).enable_protection(_check_progress(progress))

    def continue_initial_replication(
        self, vm: str, progress: Progress | None = None
    ) -> None:
        """Finish an initial replication a restart interrupted (disks copied again)."""
        self.vm(vm).continue_initial_replication(_check_progress(progress))

    def replicate(self, vm: str, *, app_consistent: bool = False) -> CycleReport | None:
        """Run one delta cycle (None: nothing to ship, or the logs were unusable and
        the VM is resynchronising: the phase says which)."""
        _check_flag("app_consistent", app_consistent)
        return self.vm(vm).replicate(app_consistent=app_consistent)

    def pause(self, vm: str) -> None:
        """Suspend shipping for ``vm``."""
        self.vm(vm).pause()

    def resume(self, vm: str) -> None:
        """Resume shipping for ``vm``."""
        self.vm(vm).resume()

    def resynchronize(self, vm: str, progress: Progress | None = None) -> ResyncReport:
        """Compare block digests with the replica and send the differing blocks.

        ``progress(disk, bytes compared, bytes total)`` follows the comparison.
        """
        return self.vm(vm).resynchronize(_check_progress(progress))

    def disable(self, vm: str) -> None:
        """Disable replication: logs and replica deleted, the VM's disks kept."""
        self.vm(vm).disable_protection()

    def status(self, vm: str) -> VmStatus:
        """Phase, derived status, health, recovery points, what is allowed now."""
        return self.vm(vm).status()

    def statistics(self) -> EngineStatistics:
        """Counters per VM and of the transport."""
        stats = getattr(self.transport, "statistics", None)
        return EngineStatistics(
            vms={name: vm.statistics() for name, vm in sorted(self._vms.items())},
            transport=stats() if callable(stats) else None,
        )

    def close(self) -> None:
        """Flush and close every VM, then release the sites."""
        try:
            for vm in self._vms.values():
                vm.flush()
                vm.close()
        finally:
            self.primary.close()
            self.secondary.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _bind(self, name: str, disks: Mapping[str, int]) -> ProtectedVm:
        control = self.primary.control.vm(name)
        if control.active_site != PRIMARY:
            msg = f"VM {name!r} is active at site {control.active_site!r}; this "
            msg += "engine replicates from the primary only (failover comes next)"
            raise DamagedState(msg)
        self._check_files(name, disks)
        try:
            vm = ProtectedVm(
                name, disks, source=self.primary, replica=self.transport,
                clock=self._clock, block_bytes=self._block_bytes,
                retention_count=self._retention_count, durable_writes=self._durable,
                crash_point=self._crash_point,
            )  # fmt: skip
        except (ReplicationError, OSError) as error:
            if isinstance(error, DamagedState | StorageFull):
                raise
            msg = f"VM {name!r} cannot be opened: {error}"
            raise DamagedState(msg) from error
        self._vms[name] = vm
        return vm

    def _check_files(self, name: str, disks: Mapping[str, int]) -> None:
        directory = self.primary.vm_directory(name)
        if not directory.is_dir():
            msg = f"VM {name!r}: its folder {str(directory)!r} is missing (the control "
            msg += (
                f"state at {str(self.primary.root)!r} lists it); restore the folder, "
            )
            msg += "or remove the VM"
            raise DamagedState(msg)
        for disk, size in disks.items():
            path = self.primary.disk_path(name, disk)
            found = path.stat().st_size if path.is_file() else None
            if found != size:
                what = "is missing" if found is None else f"holds {found} bytes"
                msg = f"VM {name!r}: disk image {str(path)!r} {what}; the control "
                msg += f"state says {size} bytes: restore the image"
                raise DamagedState(msg)


def _check_roots(primary_root: object, secondary_root: object) -> None:
    """Two distinct storage roots, neither inside the other."""
    for argument, root in (
        ("primary_root", primary_root),
        ("secondary_root", secondary_root),
    ):
        if not isinstance(root, str | os.PathLike):
            msg = f"{argument}={root!r} must be a path (str or os.PathLike, got "
            msg += f"{type(root).__name__})"
            raise InvalidConfiguration(msg)
    primary = Path(primary_root).resolve()  # type: ignore[arg-type]
    secondary = Path(secondary_root).resolve()  # type: ignore[arg-type]
    if primary == secondary:
        msg = f"primary_root and secondary_root are both {str(primary)!r}; "
        msg += "each site needs its own storage root"
        raise InvalidConfiguration(msg)
    for inner, outer in ((primary, secondary), (secondary, primary)):
        if inner.is_relative_to(outer):
            msg = f"storage root {str(inner)!r} lies inside the other site's root "
            msg += f"{str(outer)!r}; give each site its own folder, neither inside "
            msg += "the other (a site owns everything under its root)"
            raise InvalidConfiguration(msg)


def _open_sites(
    primary_root: Path, secondary_root: Path, clock: Clock
) -> tuple[SiteStorage, SiteStorage]:
    """Lock both sites before creating anything in either, then open them."""
    locks = []
    opened: list[SiteStorage] = []
    try:
        for name, root in ((PRIMARY, primary_root), (SECONDARY, secondary_root)):
            try:
                locks.append(SiteStorage.lock_root(name, root, clock))
            except OSError as error:
                raise _typed_open_error(error, root) from error
        for (name, root), lock in zip(
            ((PRIMARY, primary_root), (SECONDARY, secondary_root)), locks, strict=True
        ):
            try:
                opened.append(SiteStorage.open(name, root, clock, lock=lock))
            except OSError as error:
                raise _typed_open_error(error, root) from error
    except BaseException:
        for site in opened:
            site.close()
        for lock in locks[len(opened) :]:
            lock.release()
        raise
    return opened[0], opened[1]


def _typed_open_error(error: OSError, root: object) -> ReplicationError | OSError:
    return storage_error(error, f"opening the site at {str(root)!r} (nothing changed)")


def _typed_create_error(
    error: OSError | StorageFull, name: str
) -> ReplicationError | OSError:
    cause = error if isinstance(error, OSError) else error.__cause__
    if isinstance(cause, OSError) and cause.errno == errno.EFBIG:
        msg = f"vm {name!r}: the filesystem refuses a disk that large "
        msg += f"({cause.strerror}); choose a smaller size or another filesystem"
        return InvalidConfiguration(msg)
    if isinstance(error, OSError):
        return storage_error(error, f"creating vm {name!r}")
    return error


def _check_flag(argument: str, value: object) -> None:
    if not isinstance(value, bool):
        msg = f"{argument}={value!r} must be True or False (got {type(value).__name__})"
        raise InvalidConfiguration(msg)


def _check_progress(progress: object) -> Progress | None:
    if progress is not None and not callable(progress):
        msg = f"progress={progress!r} must be None or a callable taking (disk, bytes "
        msg += f"done, bytes total) (got {type(progress).__name__})"
        raise InvalidConfiguration(msg)
    return progress
