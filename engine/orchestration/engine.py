"""The library's front: two sites, a transport, and the VMs protected between them.

``ReplicationEngine.open(primary_root, secondary_root)`` opens (or creates) both sites
and reopens every VM where it was: an operation a crash interrupted is finished or
rolled back before anything else happens (``ProtectedVm.recover``), and what was done is
listed in ``recovered``. Each VM's operations go through its binding
(``protected_vm.py``), which asks the model first, so the engine can never do what the
model forbids; a refusal is a :class:`~engine.errors.TransitionNotAllowed` with the
model's message.

The transport is in-process by default (embedding, tests, fuzzing); anything that
implements ``engine.transport.in_process.Transport`` can replace it. Both sites'
storage roots are reachable from this process in this first version (the replica side
runs here too); the replica server between hosts comes with the network transport.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from engine.errors import InvalidConfiguration
from engine.names import validate_disk_name, validate_vm_name
from engine.replica.recovery_point import validate_retention_count
from engine.source.resync import ResyncReport
from engine.storage.disk import BLOCK_BYTES_DEFAULT, VirtualDisk, validate_block_bytes
from engine.transport.in_process import (
    InProcessTransport,
    Transport,
    TransportStatistics,
)

PRIMARY = "primary"
SECONDARY = "secondary"
DIRECTION = "primary->secondary"
RETENTION_COUNT_DEFAULT = 4  # recovery points kept per VM before merging the oldest


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
        transport: Transport,
        clock: Clock,
        *,
        block_bytes: int,
        retention_count: int,
        durable_writes: bool,
    ) -> None:
        """Use :meth:`open`."""
        self.primary = primary
        self.secondary = secondary
        self.transport = transport
        self._clock = clock
        self._block_bytes = block_bytes
        self._retention_count = retention_count
        self._durable = durable_writes
        self._vms: dict[str, ProtectedVm] = {}
        self._crash_point: CrashPoint | None = None
        self.recovered: dict[str, str] = {}

    @classmethod
    def open(
        cls,
        primary_root: Path,
        secondary_root: Path,
        *,
        transport: Transport | None = None,
        clock: Clock | None = None,
        block_bytes: int = BLOCK_BYTES_DEFAULT,
        retention_count: int = RETENTION_COUNT_DEFAULT,
        durable_writes: bool = False,
        crash_point: CrashPoint | None = None,
    ) -> Self:
        """Open both sites, reopen every VM, finish or roll back interrupted work.

        ``crash_point`` is a test seam (see ``protected_vm.CYCLE_CRASH_POINTS``).
        """
        block_bytes = validate_block_bytes(block_bytes)
        retention_count = validate_retention_count(retention_count)
        if Path(primary_root).resolve() == Path(secondary_root).resolve():
            msg = f"primary_root and secondary_root are both {str(primary_root)!r}; "
            msg += "each site needs its own storage root"
            raise InvalidConfiguration(msg)
        clock = clock or SystemClock()
        primary = SiteStorage.open(PRIMARY, Path(primary_root), clock)
        secondary = SiteStorage.open(SECONDARY, Path(secondary_root), clock)
        if transport is None:
            transport = InProcessTransport(
                {PRIMARY: primary.root, SECONDARY: secondary.root}
            )
        engine = cls(
            primary, secondary, transport, clock,
            block_bytes=block_bytes, retention_count=retention_count,
            durable_writes=durable_writes,
        )  # fmt: skip
        engine._crash_point = crash_point
        for name in primary.control.vm_names():
            vm = engine._bind(name, engine._disk_sizes(name))
            outcome = vm.recover()
            if outcome is not None:
                engine.recovered[name] = outcome
        return engine

    # -- VMs ---------------------------------------------------------------------------

    def create_vm(self, name: str, disks: Mapping[str, int]) -> None:
        """Create VM ``name`` at the primary with empty sparse disks (name -> bytes)."""
        validate_vm_name(name)
        if name in self._vms:
            known = sorted(self._vms[name].disk_sizes)
            msg = f"vm {name!r} already exists (disks {known}); choose another name"
            raise InvalidConfiguration(msg)
        if not disks:
            msg = f"disks={dict(disks)!r}: a VM needs at least one disk (name -> bytes)"
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
        directory = self.primary.vm_directory(name)
        directory.mkdir(parents=True, exist_ok=False)
        for disk, size in disks.items():
            VirtualDisk.create(
                self.primary.disk_path(name, disk), size, block_bytes=self._block_bytes
            ).close()
        self.primary.control.add_vm(
            name,
            phase="unprotected",
            active_site=PRIMARY,
            direction="primary->secondary",
            disks=disks,
        )
        self._bind(name, dict(disks))

    def vm_names(self) -> tuple[str, ...]:
        """The VMs this engine knows, sorted."""
        return tuple(sorted(self._vms))

    def vm(self, name: str) -> ProtectedVm:
        """The binding of VM ``name`` (for reads, writes and operations)."""
        try:
            return self._vms[name]
        except KeyError:
            msg = f"vm {name!r} is unknown; known VMs: {list(self.vm_names())}"
            raise InvalidConfiguration(msg) from None

    # -- the operations, by VM name ----------------------------------------------------

    def write(self, vm: str, disk: str, offset: int, data: bytes) -> None:
        """The workload writes ``data`` at ``offset`` of ``disk`` (tracked)."""
        self.vm(vm).write(disk, offset, data)

    def read(self, vm: str, disk: str, offset: int, length: int) -> bytes:
        """Read the active copy."""
        return self.vm(vm).read(disk, offset, length)

    def enable_protection(self, vm: str, progress: Progress | None = None) -> None:
        """Enable replication and run the initial replication to its first point."""
        self.vm(vm).enable_protection(progress)

    def continue_initial_replication(
        self, vm: str, progress: Progress | None = None
    ) -> None:
        """Finish an initial replication a restart interrupted (disks copied again)."""
        self.vm(vm).continue_initial_replication(progress)

    def replicate(self, vm: str, *, app_consistent: bool = False) -> CycleReport | None:
        """Run one delta cycle (None: the logs were unusable; resynchronising now)."""
        return self.vm(vm).replicate(app_consistent=app_consistent)

    def pause(self, vm: str) -> None:
        """Suspend shipping for ``vm``."""
        self.vm(vm).pause()

    def resume(self, vm: str) -> None:
        """Resume shipping for ``vm``."""
        self.vm(vm).resume()

    def resynchronize(self, vm: str) -> ResyncReport:
        """Compare every block with the replica and send the differing ones."""
        return self.vm(vm).resynchronize()

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
        """Flush and close every VM, then the sites."""
        for vm in self._vms.values():
            vm.flush()
            vm.close()
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
        vm = ProtectedVm(
            name, disks, source=self.primary, target=self.secondary,
            transport=self.transport, clock=self._clock,
            block_bytes=self._block_bytes, retention_count=self._retention_count,
            durable_writes=self._durable, crash_point=self._crash_point,
        )  # fmt: skip
        self._vms[name] = vm
        return vm

    def _disk_sizes(self, name: str) -> dict[str, int]:
        return self.primary.control.vm_disks(name)
