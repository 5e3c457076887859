"""The binding: one VM's mechanics behind its state machine. The model decides.

This is the only engine module that imports ``model``. Every operation runs the same
four steps, so the engine can never do what the model forbids:

1. **ask**: map the engine's real state to the model's abstract view
   (:meth:`ProtectedVm.view`: phase, active site, replica present, recovery points, the
   logs usable or not, the link) and ``model.apply`` the call. A refusal surfaces as
   :class:`~engine.errors.TransitionNotAllowed` carrying the model's message; the VM's
   ``transitions`` machine (``PhaseMachine``) must agree on the destination.
2. **record the intent** in the site's control store (``begin_operation``);
3. **run the effect**, which is idempotent (a restart may run it again);
4. **commit the phase** the model predicted, with the control row, in one transaction
   (``complete_operation``), and fire the machine. If the effect fails, the operation
   is abandoned and the phase stays (a failed cycle leaves the phase: decision 8).

A restarted engine (:meth:`ProtectedVm.recover`) finds the pending operation and
finishes it (a cycle whose logs are sealed is shipped and applied; a disable finishes
deleting) or rolls it back (a half-done enable is undone).

**Cycles are VM-consistent.** All writes to a VM go through :meth:`write` under one
VM-wide lock, and a cycle seals every disk's log under that lock: the cut falls between
two writes for all disks at once. The target applies the cycle to all disks or none
(``replica_store.py``). Sealed logs wait in the site's outbox until applied, so a cycle
cut short by the link or a full target is shipped again, in order, by the next one.

**Initial replication**: tracking starts first (new logs, a new epoch); the disks are
then copied one by one while the workload writes (the copy is fuzzy); finally every
record logged since tracking started is applied over the copy, as the first cycle: a
record is an absolute write, so the replica equals the source at that cut.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final

from engine.clock import Clock
from engine.control.site import SiteStorage
from engine.control.store import VmControl
from engine.errors import CorruptRecord, ReplicationError, TransitionNotAllowed
from engine.replica import recovery_point as engine_points
from engine.replica.store import RecoveryAction, ReplicaStore
from engine.source.disks import LogState, SourceDisks
from engine.source.resync import ResyncReport, ResyncSides, resynchronize_disks
from engine.source.shipping import (
    CYCLE_CRASH_POINTS,
    CrashPoint,
    CycleReport,
    Outbox,
    Route,
    no_crash,
    ship_and_apply,
)
from engine.storage import files
from engine.transport.in_process import Transport
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
    """One VM: its disks at the source, its replica at the target, its machine."""

    def __init__(
        self,
        name: str,
        disks: Mapping[str, int],
        *,
        source: SiteStorage,
        target: SiteStorage,
        transport: Transport,
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
        self.disk_sizes = dict(sorted(disks.items()))
        self._source = source
        self._target = target
        self._clock = clock
        self._retention_count = retention_count
        self._route = Route(
            transport, source.name, target.name, name, crash_point or no_crash
        )
        self._outbox = Outbox(source, name)
        self.disks = SourceDisks(
            {disk: source.disk_path(name, disk) for disk in self.disk_sizes},
            block_bytes=block_bytes,
            durable=durable_writes,
        )
        self._lock = self.disks.lock  # one writer or one operation at a time
        self._disks_copied = 0
        self._cycles_applied = 0
        self._bytes_shipped = 0
        self._last_cycle: CycleReport | None = None
        self.config = ModelConfig(
            vm_count=1,
            disks_per_vm=len(self.disk_sizes),
            write_lag_max=WRITE_LAG_UNBOUNDED,
            recovery_points_max=retention_count,
            fault_budget=0,
            faults=frozenset(),
            vm_names=(name,),
        )
        phase = Phase(self._control().phase)
        self.machine = PhaseMachine(phase)
        if phase not in (Phase.UNPROTECTED, Phase.REPLICATION_STOPPED):
            self.disks.resume_tracking(self._control().epoch)

    # -- the workload ------------------------------------------------------------------

    def write(self, disk: str, offset: int, data: bytes) -> None:
        """Write through the change tracker (when tracking) under the VM's lock."""
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
        control = self._control()
        active = Site(control.active_site)
        behind = len(self._outbox.waiting()) + self.disks.pending().records
        points = tuple(
            RecoveryPoint(Copy(behind=behind), app_consistent=point.app_consistent)
            for point in reversed(self._catalogue().points)
        )[: self._retention_count]
        vm = VmState(
            phase=Phase(control.phase),
            active=active,
            running=frozenset({active}),
            other=Copy(behind=behind) if self._replica_path().exists() else None,
            disks_copied=self._disks_copied,
            points=points,
            log=LOG_HEALTH[self.disks.log_state],
        )
        link = self._route.transport.reachable(self._source.name, self._target.name)
        return SystemState(vms=(vm,), link_up=link, plan_runs=(), faults_left=0)

    def _decide(self, action: str, **args: str | int | bool) -> VmState:
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
        before = self.view().vms[0]
        predicted = self._decide(action, **(model_args or {}))
        recorded = {**(model_args or {}), **params, "phase": predicted.phase.value}
        if epoch is not None:
            recorded["epoch"] = epoch
        control = self._source.control
        operation_id = control.begin_operation(
            self.name, action, json.dumps(recorded, sort_keys=True)
        )
        try:
            effect()
        except (ReplicationError, OSError) as error:
            control.abandon_operation(operation_id, str(error))
            error.add_note(f"VM {self.name!r}: {action} failed; the phase is unchanged")
            raise
        control.complete_operation(operation_id, predicted.phase.value, epoch=epoch)
        self.machine.fire(action, before, self.config)
        assert self.machine.phase is predicted.phase

    # -- operations --------------------------------------------------------------------

    def enable_protection(self, progress: Progress | None = None) -> None:
        """Start tracking, copy the disks one by one, apply what was logged since."""
        with self._lock:
            epoch = self._control().epoch + 1

            def effect() -> None:
                try:
                    self.disks.start_tracking(epoch, dict.fromkeys(self.disk_sizes, 0))
                    self._create_replica()
                except ReplicationError:
                    self.disks.stop_tracking()
                    self._remove_replica()
                    raise

            self._step("enable_protection", effect, epoch=epoch)
            self._disks_copied = 0
        self.continue_initial_replication(progress)

    def continue_initial_replication(self, progress: Progress | None = None) -> None:
        """Copy the disks not yet copied, then complete (also after a restart)."""
        for disk in list(self.disk_sizes)[self._disks_copied :]:
            with self._lock:
                self._step("copy_disk", partial(self._copy_disk, disk, progress),
                           disk=disk)  # fmt: skip
                self._disks_copied += 1
        with self._lock:
            predicted = self._decide("complete_initial_replication")
            if predicted.phase is Phase.RESYNCHRONIZING:
                # The logs cannot make the fuzzy copy consistent (decision 8): install
                # it, make no point, and let the resynchronisation compare blocks.
                self._step("complete_initial_replication", self._install_copy)
                return
            self._step("complete_initial_replication", self._complete_copy)

    def replicate(self, *, app_consistent: bool = False) -> CycleReport | None:
        """One delta cycle; None when the logs were unusable (resynchronising now)."""
        arguments = {"app_consistent": app_consistent}
        with self._lock:
            predicted = self._decide("replicate", **arguments)
            if predicted.phase is Phase.RESYNCHRONIZING:
                self._step("replicate", lambda: None, model_args=arguments)
                return None
            reports: list[CycleReport] = []
            self._step(
                "replicate",
                lambda: reports.extend(self._run_cycles(app_consistent=app_consistent)),
                model_args=arguments,
            )
            return reports[-1] if reports else None

    def pause(self) -> None:
        """Suspend shipping; tracking goes on."""
        with self._lock:
            self._step("pause", lambda: None)

    def resume(self) -> None:
        """Resume shipping."""
        with self._lock:
            self._step("resume", lambda: None)

    def resynchronize(self) -> ResyncReport:
        """Compare every block and send only those that differ (a new epoch)."""
        with self._lock:
            if Phase(self._control().phase) is not Phase.RESYNCHRONIZING:
                self._step("resynchronize", lambda: None)
            # Newer than anything the replica ever saw, even if an earlier resync's
            # epoch reached the replica but not the control state.
            points = self._catalogue().points
            newest_epoch = max([p.epoch for p in points], default=0)
            epoch = max(self._control().epoch, newest_epoch) + 1
            reports: list[ResyncReport] = []

            def effect() -> None:
                self._outbox.discard()
                cycle_id = self._source.control.take_cycle_id(self.name)
                report = resynchronize_disks(self._resync_sides(), cycle_id, epoch)
                reports.append(report)
                self.disks.start_tracking(
                    epoch,
                    {
                        disk: log.last_sequence + 1
                        for disk, log in report.sealed.items()
                    },
                )

            self._step("complete_resynchronization", effect, epoch=epoch)
            self._mirror_catalogue()
            return reports[0]

    def disable_protection(self) -> None:
        """Stop replicating: the logs and the replica go; the active copy stays."""
        with self._lock:
            self._step("disable_protection", self._disable_effect)

    def recover(self) -> str | None:
        """Finish or roll back the operation a crash interrupted; say what was done.

        The model was asked when the operation began and its verdict (the phase to
        commit) was recorded with the intent: recovery finishes the idempotent effect
        and commits that phase, whatever the link or the sites look like now. Nothing
        raises out of here: an effect that cannot be finished is abandoned and said.
        """
        with self._lock:
            control = self._source.control
            pending = control.pending_operation(self.name)
            if pending is None:
                try:
                    return self._recover_replica()
                except (ReplicationError, OSError) as error:
                    return f"the replica store could not be recovered ({error})"
            params = json.loads(pending.params_json)
            try:
                return self._recover(pending.operation_id, pending.name, params)
            except (ReplicationError, OSError) as error:
                control.abandon_operation(pending.operation_id, str(error))
                return f"{pending.name} could not be finished ({error}): abandoned"

    def _recover(self, operation_id: int, name: str, params: dict[str, object]) -> str:
        control = self._source.control
        if name == "enable_protection":
            self.disks.stop_tracking()
            self._remove_replica()
            control.abandon_operation(operation_id, "rolled back")
            return "enable_protection rolled back: start it again"
        if name != "disable_protection":  # (which deletes the replica store)
            self._recover_replica()
        if name == "copy_disk":
            control.abandon_operation(operation_id, "redone on resume")
            return "copy_disk interrupted: run it again (it starts over)"
        if name == "complete_resynchronization":
            return self._recover_resync(operation_id, params)
        redo: dict[str, Callable[[], object]] = {
            "complete_initial_replication": partial(
                self._complete_copy, recovering=True
            ),
            "replicate": partial(self._apply_waiting_cycles, finish_cut=True),
            "disable_protection": self._disable_effect,
        }
        redo.get(name, lambda: None)()
        phase = Phase(str(params["phase"]))
        epoch = params.get("epoch")
        control.complete_operation(
            operation_id, phase.value, epoch=epoch if isinstance(epoch, int) else None
        )
        self.machine = PhaseMachine(phase)
        self._mirror_catalogue()
        return f"{name} finished after the restart"

    def _recover_resync(self, operation_id: int, params: dict[str, object]) -> str:
        """A resync applied at its new epoch is finished; otherwise it starts over."""
        control = self._source.control
        epoch = params.get("epoch")
        points = self._catalogue().points
        if isinstance(epoch, int) and points and points[-1].epoch == epoch:
            newest = points[-1]
            self.disks.start_tracking(
                epoch,
                {disk: newest.last_sequence(disk) + 1 for disk in self.disk_sizes},
            )
            control.complete_operation(operation_id, str(params["phase"]), epoch=epoch)
            self.machine = PhaseMachine(Phase(str(params["phase"])))
            self._mirror_catalogue()
            return "complete_resynchronization finished after the restart"
        self._outbox.discard()
        control.abandon_operation(operation_id, "redone on resume")
        return "complete_resynchronization interrupted: resynchronize() compares again"

    def status(self) -> VmStatus:
        """The VM as the operator sees it."""
        with self._lock:
            view = self.view()
            vm = view.vms[0]
            allowed = tuple(
                dict.fromkeys(
                    call.action
                    for call in enabled(self.config, view)
                    if call.vm == 0 and call.action != "write"
                )
            )
            return VmStatus(
                name=self.name,
                phase=vm.phase.value,
                protected=is_protected(vm),
                health=health(view, vm).value,
                active_site=vm.active.value,
                recovery_points=self._catalogue().points,
                allowed=allowed,
                log_problem=self.disks.problem,
            )

    def statistics(self) -> VmStatistics:
        """Counters since this object was opened."""
        with self._lock:
            pending = self.disks.pending()
            points = self._catalogue().points
            lag = self._clock.now() - points[-1].created_at if points else None
            return VmStatistics(
                cycles_applied=self._cycles_applied,
                bytes_shipped=self._bytes_shipped,
                pending_log_records=pending.records,
                pending_log_bytes=pending.payload_bytes,
                cycles_waiting=len(self._outbox.waiting()),
                last_cycle=self._last_cycle,
                lag_seconds=lag,
            )

    def close(self) -> None:
        """Close the disks and logs (flush first for durability)."""
        self.disks.close()

    # -- effects -----------------------------------------------------------------------

    def _copy_disk(self, disk: str, progress: Progress | None) -> None:
        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(disk, done, total)

        self._route.transport.ship_disk_image(
            self._source.name, self._target.name, self.name, disk,
            self._source.disk_path(self.name, disk), progress=report,
        )  # fmt: skip

    def _install_copy(self) -> None:
        """Install the shipped images still in the inbox (a restart may find some
        already moved into place)."""
        store = self._replica()
        if not store.catalogue.points:
            images = {d: p for d, p in self._inbox_images().items() if p.exists()}
            if images:
                store.install_initial_copy(images, consume=True)

    def _complete_copy(self, *, recovering: bool = False) -> None:
        """Install the shipped images, then apply what was logged meanwhile."""
        self._install_copy()
        if recovering:
            self._apply_waiting_cycles(finish_cut=True)
        self._run_cycles(app_consistent=False)

    def _run_cycles(self, *, app_consistent: bool) -> list[CycleReport]:
        """Ship and apply what waits in the outbox, then cut and apply a new cycle."""
        reports = self._apply_waiting_cycles()
        if self.disks.pending().records > 0 or not self._catalogue().points:
            cycle_id = self._source.control.take_cycle_id(self.name)
            try:
                self.disks.seal(self._outbox.path(cycle_id))
                self._outbox.mark(cycle_id, app_consistent=app_consistent)
            except (ReplicationError, OSError):
                files.remove_tree_durably(self._outbox.path(cycle_id))
                raise
            reports.append(self._apply(cycle_id))
        return reports

    def _apply_waiting_cycles(self, *, finish_cut: bool = False) -> list[CycleReport]:
        return [self._apply(cycle_id, finish_cut=finish_cut)
                for cycle_id in self._outbox.waiting()]  # fmt: skip

    def _apply(self, cycle_id: int, *, finish_cut: bool = False) -> CycleReport:
        """Ship and apply one waiting cycle, with the app-consistency it was cut at.

        Logs missing from a waiting cycle mean its cut was interrupted: right after a
        restart (``finish_cut``) no write has happened since, so sealing the missing
        disks now completes the same cut; at any other time it would mix two moments
        across disks, so the cycle is dropped and the VM resynchronises instead.
        """
        logs = self._outbox.logs(cycle_id, self.disk_sizes)
        missing = [disk for disk, path in logs.items() if not path.exists()]
        try:
            if missing and not finish_cut:
                msg = f"cycle {cycle_id} lacks the logs of {missing}: its cut was "
                msg += "interrupted and cannot be completed consistently"
                raise CorruptRecord(msg)
            if missing:
                self.disks.seal(self._outbox.path(cycle_id), missing)
            _, report = ship_and_apply(
                self._route, self._outbox, cycle_id, logs,
                replica=self._replica(), epoch=self._control().epoch,
                app_consistent=self._outbox.app_consistent(cycle_id),
                clock=self._clock,
            )  # fmt: skip
        except CorruptRecord as damage:
            # Never applied: the replica is as it was. The logs can no longer carry
            # the changes; only a resynchronisation can (decision 8).
            self._outbox.discard()
            self.disks.distrust(f"cycle {cycle_id} refused: {damage}")
            damage.add_note("the next cycle resynchronises (compare and send blocks)")
            raise
        self._mirror_catalogue()
        self._cycles_applied += 1
        self._bytes_shipped += report.bytes_shipped
        self._last_cycle = report
        return report

    def _mirror_catalogue(self) -> None:
        """Copy the replica's catalogue and the shipped log positions into the control
        state (the replica store's manifest stays the authority)."""
        points = self._catalogue().points
        control = self._source.control
        control.save_recovery_points(self.name, points)
        if points:
            newest = points[-1]
            control.set_log_positions(
                self.name,
                {disk: newest.last_sequence(disk) for disk in self.disk_sizes},
            )

    def _disable_effect(self) -> None:
        self.disks.stop_tracking()
        self._outbox.discard()
        self._remove_replica()
        self._mirror_catalogue()

    def _resync_sides(self) -> ResyncSides:
        return ResyncSides(
            vm_name=self.name,
            source_disks=self.disks.images(),
            replica=self._replica(),
            outbox=self._source.outbox,
            transport=self._route.transport,
            source_site=self._source.name,
            target_site=self._target.name,
        )

    # -- the replica side --------------------------------------------------------------

    def _create_replica(self) -> None:
        self._remove_replica()
        ReplicaStore.create(
            self._target.replicas, self.name, self.disk_sizes, self._retention_count,
            self._clock,
        )  # fmt: skip

    def _remove_replica(self) -> None:
        files.remove_tree_durably(self._replica_path())
        files.remove_tree_durably(self._target.root / "inbox" / self.name)

    def _replica(self) -> ReplicaStore:
        return ReplicaStore.open(self._target.replicas, self.name, self._clock)

    def _recover_replica(self) -> str | None:
        """As the replica store's owner, finish an apply a crash interrupted (once,
        from :meth:`recover`, when the engine opens; opening the store changes
        nothing). Says what was done, or None."""
        if not (self._replica_path() / "store.json").exists():
            return None
        report = self._replica().recover()
        if report.action is RecoveryAction.NONE:
            return None
        return f"replica store: {report.reason}"

    def _replica_path(self) -> Path:
        return self._target.replicas / self.name

    def _catalogue(self) -> engine_points.RecoveryPointCatalogue:
        if not (self._replica_path() / "store.json").exists():
            return engine_points.RecoveryPointCatalogue()
        return self._replica().catalogue

    def _inbox_images(self) -> dict[str, Path]:
        inbox = self._target.root / "inbox" / self.name / "initial"
        return {disk: inbox / f"{disk}.img" for disk in self.disk_sizes}

    def _control(self) -> VmControl:
        return self._source.control.vm(self.name)
