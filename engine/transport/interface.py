"""The replica interface: everything the source side asks of the site holding a replica.

The source side of a VM (its disks, change logs and outbox at the active site) never
touches the replica store, its files or its objects. What it needs from the target it
asks through :class:`ReplicaTarget`, one small protocol whose calls carry only names,
numbers, files the source made (sealed change logs, disk images) and plain values back:

- ``create_replica`` / ``remove_replica``: a VM's replica store starts empty (enable) or
  goes (disable);
- ``send_disk_image`` then ``install_initial_copy``: the initial copy, disk by disk,
  each delivered whole or not at all, then swapped in;
- ``apply_cycle``: one cycle (a sealed log per disk, all cut at one point) delivered,
  verified record by record against the sequence numbers the source sealed, and applied
  to all disks or none; idempotent (a cycle applied already returns its point);
- ``block_digests``: one strong digest per block of a replica disk, or of the blocks
  listed, so a resynchronisation sends only the blocks whose digests differ;
- ``status``: whether the replica exists, its recovery points, the last cycle applied;
- the target-side half of a failover: ``start_test_failover`` / ``test_vm`` /
  ``cleanup_test_failover`` (a drill's test VM on differencing disks in the target's
  isolated area), ``point_reader`` (the replica VM reading its recovery point before
  commit), ``promote_replica`` (commit: the point becomes the VM's disks at the target,
  every point deleted; returns the blocks rolled back) and ``adopt_copy`` (reverse
  replication: the old source's disks at the target become a replica without points).

Two implementations: in-process (``engine.transport.in_process``: the target site's
storage root is on this machine) and over HTTP(S) (``engine.transport.http.client``,
against a replica server, ``hvdr serve``); nothing above this seam changes.

Errors: :class:`~engine.errors.TransportError` (the target cannot be reached; nothing
was delivered), :class:`~engine.errors.StorageFull` (the target has no room; nothing
was applied), :class:`~engine.errors.CorruptRecord` (a log failed its checks; nothing
was applied), :class:`~engine.errors.DamagedState` (the target's own files are damaged).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from engine.replica.recovery_point import RecoveryPoint
from engine.storage.block_set import BlockSet

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while a disk image travels."""


@dataclass(frozen=True, slots=True)
class CycleShipment:
    """One sealed cycle as the source hands it over: the logs and what they must hold.

    ``last_sequences`` are the sequence numbers of each disk's last record, recorded
    by the source when it sealed the logs: the target refuses a log that ends
    elsewhere (a log cut exactly at a record boundary would otherwise pass every CRC).
    """

    cycle_id: int
    epoch: int
    app_consistent: bool
    logs: Mapping[str, Path]
    last_sequences: Mapping[str, int]
    resync: bool = False  # a resynchronisation's blocks, not writes (see CutRecord)


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """What the target says of one VM's replica."""

    vm_name: str
    exists: bool
    points: tuple[RecoveryPoint, ...] = ()
    last_cycle_id: int = 0  # the highest cycle id ever applied (0: none)
    disks: Mapping[str, int] = field(default_factory=dict)
    recovered: str | None = None  # what opening the target finished or undid


class DiskReader(Protocol):
    """Reads a VM's disks as one recovery point holds them."""

    def read(self, disk: str, offset: int, length: int) -> bytes:
        """``length`` bytes of ``disk`` from ``offset``."""
        ...


class TestVmDisks(Protocol):
    """A drill's test VM: reads fall through to its point, writes stay in an overlay."""

    def read(self, disk: str, offset: int, length: int) -> bytes:
        """``length`` bytes of ``disk`` from ``offset``, as the test VM sees them."""
        ...

    def write(self, disk: str, offset: int, data: bytes) -> None:
        """Write into the test VM's overlay (never into the replica)."""
        ...

    def flush(self) -> None:
        """Make the test VM's writes so far durable."""
        ...


class ReplicaTarget(Protocol):
    """The target site of a VM's replication, as the source side sees it."""

    @property
    def site_name(self) -> str:
        """The name of the site holding the replicas."""
        ...

    def reachable(self) -> bool:
        """Whether data can go to the target now."""
        ...

    def memoised(self) -> AbstractContextManager[None]:
        """A block in which the target may answer :meth:`status` and
        :meth:`reachable` from what it learnt earlier in the block, until a call
        that changes something (or fails): one engine operation, which asks both
        several times (a remote target saves a round trip each)."""
        ...

    def create_replica(
        self, vm_name: str, disks: Mapping[str, int], retention_count: int
    ) -> None:
        """Create an empty replica store for ``vm_name`` (replacing any earlier one)."""
        ...

    def remove_replica(self, vm_name: str) -> None:
        """Delete the replica of ``vm_name`` and everything delivered for it."""
        ...

    def send_disk_image(
        self,
        vm_name: str,
        disk: str,
        image: Path,
        *,
        progress: Progress | None = None,
    ) -> None:
        """Deliver one disk image of an initial copy, whole or not at all."""
        ...

    def install_initial_copy(self, vm_name: str) -> None:
        """Swap the delivered images in (before any recovery point); idempotent."""
        ...

    def apply_cycle(self, vm_name: str, shipment: CycleShipment) -> RecoveryPoint:
        """Deliver, verify, apply one cycle to all disks or none; return its point."""
        ...

    def block_digests(
        self,
        vm_name: str,
        disk: str,
        block_bytes: int,
        *,
        blocks: Sequence[int] | None = None,
    ) -> list[bytes]:
        """One digest per block of the replica of ``disk`` (see ``block_digest``).

        With ``blocks``, one digest per listed block, in the order listed (a targeted
        resynchronisation's candidates); a block outside the disk is
        :class:`~engine.errors.DiskRangeError` naming the disk and its block count.
        """
        ...

    def status(self, vm_name: str, *, quick: bool = False) -> ReplicaStatus:
        """The replica of ``vm_name`` as the target knows it (no side effects).

        ``quick``: a target across a network asks once, with a short timeout, and
        raises :class:`~engine.errors.TransportError` at once when it gets no answer
        (no retries, no backoff): what the engine reads to show a VM, or to ask the
        model about a write, must never wait on the other site."""
        ...

    def start_test_failover(self, vm_name: str, recovery_point_id: int) -> None:
        """Pin the point and start a test VM from it in the isolated area; idempotent
        (a drill of that point already there is reopened)."""
        ...

    def test_vm(self, vm_name: str) -> TestVmDisks:
        """The open drill's test VM."""
        ...

    def cleanup_test_failover(self, vm_name: str) -> None:
        """Delete the test VM and its overlay, unpin the point; idempotent."""
        ...

    def point_reader(self, vm_name: str, recovery_point_id: int) -> DiskReader:
        """A reader of the VM's disks at ``recovery_point_id`` (no copy made)."""
        ...

    def promote_replica(
        self, vm_name: str, recovery_point_id: int, block_bytes: int
    ) -> Mapping[str, BlockSet]:
        """Make the point the VM's disks at the target and delete the store (every
        recovery point); return the blocks rolled back per disk. Idempotent."""
        ...

    def adopt_copy(
        self, vm_name: str, disks: Mapping[str, int], retention_count: int
    ) -> None:
        """Make the VM's disks at the target (an old source's copy) its replica, with
        no recovery point yet. Idempotent."""
        ...
