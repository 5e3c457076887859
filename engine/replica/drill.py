"""The replica side of a drill (a test failover), on real files, without a disk copy.

A drill starts a test VM from a chosen recovery point of a VM's replica, in an area of
the target site of its own. Nothing is copied: each disk of the test VM is a
differencing disk (``engine/replica/differencing.py``) whose base is the point read
through the undo chain (``engine/replica/point_view.py``) and whose overlay takes the
test VM's writes. Delta cycles keep being applied to the replica meanwhile; the test
VM's writes never reach it. The store pins the point (``ReplicaStore.pin``), so
retention cannot merge away the point nor the undo images that lead to it.

The area (``docs/drill-format.md``)::

    <area>/
        drill.json          the drill: VM, recovery point, block size, disks
        <disk>.overlay      the test VM's writes (sparse, the disk's size)
        <disk>.map          the blocks the overlay holds

**Steps and crashes.** :func:`start_drill` pins the point (durable), creates the
overlays and maps, then writes ``drill.json`` atomically, last: an area without it is
an interrupted start, which :func:`open_drill` refuses and :func:`cleanup_drill`
removes. :func:`cleanup_drill` deletes the area durably, then unpins (which merges the
points kept only for the drill back down to the retention count); each step is
idempotent, so running it again after a crash at any step, or when the area is already
gone, finishes the job. It deletes an area only when every entry in it is a drill's
file: a mistyped path never loses someone's directory.

Names come from the store (validated when it loaded) and are joined with
``engine.names.safe_child``, so no name reaches outside the area. One thread per
drill, serialised with the store's applies (see ``point_view``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from engine.errors import (
    DamagedState,
    InvalidConfiguration,
    ReplicationError,
)
from engine.names import safe_child, validate_vm_name
from engine.replica.differencing import (
    BaseRead,
    DifferencingDisk,
    DifferencingDiskStatistics,
)
from engine.replica.manifest import load_json, validate_disks
from engine.replica.point_view import PointView
from engine.replica.store import ReplicaStore
from engine.storage import durable_file, files
from engine.storage.disk import Buffer, validate_block_bytes

DRILL_FILE: Final = "drill.json"
DRILL_FORMAT_VERSION: Final = 1
OVERLAY_SUFFIX: Final = ".overlay"
MAP_SUFFIX: Final = ".map"


class TestVm:
    """The disks of a drill's test VM: the point's bytes under the VM's own writes."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self, area: Path, view: PointView, disks: dict[str, DifferencingDisk]
    ) -> None:
        """Use :func:`start_drill` or :func:`open_drill`."""
        self.area = area
        self._view = view
        self._disks = disks

    @property
    def recovery_point_id(self) -> int:
        """The recovery point the test VM started from."""
        return self._view.recovery_point_id

    @property
    def disks(self) -> Mapping[str, int]:
        """The test VM's disks and their sizes in bytes."""
        return self._view.disks

    def read(self, disk: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes of ``disk`` from ``offset``, as the test VM sees."""
        return self._disk(disk).read(offset, length)

    def write(self, disk: str, offset: int, data: Buffer) -> None:
        """Write into the test VM's overlay of ``disk`` (durable at :meth:`flush`)."""
        self._disk(disk).write(offset, data)

    def flush(self) -> None:
        """Make every write so far durable, on every disk."""
        for disk in self._disks.values():
            disk.flush()

    def close(self, *, keep: bool = True) -> None:
        """Flush and close every disk; the area stays (reopen with open_drill).
        ``keep=False``: the area is about to be deleted, nothing is flushed.

        Every disk is closed even when one fails to flush; the first error is raised.
        """
        errors: list[OSError | ReplicationError] = []
        for disk in self._disks.values():
            try:
                disk.close(keep=keep)
            except (OSError, ReplicationError) as error:
                errors.append(error)
        if errors:
            raise errors[0]

    def statistics(self) -> dict[str, DifferencingDiskStatistics]:
        """Return each disk's counters."""
        return {name: disk.statistics() for name, disk in self._disks.items()}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _disk(self, disk: str) -> DifferencingDisk:
        if disk not in self._disks:
            msg = f"disk={disk!r} is not a disk of the test VM; "
            msg += f"choices: {sorted(self._disks)}"
            raise InvalidConfiguration(msg)
        return self._disks[disk]


def start_drill(
    store: ReplicaStore, recovery_point_id: int, area: Path, block_bytes: int
) -> TestVm:
    """Pin ``recovery_point_id`` and start a test VM from it in ``area`` (new).

    ``area`` must not exist yet (or be an empty directory) and lie outside the
    store; ``block_bytes`` is the overlay's unit (a power of two, 512 B..1 MiB).
    One drill per store at a time. A failure removes the area and unpins.
    """
    block_bytes = validate_block_bytes(block_bytes)
    area = Path(area)
    _check_area_placement(store, area)
    if store.pinned is not None:
        msg = f"VM {store.vm_name!r} already has a drill of recovery point "
        msg += f"{store.pinned} (pinned); one drill at a time: clean it up first "
        msg += "(cleanup_drill)"
        raise InvalidConfiguration(msg)
    if area.exists() and (not area.is_dir() or any(area.iterdir())):
        msg = f"area={str(area)!r} already exists and is not an empty directory; "
        msg += "give a new one (or open_drill, or cleanup_drill it first)"
        raise InvalidConfiguration(msg)
    store.catalogue.get(recovery_point_id)
    store.pin(recovery_point_id)
    disks: dict[str, DifferencingDisk] = {}
    try:
        files.make_directory_durably(area)
        view = PointView(store, recovery_point_id)
        for disk, size in store.disks.items():
            overlay, map_path = _disk_files(area, disk)
            disks[disk] = DifferencingDisk.create(
                overlay,
                map_path,
                size_bytes=size,
                block_bytes=block_bytes,
                base=_base_of(view, disk),
            )
        document = {
            "format_version": DRILL_FORMAT_VERSION,
            "vm_name": store.vm_name,
            "recovery_point_id": recovery_point_id,
            "block_bytes": block_bytes,
            "disks": dict(store.disks),
        }
        encoded = json.dumps(document, indent=1).encode()
        durable_file.write_file_atomically(area / DRILL_FILE, encoded)
    except (OSError, ReplicationError) as error:
        for opened in disks.values():
            opened.close()
        try:
            cleanup_drill(store, area)
        except (OSError, ReplicationError) as cleanup_error:
            note = f"removing the half-made drill failed too ({cleanup_error}): "
            note += "run cleanup_drill(store, area) again"
            error.add_note(note)
        raise
    return TestVm(area, view, disks)


def open_drill(store: ReplicaStore, area: Path) -> TestVm:
    """Reopen the drill in ``area`` (after a close or a restart) on ``store``.

    InvalidConfiguration when ``area`` holds no drill (or another VM's);
    DamagedState when ``drill.json``, an overlay or a map is damaged, or the store
    no longer pins the drill's point.
    """
    area = Path(area)
    path = area / DRILL_FILE
    if not path.is_file():
        msg = f"area={str(area)!r} holds no drill ({DRILL_FILE} is missing): start "
        msg += "one (start_drill); if a start was interrupted, cleanup_drill first"
        raise InvalidConfiguration(msg)
    recovery_point_id, block_bytes, disks = _load_drill(path, store)
    if store.pinned != recovery_point_id:
        msg = f"{str(path)!r} is a drill of recovery point {recovery_point_id}, but "
        msg += f"the replica store of VM {store.vm_name!r} pins {store.pinned}: the "
        msg += "drill cannot be trusted; clean it up (cleanup_drill), start another"
        raise DamagedState(msg)
    view = PointView(store, recovery_point_id)
    opened: dict[str, DifferencingDisk] = {}
    try:
        for disk, size in disks.items():
            overlay, map_path = _disk_files(area, disk)
            opened[disk] = DifferencingDisk.open(
                overlay, map_path, size_bytes=size, base=_base_of(view, disk)
            )
            if opened[disk].block_bytes != block_bytes:
                msg = f"map {str(map_path)!r} counts blocks of "
                msg += f"{opened[disk].block_bytes} bytes, {DRILL_FILE} of "
                msg += f"{block_bytes}: the drill is damaged"
                raise DamagedState(msg)
    except (OSError, ReplicationError):
        for disk_opened in opened.values():
            disk_opened.close()
        raise
    return TestVm(area, view, opened)


def cleanup_drill(store: ReplicaStore, area: Path) -> None:
    """Delete the drill's area durably, then unpin the store; safe to run again.

    Refuses (InvalidConfiguration) an area holding anything but a drill's files, or
    another VM's drill, and deletes nothing then.
    """
    area = Path(area)
    if store.pending_recovery:
        msg = f"VM {store.vm_name!r}: cannot clean up the drill while an interrupted "
        msg += "apply is pending; its owner must call recover() first"
        raise ReplicationError(msg)
    if area.exists() or area.is_symlink():
        _check_is_drill_area(store, area)
        files.remove_tree_durably(area)
    store.unpin()


def _check_area_placement(store: ReplicaStore, area: Path) -> None:
    real_area = Path(os.path.realpath(area))
    real_store = Path(os.path.realpath(store.directory))
    if area.is_symlink():
        msg = f"area={str(area)!r} is a symlink; give the directory itself"
        raise InvalidConfiguration(msg)
    if real_area.is_relative_to(real_store) or real_store.is_relative_to(real_area):
        msg = f"area={str(area)!r} must lie outside the replica store "
        msg += f"{str(store.directory)!r} and not contain it: a drill's area is a "
        msg += "directory of its own"
        raise InvalidConfiguration(msg)


def _check_is_drill_area(store: ReplicaStore, area: Path) -> None:
    _check_area_placement(store, area)
    if not area.is_dir():
        msg = f"area={str(area)!r} is not a directory: not a drill's area; "
        msg += "nothing was deleted"
        raise InvalidConfiguration(msg)
    allowed = {DRILL_FILE, DRILL_FILE + durable_file.TEMPORARY_SUFFIX}
    for disk in store.disks:
        overlay, map_path = _disk_files(area, disk)
        allowed |= {overlay.name, map_path.name}
        allowed.add(map_path.name + durable_file.TEMPORARY_SUFFIX)
    foreign = sorted(
        entry.name
        for entry in area.iterdir()
        if entry.name not in allowed or entry.is_dir() or entry.is_symlink()
    )
    if foreign:
        msg = f"area={str(area)!r} holds {foreign}, which are not files of a drill "
        msg += f"of VM {store.vm_name!r}: not deleting it; check the path"
        raise InvalidConfiguration(msg)
    path = area / DRILL_FILE
    if path.is_file():
        try:
            vm_name = load_json(path).get("vm_name")
        except DamagedState:
            return  # a damaged drill of ours is still ours to delete
        if vm_name != store.vm_name:
            msg = f"{str(path)!r} is a drill of VM {vm_name!r}, not of "
            msg += f"{store.vm_name!r}: not deleting it; clean it up with its store"
            raise InvalidConfiguration(msg)


def _load_drill(path: Path, store: ReplicaStore) -> tuple[int, int, dict[str, int]]:
    """Return the point, block size and disks of ``drill.json``, checked."""
    document = load_json(path)
    point = document.get("recovery_point_id")
    disks = document.get("disks")
    try:
        if document.get("format_version") != DRILL_FORMAT_VERSION:
            msg = f"format_version={document.get('format_version')!r}, expected 1"
            raise InvalidConfiguration(msg)
        vm_name = validate_vm_name(document.get("vm_name"))
        block_bytes = validate_block_bytes(document.get("block_bytes"))
        if isinstance(point, bool) or not isinstance(point, int) or point < 1:
            msg = f"recovery_point_id={point!r} must be an int >= 1"
            raise InvalidConfiguration(msg)
        if not isinstance(disks, dict):
            msg = f"disks={disks!r} must be an object of disk name -> size"
            raise InvalidConfiguration(msg)
        sizes = validate_disks(disks)
    except InvalidConfiguration as error:
        msg = f"{str(path)!r} is damaged: {error}"
        raise DamagedState(msg) from error
    if vm_name != store.vm_name:
        msg = f"{str(path)!r} is a drill of VM {vm_name!r}, not of {store.vm_name!r}"
        raise InvalidConfiguration(msg)
    if sizes != dict(store.disks):
        msg = f"{str(path)!r} is damaged: its disks {sizes} are not the store's "
        msg += f"{dict(store.disks)}"
        raise DamagedState(msg)
    return point, block_bytes, sizes


def _disk_files(area: Path, disk: str) -> tuple[Path, Path]:
    return safe_child(area, disk + OVERLAY_SUFFIX), safe_child(area, disk + MAP_SUFFIX)


def _base_of(view: PointView, disk: str) -> BaseRead:
    def read(offset: int, length: int) -> bytes:
        return view.read(disk, offset, length)

    return read
