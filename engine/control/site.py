"""A site on disk: one storage root, its owner's lock, its directories, and its durable
control state.

Layout under a site's storage root (every name below the root is validated, so a hostile
VM or disk name cannot escape it)::

    <root>/site.lock                  the owner's lock (storage/owner_lock.py)
    <root>/control.sqlite3            the site's control state (``store.py``)
    <root>/vms/<vm>/<disk>.img        the disks of the VMs active here
    <root>/vms/<vm>/<disk>.img.hrl    each disk's change log, beside it
    <root>/outbox/<vm>/cycle-<id>/    logs sealed at a cut, kept until applied
    <root>/inbox/<vm>/...             what the transport delivered (``transport``)
    <root>/replicas/<vm>/...          the replica store of a VM replicated here

:meth:`SiteStorage.open` works in this order, so that nothing is read or changed by a
process that does not own the site:

1. create the root (if missing) and take its lock (:class:`SiteLocked` if another
   engine, in this process or another, holds it);
2. refuse a control file that is missing or empty over a root that already holds VM
   data (anything in ``vms/``, ``outbox/``, ``inbox/`` or ``replicas/``): a fresh
   control file would silently forget those VMs, so this is :class:`DamagedState`;
3. create the directories, then open (create, migrate, check) the control file.

A site never decides anything; it only names places. The one exception to "the control
file says what exists" is the migration from schema 1, which had no ``disk`` table: the
disks of each VM it tracks are read, once and in the migration's transaction, from the
images ``<root>/vms/<vm>/*.img`` (name from the file name, size from the file's size).
This is the only place that lists a VM's folder to learn its disks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from engine.clock import Clock
from engine.control.store import ControlStore
from engine.errors import DamagedState, InvalidConfiguration, InvalidName
from engine.names import safe_child, validate_disk_name, validate_site_name
from engine.storage import files
from engine.storage.owner_lock import SiteLock

CONTROL_FILE: Final = "control.sqlite3"
DATA_DIRECTORIES: Final = ("vms", "outbox", "inbox", "replicas")
"""The directories that hold VM data (a control file must exist over any of it)."""
ENTRIES_SHOWN: Final = 10
"""How many entries of each data directory a refusal names."""
CONTROL_PATH_BYTES_MAX: Final = 504
"""Longest absolute path of a control file SQLite opens here: its unix VFS allows a
database 512 bytes of full path name and names the rollback journal by adding
``-journal`` (8 bytes); past that it answers "unable to open database file", which
would read as a damaged file."""


def validate_root(root: object, *, argument: str = "root") -> Path:
    """Return ``root`` as a path when its control file's path fits SQLite's limit.

    Raises :class:`InvalidConfiguration` otherwise, before anything is created. The
    names below the root are at most 64 characters each (``engine/names.py``), so
    every file a site holds has a name the filesystem accepts once this holds.
    """
    path = Path(root)  # type: ignore[arg-type]
    control = Path(os.path.abspath(path)).resolve() / CONTROL_FILE
    size = len(os.fsencode(control))
    if size > CONTROL_PATH_BYTES_MAX:
        longest = CONTROL_PATH_BYTES_MAX - len(CONTROL_FILE) - 1
        msg = f"{argument}={str(path)[:60] + '...'!r} is too deep: its control file's "
        msg += f"path would be {size} bytes long, and SQLite opens at most "
        msg += f"{CONTROL_PATH_BYTES_MAX}; choose a storage root whose absolute path "
        msg += f"is at most {longest} bytes"
        raise InvalidConfiguration(msg)
    return path


@dataclass
class SiteStorage:
    """The directories and the control state of one site, owned by this object."""

    name: str
    root: Path
    control: ControlStore
    lock: SiteLock = field(repr=False)
    held: list[SiteLock] = field(default_factory=list, repr=False)
    """Other locks in this root released with the site (:meth:`hold`)."""

    @classmethod
    def open(
        cls, name: str, root: Path, clock: Clock, *, lock: SiteLock | None = None
    ) -> SiteStorage:
        """Lock and open (creating it if new) the site ``name`` at ``root``.

        Raises :class:`SiteLocked` when another engine owns the site, and
        :class:`DamagedState` when its control state is missing, empty or damaged.
        ``lock``, from :meth:`lock_root`, is a lock the caller took already (an engine
        locks both of its sites before it creates anything in either).
        """
        validate_site_name(name)
        root = Path(root)
        if lock is None:
            lock = cls.lock_root(name, root, clock)
        try:
            control_path = root / CONTROL_FILE
            found = _vm_data(root)
            if found and not _holds_data(control_path):
                state = "missing" if not control_path.exists() else "empty"
                msg = f"site {name!r} at {str(root)!r} holds VM data {found} but its "
                msg += f"control file {str(control_path)!r} is {state}: restore "
                msg += f"{CONTROL_FILE} from a backup, or move the site aside to "
                msg += "start afresh"
                raise DamagedState(msg)
            for directory in DATA_DIRECTORIES:
                files.make_directory_durably(root / directory)
            control = ControlStore.open(
                control_path,
                site_name=name,
                clock=clock,
                create=not found,
                legacy_disks=lambda vm_name: _images(root, vm_name),
            )
        except BaseException:
            lock.release()
            raise
        return cls(name, root, control, lock)

    @staticmethod
    def lock_root(name: str, root: Path, clock: Clock) -> SiteLock:
        """Take the site's lock (creating only the root folder and the lock file)."""
        validate_site_name(name)
        files.make_directory_durably(validate_root(root))
        return SiteLock.acquire(name, Path(root), clock)

    @property
    def replicas(self) -> Path:
        """The root of the replica stores held here."""
        return self.root / "replicas"

    def vm_directory(self, vm_name: str) -> Path:
        """Where the disks of VM ``vm_name`` live while it is active here."""
        return safe_child(self.root, "vms", vm_name)

    def disk_path(self, vm_name: str, disk: str) -> Path:
        """The image file of ``disk`` of VM ``vm_name``."""
        return safe_child(self.root, "vms", vm_name, disk + ".img")

    def outbox(self, vm_name: str, cycle_id: int) -> Path:
        """Where the logs of cycle ``cycle_id`` wait until the target applied them."""
        return safe_child(self.root, "outbox", vm_name, f"cycle-{cycle_id}")

    def hold(self, lock: SiteLock) -> None:
        """Release ``lock`` (another role's lock in this root, such as the replica
        stores' one) when the site closes."""
        self.held.append(lock)

    def close(self) -> None:
        """Close the control state, then release the site (idempotent)."""
        try:
            self.control.close()
        finally:
            for lock in self.held:
                lock.release()
            self.lock.release()


def _vm_data(root: Path) -> dict[str, list[str]]:
    """What the data directories hold: directory -> sorted entry names."""
    found = {}
    for directory in DATA_DIRECTORIES:
        try:
            entries = sorted(os.listdir(root / directory))
        except FileNotFoundError:
            continue
        if entries:
            shown = entries[:ENTRIES_SHOWN]
            more = len(entries) - len(shown)
            found[directory] = shown + ([f"... {more} more"] if more else [])
    return found


def _holds_data(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _images(root: Path, vm_name: str) -> dict[str, int]:
    """The disks of ``vm_name`` as its images show them (the schema-1 migration)."""
    directory = safe_child(root, "vms", vm_name)
    disks = {}
    for image in sorted(directory.glob("*.img")):
        disk = image.name.removesuffix(".img")
        try:
            validate_disk_name(disk)
        except InvalidName as error:
            msg = f"image {str(image)!r} of VM {vm_name!r} has no valid disk name "
            msg += f"({error}): rename or remove it, then open the site again"
            raise DamagedState(msg) from error
        disks[disk] = image.stat().st_size
    if not disks or not all(disks.values()):
        msg = f"VM {vm_name!r} is in the control file of schema version 1 but its "
        msg += f"folder {str(directory)!r} holds no usable disk image (*.img, found "
        msg += f"{disks}); restore its images to migrate the site"
        raise DamagedState(msg)
    return disks
