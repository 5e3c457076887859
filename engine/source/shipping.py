"""Delta cycles on the source side: the outbox, and shipping a sealed cycle to apply.

A cycle is one sealed change log per disk of a VM, cut at one point
(``source_disks.SourceDisks.seal``). It waits in the source site's **outbox** until the
target has applied it, so a cycle cut short by the link or a full target is neither
lost nor reordered: the next cycle ships the waiting ones first, in cycle order.

:func:`ship_and_apply` ships the sealed logs through the transport, has the replica
store verify and apply them (all disks or none; a damaged log is refused there, whole,
before any replica byte changes) and removes them from the outbox. The source reads
only each log's header: verifying here too would read every log once more per cycle
(profiled: log scanning was a quarter of a cycle's CPU). Each step calls the ``crash``
seam with its name (``CYCLE_CRASH_POINTS``), so tests can kill the process between any
two steps.
It never imports ``model``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.clock import Clock
from engine.control.site import SiteStorage
from engine.log.reader import read_header
from engine.replica.recovery_point import RecoveryPoint
from engine.replica.store import ReplicaStore
from engine.storage import durable_file, files
from engine.transport.in_process import Transport

CrashPoint = Callable[[str], None]

#: Beside a waiting cycle's logs when it was cut at a quiesce point (app-consistent),
#: so a cycle shipped again after a failure keeps its flag.
APP_CONSISTENT_MARKER: Final = "app-consistent"

#: Steps of a cycle at which the ``crash`` seam is called (besides the store's own).
CYCLE_CRASH_POINTS: Final = ("sealed", "shipped", "applied", "outbox_removed")


def no_crash(step: str) -> None:
    """The production seam: nothing happens between steps."""
    del step


@dataclass(frozen=True)
class CycleReport:
    """What one delta cycle did."""

    cycle_id: int
    recovery_point_id: int
    records: int
    bytes_shipped: int
    seconds: float


class Outbox:
    """The sealed cycles of one VM waiting at its source site."""

    def __init__(self, site: SiteStorage, vm_name: str) -> None:
        self.site = site
        self.vm_name = vm_name

    def path(self, cycle_id: int) -> Path:
        """The directory of cycle ``cycle_id``."""
        return self.site.outbox(self.vm_name, cycle_id)

    def logs(self, cycle_id: int, disks: Iterable[str]) -> dict[str, Path]:
        """Where each disk's sealed log of the cycle is (or is to be)."""
        directory = self.path(cycle_id)
        return {disk: directory / f"{disk}.hrl" for disk in sorted(disks)}

    def waiting(self) -> list[int]:
        """The cycles waiting, oldest first."""
        directory = self.site.root / "outbox" / self.vm_name
        if not directory.exists():
            return []
        return sorted(
            int(entry.name.removeprefix("cycle-"))
            for entry in directory.iterdir()
            if entry.name.startswith("cycle-")
        )

    def mark(self, cycle_id: int, *, app_consistent: bool) -> None:
        """Record, with the sealed logs, that the cut was taken at a quiesce point."""
        if app_consistent:
            marker = self.path(cycle_id) / APP_CONSISTENT_MARKER
            durable_file.write_file_atomically(marker, b"quiesced\n")

    def app_consistent(self, cycle_id: int) -> bool:
        """Whether cycle ``cycle_id`` was cut at a quiesce point."""
        return (self.path(cycle_id) / APP_CONSISTENT_MARKER).exists()

    def discard(self) -> None:
        """Drop every waiting cycle (superseded by a resynchronisation or a disable)."""
        for cycle_id in self.waiting():
            files.remove_tree_durably(self.path(cycle_id))


@dataclass(frozen=True)
class Route:
    """Where a VM's cycles go: the transport, both sites, the crash seam."""

    transport: Transport
    source_site: str
    target_site: str
    vm_name: str
    crash: CrashPoint = no_crash


def ship_and_apply(
    route: Route,
    outbox: Outbox,
    cycle_id: int,
    logs: dict[str, Path],
    *,
    replica: ReplicaStore,
    epoch: int,
    app_consistent: bool,
    clock: Clock,
) -> tuple[RecoveryPoint, CycleReport]:
    """Verify, ship and apply one waiting cycle; remove it from the outbox."""
    started = clock.now()
    first_sequences = {disk: _first_sequence(path) for disk, path in logs.items()}
    size = sum(path.stat().st_size for path in logs.values())
    route.crash("sealed")
    delivered = route.transport.ship_cycle(
        route.source_site, route.target_site, route.vm_name, cycle_id, logs
    )
    route.crash("shipped")
    point = replica.apply_cycle(
        cycle_id,
        delivered,
        epoch=epoch,
        app_consistent=app_consistent,
        crash_point=route.crash,
    )
    records = sum(
        point.last_sequence(disk) - first + 1 for disk, first in first_sequences.items()
    )
    route.crash("applied")
    files.remove_tree_durably(outbox.path(cycle_id))
    route.crash("outbox_removed")
    report = CycleReport(
        cycle_id=cycle_id,
        recovery_point_id=point.recovery_point_id,
        records=records,
        bytes_shipped=size,
        seconds=clock.now() - started,
    )
    return point, report


def _first_sequence(path: Path) -> int:
    """The first sequence number a sealed log's header declares (header checked)."""
    with path.open("rb") as stream:
        header, _ = read_header(stream, path)
    return header.first_sequence
