"""Promotion: a recovery point becomes the VM's disks at the target site (commit).

Committing a failover deletes every recovery point and leaves the workload on the
replica at the chosen point. Copying the disks would cost their size; instead the
store is consumed in place:

1. the store's directory is renamed, in one step, into the VM's folder at the same site
   (``vms/<vm>/.promoting``): from then on no replica store exists for the VM, and the
   directory is only read here;
2. the blocks the chosen point's undo chain restores (the writes rolled back to reach
   it) are saved beside each disk (``<disk>.img`` + :data:`ROLLED_BACK`, a block set):
   reverse replication compares those blocks, not the whole disk;
3. each replica image is moved (renamed) to ``vms/<vm>/<disk>.img``;
4. the undo images of every point newer than the chosen one are applied to the moved
   images, newest first (the undo image of point P turns P's successor into P), and
   the images are synced;
5. the promoting directory is deleted.

Every step can run again after a crash: the rename of step 1 is atomic; each move
between directories syncs the directory it lands in before the one it left, so a
power cut between the two syncs leaves it under both names (the next run takes the
store's copy again), never under none; step 2 keeps
the sets it already saved; step 3 skips the images already moved; step 4 writes only
pre-images, so applying the whole chain again over a partly rolled-back image gives the
same bytes (the last undo image covering a byte decides it, as in a full run); step 5
is idempotent. A promotion whose directory is gone and whose images are in place is
done: its saved sets are returned.
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
    files.make_directory_durably(vm_directory)
    aside = vm_directory / PROMOTING
    if store_directory.exists():
        if aside.exists():
            files.remove_tree_durably(aside)  # debris: the rename had not happened
        files.current().rename(store_directory, aside)
        # The new entry first: a power cut between the two syncs then leaves the
        # store under both names (the next run drops the copy aside), never none.
        files.fsync_directory(vm_directory)
        files.fsync_directory(store_directory.parent)
    if not aside.exists():
        return saved_blocks(vm_directory, _disks_in(vm_directory), block_bytes)
    manifest = StoreManifest.load(aside / STORE_FILE, vm_name)
    chain = _chain(manifest, recovery_point_id, aside)
    blocks: dict[str, BlockSet] = {}
    for disk, size in manifest.disks.items():
        target = _blocks_path(vm_directory, disk)
        if target.exists():
            blocks[disk] = BlockSet.load(
                target, size_bytes=size, block_bytes=block_bytes
            )
            continue
        found = BlockSet(size, block_bytes)
        for undo, cycle_id in chain:
            found = found.union(
                blocks_in_undo_image(undo, cycle_id, disk, block_bytes, size)
            )
        found.save(target)
        blocks[disk] = found
    images = {
        disk: safe_child(vm_directory, disk + DISK_SUFFIX) for disk in manifest.disks
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
    for undo, cycle_id in chain:
        apply_undo_image(undo, cycle_id=cycle_id, images=images)
    files.remove_tree_durably(aside)
    return blocks


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
