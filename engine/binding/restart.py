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
- ``pause`` and ``resume``: committed;
- the failover half (``failover.py``, ``reverse.py``): what changes nothing that cannot
  be undone is rolled back and said (``start_test_failover``, ``planned_failover``,
  ``failover``, ``unplanned_failover``, ``complete_failover``,
  ``change_recovery_point``: the VM runs where it ran, the phase is the one before,
  and the operation can be started again; a final sync's cut the crash interrupted
  is completed first, as for ``replicate``); what cannot be undone is finished, its
  effect being idempotent (``cleanup_test_failover``, ``commit``, ``cancel_failover``,
  ``reverse_replication``).

An operation is recorded at the site it acts on (its source or its target), so a
restart looks for a pending one at every site that is up.

An operation whose abandon could not be written (a full disk while a failed effect was
being recorded) stays pending: :meth:`Restart.settle`, called before every operation,
treats it exactly as a restart would, so the VM is never refused forever. So does a
commit whose effect failed (a full disk): it consumes the replica store, so it is
never abandoned (``NEVER_ABANDONED``) but left pending and finished before the next
operation or at a restart, raising what still stops it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from engine.binding import failover, reverse
from engine.binding.details import VmDetails
from engine.binding.sites import direction, other_site
from engine.control.store import ControlStore, Operation
from engine.errors import CorruptRecord, DamagedState, ReplicationError
from engine.log.reader import read_header
from engine.log.writer import log_path_for
from engine.storage.disk import storage_error
from model import Phase, PhaseMachine
from model.successor import RULES

if TYPE_CHECKING:
    from engine.binding.protected_vm import ProtectedVm


#: Operations rolled back after a restart (nothing they did is lost by undoing it).
ROLLED_BACK: Final = frozenset(
    {
        "start_test_failover",
        "planned_failover",
        "failover",
        "unplanned_failover",
        "complete_failover",
        "change_recovery_point",
    }
)

#: Rolled-back operations whose effect cuts the disks (the final sync).
CUTTING: Final = frozenset({"planned_failover", "unplanned_failover"})

#: Operations never abandoned: a failed effect leaves them pending, to be finished
#: before the next operation or at a restart (commit consumes the replica store).
NEVER_ABANDONED: Final = frozenset({"commit"})

#: Operations finished after a restart: the idempotent effect again, then the phase.
FINISHED: Final[dict[str, Callable[[ProtectedVm, dict[str, object]], VmDetails]]] = {
    "cleanup_test_failover": failover.finish_cleanup,
    "commit": failover.finish_commit,
    "cancel_failover": failover.finish_cancel,
    "reverse_replication": reverse.finish_reverse,
}


def _params(pending: Operation) -> dict[str, object]:
    """The recorded parameters of ``pending``, checked: a known operation and the phase
    it commits (anything else is a damaged control file, said as such)."""
    what = f"the control file's pending operation {pending.name!r} "
    what += f"(id {pending.operation_id})"
    if pending.name not in RULES.actions:
        msg = f"{what} is no operation the engine records: the control file is "
        msg += "damaged; the operation is abandoned, check the VM's state"
        raise DamagedState(msg)
    try:
        params: object = json.loads(pending.params_json)
    except (TypeError, ValueError) as error:
        msg = f"{what} has unreadable parameters ({error}): the control file is damaged"
        raise DamagedState(msg) from error
    phase = params.get("phase") if isinstance(params, dict) else None
    if not isinstance(params, dict) or phase not in {p.value for p in Phase}:
        msg = f"{what} records no valid phase ({phase!r}; one of "
        msg += f"{sorted(p.value for p in Phase)}): the control file is damaged"
        raise DamagedState(msg)
    return {str(key): value for key, value in params.items()}


class Restart:
    """The restart logic of one :class:`ProtectedVm`."""

    def __init__(self, vm: ProtectedVm) -> None:
        self._vm = vm
        self._control: ControlStore = vm.sites.storage(
            next(iter(vm.sites.up_sites())).name
        ).control

    def recover(self) -> str | None:
        """Finish or roll back the pending operation; never raises for a failed
        effect (it is abandoned and said)."""
        found = self._pending()
        if found is None:
            return None
        pending, control = found
        try:
            return self._finish(pending, control)
        except (ReplicationError, OSError) as error:
            if pending.name in NEVER_ABANDONED:
                return (
                    f"{pending.name} could not be finished ({error}): it stays "
                    "pending; the next operation finishes it"
                )
            try:
                control.abandon_operation(pending.operation_id, str(error))
            except ReplicationError as again:
                return (
                    f"{pending.name} could not be finished ({error}) nor closed "
                    f"({again}): it stays pending"
                )
            return f"{pending.name} could not be finished ({error}): abandoned"

    def settle(self) -> None:
        """Before an operation: close one left pending (finish it or roll it back;
        abandon it if that fails); one never abandoned raises what stops it."""
        found = self._pending()
        if found is None:
            return
        pending, control = found
        try:
            self._finish(pending, control)
        except (ReplicationError, OSError) as error:
            if pending.name in NEVER_ABANDONED:
                if isinstance(error, OSError):
                    doing = f"VM {self._vm.name!r}: finishing {pending.name}"
                    raise storage_error(error, doing) from error
                raise
            control.abandon_operation(pending.operation_id, str(error))

    def pending_name(self) -> str | None:
        """The name of the VM's pending operation at a site that is up, if any."""
        found = self._pending()
        return None if found is None else found[0].name

    def _pending(self) -> tuple[Operation, ControlStore] | None:
        """The VM's pending operation at a site that is up, with that site's store.

        An operation pending at a site whose row is older than another site's was
        superseded while that site was down (a failover at the target while the old
        source crashed mid-cycle): it is abandoned, never finished.
        """
        holders = [
            site.control
            for site in self._vm.sites.up_sites()
            if self._vm.name in site.control.vm_names()
        ]
        if not holders:
            return None  # no site that is up knows the VM: nothing to settle here
        newest = max(control.vm(self._vm.name).generation for control in holders)
        for control in holders:
            pending = control.pending_operation(self._vm.name)
            if pending is None:
                continue
            if control.vm(self._vm.name).generation < newest:
                reason = "superseded: another site recorded newer operations while "
                reason += f"site {control.site_name!r} was down"
                control.abandon_operation(pending.operation_id, reason)
                continue
            return pending, control
        return None

    def tracking_epoch(self) -> int:
        """The epoch the current logs were started at, when a pending
        resynchronisation restarted them at its new epoch; else the control epoch."""
        control = self._vm.control()
        found = self._pending()
        pending = None if found is None else found[0]
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

    def _finish(self, pending: Operation, control: ControlStore) -> str:  # noqa: PLR0911
        self._control = control
        vm = self._vm
        params = _params(pending)
        operation_id, name = pending.operation_id, pending.name
        if name in ROLLED_BACK:
            return self._roll_back_failover(operation_id, name)
        if name in FINISHED:
            details = FINISHED[name](vm, params)
            self._commit(operation_id, params, details_json=details.to_json())
            vm.open_disks()
            return f"{name} finished after the restart"
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
            details = reverse.after_disable(vm)
            vm.disable_effect()
            self._commit(operation_id, params, details_json=details.to_json())
            return f"{name} finished after the restart"
        self._commit(operation_id, params)
        vm.mirror_catalogue()
        return f"{name} finished after the restart"

    def _roll_back_failover(self, operation_id: int, name: str) -> str:
        vm = self._vm
        if name == "start_test_failover":
            target = other_site(vm.control().active_site)
            vm.sites.towards(target).cleanup_test_failover(vm.name)
        if vm.sites.up(vm.control().active_site):
            if name in CUTTING:
                # Before the VM runs again: a final sync's cut the crash interrupted
                # is completed (or, logs untrusted, refused: the VM resynchronises).
                with contextlib.suppress(CorruptRecord):
                    vm.cycles.finish_interrupted_cuts()
            with contextlib.suppress(ReplicationError):
                vm.disks.restart()  # a shutdown the interruption left: the VM runs
        self._control.abandon_operation(operation_id, "rolled back after a restart")
        return (
            f"{name} interrupted: rolled back (the phase is as before); start it again"
        )

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
            details = reverse.after_resync(vm)
            self._commit(operation_id, params, details_json=details.to_json())
            reverse.forget_candidates(vm)
            vm.mirror_catalogue()
            return "complete_resynchronization finished after the restart"
        vm.outbox.discard()
        self._control.abandon_operation(operation_id, "redone on resume")
        return "complete_resynchronization interrupted: resynchronize() compares again"

    def _commit(
        self,
        operation_id: int,
        params: dict[str, object],
        *,
        details_json: str | None = None,
    ) -> None:
        phase = Phase(str(params["phase"]))
        epoch = params.get("epoch")
        active = params.get("active_site")
        self._control.complete_operation(
            operation_id, phase.value, epoch=epoch if isinstance(epoch, int) else None,
            details_json=details_json,
            active_site=active if isinstance(active, str) else None,
            direction=direction(active) if isinstance(active, str) else None,
        )  # fmt: skip
        self._vm.machine = PhaseMachine(phase)
