"""The binding: one VM's mechanics behind its state machine. The model decides.

This package is the only part of the engine that imports ``model``. Every operation
runs the same four steps, so the engine can never do what the model forbids:

1. **ask**: map the engine's real state to the model's abstract view
   (:meth:`ProtectedVm.view`: phase, active site, replica present, recovery points, the
   logs usable or not, the link) and ``model.apply`` the call. A refusal surfaces as
   :class:`~engine.errors.TransitionNotAllowed` carrying the model's message; the VM's
   ``transitions`` machine (``PhaseMachine``) must agree on the destination.
2. **record the intent** in the site's control store (``begin_operation``);
3. **run the effect**, which is idempotent (a restart may run it again);
4. **commit the phase** the model predicted, with the control row, in one transaction
   (``complete_operation``), and fire the machine. If the effect fails, the operation
   is abandoned and the phase stays (a failed cycle leaves the phase: decision 8). If
   even the abandon cannot be written (a full disk), the operation stays pending and
   the next operation finishes or rolls it back first, as a restart would
   (``restart.py``), instead of being refused until a restart.

**Threads and locks.** One operation lock per VM serialises operations (any thread may
call them). Guest writes never take it: they take only the disks' cut lock, which an
operation holds just to cut the logs (a seal) and to start or stop tracking; a disk
copy, a resynchronisation's comparison and a ship-and-apply run without it.
:meth:`ProtectedVm.status` takes no operation lock (it waits at most for a cut) and
changes nothing.

**Roles as data.** The VM's source site and the target it replicates to are given by
the engine from the control row (active site, direction); its disks from the control
state's disk table, never by globbing the VM's folder (a stray file there is ignored).

**Initial replication**: tracking starts first (new logs, a new epoch); the disks are
then copied one by one while the workload writes (the copy is fuzzy); finally every
record logged since tracking started is applied over the copy, as the first cycle: a
record is an absolute write, so the replica equals the source at that cut.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from engine.binding.restart import Restart
from engine.clock import Clock
from engine.control.site import SiteStorage
from engine.control.store import VmControl
from engine.errors import (
    DamagedState,
    ReplicationError,
    StorageFull,
    TransitionNotAllowed,
)
from engine.replica import recovery_point as engine_points
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
from engine.storage.disk import storage_error
from engine.transport.interface import ReplicaTarget
from model import (
    ActionRefused,
    Call,
    Copy,
    LogHealth,
    ModelConfig,
    Phase,
    PhaseMachine,
    RecoveryPoint,
    Site,
    SystemState,
    VmState,
    apply,
    enabled,
    health,
    is_protected,
)

__all__ = ["CYCLE_CRASH_POINTS", "CrashPoint", "CycleReport", "ProtectedVm"]

#: The workload is not bounded by the model's explored environment here.
WRITE_LAG_UNBOUNDED: Final = 2**62

#: The model's actions this engine runs today, and the ``ReplicationEngine`` method
#: that runs each (failovers and what follows them come with the engine's second
#: half): ``status().allowed`` lists these methods, so a caller can call them.
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
}

#: How the engine's view of its logs maps onto the model's log health.
LOG_HEALTH = {
    LogState.USABLE: LogHealth.USABLE,
    LogState.OVER_LIMIT: LogHealth.OVERFLOWED,
    LogState.UNTRUSTED: LogHealth.DAMAGED,
}

Progress = Callable[[str, int, int], None]
"""Initial-copy progress: (disk, bytes done, bytes total)."""


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
    """One VM as an operator sees it: phase, derived status, health, points."""

    name: str
    phase: str
    protected: bool
    health: str
    active_site: str
    recovery_points: tuple[engine_points.RecoveryPoint, ...]
    allowed: tuple[str, ...]
    log_problem: str | None


class ProtectedVm:
    """One VM: its disks at the source, its replica behind the interface."""

    def __init__(
        self,
        name: str,
        disks: Mapping[str, int],
        *,
        source: SiteStorage,
        replica: ReplicaTarget,
        clock: Clock,
        block_bytes: int,
        retention_count: int,
        durable_writes: bool,
        crash_point: CrashPoint | None = None,
    ) -> None:
        """Bind an existing VM (its control row must exist at ``source``).

        ``crash_point`` is a test seam called with the name of each step of a cycle
        (``CYCLE_CRASH_POINTS``, and the replica store's ``CRASH_POINTS``).
        """
        self.name = name
        self.disk_sizes = dict(disks)
        self._source = source
        self._replica = replica
        self._clock = clock
        self._retention_count = retention_count
        self._crash = crash_point or no_crash
        self._operation_lock = threading.RLock()
        self._outbox = Outbox(source, name)
        self.disks = SourceDisks(
            {disk: source.disk_path(name, disk) for disk in self.disk_sizes},
            block_bytes=block_bytes,
            durable=durable_writes,
        )
        self._cycles = CycleRunner(
            self.disks, self._outbox, replica, source.control, clock,
            crash=self._crash,
        )  # fmt: skip
        self._disks_copied = 0
        self.config = ModelConfig(
            vm_count=1,
            disks_per_vm=len(self.disk_sizes),
            write_lag_max=WRITE_LAG_UNBOUNDED,
            recovery_points_max=retention_count,
            fault_budget=0,
            faults=frozenset(),
            vm_names=(name,),
        )
        self._restart = Restart(self)
        phase = Phase(self.control().phase)
        self.machine = PhaseMachine(phase)
        if phase not in (Phase.UNPROTECTED, Phase.REPLICATION_STOPPED):
            self.disks.resume_tracking(self._restart.tracking_epoch())

    # -- the workload ------------------------------------------------------------------

    def write(self, disk: str, offset: int, data: bytes) -> None:
        """Write through the change tracker (when tracking); waits only for a cut."""
        self.disks.write(disk, offset, data)

    def read(self, disk: str, offset: int, length: int) -> bytes:
        """Read the active copy."""
        return self.disks.read(disk, offset, length)

    def flush(self) -> None:
        """Make every write so far durable (logs first, then disks)."""
        self.disks.flush()

    # -- the model ---------------------------------------------------------------------

    def view(self) -> SystemState:
        """The refinement mapping: the engine's state as the model's abstract state."""
        control = self.control()
        phase = Phase(control.phase)
        replica = self._replica.status(self.name)
        if phase is not Phase.UNPROTECTED and not replica.exists:
            # Read while an operation (disable, enable) was changing both? Look again
            # once no operation runs: only a replica missing then is damage.
            with self._operation_lock:
                control = self.control()
                phase = Phase(control.phase)
                replica = self._replica.status(self.name)
                if phase is not Phase.UNPROTECTED and not replica.exists:
                    msg = f"VM {self.name!r} is {phase.value} but its replica at "
                    msg += f"site {self._replica.site_name!r} is missing: it was "
                    msg += "deleted or the target's storage was replaced; disable "
                    msg += "and enable protection to start afresh"
                    raise DamagedState(msg)
        behind = len(self._outbox.waiting()) + self.disks.pending().records
        points = tuple(
            RecoveryPoint(Copy(behind=behind), app_consistent=point.app_consistent)
            for point in reversed(replica.points)
        )[: self._retention_count]
        active = Site(control.active_site)
        vm = VmState(
            phase=phase,
            active=active,
            running=frozenset({active}),
            other=Copy(behind=behind) if replica.exists else None,
            disks_copied=self._disks_copied,
            points=points,
            log=self._log_health(),
        )
        link = self._replica.reachable()
        return SystemState(vms=(vm,), link_up=link, plan_runs=(), faults_left=0)

    def _second_step_refusal(
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
        health = LOG_HEALTH[self.disks.log_state]
        if health is LogHealth.USABLE and self._outbox.damaged_records(self.disk_sizes):
            return LogHealth.DAMAGED
        return health

    def decide(self, action: str, **args: str | int | bool) -> VmState:
        """Ask the model; return the VM it predicts, or raise its refusal."""
        view = self.view()
        call = Call(action, vm=0, args=tuple(args.items()))
        try:
            predicted = apply(self.config, view, call).vms[0]
        except ActionRefused as refusal:
            raise TransitionNotAllowed(str(refusal)) from refusal
        destination = self.machine.allows(action, view.vms[0], self.config)
        assert destination is predicted.phase, (action, destination, predicted.phase)
        return predicted

    def _step(
        self,
        action: str,
        effect: Callable[[], None],
        *,
        model_args: Mapping[str, str | int | bool] | None = None,
        epoch: int | None = None,
        **params: object,
    ) -> None:
        """Ask, record the intent, run the effect, commit the predicted phase."""
        self._restart.settle()
        before = self.view().vms[0]
        predicted = self.decide(action, **(model_args or {}))
        recorded = {**(model_args or {}), **params, "phase": predicted.phase.value}
        if epoch is not None:
            recorded["epoch"] = epoch
        control = self._source.control
        operation_id = control.begin_operation(
            self.name, action, json.dumps(recorded, sort_keys=True)
        )
        try:
            effect()
        except BaseException as error:
            if not isinstance(error, Exception):
                # Interrupted (KeyboardInterrupt, SystemExit): the effect may be half
                # done; it stays pending and is finished as a restart would.
                raise
            if not isinstance(error, ReplicationError | OSError):
                self._abandon_quietly(operation_id, error)  # a callback's own error
                raise
            typed = _typed(error, f"VM {self.name!r}: {action}")
            try:
                control.abandon_operation(operation_id, str(typed))
            except StorageFull as full:
                typed.add_note(f"the operation stays pending ({full}); the next one "
                               "finishes or rolls it back first")  # fmt: skip
            typed.add_note(f"VM {self.name!r}: {action} failed; the phase is unchanged")
            if typed is error:
                raise
            raise typed from error
        try:
            control.complete_operation(operation_id, predicted.phase.value, epoch=epoch)
        except StorageFull as full:
            full.add_note(
                f"VM {self.name!r}: the effect of {action} is done (a cycle may have "
                "been applied); the phase could not be recorded, so the operation "
                "stays pending and the next operation finishes it"
            )
            raise
        self.machine.fire(action, before, self.config)
        assert self.machine.phase is predicted.phase

    def _abandon_quietly(self, operation_id: int, error: BaseException) -> None:
        """Close an operation whose effect raised something not ours (a callback)."""
        try:
            self._source.control.abandon_operation(operation_id, repr(error))
        except ReplicationError as failure:
            error.add_note(f"the operation stays pending ({failure})")

    # -- operations --------------------------------------------------------------------

    def enable_protection(self, progress: Progress | None = None) -> None:
        """Start tracking, copy the disks one by one, apply what was logged since."""
        with self._operation_lock:
            epoch = self.control().epoch + 1

            def effect() -> None:
                try:
                    self.disks.start_tracking(epoch, dict.fromkeys(self.disk_sizes, 0))
                    self._replica.create_replica(
                        self.name, self.disk_sizes, self._retention_count
                    )
                except ReplicationError:
                    self.disks.stop_tracking()
                    self._replica.remove_replica(self.name)
                    raise

            self._step("enable_protection", effect, epoch=epoch)
            self._disks_copied = 0
        self.continue_initial_replication(progress)

    def continue_initial_replication(self, progress: Progress | None = None) -> None:
        """Copy the disks not yet copied, then complete (also after a restart).

        Each disk is copied while the workload writes (writes go on: the copy does not
        hold the cut lock); what changes meanwhile is in the logs, applied at the end.
        """
        for disk in list(self.disk_sizes)[self._disks_copied :]:
            with self._operation_lock:

                def copy(disk: str = disk) -> None:
                    self._copy_disk(disk, progress)

                self._step("copy_disk", copy, disk=disk)
                self._disks_copied += 1
        with self._operation_lock:
            predicted = self.decide("complete_initial_replication")
            if predicted.phase is Phase.RESYNCHRONIZING:
                # The logs cannot make the fuzzy copy consistent (decision 8): install
                # it, make no point, and let the resynchronisation compare blocks.
                self._step("complete_initial_replication", self._install_copy)
                return
            self._step("complete_initial_replication", self.complete_copy)

    def replicate(self, *, app_consistent: bool = False) -> CycleReport | None:
        """One delta cycle, or None: nothing to ship, or the logs were unusable (the
        phase then says ``resynchronizing``)."""
        arguments = {"app_consistent": app_consistent}
        with self._operation_lock:
            predicted = self.decide("replicate", **arguments)
            if predicted.phase is Phase.RESYNCHRONIZING:
                self._step("replicate", lambda: None, model_args=arguments)
                return None
            reports: list[CycleReport] = []
            self._step(
                "replicate",
                lambda: reports.extend(self.run_cycles(app_consistent=app_consistent)),
                model_args=arguments,
            )
            return reports[-1] if reports else None

    def pause(self) -> None:
        """Suspend shipping; tracking goes on."""
        with self._operation_lock:
            self._step("pause", lambda: None)

    def resume(self) -> None:
        """Resume shipping."""
        with self._operation_lock:
            self._step("resume", lambda: None)

    def resynchronize(self, progress: Progress | None = None) -> ResyncReport:
        """Compare block digests with the replica and send only those that differ.

        ``progress`` is called with (disk, bytes compared, bytes total).
        """
        with self._operation_lock:
            if Phase(self.control().phase) is not Phase.RESYNCHRONIZING:
                # Both steps must be possible before the first commits: a refused
                # comparison (the link is down) must not leave the VM unprotected.
                self.decide("resynchronize")  # the model's own refusal, as it is
                refusal = self._second_step_refusal(
                    self.view(), "resynchronize", "complete_resynchronization"
                )
                if refusal is not None:
                    msg = f"cannot resynchronize VM {self.name!r} now: {refusal}; "
                    msg += "nothing was changed"
                    raise TransitionNotAllowed(msg)
                self._step("resynchronize", lambda: None)
            # Newer than anything the replica ever saw, even if an earlier resync's
            # epoch reached the replica but not the control state.
            points = self._replica.status(self.name).points
            newest_epoch = max([p.epoch for p in points], default=0)
            epoch = max(self.control().epoch, newest_epoch) + 1
            reports: list[ResyncReport] = []

            def effect() -> None:
                self._outbox.discard()
                report = prepare_resync(
                    self.disks, self._replica, self._outbox,
                    cycle_id=self._cycles.take_cycle_id(), epoch=epoch,
                    progress=progress,
                )  # fmt: skip
                point = self.ship_resync(report.cycle_id)
                reports.append(report if point is None else _with_point(report, point))

            self._step("complete_resynchronization", effect, epoch=epoch)
            self.mirror_catalogue()
            return reports[0]

    def disable_protection(self) -> None:
        """Stop replicating: the logs and the replica go; the active copy stays."""
        with self._operation_lock:
            self._step("disable_protection", self.disable_effect)

    def recover(self) -> str | None:
        """Finish or roll back the operation a crash interrupted; say what was done."""
        with self._operation_lock:
            return self._restart.recover()

    def status(self) -> VmStatus:
        """The VM as the operator sees it; nothing changed, no operation waited for
        (it waits at most for a cut)."""
        view = self.view()
        vm = view.vms[0]
        allowed = tuple(
            dict.fromkeys(
                ENGINE_METHODS[call.action]
                for call in enabled(self.config, view)
                if call.vm == 0
                and call.action in ENGINE_METHODS
                and (
                    call.action != "resynchronize"
                    or self._second_step_refusal(
                        view, "resynchronize", "complete_resynchronization"
                    )
                    is None
                )
            )
        )
        return VmStatus(
            name=self.name,
            phase=vm.phase.value,
            protected=is_protected(vm),
            health=health(view, vm).value,
            active_site=vm.active.value,
            recovery_points=self._replica.status(self.name).points,
            allowed=allowed,
            log_problem=self.disks.problem
            or next(iter(self._outbox.damaged_records(self.disk_sizes)), None),
        )

    def statistics(self) -> VmStatistics:
        """Counters since this object was opened."""
        pending = self.disks.pending()
        points = self._replica.status(self.name).points
        lag = self._clock.now() - points[-1].created_at if points else None
        return VmStatistics(
            cycles_applied=self._cycles.cycles_applied,
            bytes_shipped=self._cycles.bytes_shipped,
            pending_log_records=pending.records,
            pending_log_bytes=pending.payload_bytes,
            cycles_waiting=len(self._outbox.waiting()),
            cycles_dropped=self._cycles.cycles_dropped,
            cut_seconds_max=self.disks.cut_seconds_max,
            last_cycle=self._cycles.last_cycle,
            lag_seconds=lag,
        )

    def close(self) -> None:
        """Close the disks and logs (flush first for durability)."""
        with self._operation_lock:
            self.disks.close()

    # -- effects (also run again by ``restart.py``) ------------------------------------

    def control(self) -> VmControl:
        """The VM's control row at its source site."""
        return self._source.control.vm(self.name)

    @property
    def source_site(self) -> SiteStorage:
        """The site the VM is active at (its disks, logs, outbox, control state)."""
        return self._source

    @property
    def replica(self) -> ReplicaTarget:
        """The target this VM replicates to."""
        return self._replica

    @property
    def outbox(self) -> Outbox:
        """The VM's waiting cycles at its source site."""
        return self._outbox

    @property
    def cycles(self) -> CycleRunner:
        """The VM's cycle mechanics."""
        return self._cycles

    def _copy_disk(self, disk: str, progress: Progress | None) -> None:
        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(disk, done, total)

        self._replica.send_disk_image(
            self.name, disk, self._source.disk_path(self.name, disk), progress=report
        )

    def _install_copy(self) -> None:
        self._replica.install_initial_copy(self.name)

    def complete_copy(self, *, recovering: bool = False) -> None:
        """Install the shipped images, then apply what was logged meanwhile."""
        self._install_copy()
        if recovering:
            self._cycles.ship_waiting(finish_cut=True)
        self.run_cycles(app_consistent=False)

    def run_cycles(self, *, app_consistent: bool) -> list[CycleReport]:
        """Ship what waits, then cut and ship a new cycle; mirror the catalogue."""
        try:
            return self._cycles.run(
                app_consistent=app_consistent, epoch=self.control().epoch
            )
        finally:
            self.mirror_catalogue()

    def ship_resync(self, cycle_id: int) -> engine_points.RecoveryPoint | None:
        """Ship the recorded cycle of a resynchronisation; return its point.

        When no block differed and the replica already has a point, nothing is
        shipped and no point is made (as in the model): the replica already equals
        the source, and the restarted tracking at the new epoch is the record that
        the comparison was done. None then.
        """
        record = self._outbox.cut_record(cycle_id)
        assert record is not None, cycle_id
        empty = all(sequence == -1 for sequence in record.last_sequences.values())
        if empty and self._replica.status(self.name).points:
            self._outbox.remove(cycle_id)
            return None
        point, _ = ship_cycle(
            self._replica, self._outbox, record, clock=self._clock, crash=self._crash
        )
        return point

    def mirror_catalogue(self) -> None:
        """Copy the replica's catalogue and the shipped log positions into the control
        state (the replica store's manifest stays the authority)."""
        points = self._replica.status(self.name).points
        control = self._source.control
        control.save_recovery_points(self.name, points)
        if points:
            newest = points[-1]
            control.set_log_positions(
                self.name,
                {disk: newest.last_sequence(disk) for disk in self.disk_sizes},
            )

    def disable_effect(self) -> None:
        """Tracking stopped, waiting cycles and the replica deleted."""
        self.disks.stop_tracking()
        self._outbox.discard()
        self._replica.remove_replica(self.name)
        self.mirror_catalogue()


def _with_point(
    report: ResyncReport, point: engine_points.RecoveryPoint
) -> ResyncReport:
    return ResyncReport(
        cycle_id=report.cycle_id,
        recovery_point_id=point.recovery_point_id,
        blocks_compared=report.blocks_compared,
        blocks_sent=report.blocks_sent,
        bytes_sent=report.bytes_sent,
        sealed=report.sealed,
    )


def _typed(error: ReplicationError | OSError, doing: str) -> ReplicationError | OSError:
    """A full disk is :class:`StorageFull` whatever layer met it."""
    if isinstance(error, OSError):
        return storage_error(error, f"{doing} (nothing was half applied)")
    return error
