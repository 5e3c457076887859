"""The blocks an undo image restores: what stepping a replica back changed.

An undo image (``engine/replica/undo_image.py``) holds, for one cycle, the pre-cycle
bytes of every extent the cycle wrote, on every disk. Its extents are therefore exactly
the regions a rollback (or a failover to an older recovery point) rewrites: after an
unplanned failover to point P, the blocks that may differ between the replica as it
was and as it is now are the union of the extents of the undo images from P up to the
newest point. :func:`blocks_in_undo_image` gives one image's blocks of one disk as a
:class:`~engine.storage.block_set.BlockSet`; the caller takes the union.

The image is read with the strict reader, to its trailer: a set is returned only from
a whole image. An undo image is a file of the replica store, so its damage or absence
is :class:`DamagedState` (as ``ReplicaStore`` reports it), never :class:`CorruptRecord`,
which means a change log failed its checks. Zero extents (``KIND_ZEROS``) count like
data extents: the cycle wrote there all the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from engine.errors import CorruptRecord, DamagedState, InvalidConfiguration
from engine.names import validate_disk_name
from engine.replica.undo_image import read_undo_image, undo_image_disks
from engine.storage.block_set import BlockSet

WHAT_TO_DO: Final = (
    "the blocks it restores cannot be known: compare every block (a full "
    "resynchronisation), or restore the file"
)


def blocks_in_undo_image(
    path: Path, cycle_id: int, disk: str, block_bytes: int, disk_size: int
) -> BlockSet:
    """The blocks of ``disk`` that the undo image of cycle ``cycle_id`` restores.

    ``disk`` must be one the image names (InvalidConfiguration lists them); an extent
    past ``disk_size`` is damage.
    """
    path = Path(path)
    disk = validate_disk_name(disk)
    blocks = BlockSet(disk_size, block_bytes)
    try:
        disks = undo_image_disks(path, cycle_id=cycle_id)
        if disk not in disks:
            msg = f"disk={disk!r} is not a disk of undo image {str(path)!r}; "
            msg += f"choices: {sorted(disks)}"
            raise InvalidConfiguration(msg)
        for extent in read_undo_image(path, cycle_id=cycle_id):
            if extent.disk != disk:
                continue
            end = extent.offset + extent.length
            if end > disk_size:
                msg = f"undo image {str(path)!r} has an extent [{extent.offset}, "
                msg += f"{end}) of disk {disk!r}, past its {disk_size} bytes"
                raise CorruptRecord(msg)
            blocks.add_range(extent.offset, extent.length)
    except CorruptRecord as error:
        msg = f"{error}. It is a file of the replica store: {WHAT_TO_DO}"
        raise DamagedState(msg) from error
    except FileNotFoundError as error:
        msg = f"undo image {str(path)!r} is missing: {WHAT_TO_DO}"
        raise DamagedState(msg) from error
    return blocks
