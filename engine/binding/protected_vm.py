"""The binding: one VM's mechanics behind its state machine. The model decides.

This package is the only part of the engine that imports ``model``. Every operation
runs the same four steps, so the engine can never do what the model forbids:

1. **ask**: map the engine's real state to the model's abstract view (``view.py``:
   phase, active site, where copies run, recovery points, the logs usable or not, the
   sites, their vault connections and the link) and ``model.apply`` the call. A refusal
   surfaces as :class:`~engine.errors.TransitionNotAllowed` carrying the model's
   message; the VM's ``transitions`` machine (``PhaseMachine``) must agree on the
   destination.
2. **record the intent** in the control store of the site the action acts on (its
   source for enable, cycles, pause, resynchronisation, disable and the planned
   failover's shutdown; its target for drills, failovers, a change of recovery point,
   commit and cancel: ``ACTING_AT_TARGET``);
3. **run the effect**, which is idempotent (a restart may run it again);
4. **commit the phase** the model predicted, with the control row, in one transaction
   (``complete_operation``; the row's generation grows), then copy the row to the other
   site if it is up; fire the machine. If the effect fails, the operation is abandoned
   and the phase stays (a failed cycle leaves the phase: decision 8).

**Two sites, one row each, the newest wins.** Each site keeps the VM's control row;
an operation acting at one site while the other is down (an unplanned failover while the
source burns) writes only there, with a higher generation; when the other site is back,
its older row is replaced (``_sync_rows``). :meth:`ProtectedVm.control` is the newest
row of the sites that are up.

**Threads and locks.** One operation lock per VM serialises operations (any thread may
call them). Guest writes never take it: they take only the disks' cut lock.
:meth:`ProtectedVm.status` takes no operation lock and changes nothing.

**Roles as data.** The VM's active site and the target it replicates to come from the
control row; its disks from the control state's disk table. After a failover the old
source's copy stays open at its site (``old_disks``) until reverse replication takes it
as the new replica: it keeps tracking, so the exact loss can be counted from its logs.

**Initial replication**: tracking starts first (new logs, a new epoch); the disks are
then copied one by one while the workload writes (the copy is fuzzy); finally every
record logged since tracking started is applied over the copy, as the first cycle.

The failover half (drills, failovers, commit, cancel, reverse replication) lives in
``failover.py`` and ``reverse.py``, on the same four steps.
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Final

from engine.binding import failover as failovers
from engine.binding import reverse
from engine.binding.details import VmDetails
from engine.binding.failover import CommitReport, DrillReport, FailoverReport
from engine.binding.loss_report import LossReport
from engine.binding.restart import Restart
from engine.binding.sites import SITE_NAMES, Sites, direction, other_site
from engine.binding.view import Observed, abstract_state
from engine.clock import Clock
from engine.control.schema import damaged
from engine.control.site import SiteStorage
from engine.control.store import ControlStore, VmControl
from engine.errors import (
    DamagedState,
    InvalidConfiguration,
    ReplicationError,
    SiteUnreachable,
    StorageFull,
    TransitionNotAllowed,
    TransportError,
)
from engine.replica import recovery_point as engine_points
from engine.replica.promote import PROMOTING
from engine.source.cycles import CycleRunner
from engine.source.disks import LogState, SourceDisks
from engine.source.outbox import Outbox
from engine.source.resync import ResyncReport, prepare_resync
from engine.source.shipping import (
    CYCLE_CRASH_POINTS,
    CrashPoint,
    CycleReport,
    no_crash,
    ship_cycle,
)
from engine.storage.disk import VirtualDisk, storage_error
from engine.transport.interface import (
    DiskReader,
    ReplicaStatus,
    ReplicaTarget,
    TestVmDisks,
)
from model import (
    ACTIONS,
    ActionRefused,
    Call,
    LogHealth,
    ModelConfig,
    Phase,
    PhaseMachine,
    SystemState,
    VmState,
    apply,
    enabled,
    health,
    is_protected,
)
from model.action import Context
from model.lifecycle import Edge
from model.state import ALL_FAULTS
from model.successor import lifecycle_edge

__all__ = [
    "CYCLE_CRASH_POINTS",
    "STEP_CRASH_POINTS",
    "CrashPoint",
    "CycleReport",
    "ProtectedVm",
]

STEP_CRASH_POINTS: Final = ("intent_recorded", "effect_done")
"""Steps of every operation's ``ProtectedVm.step`` the ``crash_point`` seam is called
at: its intent is recorded (the effect not begun), its effect is done (the phase not
committed): the crash points of an operation whose effect changes only SQLite."""

#: The workload is not bounded by the model's explored environment here, and the
#: environment's faults (a refused shutdown, a final sync cut short) are real events.
WRITE_LAG_UNBOUNDED: Final = 2**62
FAULTS_UNBOUNDED: Final = 2**62

#: The model's actions and the ``ReplicationEngine`` method that runs each:
#: ``status().allowed`` lists these methods, so a caller can call them.
ENGINE_METHODS: Final = {
    "enable_protection": "enable_protection",
    "copy_disk": "continue_initial_replication",
    "complete_initial_replication": "continue_initial_replication",
    "replicate": "replicate",
    "pause": "pause",
    "resume": "resume",
    "resynchronize": "resynchronize",
    "complete_resynchronization": "resynchronize",
    "disable_protection": "disable",
    "start_test_failover": "start_test_failover",
    "cleanup_test_failover": "cleanup_test_failover",
    "planned_failover": "planned_failover",
    "failover": "failover",
    "unplanned_failover": "unplanned_failover",
    "complete_failover": "complete_failover",
    "change_recovery_point": "change_recovery_point",
    "commit": "commit",
    "cancel_failover": "cancel_failover",
    "reverse_replication": "reverse_replication",
}

#: Actions whose intent is recorded at the VM's target site (decision 7's target-side
#: actions); every other action is recorded at its active site.
ACTING_AT_TARGET: Final = frozenset(
    {
        "start_test_failover",
        "cleanup_test_failover",
        "failover",
        "unplanned_failover",
        "complete_failover",
        "cancel_failover",
    }
)

#: Phases in which the source keeps change logs (their health is the model's ``log``).
_TRACKING = frozenset(
    {
        Phase.INITIAL_REPLICATION,
        Phase.PROTECTED,
        Phase.REVERSE_REPLICATING,
        Phase.REPLICATION_PAUSED,
        Phase.TEST_FAILOVER,
        Phase.RESYNCHRONIZING,
    }
)

#: Operations the model is asked about even when the replica is missing or damaged:
#: disable is the way out that damage names (it deletes what is left of the replica).
TOLERANT_ACTIONS: Final = frozenset({"disable_protection"})

#: How the engine's view of its logs maps onto the model's log health.
LOG_HEALTH = {
    LogState.USABLE: LogHealth.USABLE,
    LogState.OVER_LIMIT: LogHealth.OVERFLOWED,
    LogState.UNTRUSTED: LogHealth.DAMAGED,
}

#: Phases in which the active copy's writes are tracked.
TRACKED_PHASES: Final = frozenset(
    {
        Phase.INITIAL_REPLICATION,
        Phase.PROTECTED,
        Phase.REVERSE_REPLICATING,
        Phase.REPLICATION_PAUSED,
        Phase.RESYNCHRONIZING,
        Phase.TEST_FAILOVER,
        Phase.FAILOVER_PREPARED,
        Phase.FAILING_OVER,
        Phase.COMMITTED,
    }
)

Progress = Callable[[str, int, int], None]
"""Initial-copy progress: (disk, bytes done, bytes total)."""

GuestShutdown = Callable[[str, str], bool]
"""Asks the guest of VM ``name`` at ``site`` to shut down; False: it refused."""


def always_shuts_down(vm_name: str, site: str) -> bool:
    """The default guest: every shutdown succeeds."""
    return True


@dataclass(frozen=True)
class VmStatistics:
    """Counters of one protected VM (``ReplicationEngine.statistics``)."""

    cycles_applied: int
    bytes_shipped: int
    pending_log_records: int
    pending_log_bytes: int
    cycles_waiting: int
    cycles_dropped: int  # waiting cycles the target had applied already
    cut_seconds_max: float  # longest time guest writes waited for a cut
    last_cycle: CycleReport | None
    lag_seconds: float | None  # since the newest recovery point was taken


@dataclass(frozen=True)
class VmStatus:
    """One VM as an operator sees it: phase, derived status, health, points, loss."""

    name: str
    phase: str
    protected: bool
    health: str
    active_site: str
    recovery_points: tuple[engine_points.RecoveryPoint, ...]
    allowed: tuple[str, ...]
    log_problem: str | None
    running_at: tuple[str, ...] = ()
    loss: LossReport | None = None


KNOWN_PHASES: Final = tuple(phase.value for phase in Phase)


def checked_row(control: ControlStore, row: VmControl) -> VmControl:
    """``row``, when its phase and active site are ones the engine writes.

    The control store checks types; what the values mean is the binding's: a file
    edited by hand (or damaged past SQLite's checks) is :class:`DamagedState` naming
    the file, never a ``ValueError`` from ``Phase(...)`` far from the cause.
    """
    for column, value, allowed in (
        ("phase", row.phase, KNOWN_PHASES),
        ("active_site", row.active_site, SITE_NAMES),
    ):
        if value not in allowed:
            what = f"VM {row.vm_name!r} has {column}={value!r}; allowed: "
            raise damaged(control.path, what + ", ".join(allowed))
    if row.direction != direction(row.active_site):
        what = f"VM {row.vm_name!r} has direction={row.direction!r} with "
        what += f"active_site={row.active_site!r}; allowed: "
        raise damaged(control.path, what + repr(direction(row.active_site)))
    return row


class ProtectedVm:
    """One VM: its disks at its active site, its replica behind the interface."""

    def __init__(
        self,
        name: str,
        disks: Mapping[str, int],
        *,
        sites: Sites,
        clock: Clock,
        block_bytes: int,
        retention_count: int,
        durable_writes: bool,
        crash_point: CrashPoint | None = None,
        guest_shutdown: GuestShutdown = always_shuts_down,
    ) -> None:
        """Bind an existing VM (its control row must exist at a site that is up).

        ``crash_point`` is a test seam called with the name of each step of a cycle
        (``CYCLE_CRASH_POINTS``, and the replica store's ``CRASH_POINTS``), of the
        failover operations (``failover.CRASH_POINTS``) and of every operation's
        ``step`` (``STEP_CRASH_POINTS``: between its intent and its effect, and
        between its effect and its phase's commit).
        """
        self.name = name
        self.disk_sizes = dict(disks)
        self.sites = sites
        self.clock = clock
        self.block_bytes = block_bytes
        self.retention_count = retention_count
        self.durable = durable_writes
        self.crash = crash_point or no_crash
        self.guest_shutdown = guest_shutdown
        self._operation_lock = threading.RLock()
        self._disks: SourceDisks | None = None
        self._disks_site: str | None = None
        self.old_disks: SourceDisks | None = None
        self._cycles: CycleRunner | None = None
        self._disks_copied = 0
        self._log_when_down = LogHealth.USABLE
        self._newest_row: VmControl | None = None
        self._write_verdicts: dict[str, str | None] = {}
        self._point_reader: tuple[int, DiskReader] | None = None
        self._verdict_generation = 0
        self.config = ModelConfig(
            vm_count=1,
            disks_per_vm=len(self.disk_sizes),
            write_lag_max=WRITE_LAG_UNBOUNDED,
            recovery_points_max=retention_count,
            fault_budget=FAULTS_UNBOUNDED,
            faults=ALL_FAULTS,
            vm_names=(name,),
        )
        self._restart = Restart(self)
        self._sync_rows()
        phase = Phase(self.control().phase)
        self.machine = PhaseMachine(phase)
        self.open_disks()

    @contextmanager
    def operating(self) -> Iterator[None]:
        """One operation: this VM's lock held, and the replica interfaces allowed
        to reuse their answers until something changes (``Sites.memoised``)."""
        with self._operation_lock, self.sites.memoised():
            yield

    # -- the disks at each site --------------------------------------------------------

    def open_disks(self) -> None:
        """Open the active copy and the old source's copy at the sites that are up
        (after a restart, a site's recovery, or a change of roles)."""
        self.invalidate()
        control = self.control()
        details = self.details(control)
        phase = Phase(control.phase)
        active = control.active_site
        if self._disks_site != active:
            self._close_active()
        if (
            self._disks is None
            and self.sites.up(active)
            and phase is not Phase.FAILED_OVER
        ):
            self._disks = self._open_source(active)
            self._disks_site = active
            if phase in TRACKED_PHASES:
                self._disks.resume_tracking(self._restart.tracking_epoch())
            elif reverse.old_logs_present(self._disks):
                # Tracking ended (a cancel or disable) while this site was down: its
                # logs are left over; nothing will ship them.
                self._disks.stop_tracking()
        old = details.old_site
        if old is None or not self.sites.up(old) or not self._images_at(old):
            self._close_old()
        elif self.old_disks is None:
            self.old_disks = self._open_source(old)
            epoch = details_epoch(details, control)
            if reverse.old_logs_present(self.old_disks):
                self.old_disks.resume_tracking(epoch)

    def _images_at(self, site: str) -> bool:
        """Whether every disk image of the VM is at ``site`` (not adopted yet)."""
        storage = self.sites.storage(site)
        return all(storage.disk_path(self.name, d).exists() for d in self.disk_sizes)

    def _open_source(self, site: str) -> SourceDisks:
        storage = self.sites.storage(site)
        return SourceDisks(
            {disk: storage.disk_path(self.name, disk) for disk in self.disk_sizes},
            block_bytes=self.block_bytes,
            durable=self.durable,
        )

    def _close_active(self) -> None:
        if self._disks is not None:
            self._disks.close()
        self._disks = None
        self._disks_site = None
        self._cycles = None

    def _close_old(self) -> None:
        if self.old_disks is not None:
            self.old_disks.close()
        self.old_disks = None

    def site_down(self, site: str) -> None:
        """The site's hosts went down: close what this VM had open there."""
        self.invalidate()
        self._cycles = None  # it holds the replica interface of the site now gone
        if self._disks_site == site:
            # What the logs were known to be when the host went down stays the last
            # word on them until it is back (nothing can be read there meanwhile).
            if self._disks is not None:
                self._log_when_down = LOG_HEALTH[self._disks.log_state]
            self._close_active()
        if not self._holding_sites():  # both sites are down: close everything
            self._close_old()
            return
        details = self.details()
        if details.old_site == site:
            self._close_old()

    def stop_copy_at(self, site: str) -> None:
        """The site is going down: the copy running there stops (recorded at the other
        site when it is up; a recovered site's row is replaced by that newer one)."""
        if not self._holding_sites():
            return  # no site that is up can record it: the recovery derives it
        control = self.control()
        details = self.details(control)
        if site not in details.running:
            return
        other = other_site(site)
        if not self.sites.up(other) or self.name not in self._names_at(other):
            return
        holder = self.sites.storage(other).control
        self._sync_rows()
        holder.update_details(
            self.name, details.with_(running=details.running - {site}).to_json()
        )
        self.invalidate()
        self._sync_rows_except(site)

    def site_recovered(self, site: str) -> str | None:
        """The site is back: finish or roll back work interrupted there (superseded
        work is abandoned), take the newest row, restart the VM if it is active there,
        reopen its disks, and reconcile a failover's loss with the old source."""
        with self.operating():
            outcome = self._restart.recover()
            self._sync_rows()
            details = self.details()
            self._cycles = None  # the transport towards the site was reopened
            self._restart_where_active(stopped=site)
            self.open_disks()
            self._drop_orphan_replica(site)
            if details.old_site == site and details.loss is not None:
                report = reverse.reconcile(self)
                if report is not None:
                    reconciled = f"loss reconciled: {report.summary()}"
                    outcome = (
                        reconciled if outcome is None else f"{outcome}; {reconciled}"
                    )
            return outcome

    def _drop_orphan_replica(self, site: str) -> None:
        """Protection was disabled while ``site`` was down (or enabled afresh and no
        disk copied yet): the replica it kept from before goes now."""
        control = self.control()
        if site == control.active_site:
            return
        phase = Phase(control.phase)
        fresh = phase is Phase.INITIAL_REPLICATION and self._disks_copied == 0
        if phase is not Phase.UNPROTECTED and not fresh:
            return
        transport = self.sites.towards(site)
        if transport.status(self.name).exists:
            transport.remove_replica(self.name)

    def _restart_where_active(self, *, stopped: str | None = None) -> None:
        """A host that comes back (or an engine that reopens) restarts the VM at its
        active site unless a failover shut it down; a copy at ``stopped`` (the site
        that went down) does not restart unless it is the active one. When both sites
        were down, the newer row (written while the other was down) may say the VM
        runs nowhere: it runs again at its active site once that is up."""
        control = self.control()
        details = self.details(control)
        phase = Phase(control.phase)
        running = details.running if stopped is None else details.running - {stopped}
        shut_down = phase in (Phase.FAILOVER_PREPARED, Phase.FAILING_OVER)
        active = control.active_site
        if self.sites.up(active) and not shut_down:
            running = running | {active}
        if running != details.running:
            holder = self.sites.storage(
                active if self.sites.up(active) else other_site(active)
            ).control
            holder.update_details(self.name, details.with_(running=running).to_json())
            self._sync_rows()
            self.invalidate()

    def _names_at(self, site: str) -> tuple[str, ...]:
        return self.sites.storage(site).control.vm_names()

    def _sync_rows_except(self, site: str) -> None:
        newest = self.control()
        for storage in self.sites.up_sites():
            if storage.name != site:
                storage.control.adopt_vm(newest, self.disk_sizes)

    @property
    def disks(self) -> SourceDisks:
        """The active copy's disks (refused while they are not reachable here)."""
        if self._disks is None:
            control = self.control()
            msg = f"VM {self.name!r} has no active copy open here: it is "
            msg += f"{control.phase} with the active site {control.active_site!r}"
            if not self.sites.up(control.active_site):
                msg += ", which is down"
            raise TransitionNotAllowed(msg)
        return self._disks

    @property
    def source_site(self) -> SiteStorage:
        """The site the VM is active at (its disks, logs, outbox, control state)."""
        return self.sites.storage(self.control().active_site)

    @property
    def replica(self) -> ReplicaTarget:
        """The target this VM replicates to (the other site)."""
        return self.sites.towards(other_site(self.control().active_site))

    @property
    def outbox(self) -> Outbox:
        """The VM's waiting cycles at its active site."""
        return Outbox(self.source_site, self.name)

    @property
    def cycles(self) -> CycleRunner:
        """The VM's cycle mechanics at its active site."""
        if self._cycles is None:
            self._cycles = CycleRunner(
                self.disks, self.outbox, self.replica, self.source_site.control,
                self.clock, crash=self.crash,
            )  # fmt: skip
        return self._cycles

    # -- the workload ------------------------------------------------------------------

    def write(
        self, disk: str, offset: int, data: bytes, *, site: str | None = None
    ) -> None:
        """Write to the copy running at ``site`` (default: the active site).

        The model says where the VM runs: at its active site in every phase but those
        of a failover; at the old source too while a failed shutdown left that copy
        running (its writes are divergent: tracked there, reported lost).
        """
        active = self._active_site()
        target = active if site is None else site
        if target == active:
            self._check_write("write")
            self.disks.write(disk, offset, data)
            return
        self._check_write("write_stale_copy")
        if self.old_disks is None:
            msg = f"VM {self.name!r} has no copy open at site {target!r}"
            raise TransitionNotAllowed(msg)
        self.old_disks.write(disk, offset, data)

    def _check_write(self, action: str) -> None:
        """The model's verdict on a write, cached until the VM's state changes (an
        operation commits, a site goes down or comes back): the write path must not
        build the model's view each time, nor wait for an apply."""
        verdicts = self._write_verdicts
        if action not in verdicts:
            generation = self._verdict_generation
            refusal = None
            try:
                view = self.view(tolerant=True)
                apply(self.config, view, Call(action, vm=0, args=()))
            except ActionRefused as refused:
                refusal = str(refused)
            if generation == self._verdict_generation:
                verdicts[action] = refusal
        else:
            refusal = verdicts[action]
        if refusal is not None:
            raise TransitionNotAllowed(refusal)

    def _active_site(self) -> str:
        found = self._write_verdicts.get("active_site")
        if found is None:
            generation = self._verdict_generation
            found = self.control().active_site
            if generation == self._verdict_generation:
                self._write_verdicts["active_site"] = found
        return found

    def invalidate(self) -> None:
        """The VM's state changed: the cached write verdicts are stale."""
        self._verdict_generation += 1
        self._write_verdicts = {}
        self._point_reader = None

    def read(self, disk: str, offset: int, length: int) -> bytes:
        """Read the active copy (the chosen point while a failover awaits commit)."""
        control = self.control()
        if Phase(control.phase) is Phase.FAILED_OVER:
            with self.operating():  # a commit moves the point's files
                return self._read_point(disk, offset, length)
        return self.disks.read(disk, offset, length)

    def _read_point(self, disk: str, offset: int, length: int) -> bytes:
        """Read the chosen point of a failover not yet committed."""
        control = self.control()
        if Phase(control.phase) is Phase.FAILED_OVER:
            point = self.details(control).chosen_point_id
            assert point is not None
            replica = self.sites.towards(control.active_site)
            if not replica.status(self.name).exists:
                return self._read_promoted(control.active_site, disk, offset, length)
            cached = self._point_reader
            if cached is None or cached[0] != point:
                cached = self._point_reader = (
                    point, replica.point_reader(self.name, point),
                )  # fmt: skip
            return cached[1].read(disk, offset, length)
        return self.disks.read(disk, offset, length)

    def _read_promoted(self, site: str, disk: str, offset: int, length: int) -> bytes:
        """A commit stopped after its promotion consumed the store (it stays pending,
        ``failover.commit``): the promoted images hold the chosen point."""
        storage = self.sites.storage(site)
        if (
            disk not in self.disk_sizes
            or (storage.vm_directory(self.name) / PROMOTING).exists()
        ):
            msg = f"VM {self.name!r}: disk {disk!r} cannot be read while its commit "
            msg += f"is half done; call commit again (disks: {sorted(self.disk_sizes)})"
            raise TransitionNotAllowed(msg)
        image = VirtualDisk.open(
            storage.disk_path(self.name, disk), block_bytes=self.block_bytes
        )
        try:
            return image.read(offset, length)
        finally:
            image.close()

    def flush(self) -> None:
        """Make every write so far durable (logs first, then disks)."""
        for disks in (self._disks, self.old_disks):
            if disks is not None:
                disks.flush()

    def test_vm(self) -> TestVmDisks:
        """The open drill's test VM (its disks read the point, write the overlay)."""
        control = self.control()
        if Phase(control.phase) is not Phase.TEST_FAILOVER:
            msg = f"VM {self.name!r} has no test VM: it is {control.phase}; start a "
            msg += "test failover first (start_test_failover)"
            raise TransitionNotAllowed(msg)
        return self.sites.towards(other_site(control.active_site)).test_vm(self.name)

    # -- the control rows --------------------------------------------------------------

    def control(self) -> VmControl:
        """The VM's authoritative control row: the newest of the sites that are up,
        or the newest this engine committed or read, if that is newer (its site went
        down since: a site that comes back with an older row must not be believed,
        or a VM failed over while it was down would run at both sites)."""
        rows = [
            checked_row(site.control, site.control.vm(self.name))
            for site in self._holding_sites()
        ]
        if not rows:
            msg = f"VM {self.name!r}: no site that is up holds its control row"
            raise TransitionNotAllowed(msg)
        if self._newest_row is not None:
            rows.append(self._newest_row)
        newest = max(rows, key=lambda row: row.generation)
        self._newest_row = newest
        return newest

    def _holding_sites(self) -> list[SiteStorage]:
        return [s for s in self.sites.up_sites() if self.name in s.control.vm_names()]

    def details(self, control: VmControl | None = None) -> VmDetails:
        """The decoded details of the VM's control row."""
        row = control or self.control()
        decoded = VmDetails.from_row(row.details, active_site=row.active_site)
        return decoded.check(row.phase, row.active_site)

    def _sync_rows(self) -> None:
        """Copy the newest row to every other site that is up and holds an older one."""
        newest = self.control()
        for site in self.sites.up_sites():
            try:
                site.control.adopt_vm(newest, self.disk_sizes)
            except StorageFull:
                continue  # that site keeps its older row; the next sync tries again

    # -- the model ---------------------------------------------------------------------

    def observed(self, *, tolerant: bool = False) -> Observed:
        """What the engine observes of this VM now (no side effects).

        ``tolerant``: a missing or damaged replica is shown as no replica instead of
        raising :class:`DamagedState`, for what does not depend on it (the workload's
        writes at the active copy, and disable, the way out the damage names).
        """
        control = self.control()
        phase = Phase(control.phase)
        details = self.details(control)
        target = other_site(control.active_site)
        points: tuple[engine_points.RecoveryPoint, ...] = ()
        exists = False
        store_site = control.active_site if phase is Phase.FAILED_OVER else target
        status: ReplicaStatus | None = None
        if self.sites.up(store_site):
            try:
                # Quick: a server that does not answer is not asked again with the
                # retries' backoff (seconds), so a write or a status never waits.
                status = self.sites.towards(store_site).status(self.name, quick=True)
            except DamagedState:
                if not tolerant:
                    raise
                status = ReplicaStatus(self.name, exists=False)
            except TransportError:
                # Its replica server does not answer (or the link is cut): seen as
                # when its site is down, from the catalogue's mirror below, so the
                # VM's own I/O never waits on the other site.
                status = None
        if status is not None:
            exists, points = status.exists, status.points
            if phase is Phase.FAILED_OVER and self._commit_pending(store_site):
                # Its promotion may have rolled the store back to the chosen point
                # already: the newer points are no longer offered (failover.commit).
                chosen = details.chosen_point_id
                points = tuple(p for p in points if p.recovery_point_id == chosen)
        else:
            # The catalogue's mirror, from the newest row's site (one that is up).
            holder = max(
                self._holding_sites(),
                key=lambda site: site.control.vm(self.name).generation,
            ).control
            points = holder.recovery_points(self.name)
            exists = phase is not Phase.UNPROTECTED
        # During the initial replication the replica is created by the first copy
        # when the target could not take it at enable.
        waiting = phase is Phase.INITIAL_REPLICATION and self._disks_copied == 0
        missing = (
            phase not in (Phase.UNPROTECTED, Phase.FAILED_OVER)
            and not exists
            and not waiting
        )
        answered = status is not None
        gone = missing and answered and phase is not Phase.COMMITTED
        if gone and not tolerant:
            msg = f"VM {self.name!r} is {phase.value} but its replica at site "
            msg += f"{store_site!r} is missing: it was deleted or the target's "
            msg += "storage was replaced; disable and enable protection to start "
            msg += "afresh"
            raise DamagedState(msg)
        pending = 0
        log = LogHealth.USABLE
        if not self.sites.up(control.active_site) and phase in _TRACKING:
            log = self._log_when_down
        if self._disks is not None and self._disks_site == control.active_site:
            pending = self.disks.pending().records
            if self.sites.up(control.active_site):
                pending += len(self.outbox.waiting())
            log = self._log_health()
        up = {site: self.sites.up(site) for site in ("primary", "secondary")}
        return Observed(
            phase=phase,
            active_site=control.active_site,
            details=details,
            replica_exists=exists,
            points=points,
            pending_records=pending,
            disks_copied=self._disks_copied,
            log=log,
            up=up,
            connected={site: self.sites.connected(site) for site in up},
            storage_full={site: self.sites.storage_full(site) for site in up},
            link_up=self.sites.link_up,
            retention_count=self.retention_count,
        )

    def _commit_pending(self, site: str) -> bool:
        """Whether a commit a failure left pending is recorded at ``site`` (read
        only: no operation is finished or abandoned here)."""
        pending = self.sites.storage(site).control.pending_operation(self.name)
        return pending is not None and pending.name == "commit"

    def view(self, *, tolerant: bool = False) -> SystemState:
        """The refinement mapping: the engine's state as the model's abstract state."""
        return abstract_state(self._observed_settled(tolerant=tolerant))

    def _observed_settled(self, *, tolerant: bool = False) -> Observed:
        try:
            return self.observed(tolerant=tolerant)
        except DamagedState:
            # Read while an operation (disable, enable) was changing both? Look again
            # once no operation runs: only a replica missing then is damage.
            with self.operating():
                return self.observed(tolerant=tolerant)

    def second_step_refusal(
        self, view: SystemState, first: str, second: str
    ) -> str | None:
        """The model's refusal of ``second`` right after ``first`` (None: allowed)."""
        try:
            after = apply(self.config, view, Call(first, vm=0, args=()))
            apply(self.config, after, Call(second, vm=0, args=()))
        except ActionRefused as refusal:
            return str(refusal)
        return None

    def _log_health(self) -> LogHealth:
        """The logs' health; a waiting cycle whose cut record is damaged makes them
        unusable already (the next cycle would refuse it), said without writing."""
        health_now = LOG_HEALTH[self.disks.log_state]
        if health_now is LogHealth.USABLE and self.outbox.damaged_records(
            self.disk_sizes
        ):
            return LogHealth.DAMAGED
        return health_now

    def ask_first(self, action: str) -> None:
        """Raise the model's refusal when it refuses ``action`` whatever its arguments
        (before the engine looks at the arguments it was given)."""
        view = self.view()
        if any(c.vm == 0 and c.action == action for c in enabled(self.config, view)):
            return
        bare = Call(action, vm=0, args=())
        if not isinstance(lifecycle_edge(self.config, view, 0, action), Edge):
            try:  # the phase or an edge guard refuses: the model says so
                apply(self.config, view, bare)
            except ActionRefused as refusal:
                raise TransitionNotAllowed(str(refusal)) from refusal
        # The phase allows it: ask with the first arguments it could take.
        choices = tuple(ACTIONS[action].choices(Context(self.config, view, bare)))
        if not choices:
            msg = (
                f"{action} of VM {self.name!r} takes no argument the model accepts now"
            )
            raise TransitionNotAllowed(msg)
        try:
            apply(self.config, view, Call(action, vm=0, args=choices[0]))
        except ActionRefused as refusal:
            raise TransitionNotAllowed(str(refusal)) from refusal

    def decide(self, action: str, **args: str | int | bool) -> VmState:
        """Ask the model; return the VM it predicts, or raise its refusal."""
        view = self.view(tolerant=action in TOLERANT_ACTIONS)
        call = Call(action, vm=0, args=tuple(args.items()))
        try:
            predicted = apply(self.config, view, call).vms[0]
        except ActionRefused as refusal:
            raise TransitionNotAllowed(str(refusal)) from refusal
        destination = self.machine.allows(action, view.vms[0], self.config)
        assert destination is predicted.phase, (action, destination, predicted.phase)
        return predicted

    def step(
        self,
        action: str,
        effect: Callable[[], None],
        *,
        model_args: Mapping[str, str | int | bool] | None = None,
        final_args: Callable[[], Mapping[str, str | int | bool]] | None = None,
        epoch: int | None = None,
        details: Callable[[], VmDetails] | None = None,
        active_site: str | None = None,
        undoable: bool = True,
        **params: object,
    ) -> VmState:
        """Ask, record the intent, run the effect, commit the predicted phase.

        ``details`` is called after the effect: the details to commit with the phase.
        A failed effect abandons the operation (the phase stays), unless it is not
        ``undoable``: then it stays pending and the next operation (or a restart)
        finishes it first.
        ``final_args``, when given, are the model's arguments as the effect found them
        (what an unplanned failover's shutdown managed): the model is asked again
        with them, against the state from before the effect, and must agree.
        Returns the VM the model predicted.
        """
        self._restart.settle()
        view_before = self.view(tolerant=action in TOLERANT_ACTIONS)
        before = view_before.vms[0]
        predicted = self.decide(action, **(model_args or {}))
        # Allowed: only now is an older row elsewhere brought up to date (a refused
        # operation writes nothing; the view already read the newest row).
        self._sync_rows()
        recorded = {**(model_args or {}), **params, "phase": predicted.phase.value}
        if epoch is not None:
            recorded["epoch"] = epoch
        if active_site is not None:
            recorded["active_site"] = active_site
        acting = self.acting_site(action)
        control = acting.control
        operation_id = control.begin_operation(
            self.name, action, json.dumps(recorded, sort_keys=True)
        )
        try:
            self.crash("intent_recorded")
            effect()
            if final_args is not None:
                predicted = self._decide_on(view_before, action, final_args())
            committed = None if details is None else details().to_json()
            self.crash("effect_done")
        except BaseException as error:
            if not isinstance(error, Exception):
                # Interrupted (KeyboardInterrupt, SystemExit): the effect may be half
                # done; it stays pending and is finished as a restart would.
                raise
            if not isinstance(error, ReplicationError | OSError):
                self._abandon_quietly(control, operation_id, error)
                raise
            typed = _typed(error, f"VM {self.name!r}: {action}")
            if not undoable:
                typed.add_note(f"VM {self.name!r}: {action} cannot be undone once "
                               "begun: it stays pending, and the next operation (or a "
                               "restart) finishes it")  # fmt: skip
                if typed is error:
                    raise
                raise typed from error
            try:
                control.abandon_operation(operation_id, str(typed))
            except StorageFull as full:
                typed.add_note(f"the operation stays pending ({full}); the next one "
                               "finishes or rolls it back first")  # fmt: skip
            typed.add_note(f"VM {self.name!r}: {action} failed; the phase is unchanged")
            if typed is error:
                raise
            raise typed from error
        self.commit_phase(
            control, operation_id, predicted.phase, epoch=epoch,
            details_json=committed, active_site=active_site, action=action,
        )  # fmt: skip
        self.machine.fire(action, before, self.config)
        assert self.machine.phase is predicted.phase
        return predicted

    def _decide_on(
        self, view: SystemState, action: str, args: Mapping[str, str | int | bool]
    ) -> VmState:
        """The model's verdict on ``action`` from ``view``; a refusal is raised."""
        call = Call(action, vm=0, args=tuple(args.items()))
        try:
            return apply(self.config, view, call).vms[0]
        except ActionRefused as refusal:
            raise TransitionNotAllowed(str(refusal)) from refusal

    def commit_phase(
        self,
        control: ControlStore,
        operation_id: int,
        phase: Phase,
        *,
        epoch: int | None,
        details_json: str | None,
        active_site: str | None,
        action: str,
    ) -> None:
        """Complete the operation with its phase, then copy the row across."""
        try:
            control.complete_operation(
                operation_id, phase.value, epoch=epoch, details_json=details_json,
                active_site=active_site,
                direction=None if active_site is None else direction(active_site),
            )  # fmt: skip
        except StorageFull as full:
            full.add_note(
                f"VM {self.name!r}: the effect of {action} is done; the phase could "
                "not be recorded, so the operation stays pending and the next "
                "operation finishes it"
            )
            raise
        self.invalidate()
        self._sync_rows()

    def acting_site(self, action: str) -> SiteStorage:
        """The site whose control store records ``action`` (up, or refused)."""
        control = self.control()
        site = control.active_site
        if action in ACTING_AT_TARGET:
            site = other_site(site)
        return self.sites.storage(site)

    def _abandon_quietly(
        self, control: ControlStore, operation_id: int, error: BaseException
    ) -> None:
        """Close an operation whose effect raised something not ours (a callback)."""
        try:
            control.abandon_operation(operation_id, repr(error))
        except ReplicationError as failure:
            error.add_note(f"the operation stays pending ({failure})")

    # -- protection --------------------------------------------------------------------

    def enable_protection(self, progress: Progress | None = None) -> None:
        """Start tracking, copy the disks one by one, apply what was logged since."""
        with self.operating():
            epoch = self.next_epoch()
            active = self.control().active_site
            if self._disks is None and self.sites.up(active):
                self.open_disks()

            def effect() -> None:
                self.disks.start_tracking(epoch, dict.fromkeys(self.disk_sizes, 0))
                # Enabling is a source-side action (decision 7): a target that cannot
                # take the replica now gets it with the first disk copied.
                target = other_site(active)
                if self.sites.up(target) and self.sites.link_up:
                    try:
                        self._create_replica()
                    except (StorageFull, TransportError, SiteUnreachable):
                        pass
                    except OSError as error:
                        if error.errno != errno.ENOSPC:
                            self.disks.stop_tracking()
                            raise
                    except ReplicationError:
                        self.disks.stop_tracking()
                        raise

            self.step(
                "enable_protection", effect, epoch=epoch,
                details=lambda: VmDetails(running=frozenset({active})),
            )  # fmt: skip
            self._disks_copied = 0
            self._cycles = None
        self.continue_initial_replication(progress)

    def next_epoch(self) -> int:
        """An epoch newer than any this VM used at either site that is up."""
        rows = [site.control.vm(self.name) for site in self._holding_sites()]
        if not rows:
            self.control()  # raises: no site that is up holds the VM's row
        return max(row.epoch for row in rows) + 1

    def continue_initial_replication(self, progress: Progress | None = None) -> None:
        """Copy the disks not yet copied, then complete (also after a restart)."""
        for disk in list(self.disk_sizes)[self._disks_copied :]:
            with self.operating():

                def copy(disk: str = disk) -> None:
                    self._copy_disk(disk, progress)

                self.step("copy_disk", copy, disk=disk)
                self._disks_copied += 1
        with self.operating():
            predicted = self.decide("complete_initial_replication")
            if predicted.phase is Phase.RESYNCHRONIZING:
                # The logs cannot make the fuzzy copy consistent (decision 8): install
                # it, make no point, and let the resynchronisation compare blocks.
                self.step(
                    "complete_initial_replication",
                    self._install_copy,
                    details=lambda: self.details().with_(other_trusted=False),
                )
                return
            self.step("complete_initial_replication", self.complete_copy)

    def replicate(self, *, app_consistent: bool = False) -> CycleReport | None:
        """One delta cycle, or None: nothing to ship, or the logs were unusable (the
        phase then says ``resynchronizing``)."""
        arguments = {"app_consistent": app_consistent}
        with self.operating():
            predicted = self.decide("replicate", **arguments)
            if predicted.phase is Phase.RESYNCHRONIZING:
                self.step("replicate", lambda: None, model_args=arguments)
                return None
            reports: list[CycleReport] = []
            self.step(
                "replicate",
                lambda: reports.extend(self.run_cycles(app_consistent=app_consistent)),
                model_args=arguments,
            )
            return reports[-1] if reports else None

    def pause(self) -> None:
        """Suspend shipping; tracking goes on."""
        with self.operating():
            self.step("pause", lambda: None)

    def resume(self) -> None:
        """Resume shipping."""
        with self.operating():
            self.step("resume", lambda: None)

    def resynchronize(self, progress: Progress | None = None) -> ResyncReport:
        """Compare block digests with the replica and send only those that differ.

        After an unplanned failover's reverse replication, only the blocks known to
        differ are compared (``reverse.py``); otherwise every block. ``progress`` is
        called with (disk, bytes compared, bytes total).
        """
        with self.operating():
            if Phase(self.control().phase) is not Phase.RESYNCHRONIZING:
                # Both steps must be possible before the first commits: a refused
                # comparison (the link is down) must not leave the VM unprotected.
                self.decide("resynchronize")  # the model's own refusal, as it is
                refusal = self.second_step_refusal(
                    self.view(), "resynchronize", "complete_resynchronization"
                )
                if refusal is not None:
                    msg = f"cannot resynchronize VM {self.name!r} now: {refusal}; "
                    msg += "nothing was changed"
                    raise TransitionNotAllowed(msg)
                self.step("resynchronize", lambda: None)
            # Newer than anything the replica ever saw, even if an earlier resync's
            # epoch reached the replica but not the control state.
            points = self.replica.status(self.name).points
            newest_epoch = max([p.epoch for p in points], default=0)
            epoch = max(self.next_epoch() - 1, newest_epoch) + 1
            reports: list[ResyncReport] = []

            def effect() -> None:
                candidates = reverse.candidates(self)
                self.outbox.discard()
                # The comparison restarts tracking: the logs the candidates count on
                # go. Forgotten first, durably, so that any later attempt (this one
                # failed, or a crash) compares every block.
                reverse.forget_candidates(self)
                report = prepare_resync(
                    self.disks, self.replica, self.outbox,
                    cycle_id=self.cycles.take_cycle_id(), epoch=epoch,
                    progress=progress, candidates=candidates,
                )  # fmt: skip
                point = self.ship_resync(report.cycle_id)
                reports.append(report if point is None else _with_point(report, point))
                reverse.forget_candidates(self)

            self.step(
                "complete_resynchronization", effect, epoch=epoch,
                details=lambda: reverse.after_resync(self),
            )  # fmt: skip
            self.mirror_catalogue()
            return reports[0]

    def disable_protection(self) -> None:
        """Stop replicating: the logs and the replica go; the active copy stays."""
        with self.operating():
            self.step(
                "disable_protection", self.disable_effect,
                details=lambda: reverse.after_disable(self),
            )  # fmt: skip

    def finish_pending(self, action: str) -> bool:
        """Finish ``action`` if a failure left it pending (an operation never
        abandoned, such as commit); False if it is not pending. Raises what still
        stops it (a full disk: free space and call again)."""
        with self.operating():
            if self._restart.pending_name() != action:
                return False
            self._restart.settle()
            self._sync_rows()
            self.open_disks()
            return True

    def recover(self) -> str | None:
        """Finish or roll back the operation a crash interrupted; say what was done."""
        with self.operating():
            outcome = self._restart.recover()
            self._sync_rows()
            self._restart_where_active()
            self.open_disks()
            return outcome

    # -- the failover half (failover.py, reverse.py) -----------------------------------

    def start_test_failover(self, point: int | None = None) -> DrillReport:
        """A drill: a test VM from a recovery point (default: the latest)."""
        return failovers.start_test_failover(self, point)

    def cleanup_test_failover(self) -> None:
        """End the drill: the test VM and its overlay are deleted."""
        failovers.cleanup_test_failover(self)

    def planned_failover(self, *, then_fail_over: bool = True) -> FailoverReport:
        """Shut the source down, ship every change, then fail over (zero loss)."""
        return failovers.planned_failover(self, then_fail_over=then_fail_over)

    def failover(self) -> FailoverReport:
        """The planned failover's second half: fail over on the replica."""
        return failovers.failover_prepared(self)

    def unplanned_failover(
        self, point: int | str = "latest", *, shut_down_first: bool = False
    ) -> FailoverReport:
        """Stop replication and fail over from ``point`` (an id, "latest" or
        "latest_app_consistent"), trying a shutdown and a final sync first if asked."""
        return failovers.unplanned_failover(
            self, point, shut_down_first=shut_down_first
        )

    def complete_failover(self) -> FailoverReport:
        """Start the replica VM of a failover in progress (after a wait)."""
        return failovers.complete_failover(self, asked=True)

    def change_recovery_point(self, point: int) -> FailoverReport:
        """Before commit (unplanned failover only): restart from another point."""
        return failovers.change_recovery_point(self, point)

    def commit(self) -> CommitReport:
        """Commit the failover: every recovery point is deleted."""
        return failovers.commit(self)

    def cancel_failover(self) -> None:
        """Cancel a failover in progress: replication stops for good."""
        failovers.cancel_failover(self)

    def reverse_replication(self) -> reverse.ReverseReport:
        """Protect the VM again, towards the other site."""
        return reverse.reverse_replication(self)

    def reconcile(self) -> LossReport | None:
        """Count the last failover's exact loss from the old source, if reachable."""
        with self.operating():
            return reverse.reconcile(self)

    # -- status ------------------------------------------------------------------------

    def verify_logs(self) -> str | None:
        """Read back the unshipped changes (the active logs and the cycles waiting to
        ship) and check every record; damage makes the logs unusable, as the next
        cycle would find. Returns what is damaged, or None."""
        with self.operating():
            if self._disks is None or self._disks_site != self.control().active_site:
                return None
            found = self.disks.verify_logs()
            if found is None and self.sites.up(self._disks_site):
                found = next(iter(self.outbox.damaged_records(self.disk_sizes)), None)
            self.invalidate()
            return found

    def status(self) -> VmStatus:
        """The VM as the operator sees it; nothing changed, no operation waited for
        (it waits at most for a cut)."""
        seen = self._observed_settled()
        view = abstract_state(seen)
        vm = view.vms[0]
        allowed = tuple(
            dict.fromkeys(
                ENGINE_METHODS[call.action]
                for call in enabled(self.config, view)
                if call.vm == 0
                and call.action in ENGINE_METHODS
                and (
                    call.action != "resynchronize"
                    or self.second_step_refusal(
                        view, "resynchronize", "complete_resynchronization"
                    )
                    is None
                )
            )
        )
        loss = seen.details.loss
        problem = None
        if self._disks is not None:
            problem = self._disks.problem
            if problem is None and self.sites.up(seen.active_site):
                problem = next(iter(self.outbox.damaged_records(self.disk_sizes)), None)
        return VmStatus(
            name=self.name,
            phase=vm.phase.value,
            protected=is_protected(vm),
            health=health(view, vm).value,
            active_site=vm.active.value,
            recovery_points=() if vm.phase is Phase.COMMITTED else seen.points,
            allowed=allowed,
            log_problem=problem,
            running_at=tuple(sorted(site.value for site in vm.running)),
            loss=None if loss is None else LossReport.from_json(loss),
        )

    def statistics(self) -> VmStatistics:
        """Counters since this object was opened."""
        pending = self._disks.pending() if self._disks is not None else None
        points = self.observed().points
        lag = self.clock.now() - points[-1].created_at if points else None
        cycles = self._cycles
        return VmStatistics(
            cycles_applied=cycles.cycles_applied if cycles else 0,
            bytes_shipped=cycles.bytes_shipped if cycles else 0,
            pending_log_records=pending.records if pending else 0,
            pending_log_bytes=pending.payload_bytes if pending else 0,
            cycles_waiting=len(self.outbox.waiting()) if self._disks else 0,
            cycles_dropped=cycles.cycles_dropped if cycles else 0,
            cut_seconds_max=self._disks.cut_seconds_max if self._disks else 0.0,
            last_cycle=cycles.last_cycle if cycles else None,
            lag_seconds=lag,
        )

    def unshipped_log_bytes(self) -> int | None:
        """The change-log bytes the next successful cycle ships: the sealed logs of
        the cycles waiting in the outbox, and the current logs when they hold a record
        (a cut seals every disk's log; nothing is cut when none holds one). Files
        whole, headers included, as ``CycleReport.bytes_shipped`` counts them. None
        when the active copy's logs cannot be read here (its site is down, or they
        are not open at it). Reads only: no lock waited for but the disks' cut lock.
        """
        active = self.control().active_site
        disks = self._disks
        if disks is None or self._disks_site != active or not self.sites.up(active):
            return None
        pending = disks.pending()
        current = pending.file_bytes if pending.records > 0 else 0
        return current + self.outbox.waiting_log_bytes(self.disk_sizes)

    def close(self) -> None:
        """Close the disks and logs (flush first for durability)."""
        with self.operating():
            self._close_active()
            self._close_old()

    # -- effects (also run again by ``restart.py``) ------------------------------------

    def _create_replica(self) -> None:
        self.replica.create_replica(self.name, self.disk_sizes, self.retention_count)

    def _copy_disk(self, disk: str, progress: Progress | None) -> None:
        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(disk, done, total)

        if self._disks_copied == 0 and not self.replica.status(self.name).exists:
            self._create_replica()  # deferred at enable: the target could not take it

        self.replica.send_disk_image(
            self.name, disk, self.source_site.disk_path(self.name, disk),
            progress=report,
        )  # fmt: skip

    def _install_copy(self) -> None:
        self.replica.install_initial_copy(self.name)

    def complete_copy(self, *, recovering: bool = False) -> None:
        """Install the shipped images, then apply what was logged meanwhile."""
        self._install_copy()
        if recovering:
            self.cycles.ship_waiting(finish_cut=True)
        self.run_cycles(app_consistent=False)

    def run_cycles(self, *, app_consistent: bool) -> list[CycleReport]:
        """Ship what waits, then cut and ship a new cycle; mirror the catalogue."""
        try:
            return self.cycles.run(
                app_consistent=app_consistent, epoch=self.control().epoch
            )
        finally:
            self.mirror_catalogue()

    def ship_resync(self, cycle_id: int) -> engine_points.RecoveryPoint | None:
        """Ship the recorded cycle of a resynchronisation; return its point.

        When no block differed and the replica already has a point, nothing is
        shipped and no point is made (as in the model): the replica already equals
        the source. None then.
        """
        record = self.outbox.cut_record(cycle_id)
        assert record is not None, cycle_id
        empty = all(sequence == -1 for sequence in record.last_sequences.values())
        if empty and self.replica.status(self.name).points:
            self.outbox.remove(cycle_id)
            return None
        point, _ = ship_cycle(
            self.replica, self.outbox, record, clock=self.clock, crash=self.crash
        )
        return point

    def mirror_catalogue(self) -> None:
        """Copy the replica's catalogue and the shipped log positions into the control
        state (the replica store's manifest stays the authority)."""
        points = self.replica.status(self.name).points
        control = self.source_site.control
        control.save_recovery_points(self.name, points)
        if points:
            newest = points[-1]
            control.set_log_positions(
                self.name,
                {disk: newest.last_sequence(disk) for disk in self.disk_sizes},
            )

    def disable_effect(self) -> None:
        """Tracking stopped, waiting cycles and the replica deleted (the old source's
        change logs too, after a failover; never a copy of the disks)."""
        self.disks.stop_tracking()
        self.disks.forget_problem()
        self.outbox.discard()
        control = self.control()
        target = other_site(control.active_site)
        if Phase(control.phase) is not Phase.COMMITTED and self.sites.up(target):
            # A target that is down keeps its replica until it is back: then
            # site_recovered deletes it (the VM is unprotected by then).
            self.replica.remove_replica(self.name)
        reverse.drop_old_logs(self)
        reverse.forget_candidates(self)
        if self.sites.up(target):
            self.mirror_catalogue()
        else:
            self.source_site.control.save_recovery_points(self.name, ())
        self._disks_copied = 0  # no initial copy is under way any more

    def start_new_source(self, site: str, epoch: int) -> None:
        """Open the promoted disks at ``site`` and track them from ``epoch`` on."""
        self._close_active()
        disks = self._open_source(site)
        disks.start_tracking(epoch, dict.fromkeys(self.disk_sizes, 0))
        self._disks = disks
        self._disks_site = site


def details_epoch(details: VmDetails, control: VmControl) -> int:
    """The epoch of the old source's logs after a failover."""
    return control.epoch if details.old_epoch is None else details.old_epoch


def _with_point(
    report: ResyncReport, point: engine_points.RecoveryPoint
) -> ResyncReport:
    return replace(report, recovery_point_id=point.recovery_point_id)


def _typed(error: ReplicationError | OSError, doing: str) -> ReplicationError | OSError:
    """A full disk is :class:`StorageFull` whatever layer met it."""
    if isinstance(error, OSError):
        return storage_error(error, f"{doing} (nothing was half applied)")
    return error


def check_point_argument(point: object) -> None:
    """A recovery point argument is an id (int) or one of the names."""
    if isinstance(point, bool) or not isinstance(point, int | str | None):
        msg = f"point={point!r} must be a recovery point id (int), 'latest' or "
        msg += "'latest_app_consistent'"
        raise InvalidConfiguration(msg)
