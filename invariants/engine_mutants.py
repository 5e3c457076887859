"""Planted engine bugs: the proof that conformance fuzzing bites the engine.

The model's mutants (``invariants.mutants``) are rules built through the model's own
seam. The engine has no such seam, and must not grow one for its bugs: an engine
mutant is a small, realistic mistake planted by replacing one function of the engine
for the duration of a ``with`` block (mutation testing, as mutmut or Stryker do it
with edited sources), then restored. Conformance fuzzing (``invariants.conformance``)
must kill each: ``tests/conformance/test_conformance.py`` runs it on every one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from typing import Any

from engine.binding import loss_report, protected_vm
from engine.replica import apply, store
from engine.replica.recovery_point import RecoveryPoint
from engine.replica.store import ReplicaStore
from engine.source.disks import SourceDisks
from model import SystemState
from model.state import Health, VmState


@dataclass(frozen=True)
class EngineMutant:
    """A named planted bug of the engine, and how to plant it."""

    name: str
    summary: str
    plant: Callable[[], AbstractContextManager[None]]


@contextmanager
def _replaced(owner: Any, attribute: str, value: Any) -> Iterator[None]:
    original = getattr(owner, attribute)
    setattr(owner, attribute, value)
    try:
        yield
    finally:
        setattr(owner, attribute, original)


def _health_from_the_wrong_site() -> AbstractContextManager[None]:
    original = protected_vm.health  # type: ignore[attr-defined]

    def health(state: SystemState, vm: VmState) -> Health:
        # Reads the source's site where the target's is meant (and the other way).
        swapped = replace(vm, active=vm.active.other)
        return original(state, swapped)

    return _replaced(protected_vm, "health", health)


def _report_forgets_newest_point() -> AbstractContextManager[None]:
    original = loss_report.rolled_back

    def rolled_back(
        points: tuple[RecoveryPoint, ...], chosen: RecoveryPoint
    ) -> tuple[int, int | None]:
        # The final sync's point (the newest) is left out of what was rolled back.
        if len(points) > 1 and points[-1].recovery_point_id != chosen.recovery_point_id:
            points = points[:-1]
        return original(points, chosen)

    return _replaced(loss_report, "rolled_back", rolled_back)


def _seal_first_disk_only() -> AbstractContextManager[None]:
    original = SourceDisks.seal

    def seal(
        self: SourceDisks,
        outbox: Any,
        disks: Any = None,
        *,
        sequences_skipped: Mapping[str, int] | None = None,
    ) -> Any:
        # The disks are cut at different points: all but the first wait for a later
        # cut, so a recovery point holds one disk newer than the others.
        chosen = sorted(self.images()) if disks is None else sorted(disks)
        return original(self, outbox, chosen[:1], sequences_skipped=sequences_skipped)

    return _replaced(SourceDisks, "seal", seal)


def _undo_image_skipped() -> AbstractContextManager[None]:
    original = store.write_undo_image  # type: ignore[attr-defined]

    def write_undo_image(
        target: Any, *, cycle_id: int, disks: Any, extents: Any
    ) -> int:
        # The bytes a cycle overwrites are not saved before it is applied: the image
        # is written whole but empty, so no older point can be rebuilt from it.
        for _ in extents:
            pass
        return original(target, cycle_id=cycle_id, disks=disks, extents=())

    return _replaced(store, "write_undo_image", write_undo_image)


def _log_applied_out_of_order() -> AbstractContextManager[None]:
    original = apply.read_sealed_log  # type: ignore[attr-defined]

    def read_sealed_log(path: Any, **identity: Any) -> Iterator[Any]:
        # Every record is checked, then applied newest first: two writes to one
        # block leave the older one's bytes on the replica.
        return iter(list(original(path, **identity))[::-1])

    return _replaced(apply, "read_sealed_log", read_sealed_log)


def _bound_always_zero() -> AbstractContextManager[None]:
    original = loss_report.at_failover

    def at_failover(**arguments: Any) -> loss_report.LossReport:
        # A bound that can never be wrong, and says nothing.
        report = original(**arguments)
        return report if report.exact else replace(report, writes_lost_at_least=0)

    return _replaced(loss_report, "at_failover", at_failover)


def _reconciliation_one_short() -> AbstractContextManager[None]:
    original = loss_report.reconciled

    def reconciled(report: Any, source: Any, **arguments: Any) -> Any:
        found = original(report, source, **arguments)
        if found.exact and found.writes_lost:
            return replace(found, writes_lost=found.writes_lost - 1)
        return found

    return _replaced(loss_report, "reconciled", reconciled)


def _retention_one_more() -> AbstractContextManager[None]:
    original = ReplicaStore.create.__func__  # type: ignore[attr-defined]

    def create(
        cls: Any, root: Any, vm: Any, disks: Any, retention: Any, clock: Any
    ) -> Any:
        return original(cls, root, vm, disks, retention + 1, clock)

    return _replaced(ReplicaStore, "create", classmethod(create))


ENGINE_MUTANTS: tuple[EngineMutant, ...] = (
    EngineMutant(
        "health_from_the_wrong_site",
        "status() computes health from the source's site facts instead of the "
        "target's (a lost shipment then shows normal, not warning)",
        _health_from_the_wrong_site,
    ),
    EngineMutant(
        "loss_report_forgets_the_final_sync",
        "the loss report leaves the newest point (the final sync's) out of what an "
        "older recovery point rolls back",
        _report_forgets_newest_point,
    ),
    EngineMutant(
        "undo_image_skipped",
        "a cycle is applied without saving the bytes it overwrites (an empty undo "
        "image): older recovery points read as newer ones",
        _undo_image_skipped,
    ),
    EngineMutant(
        "log_applied_out_of_order",
        "the target applies a cycle's records newest first",
        _log_applied_out_of_order,
    ),
    EngineMutant(
        "loss_bound_always_zero",
        "an unplanned failover's lower bound on the loss is always 0",
        _bound_always_zero,
    ),
    EngineMutant(
        "reconciliation_one_short",
        "the reconciled loss counts one write fewer than the old source's logs hold",
        _reconciliation_one_short,
    ),
    EngineMutant(
        "retention_keeps_one_more",
        "the replica keeps one recovery point more than configured",
        _retention_one_more,
    ),
    EngineMutant(
        "disks_sealed_at_different_cuts",
        "a cycle cuts only the first disk's log; the others wait for a later cut",
        _seal_first_disk_only,
    ),
)

BY_NAME: dict[str, EngineMutant] = {mutant.name: mutant for mutant in ENGINE_MUTANTS}
