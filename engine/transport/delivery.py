"""Delivery into a target site's inbox: files arrive whole or not at all.

What the source sends (a cycle's sealed logs, an initial copy's disk images) lands in
the target site's **inbox** before the replica store takes it, so that a transfer cut
short never leaves half a file where the store would read it. Whoever receives (the
in-process replica today, a replica server tomorrow) calls these functions; they
never interpret what they carry (the replica store verifies every log record before
applying anything).

Layout under the target site's storage root (names validated, so a hostile VM or disk
name cannot escape the root)::

    <root>/inbox/<vm_name>/cycle-<cycle_id>/<disk>.hrl
    <root>/inbox/<vm_name>/initial/<disk>.img   (one file at a time)

A cycle is copied into ``cycle-<id>.tmp``, every file fsynced, the directory fsynced,
then renamed into place and the VM's inbox fsynced: the target sees a whole cycle or
none, even after a power cut mid-copy. Delivering the same cycle again replaces the
earlier copy (a retry after a lost acknowledgement), so delivery is idempotent. A disk
image is copied to ``<disk>.img.partial`` and renamed when complete
(``engine.storage.sparse_copy``).

A full target raises :class:`StorageFull` and removes what was partly copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from engine.errors import InvalidConfiguration, StorageFull
from engine.names import safe_child, validate_disk_name
from engine.storage import durable_file
from engine.storage import files as filesystem
from engine.storage.files import fsync_directory
from engine.storage.sparse_copy import CopyStatistics, Progress, copy_disk_image

INBOX: Final = "inbox"
INITIAL_COPY: Final = "initial"
LOG_SUFFIX: Final = ".hrl"
IMAGE_SUFFIX: Final = ".img"


def cycle_directory_name(cycle_id: object) -> str:
    """The inbox (and outbox) directory name of cycle ``cycle_id``."""
    if isinstance(cycle_id, bool) or not isinstance(cycle_id, int) or cycle_id < 0:
        msg = f"cycle_id={cycle_id!r} must be an int >= 0"
        raise InvalidConfiguration(msg)
    return f"cycle-{cycle_id}"


def vm_inbox(root: Path, vm_name: str) -> Path:
    """Where everything delivered for ``vm_name`` waits at the site ``root``."""
    return safe_child(root, INBOX, vm_name)


def initial_copy_directory(root: Path, vm_name: str) -> Path:
    """Where the images of ``vm_name``'s initial copy wait until installed."""
    return safe_child(root, INBOX, vm_name, INITIAL_COPY)


def deliver_cycle(
    root: Path, vm_name: str, cycle_id: int, logs: Mapping[str, Path]
) -> tuple[dict[str, Path], int]:
    """Copy a cycle's logs into the inbox, whole or not at all.

    Returns the delivered paths (disk -> path) and the bytes copied.
    """
    _check_logs(vm_name, logs)
    inbox = vm_inbox(root, vm_name)
    final = safe_child(inbox, cycle_directory_name(cycle_id))
    temporary = durable_file.temporary_path(final)
    filesystem.make_directory_durably(inbox)
    try:
        delivered, size = _copy_into(temporary, logs)
    except (OSError, StorageFull) as error:
        filesystem.remove_tree_durably(temporary)
        full = isinstance(error, StorageFull) or durable_file.is_storage_full(error)
        if full:
            msg = f"the target is out of space receiving cycle {cycle_id} of VM "
            msg += f"{vm_name!r}; nothing was delivered: free space and retry"
            raise StorageFull(msg) from error
        raise
    filesystem.remove_tree_durably(final)
    filesystem.current().rename(temporary, final)
    fsync_directory(inbox)
    return {disk: final / path.name for disk, path in delivered.items()}, size


def accept_cycle(
    root: Path, vm_name: str, cycle_id: int, received: Mapping[str, Path]
) -> tuple[dict[str, Path], int]:
    """Move a cycle's logs received whole and synced under ``root`` (a network
    upload: ``Uploads.finish`` syncs each) into the inbox, whole or not at all: each
    renamed into ``cycle-<id>.tmp``, then the directory renamed into place, as
    :func:`deliver_cycle` does with its copies.
    The received files are gone afterwards (a retry sends them again). Returns the
    delivered paths and their bytes."""
    _check_logs(vm_name, received)
    inbox = vm_inbox(root, vm_name)
    final = safe_child(inbox, cycle_directory_name(cycle_id))
    temporary = durable_file.temporary_path(final)
    filesystem.make_directory_durably(inbox)
    filesystem.remove_tree_durably(temporary)  # debris of a delivery cut short
    filesystem.make_directory_durably(temporary)
    delivered = {}
    size = 0
    sources = set()
    for disk, source in sorted(received.items()):
        target = safe_child(temporary, disk + LOG_SUFFIX)
        size += Path(source).stat().st_size
        filesystem.current().rename(Path(source), target)
        delivered[disk] = final / target.name
        sources.add(Path(source).parent)
    fsync_directory(temporary)
    for folder in sorted(sources):
        fsync_directory(folder)
    filesystem.remove_tree_durably(final)
    filesystem.current().rename(temporary, final)
    fsync_directory(inbox)
    return delivered, size


def deliver_disk_image(
    root: Path,
    vm_name: str,
    disk: str,
    image: Path,
    *,
    progress: Progress | None = None,
) -> CopyStatistics:
    """Copy one disk image of an initial copy into the inbox, whole or not at all."""
    validate_disk_name(disk)
    directory = initial_copy_directory(root, vm_name)
    filesystem.make_directory_durably(directory)
    target = safe_child(directory, disk + IMAGE_SUFFIX)
    try:
        return copy_disk_image(Path(image), target, progress=progress)
    except StorageFull as error:
        msg = f"the target is out of space receiving disk {disk!r} of VM {vm_name!r}; "
        msg += "nothing was delivered: free space and retry"
        raise StorageFull(msg) from error


def accept_disk_image(root: Path, vm_name: str, disk: str, received: Path) -> None:
    """Move a disk image received whole and synced (a network upload under
    ``root``: ``Uploads.finish`` syncs it) into the inbox, durably: the image arrives
    renamed, so the inbox never holds part of it."""
    validate_disk_name(disk)
    directory = initial_copy_directory(root, vm_name)
    filesystem.make_directory_durably(directory)
    target = safe_child(directory, disk + IMAGE_SUFFIX)
    filesystem.current().rename(received, target)
    fsync_directory(directory)
    fsync_directory(received.parent)


def remove_delivered(root: Path, vm_name: str, cycle_id: int) -> None:
    """Delete the inbox directory of a cycle once the store has taken it."""
    directory = safe_child(vm_inbox(root, vm_name), cycle_directory_name(cycle_id))
    filesystem.remove_tree_durably(directory)


def _check_logs(vm_name: str, logs: Mapping[str, Path]) -> None:
    """Refuse a delivery with no log, a bad disk name, or a log that is missing."""
    if not logs:
        msg = f"nothing to deliver for VM {vm_name!r}: give one log per disk"
        raise InvalidConfiguration(msg)
    for disk, path in logs.items():
        validate_disk_name(disk)
        if not Path(path).is_file():
            msg = f"logs[{disk!r}]={str(path)!r} does not exist; nothing was delivered"
            raise InvalidConfiguration(msg)


def _copy_into(
    directory: Path, logs: Mapping[str, Path]
) -> tuple[dict[str, Path], int]:
    filesystem.remove_tree_durably(directory)  # debris of a transfer cut short
    filesystem.make_directory_durably(directory)
    delivered = {}
    size = 0
    for disk, source in sorted(logs.items()):
        target = safe_child(directory, disk + LOG_SUFFIX)
        size += durable_file.copy_file_atomically(Path(source), target)
        delivered[disk] = target
    fsync_directory(directory)
    return delivered, size
