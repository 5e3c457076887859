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
this machine and the interface is in-process: one ``InProcessReplica`` towards each
site (a VM replicates towards the site it is not active at; after a failover and
reverse replication, towards the primary), ``set_link`` playing the network and
``crash_site`` / ``recover_site`` the hosts; ``wrap_transport`` wraps each (a
fault-injecting transport in tests). The replica server between hosts fills the same
seam. The failover half is described in ``docs/failover.md``.

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
from typing import Final, Self

from engine.binding.details import VmDetails
from engine.binding.failover import CommitReport, DrillReport, FailoverReport
from engine.binding.loss_report import LossReport
from engine.binding.protected_vm import (
    CrashPoint,
    CycleReport,
    GuestShutdown,
    Progress,
    ProtectedVm,
    VmStatistics,
    VmStatus,
    always_shuts_down,
    checked_row,
)
from engine.binding.reverse import ReverseReport
from engine.binding.sites import SITE_NAMES, Sites, other_site
from engine.clock import Clock, SystemClock
from engine.control.site import CONTROL_FILE, SiteStorage, validate_root
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
from engine.storage.owner_lock import REPLICA_LOCK_FILE, REPLICA_LOCK_HOLDER, SiteLock
from engine.transport.in_process import InProcessReplica, TransportStatistics
from engine.transport.interface import ReplicaTarget, TestVmDisks

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
    """Replicates VM disk images between two sites, fails them over and back."""

    def __init__(
        self,
        primary: SiteStorage,
        secondary: SiteStorage,
        transports: Mapping[str, ReplicaTarget],
        clock: Clock,
        *,
        block_bytes: int,
        retention_count: int,
        durable_writes: bool,
        link_up: bool = True,
        crash_point: CrashPoint | None = None,
        wrap_transport: TransportWrapper | None = None,
        guest_shutdown: GuestShutdown = always_shuts_down,
    ) -> None:
        """Use :meth:`open`."""
        self._roots = {PRIMARY: primary.root, SECONDARY: secondary.root}
        self._in_process = {
            site: found
            for site, found in transports.items()
            if isinstance(found, InProcessReplica)
        }
        self._remote = {
            site: found
            for site, found in transports.items()
            if not isinstance(found, InProcessReplica)
        }
        self._wrap = wrap_transport
        wrapped = {site: self._wrapped(found) for site, found in transports.items()}
        self.sites = Sites(
            {PRIMARY: primary, SECONDARY: secondary}, wrapped,
            set_link=self._set_link, link_up=link_up,
        )  # fmt: skip
        self._guest_shutdown = guest_shutdown
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
        guest_shutdown: GuestShutdown | None = None,
        replica_servers: Mapping[str, ReplicaTarget] | None = None,
    ) -> Self:
        """Own both sites, reopen every VM, finish or roll back interrupted work.

        ``replica_servers[site]``, when given, is the replica interface of ``site``'s
        replica server (``engine.transport.http.client.HttpReplica``) instead of the
        in-process one: that server owns the site's replica stores (and finishes what
        a crash interrupted there). It must serve the same storage root (the engine
        checks the path the server reports), see docs/network.md.

        ``crash_point`` is a test seam (see ``engine.source.shipping``);
        ``wrap_transport`` wraps each in-process replica interface (fault injection);
        ``guest_shutdown(vm, site)`` plays the guests (False: the guest refuses to
        shut down; default: every shutdown succeeds).
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
            remote = _check_servers(
                replica_servers, {PRIMARY: primary, SECONDARY: secondary}
            )
            replicas: dict[str, ReplicaTarget] = {
                target.name: remote.get(target.name)
                or _open_in_process(target, clock, link_up, crash_point)
                for target in (primary, secondary)
            }
            engine = cls(
                primary, secondary, replicas, clock,
                block_bytes=block_bytes, retention_count=retention_count,
                durable_writes=durable_writes, crash_point=crash_point,
                link_up=link_up, wrap_transport=wrap_transport,
                guest_shutdown=_check_guest(guest_shutdown or always_shuts_down),
            )  # fmt: skip
            engine._reopen_vms()
        except BaseException:
            primary.close()
            secondary.close()
            raise
        return engine

    def _reopen_vms(self) -> None:
        for replica in self._in_process.values():
            self.target_recovered.update(replica.recovered)
        control = self.primary.control
        for name in control.vm_names():
            pending = control.pending_operation(name)
            if pending is not None and pending.name == CREATE_VM:
                self._undo_creation(name)
                self.recovered[name] = "create_vm rolled back: create the VM again"
        for name in self._known_names():
            self._reopen(name)

    def _known_names(self) -> list[str]:
        """Every VM the sites that are up know, sorted."""
        names: set[str] = set()
        for site in self.sites.up_sites():
            names.update(site.control.vm_names())
        return sorted(names)

    def _reopen(self, name: str) -> None:
        holder = next(s for s in self.sites.up_sites() if name in s.control.vm_names())
        try:
            vm = self._bind(name, holder.control.vm_disks(name))
        except DamagedState as damage:
            self.damaged[name] = damage
            return
        try:
            outcome = vm.recover()
        except DamagedState as damage:
            self.damaged[name] = damage
            del self._vms[name]
            return
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
                control.complete_operation(
                    pending.operation_id, "unprotected",
                    details_json=VmDetails(running=frozenset({PRIMARY})).to_json(),
                )  # fmt: skip
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

    # -- sites, the link, the vault ----------------------------------------------------

    @property
    def primary(self) -> SiteStorage:
        """The primary site's storage (while it is up)."""
        return self.sites.storage(PRIMARY)

    @property
    def secondary(self) -> SiteStorage:
        """The secondary site's storage (while it is up)."""
        return self.sites.storage(SECONDARY)

    @property
    def transport(self) -> ReplicaTarget:
        """The replica interface towards the secondary site."""
        return self.sites.towards(SECONDARY)

    def transport_towards(self, site: str) -> ReplicaTarget:
        """The replica interface whose target is ``site``."""
        return self.sites.towards(_site(site))

    @property
    def link_up(self) -> bool:
        """Whether data can travel between the sites."""
        return self.sites.link_up

    def set_link(self, up: bool) -> None:  # noqa: FBT001
        """Cut (False) or repair (True) the link between the sites."""
        _check_flag("up", up)
        self.sites.set_link(up)

    def _set_link(self, up: bool) -> None:  # noqa: FBT001
        for replica in self._in_process.values():
            replica.link_up = up
        for target in self._remote.values():
            if hasattr(target, "link_up"):
                target.link_up = up  # the client's switch: nothing is sent while down

    def disconnect_vault(self, site: str) -> None:
        """The site's VMM server loses the vault: no order goes through it."""
        self.sites.set_connected(_site(site), connected=False)

    def reconnect_vault(self, site: str) -> None:
        """The site's VMM server is connected to the vault again."""
        self.sites.set_connected(_site(site), connected=True)

    def crash_site(self, site: str) -> None:
        """The site's hosts go down: its VMs stop, nothing of it is read until
        :meth:`recover_site` (its storage is closed and its lock released)."""
        site = _site(site)
        if not self.sites.up(site):
            msg = f"site {site!r} is already down; recover_site brings it back"
            raise InvalidConfiguration(msg)
        with self._lock:
            # Down first, so a racing write is refused as "the site is down", then
            # the copies there stop and their files close.
            storage = self.sites.mark_down(site)
            try:
                for vm in self._vms.values():
                    with vm.operating():
                        vm.stop_copy_at(site)
                        vm.site_down(site)
            finally:
                storage.close()

    def recover_site(self, site: str) -> dict[str, str]:
        """The site's hosts come back: its storage reopens, interrupted work at it is
        finished or rolled back, rows are reconciled, a VM active there restarts, and
        a failover's loss is reconciled with its logs. Returns what was recovered."""
        site = _site(site)
        if self.sites.up(site):
            msg = f"site {site!r} is already up"
            raise InvalidConfiguration(msg)
        storage = _open_one(site, self._roots[site], self._clock)
        outcomes: dict[str, str] = {}
        if site in self._remote:  # its replica server recovers its own stores
            self.sites.mark_up(site, storage, self._wrapped(self._remote[site]))
        else:
            try:
                replica = _open_in_process(
                    storage, self._clock, self.sites.link_up, self._crash_point
                )
            except BaseException:
                storage.close()
                raise
            self._in_process[site] = replica
            self.sites.mark_up(site, storage, self._wrapped(replica))
            outcomes.update(replica.recovered)
        with self._lock:
            for name in self._known_names():
                vm = self._vms.get(name)
                if vm is None:
                    if name not in self.damaged:
                        self._reopen(name)
                    continue
                outcome = vm.site_recovered(site)
                if outcome:
                    outcomes[name] = outcome
        return outcomes

    def _wrapped(self, replica: ReplicaTarget) -> ReplicaTarget:
        return replica if self._wrap is None else self._wrap(replica)

    def vm_names(self) -> tuple[str, ...]:
        """The VMs this engine knows (damaged ones included), sorted."""
        return tuple(sorted({*self._vms, *self.damaged}))

    def disk_sizes(self, name: str) -> dict[str, int]:
        """The disks of VM ``name`` and their sizes, from the control state."""
        for site in self.sites.up_sites():
            if name in site.control.vm_names():
                return site.control.vm_disks(name)
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

    def write(
        self, vm: str, disk: str, offset: int, data: bytes, *, site: str | None = None
    ) -> None:
        """The workload writes ``data`` at ``offset`` of ``disk`` (tracked), at the
        active copy, or at ``site`` where a copy a failed shutdown left still runs."""
        self.vm(vm).write(
            disk, offset, data, site=None if site is None else _site(site)
        )

    def read(self, vm: str, disk: str, offset: int, length: int) -> bytes:
        """Read the active copy."""
        return self.vm(vm).read(disk, offset, length)

    def flush(self, vm: str | None = None) -> None:
        """Make every write so far durable (of ``vm``, or of every VM)."""
        for found in [self.vm(vm)] if vm is not None else list(self._vms.values()):
            found.flush()

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

    def verify_logs(self, vm: str) -> str | None:
        """Check every unshipped change-log record of ``vm`` now (an integrity scan);
        damage sends the VM to resynchronisation, as the next cycle would. Returns
        what is damaged, or None."""
        return self.vm(vm).verify_logs()

    def unshipped_log_bytes(self, vm: str) -> int | None:
        """The change-log bytes of ``vm`` not yet shipped: what its next successful
        cycle sends (the cycles waiting in the outbox first, then the current logs
        when they hold a record); None while its active site is down."""
        return self.vm(vm).unshipped_log_bytes()

    def ask_first(self, vm: str, action: str) -> None:
        """Raise the model's refusal (``TransitionNotAllowed``) when it refuses
        ``action`` (a model action name) for ``vm`` now; change nothing."""
        found = self.vm(vm)
        with found.operating():
            found.ask_first(action)

    def status(self, vm: str) -> VmStatus:
        """Phase, derived status, health, recovery points, what is allowed now, the
        loss report of the last failover."""
        return self.vm(vm).status()

    # -- the failover half -------------------------------------------------------------

    def start_test_failover(self, vm: str, point: int | None = None) -> DrillReport:
        """A drill: a test VM from ``point`` (default: the latest) on differencing
        disks in the target's isolated area; cycles go on."""
        return self.vm(vm).start_test_failover(point)

    def test_vm(self, vm: str) -> TestVmDisks:
        """The open drill's test VM (read, write, flush)."""
        return self.vm(vm).test_vm()

    def cleanup_test_failover(self, vm: str) -> None:
        """End the drill: the test VM and its overlay are deleted."""
        self.vm(vm).cleanup_test_failover()

    def planned_failover(
        self, vm: str, *, then_fail_over: bool = True
    ) -> FailoverReport:
        """Shut the source down, ship every change, fail over: zero loss
        (``then_fail_over=False``: stop once prepared, as ``-Prepare`` does)."""
        return self.vm(vm).planned_failover(then_fail_over=then_fail_over)

    def failover(self, vm: str) -> FailoverReport:
        """The planned failover's second half (after it was prepared)."""
        return self.vm(vm).failover()

    def unplanned_failover(
        self, vm: str, point: int | str = "latest", *, shut_down_first: bool = False
    ) -> FailoverReport:
        """Fail over from ``point`` (an id, "latest", "latest_app_consistent"); with
        ``shut_down_first`` the shutdown and a final sync are tried (each may fail)."""
        return self.vm(vm).unplanned_failover(point, shut_down_first=shut_down_first)

    def complete_failover(self, vm: str) -> FailoverReport:
        """Start the replica VM of a failover that waited (its VMM reconnected)."""
        return self.vm(vm).complete_failover()

    def change_recovery_point(self, vm: str, point: int) -> FailoverReport:
        """Before commit, after an unplanned failover: restart from another point."""
        return self.vm(vm).change_recovery_point(point)

    def commit(self, vm: str) -> CommitReport:
        """Commit the failover: every recovery point is deleted."""
        return self.vm(vm).commit()

    def cancel_failover(self, vm: str) -> None:
        """Cancel a failover in progress: replication never resumes."""
        self.vm(vm).cancel_failover()

    def reverse_replication(self, vm: str) -> ReverseReport:
        """After commit: replicate back towards the other site."""
        return self.vm(vm).reverse_replication()

    def reconcile(self, vm: str) -> LossReport | None:
        """Count the last failover's exact loss from the old source (if reachable)."""
        return self.vm(vm).reconcile()

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
            for storage in list(self.sites.up_sites()):
                storage.close()

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
        rows = [
            checked_row(site.control, site.control.vm(name))
            for site in self.sites.up_sites()
            if name in site.control.vm_names()
        ]
        control = max(rows, key=lambda row: row.generation)
        if self.sites.up(control.active_site) and control.phase != "failed_over":
            self._check_files(name, disks, self.sites.storage(control.active_site))
        try:
            vm = ProtectedVm(
                name, disks, sites=self.sites,
                clock=self._clock, block_bytes=self._block_bytes,
                retention_count=self._retention_count, durable_writes=self._durable,
                crash_point=self._crash_point, guest_shutdown=self._guest_shutdown,
            )  # fmt: skip
        except (ReplicationError, OSError) as error:
            if isinstance(error, DamagedState | StorageFull):
                raise
            if isinstance(error, OSError):
                full = storage_error(error, f"VM {name!r} cannot be opened")
                if isinstance(full, StorageFull):
                    # A full disk is no damage: nothing was changed, and the VM opens
                    # once there is room again.
                    full.add_note("free space at the site, then open the engine again")
                    raise full from error
            msg = f"VM {name!r} cannot be opened: {error}"
            raise DamagedState(msg) from error
        self._vms[name] = vm
        return vm

    def _check_files(
        self, name: str, disks: Mapping[str, int], site: SiteStorage
    ) -> None:
        directory = site.vm_directory(name)
        if not directory.is_dir():
            msg = f"VM {name!r}: its folder {str(directory)!r} is missing (the control "
            msg += f"state at {str(site.root)!r} lists it); restore the folder, "
            msg += "or remove the VM"
            raise DamagedState(msg)
        for disk, size in disks.items():
            path = site.disk_path(name, disk)
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
        validate_root(root, argument=argument)
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
    for root in (primary, secondary):
        for parent in root.parents:
            if (parent / CONTROL_FILE).is_file():
                msg = f"storage root {str(root)!r} lies inside the site at "
                msg += f"{str(parent)!r} (it holds {CONTROL_FILE}); give each site "
                msg += "its own folder, outside any other site's"
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


def _check_servers(
    servers: object, storage: Mapping[str, SiteStorage]
) -> dict[str, ReplicaTarget]:
    """Replica servers by site, each serving the site's own storage root."""
    if servers is None:
        return {}
    if not isinstance(servers, Mapping):
        msg = f"replica_servers={servers!r} must map site names to replica servers"
        raise InvalidConfiguration(msg)
    found: dict[str, ReplicaTarget] = {}
    for name, target in servers.items():
        site = _site(name)
        if getattr(target, "site_name", None) != site:
            msg = f"replica_servers[{site!r}] serves site "
            msg += f"{getattr(target, 'site_name', None)!r}, not {site!r}"
            raise InvalidConfiguration(msg)
        expect = getattr(target, "expect_location", None)
        if callable(expect):  # checked now, or at first contact if the server is down
            expect(storage[site].root)
        found[site] = target
    return found


def _open_in_process(
    storage: SiteStorage,
    clock: Clock,
    link_up: bool,  # noqa: FBT001
    crash_point: CrashPoint | None,
) -> InProcessReplica:
    """The site's replica stores, opened here: their lock first (released with the
    site), so that a replica server serving the same root is refused rather than
    having its apply in progress undone by this process's recovery."""
    lock = SiteLock.acquire(
        storage.name,
        storage.root,
        clock,
        file_name=REPLICA_LOCK_FILE,
        holder=REPLICA_LOCK_HOLDER,
    )
    storage.hold(lock)
    return InProcessReplica.open(
        other_site(storage.name), storage.name, storage.root, clock,
        link_up=link_up, crash_point=crash_point,
    )  # fmt: skip


def _open_one(name: str, root: Path, clock: Clock) -> SiteStorage:
    """Lock and open one site (a site that recovers)."""
    try:
        lock = SiteStorage.lock_root(name, root, clock)
    except OSError as error:
        raise _typed_open_error(error, root) from error
    try:
        return SiteStorage.open(name, root, clock, lock=lock)
    except OSError as error:
        raise _typed_open_error(error, root) from error


def _site(site: object) -> str:
    if site not in SITE_NAMES:
        msg = f"site={site!r} is not a site of this engine; sites: {list(SITE_NAMES)}"
        raise InvalidConfiguration(msg)
    assert isinstance(site, str)
    return site


def _check_guest(guest: object) -> GuestShutdown:
    if not callable(guest):
        msg = f"guest_shutdown={guest!r} must be a callable (vm name, site) -> bool"
        raise InvalidConfiguration(msg)
    return guest


ROOT_ERRNOS: Final = frozenset(
    {
        errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST,
        errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP, errno.EISDIR,
    }
)  # fmt: skip
"""What the file system answers when a storage root cannot be a site's folder."""


def _typed_open_error(error: OSError, root: object) -> ReplicationError | OSError:
    action = f"opening the site at {str(root)!r} (nothing changed)"
    found = storage_error(error, action)
    if isinstance(found, ReplicationError) or error.errno not in ROOT_ERRNOS:
        return found
    # The file system refuses the root itself (a folder that cannot be created, no
    # permission, a file in the way): the caller's storage root to fix.
    msg = f"{action}: {error.strerror or error}"
    if error.filename is not None:
        msg += f" ({error.filename})"
    msg += "; give a storage root this user can create and write"
    return InvalidConfiguration(msg)


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
