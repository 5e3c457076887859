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
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final

from engine import recovery_point as engine_points
from engine.change_log import SealedLog, log_path_for, verify_sealed_log
from engine.clock import Clock
from engine.control_store import VmControl
from engine.disk import VirtualDisk
from engine.errors import (
    CorruptRecord,
    InvalidConfiguration,
    ReplicationError,
    TransitionNotAllowed,
)
from engine.replica_store import ReplicaStore
from engine.resync import ResyncReport, ResyncSides, resynchronize_disks
from engine.site import SiteStorage
from engine.tracked_disk import TrackedDisk
from engine.transport import Transport
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

#: The workload is not bounded by the model's explored environment here.
WRITE_LAG_UNBOUNDED: Final = 2**62

CrashPoint = Callable[[str], None]

#: Steps of a cycle at which the ``crash_point`` seam is called (besides the store's).
CYCLE_CRASH_POINTS: Final = ("sealed", "shipped", "applied", "outbox_removed")

Progress = Callable[[str, int, int], None]
"""Initial-copy progress: (disk, bytes done, bytes total)."""


@dataclass(frozen=True)
class CycleReport:
    """What one delta cycle did."""

    cycle_id: int
    recovery_point_id: int
    records: int
    bytes_shipped: int
    seconds: float


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


def _model_args(
    action: str, params: Mapping[str, object]
) -> dict[str, str | int | bool]:
    """The model's arguments of ``action`` among the recorded parameters."""
    if action == "replicate":
        return {"app_consistent": bool(params.get("app_consistent", False))}
    return {}


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
        self.disk_sizes = dict(disks)
        self._source = source
        self._target = target
        self._transport = transport
        self._clock = clock
        self._block_bytes = block_bytes
        self._retention_count = retention_count
        self._durable = durable_writes
        self._crash: CrashPoint = crash_point or (lambda step: None)
        self._lock = threading.RLock()  # one writer or one operation at a time
        self._tracked: dict[str, TrackedDisk] = {}
        self._plain: dict[str, VirtualDisk] = {}
        self._log_problem: str | None = None
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
        self.machine = PhaseMachine(Phase(self._control().phase))
        self._open_disks()

    # -- the workload ------------------------------------------------------------------

    def write(self, disk: str, offset: int, data: bytes) -> None:
        """Write through the change tracker (when tracking) under the VM's lock."""
        with self._lock:
            tracked = self._tracked.get(disk)
            if tracked is not None:
                tracked.write(offset, data)
            else:
                self._plain_disk(disk).write(offset, data)

    def read(self, disk: str, offset: int, length: int) -> bytes:
        """Read the active copy."""
        with self._lock:
            tracked = self._tracked.get(disk)
            if tracked is not None:
                return tracked.read(offset, length)
            return self._plain_disk(disk).read(offset, length)

    def flush(self) -> None:
        """Make every write so far durable (logs first, then disks)."""
        with self._lock:
            for tracked in self._tracked.values():
                tracked.flush()
            for plain in self._plain.values():
                plain.flush()

    # -- the model ---------------------------------------------------------------------

    def view(self) -> SystemState:
        """The refinement mapping: the engine's state as the model's abstract state."""
        control = self._control()
        phase = Phase(control.phase)
        active = Site(control.active_site)
        pending = self._pending_records()
        replica = self._replica_path().exists()
        catalogue = self._catalogue()
        points = tuple(
            RecoveryPoint(Copy(behind=pending), app_consistent=point.app_consistent)
            for point in reversed(catalogue.points)
        )[: self._retention_count]
        vm = VmState(
            phase=phase,
            active=active,
            running=frozenset({active}),
            other=Copy(behind=pending) if replica else None,
            disks_copied=self._disks_copied,
            points=points,
            log=self._log_health(),
        )
        link = self._transport.reachable(self._source.name, self._target.name)
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

    def _begin(self, action: str, **params: object) -> int:
        return self._source.control.begin_operation(
            self.name, action, json.dumps(params, sort_keys=True)
        )

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
        recorded = {**(model_args or {}), **params}
        if epoch is not None:
            recorded["epoch"] = epoch
        operation_id = self._begin(action, **recorded)
        try:
            effect()
        except ReplicationError as error:
            self._source.control.abandon_operation(operation_id, str(error))
            error.add_note(f"VM {self.name!r}: {action} failed; the phase is unchanged")
            raise
        self._source.control.complete_operation(
            operation_id, predicted.phase.value, epoch=epoch
        )
        self.machine.fire(action, before, self.config)
        assert self.machine.phase is predicted.phase

    # -- operations --------------------------------------------------------------------

    def enable_protection(self, progress: Progress | None = None) -> None:
        """Start tracking, copy the disks one by one, apply what was logged since."""
        with self._lock:
            epoch = self._control().epoch + 1

            def effect() -> None:
                try:
                    self._start_tracking(epoch, dict.fromkeys(self.disk_sizes, 0))
                    self._create_replica()
                except ReplicationError:
                    self._stop_tracking()
                    self._remove_replica()
                    raise

            self._step("enable_protection", effect, epoch=epoch)
            self._disks_copied = 0
        self.continue_initial_replication(progress)

    def continue_initial_replication(self, progress: Progress | None = None) -> None:
        """Copy the disks not yet copied, then complete (also after a restart)."""
        for disk in sorted(self.disk_sizes)[self._disks_copied :]:
            with self._lock:
                self._step("copy_disk", partial(self._copy_disk, disk, progress),
                           disk=disk)  # fmt: skip
                self._disks_copied += 1
        with self._lock:
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
                lambda: reports.extend(self._run_cycles(app_consistent)),
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
            epoch = self._control().epoch + 1
            reports: list[ResyncReport] = []

            def effect() -> None:
                self._discard_waiting_cycles()
                cycle_id = self._source.control.take_cycle_id(self.name)
                report = resynchronize_disks(self._resync_sides(), cycle_id, epoch)
                reports.append(report)
                next_sequences = {
                    disk: sealed.last_sequence + 1
                    for disk, sealed in report.sealed.items()
                }
                self._stop_tracking()
                self._start_tracking(epoch, next_sequences)

            self._step("complete_resynchronization", effect, epoch=epoch)
            self._mirror_catalogue()
            self._log_problem = None
            return reports[0]

    def disable_protection(self) -> None:
        """Stop replicating: the logs and the replica go; the active copy stays."""
        with self._lock:
            self._step("disable_protection", self._disable_effect)

    def recover(self) -> str | None:
        """Finish or roll back the operation a crash interrupted; say what was done."""
        with self._lock:
            pending = self._source.control.pending_operation(self.name)
            if pending is None:
                return None
            params = json.loads(pending.params_json)
            control = self._source.control
            if pending.name == "enable_protection":
                self._stop_tracking()
                self._remove_replica()
                control.abandon_operation(
                    pending.operation_id, "rolled back on restart"
                )
                return "enable_protection rolled back: start it again"
            if pending.name == "copy_disk":
                control.abandon_operation(pending.operation_id, "redone on resume")
                return (
                    "initial copy interrupted: continue_initial_replication() redoes it"
                )
            if pending.name == "complete_resynchronization":
                self._discard_waiting_cycles()
                control.abandon_operation(pending.operation_id, "redone on resume")
                return "resynchronisation interrupted: resynchronize() compares again"
            redo: dict[str, Callable[[], object]] = {
                "complete_initial_replication": self._complete_copy,
                "replicate": self._run_waiting_only,
                "disable_protection": self._disable_effect,
            }
            try:
                redo.get(pending.name, lambda: None)()
            except ReplicationError as error:
                control.abandon_operation(pending.operation_id, str(error))
                return f"{pending.name} could not be finished ({error}): abandoned"
            predicted = self._decide(pending.name, **_model_args(pending.name, params))
            control.complete_operation(
                pending.operation_id, predicted.phase.value, epoch=params.get("epoch")
            )
            self.machine = PhaseMachine(predicted.phase)
            self._mirror_catalogue()
            return f"{pending.name} finished after the restart"

    def _run_waiting_only(self) -> None:
        for cycle_id in self._waiting_cycles():
            self._apply_waiting(cycle_id, app_consistent=False)

    def status(self) -> VmStatus:
        """The VM as the operator sees it."""
        with self._lock:
            view = self.view()
            allowed = tuple(
                dict.fromkeys(
                    call.action
                    for call in enabled(self.config, view)
                    if call.vm == 0 and call.action != "write"
                )
            )
            return VmStatus(
                name=self.name,
                phase=view.vms[0].phase.value,
                protected=is_protected(view.vms[0]),
                health=health(view, view.vms[0]).value,
                active_site=view.vms[0].active.value,
                recovery_points=self._catalogue().points,
                allowed=allowed,
                log_problem=self._log_problem,
            )

    def statistics(self) -> VmStatistics:
        """Counters since this object was opened."""
        with self._lock:
            stats = [tracked.statistics() for tracked in self._tracked.values()]
            return VmStatistics(
                cycles_applied=self._cycles_applied,
                bytes_shipped=self._bytes_shipped,
                pending_log_records=sum(s.log_records for s in stats),
                pending_log_bytes=sum(s.log_payload_bytes for s in stats),
                cycles_waiting=len(self._waiting_cycles()),
                last_cycle=self._last_cycle,
                lag_seconds=self._lag_seconds(),
            )

    def _lag_seconds(self) -> float | None:
        points = self._catalogue().points
        if not points:
            return None
        return self._clock.now() - points[-1].created_at

    def close(self) -> None:
        """Close the disks and logs (flush first for durability)."""
        with self._lock:
            for tracked in self._tracked.values():
                tracked.close()
            for plain in self._plain.values():
                plain.close()
            self._tracked.clear()
            self._plain.clear()

    # -- effects -----------------------------------------------------------------------

    def _copy_disk(self, disk: str, progress: Progress | None) -> None:
        image = self._source.disk_path(self.name, disk)

        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(disk, done, total)

        self._transport.ship_disk_image(
            self._source.name, self._target.name, self.name, disk, image,
            progress=report,
        )  # fmt: skip

    def _complete_copy(self) -> None:
        store = self._replica()
        if not store.catalogue.points:
            images = self._transport_inbox_images()
            store.install_initial_copy(images)
        self._run_cycles(app_consistent=False)
        for image in self._transport_inbox_images().values():
            image.unlink(missing_ok=True)

    def _run_cycles(self, app_consistent: bool) -> list[CycleReport]:  # noqa: FBT001
        """Ship and apply what waits in the outbox, then cut and apply a new cycle."""
        reports = [self._apply_waiting(cycle_id, app_consistent=False)
                   for cycle_id in self._waiting_cycles()]  # fmt: skip
        if self._pending_records() > 0 or not self._catalogue().points:
            cycle_id = self._source.control.take_cycle_id(self.name)
            self._seal(cycle_id)
            reports.append(self._apply_waiting(cycle_id, app_consistent=app_consistent))
        return reports

    def _seal(
        self, cycle_id: int, disks: list[str] | None = None
    ) -> dict[str, SealedLog]:
        """Cut the logs of ``disks`` (default: all) into the cycle's outbox."""
        outbox = self._source.outbox(self.name, cycle_id)
        outbox.mkdir(parents=True, exist_ok=True)
        chosen = sorted(self._tracked) if disks is None else sorted(disks)
        return {
            disk: self._tracked[disk].seal_log(outbox / f"{disk}.hrl")
            for disk in chosen
        }

    def _apply_waiting(self, cycle_id: int, *, app_consistent: bool) -> CycleReport:
        started = self._clock.now()
        outbox = self._source.outbox(self.name, cycle_id)
        logs = {disk: outbox / f"{disk}.hrl" for disk in sorted(self.disk_sizes)}
        missing = [disk for disk, path in logs.items() if not path.exists()]
        if missing:
            self._seal(cycle_id, missing)  # a crash between two seals: finish the cut
        epoch = self._control().epoch
        try:
            records = sum(
                verify_sealed_log(path, disk_id=disk, epoch=epoch).record_count
                for disk, path in logs.items()
            )
            size = sum(path.stat().st_size for path in logs.values())
            self._crash("sealed")
            delivered = self._transport.ship_cycle(
                self._source.name, self._target.name, self.name, cycle_id, logs
            )
            self._crash("shipped")
            point = self._replica().apply_cycle(
                cycle_id, delivered, epoch=epoch, app_consistent=app_consistent,
                crash_point=self._crash,
            )  # fmt: skip
        except CorruptRecord as damage:
            # Never applied: the replica is as it was. The logs can no longer carry
            # the changes; only a resynchronisation can (decision 8).
            self._discard_waiting_cycles()
            self._log_problem = f"cycle {cycle_id} refused: {damage}"
            damage.add_note("the next cycle resynchronises (compare and send blocks)")
            raise
        self._crash("applied")
        shutil.rmtree(outbox)
        self._crash("outbox_removed")
        self._mirror_catalogue()
        self._cycles_applied += 1
        self._bytes_shipped += size
        report = CycleReport(
            cycle_id=cycle_id,
            recovery_point_id=point.recovery_point_id,
            records=records,
            bytes_shipped=size,
            seconds=self._clock.now() - started,
        )
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

    def _discard_waiting_cycles(self) -> None:
        """Drop sealed cycles not yet applied (superseded by a resync or a disable)."""
        for cycle_id in self._waiting_cycles():
            shutil.rmtree(self._source.outbox(self.name, cycle_id))

    def _disable_effect(self) -> None:
        self._stop_tracking()
        self._discard_waiting_cycles()
        self._remove_replica()
        self._mirror_catalogue()

    def _resync_sides(self) -> ResyncSides:
        return ResyncSides(
            vm_name=self.name,
            source_disks={d: t.disk for d, t in sorted(self._tracked.items())},
            replica=self._replica(),
            outbox=self._source.outbox,
            transport=self._transport,
            source_site=self._source.name,
            target_site=self._target.name,
        )

    # -- tracking and replica ----------------------------------------------------------

    def _open_disks(self) -> None:
        """Open each disk, resuming tracking if the VM is being replicated."""
        phase = Phase(self._control().phase)
        epoch = self._control().epoch
        tracking = phase not in (Phase.UNPROTECTED, Phase.REPLICATION_STOPPED)
        for disk in sorted(self.disk_sizes):
            image = VirtualDisk.open(
                self._source.disk_path(self.name, disk), block_bytes=self._block_bytes
            )
            if tracking and log_path_for(image.path).exists():
                try:
                    tracked = TrackedDisk.resume(
                        image, disk_id=disk, epoch=epoch, durable=self._durable
                    )
                except CorruptRecord as error:
                    # A log we cannot trust (another epoch after a crash mid-resync, a
                    # damaged header): start afresh; only a resync can vouch now.
                    self._log_problem = f"disk {disk!r}: {error}"
                    log_path_for(image.path).unlink()
                    tracked = TrackedDisk.start(
                        image, disk_id=disk, epoch=epoch, durable=self._durable
                    )
                    self._tracked[disk] = tracked
                    continue
                if tracked.log.tail_report is not None:
                    report = tracked.log.tail_report
                    self._log_problem = (
                        f"disk {disk!r}: change log tail cut on reopen "
                        f"({report.bytes_dropped} bytes dropped: {report.reason}); "
                        "resynchronisation needed"
                    )
                self._tracked[disk] = tracked
            else:
                self._plain[disk] = image

    def _start_tracking(self, epoch: int, first_sequences: Mapping[str, int]) -> None:
        for disk in sorted(self.disk_sizes):
            image = self._plain.pop(disk)
            log = log_path_for(image.path)
            log.unlink(missing_ok=True)  # a previous protection's log
            self._tracked[disk] = TrackedDisk.start(
                image,
                disk_id=self._disk_id(disk),
                epoch=epoch,
                first_sequence=first_sequences[disk],
                durable=self._durable,
            )
        self._log_problem = None

    def _stop_tracking(self) -> None:
        for disk, tracked in list(self._tracked.items()):
            path = tracked.disk.path
            tracked.close()
            log_path_for(path).unlink(missing_ok=True)
            del self._tracked[disk]
            self._plain[disk] = VirtualDisk.open(path, block_bytes=self._block_bytes)

    def _create_replica(self) -> None:
        self._remove_replica()
        ReplicaStore.create(
            self._target.replicas, self.name, self.disk_sizes, self._retention_count,
            self._clock,
        )  # fmt: skip

    def _remove_replica(self) -> None:
        shutil.rmtree(self._replica_path(), ignore_errors=True)
        shutil.rmtree(self._target.root / "inbox" / self.name, ignore_errors=True)

    def _replica(self) -> ReplicaStore:
        return ReplicaStore.open(self._target.replicas, self.name, self._clock)

    def _replica_path(self) -> Path:
        return self._target.replicas / self.name

    def _catalogue(self) -> engine_points.RecoveryPointCatalogue:
        if not (self._replica_path() / "store.json").exists():
            return engine_points.RecoveryPointCatalogue()
        return self._replica().catalogue

    def _transport_inbox_images(self) -> dict[str, Path]:
        inbox = self._target.root / "inbox" / self.name / "initial"
        return {disk: inbox / f"{disk}.img" for disk in sorted(self.disk_sizes)}

    # -- small facts -------------------------------------------------------------------

    def _control(self) -> VmControl:
        return self._source.control.vm(self.name)

    def _disk_id(self, disk: str) -> str:
        # The replica store checks a log's disk id against the disk's name; the VM is
        # implied by the store, the epoch by the header.
        return disk

    def _plain_disk(self, disk: str) -> VirtualDisk:
        try:
            return self._plain[disk]
        except KeyError:
            msg = f"disk={disk!r} is not a disk of VM {self.name!r}; "
            msg += f"its disks: {sorted(self.disk_sizes)}"
            raise InvalidConfiguration(msg) from None

    def _pending_records(self) -> int:
        waiting = len(self._waiting_cycles())
        return waiting + sum(t.log.record_count for t in self._tracked.values())

    def _waiting_cycles(self) -> list[int]:
        outbox = self._source.root / "outbox" / self.name
        if not outbox.exists():
            return []
        return sorted(int(p.name.removeprefix("cycle-")) for p in outbox.iterdir()
                      if p.name.startswith("cycle-"))  # fmt: skip

    def _log_health(self) -> LogHealth:
        if self._log_problem is not None:
            return LogHealth.DAMAGED
        if any(t.tracking_lost for t in self._tracked.values()):
            return LogHealth.DAMAGED
        if any(t.log_over_limit for t in self._tracked.values()):
            return LogHealth.OVERFLOWED
        return LogHealth.USABLE
