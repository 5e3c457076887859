"""Finishing or rolling back what a crash (or a full disk) left pending.

The model was asked when an operation began and its verdict (the phase to commit) was
recorded with the intent. A restarted engine (``ProtectedVm.recover``, run once when
the engine opens) finishes the idempotent effect and commits that phase, whatever the
link or the sites look like now, or rolls it back:

- ``enable_protection``: rolled back (tracking stopped, the replica removed);
- ``copy_disk``: abandoned (the copy starts over on resume);
- ``complete_initial_replication`` and ``replicate``: the waiting cycles are shipped
  (an interrupted cut completed first) and the phase committed;
- ``complete_resynchronization``: finished when its cycle was recorded (shipped if it
  still waits) or already applied, so a crash after the comparison never forces a
  second full comparison (the fresh logs of the new epoch are started before the
  comparison begins: a crash while they are created is before any comparison);
  otherwise abandoned, and ``resynchronize()`` compares again;
- ``disable_protection``: finished;
- ``pause`` and ``resume``: committed.

An operation whose abandon could not be written (a full disk while a failed effect was
being recorded) stays pending: :meth:`Restart.settle`, called before every operation,
treats it exactly as a restart would, so the VM is never refused forever.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from engine.control.store import ControlStore, Operation
from engine.errors import ReplicationError
from engine.log.reader import read_header
from engine.log.writer import log_path_for
from model import Phase, PhaseMachine

if TYPE_CHECKING:
    from engine.binding.protected_vm import ProtectedVm


class Restart:
    """The restart logic of one :class:`ProtectedVm`."""

    def __init__(self, vm: ProtectedVm) -> None:
        self._vm = vm

    def recover(self) -> str | None:
        """Finish or roll back the pending operation; never raises for a failed
        effect (it is abandoned and said)."""
        pending = self._control.pending_operation(self._vm.name)
        if pending is None:
            return None
        try:
            return self._finish(pending)
        except (ReplicationError, OSError) as error:
            try:
                self._control.abandon_operation(pending.operation_id, str(error))
            except ReplicationError as again:
                return (
                    f"{pending.name} could not be finished ({error}) nor closed "
                    f"({again}): it stays pending"
                )
            return f"{pending.name} could not be finished ({error}): abandoned"

    def settle(self) -> None:
        """Before an operation: close one left pending; raise if it cannot be."""
        pending = self._control.pending_operation(self._vm.name)
        if pending is None:
            return
        try:
            self._finish(pending)
        except (ReplicationError, OSError) as error:
            self._control.abandon_operation(pending.operation_id, str(error))

    def tracking_epoch(self) -> int:
        """The epoch the current logs were started at, when a pending
        resynchronisation restarted them at its new epoch; else the control epoch."""
        control = self._vm.control()
        pending = self._control.pending_operation(self._vm.name)
        if pending is None or pending.name != "complete_resynchronization":
            return control.epoch
        epoch = json.loads(pending.params_json).get("epoch")
        for path in self._vm.disks.paths.values():
            log = log_path_for(path)
            if not log.exists():
                continue
            try:
                with log.open("rb") as stream:
                    header, _ = read_header(stream, log)
            except ReplicationError:
                continue
            if header.epoch == epoch:
                return int(epoch)
        return control.epoch

    # -- internals ---------------------------------------------------------------------

    @property
    def _control(self) -> ControlStore:
        return self._vm.source_site.control

    def _finish(self, pending: Operation) -> str:
        vm = self._vm
        params = json.loads(pending.params_json)
        operation_id, name = pending.operation_id, pending.name
        if name == "enable_protection":
            vm.disks.stop_tracking()
            vm.replica.remove_replica(vm.name)
            self._control.abandon_operation(operation_id, "rolled back")
            return "enable_protection rolled back: start it again"
        if name == "copy_disk":
            self._control.abandon_operation(operation_id, "redone on resume")
            return "copy_disk interrupted: run it again (it starts over)"
        if name == "complete_resynchronization":
            return self._finish_resync(operation_id, params)
        if name == "complete_initial_replication":
            vm.complete_copy(recovering=True)
        elif name == "replicate":
            vm.cycles.ship_waiting(finish_cut=True)
        elif name == "disable_protection":
            vm.disable_effect()
        self._commit(operation_id, params)
        vm.mirror_catalogue()
        return f"{name} finished after the restart"

    def _finish_resync(self, operation_id: int, params: dict[str, object]) -> str:
        vm = self._vm
        epoch = params.get("epoch")
        compared: dict[str, int] | None = None  # where the new epoch's logs start
        for cycle_id in vm.outbox.waiting():
            record = vm.outbox.cut_record(cycle_id)
            if record is not None and record.epoch == epoch:
                compared = {d: s + 1 for d, s in record.last_sequences.items()}
                vm.ship_resync(cycle_id)
        points = vm.replica.status(vm.name).points
        if points and points[-1].epoch == epoch:
            compared = {d: points[-1].last_sequence(d) + 1 for d in vm.disk_sizes}
        if isinstance(epoch, int) and compared is not None:
            if self.tracking_epoch() != epoch:
                # Restarting the logs must not clear a verdict this reopen reached
                # (an unclean shutdown may have cost the source writes the
                # comparison saw): the replica equals the point, not the source.
                problem = vm.disks.problem
                vm.disks.start_tracking(epoch, compared)
                if problem is not None:
                    vm.disks.distrust(problem)
            self._commit(operation_id, params)
            vm.mirror_catalogue()
            return "complete_resynchronization finished after the restart"
        vm.outbox.discard()
        self._control.abandon_operation(operation_id, "redone on resume")
        return "complete_resynchronization interrupted: resynchronize() compares again"

    def _commit(self, operation_id: int, params: dict[str, object]) -> None:
        phase = Phase(str(params["phase"]))
        epoch = params.get("epoch")
        self._control.complete_operation(
            operation_id, phase.value, epoch=epoch if isinstance(epoch, int) else None
        )
        self._vm.machine = PhaseMachine(phase)
