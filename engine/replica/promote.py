"""Promotion: a recovery point becomes the VM's disks at the target site (commit).

Committing a failover deletes every recovery point and leaves the workload on the
replica at the chosen point. Copying the disks would cost their size; instead the
store is consumed in place. Everything that needs space happens first, while the store
is whole where it is (the failed-over VM reads its point through it meanwhile):

1. the blocks the chosen point's undo chain restores (the writes rolled back to reach
   it) are saved beside each future disk (``vms/<vm>/<disk>.img`` + :data:`ROLLED_BACK`,
   a block set): reverse replication compares those blocks, not the whole disk;
2. the undo images of every point newer than the chosen one are applied to the
   store's replica images, newest first (the undo image of point P turns P's
   successor into P), and the images are synced. The chosen point still reads
   exactly through the store (a view lays the same undo images over the images:
   the first one covering a byte decides it); the newer points do not, so from here
   on the commit is never abandoned, only finished;
3. the store's directory is renamed, in one step, into the VM's folder
   (``vms/<vm>/.promoting``): from then on no replica store exists for the VM;
4. each replica image is moved (renamed) to ``vms/<vm>/<disk>.img``;
5. the promoting directory is deleted.

Steps 3 to 5 need no space (renames and deletions), so a full disk stops a promotion
only while the store is in place. Every step can run again after a crash: steps 1 and
2 while the store exists (the sets are computed again; applying the whole chain again
over a partly rolled-back image gives the same bytes, since it writes only
pre-images); the rename of step 3 is atomic; each move between directories syncs the
directory it lands in before the one it left, so a power cut between the two syncs
leaves it under both names (the next run takes the store's copy again), never under
none; step 4 skips the images already moved; step 5 is idempotent. A promotion whose
directory is gone and whose images are in place is done: its saved sets are returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from engine.errors import DamagedState
from engine.names import safe_child
from engine.replica.manifest import StoreManifest
from engine.replica.recovery_point import RecoveryPoint
from engine.replica.undo_blocks import blocks_in_undo_image
from engine.replica.undo_image import apply_undo_image
from engine.storage import durable_file, files
from engine.storage.block_set import BlockSet

PROMOTING: Final = ".promoting"
"""The store's directory while it is being promoted, inside the VM's folder."""

ROLLED_BACK: Final = ".rolled-back.blocks"
"""Beside a promoted disk image: the blocks the failover rolled back."""

DISK_SUFFIX: Final = ".img"
STORE_FILE: Final = "store.json"


def promote(
    store_directory: Path,
    vm_directory: Path,
    vm_name: str,
    recovery_point_id: int,
    block_bytes: int,
) -> dict[str, BlockSet]:
    """Turn ``store_directory`` (a replica store) into the VM's disks at the chosen
    point in ``vm_directory``; return the blocks rolled back, per disk."""
    aside = vm_directory / PROMOTING
    if store_directory.exists():
        _roll_back_in_place(
            store_directory, vm_directory, vm_name, recovery_point_id, block_bytes
        )
        if aside.exists():
            files.remove_tree_durably(aside)  # debris, or a copy a power cut left
        files.current().rename(store_directory, aside)
        # The new entry first: a power cut between the two syncs then leaves the
        # store under both names (the next run drops the copy aside), never none.
        files.fsync_directory(vm_directory)
        files.fsync_directory(store_directory.parent)
    if aside.exists():
        manifest = StoreManifest.load(aside / STORE_FILE, vm_name)
        images = {
            disk: safe_child(vm_directory, disk + DISK_SUFFIX)
            for disk in manifest.disks
        }
        for disk, image in images.items():
            source = aside / "replica" / (disk + DISK_SUFFIX)
            if source.exists():
                files.current().rename(source, image)
        files.fsync_directory(vm_directory)  # the new entries first, as above
        files.fsync_directory(aside / "replica")
        missing = sorted(str(image) for image in images.values() if not image.exists())
        if missing:
            msg = f"promoting VM {vm_name!r}: the images {missing} are neither in the "
            msg += "store nor in place: the store was damaged; restore it from a backup"
            raise DamagedState(msg)
        files.remove_tree_durably(aside)
    return saved_blocks(vm_directory, _disks_in(vm_directory), block_bytes)


def _roll_back_in_place(
    store_directory: Path,
    vm_directory: Path,
    vm_name: str,
    recovery_point_id: int,
    block_bytes: int,
) -> None:
    """Steps 1 and 2, the store whole where it is: the rolled-back blocks saved
    beside the future disks, the store's images rolled back to the chosen point."""
    files.make_directory_durably(vm_directory)
    manifest = StoreManifest.load(store_directory / STORE_FILE, vm_name)
    manifest.catalogue.get(recovery_point_id)  # retained, or RecoveryPointNotFound
    chain = _chain(manifest, recovery_point_id, store_directory)
    for disk, size in manifest.disks.items():
        found = BlockSet(size, block_bytes)
        for undo, cycle_id in chain:
            found = found.union(
                blocks_in_undo_image(undo, cycle_id, disk, block_bytes, size)
            )
        found.save(_blocks_path(vm_directory, disk))
    images = {
        disk: store_directory / "replica" / (disk + DISK_SUFFIX)
        for disk in manifest.disks
    }
    for undo, cycle_id in chain:
        apply_undo_image(undo, cycle_id=cycle_id, images=images)


def _chain(
    manifest: StoreManifest, recovery_point_id: int, directory: Path
) -> list[tuple[Path, int]]:
    """The undo images from the newest point down to the chosen one, newest first."""
    catalogue = manifest.catalogue
    points = catalogue.points
    chain = []
    for point in catalogue.newer_than(recovery_point_id):
        predecessor: RecoveryPoint = points[points.index(point) - 1]
        name = str(predecessor.recovery_point_id)
        chain.append((directory / "undo" / f"{name}.undo", point.cycle_id))
    return chain


def _blocks_path(vm_directory: Path, disk: str) -> Path:
    return safe_child(vm_directory, disk + DISK_SUFFIX + ROLLED_BACK)


def _disks_in(vm_directory: Path) -> Mapping[str, int]:
    return {
        path.name.removesuffix(DISK_SUFFIX): path.stat().st_size
        for path in sorted(vm_directory.glob("*" + DISK_SUFFIX))
    }


def saved_blocks(
    vm_directory: Path, disks: Mapping[str, int], block_bytes: int
) -> dict[str, BlockSet]:
    """The rolled-back blocks a finished promotion saved (DamagedState if lost)."""
    return {
        disk: BlockSet.load(
            _blocks_path(vm_directory, disk), size_bytes=size, block_bytes=block_bytes
        )
        for disk, size in disks.items()
    }


def remove_saved_blocks(vm_directory: Path, disks: Mapping[str, int]) -> None:
    """Delete the saved sets (the resynchronisation they served is done)."""
    durable_file.remove_durably([_blocks_path(vm_directory, disk) for disk in disks])
