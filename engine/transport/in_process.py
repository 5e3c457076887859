"""Moving replication data between sites: the ``Transport`` interface and its in-process
form.

A transport carries files from a source site to a target site's **inbox** and says
whether the other site can be reached. It carries two kinds of payload:

- a cycle: one sealed change log per disk of a VM, all cut at one point;
- an initial copy: the disk images, one by one, copied while tracking runs.

It never interprets what it carries (the replica store verifies every log before
applying it), and it never decides anything: the binding layer asks it to ship and
reacts to :class:`TransportError` (link down) or :class:`StorageFull` (the target has no
room). The :class:`Transport` protocol is small on purpose, so an HTTP(S) transport
between hosts can implement it later with the same inbox layout on the receiving side.

:class:`InProcessTransport` copies between storage roots on this machine, for
embedding, tests and fuzzing. Its ``link_up`` switch plays the network: while it is
``False`` every transfer raises :class:`TransportError` naming both sites, and nothing
reaches the target.

Inbox layout under the target site's storage root (names validated, so a hostile VM or
disk name cannot escape the root)::

    <target_root>/inbox/<vm_name>/cycle-<cycle_id>/<disk>.hrl
    <target_root>/inbox/<vm_name>/initial/<disk>.img   (one file at a time)

A shipment is copied into a temporary directory (``<name>.tmp``), every file fsynced,
then renamed into place: the target sees a whole cycle or none of it, even after a
crash mid-copy. Shipping the same cycle again replaces the earlier copy (a retry after
the sender lost the acknowledgement), so shipping is idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from engine.errors import InvalidConfiguration, StorageFull, TransportError
from engine.names import safe_child, validate_disk_name, validate_site_name
from engine.storage import durable_file
from engine.storage import files as filesystem
from engine.storage.files import fsync_directory
from engine.storage.sparse_copy import copy_disk_image

INBOX: Final = "inbox"
INITIAL_COPY: Final = "initial"
LOG_SUFFIX: Final = ".hrl"
IMAGE_SUFFIX: Final = ".img"

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while a disk image travels."""


class Transport(Protocol):
    """Carries cycles and initial copies from a source site to a target's inbox."""

    def reachable(self, source_site: str, target_site: str) -> bool:
        """Return whether data can go from ``source_site`` to ``target_site`` now."""
        ...

    def ship_cycle(
        self,
        source_site: str,
        target_site: str,
        vm_name: str,
        cycle_id: int,
        logs: Mapping[str, Path],
    ) -> dict[str, Path]:
        """Deliver a cycle's sealed logs (disk -> path); return the target paths."""
        ...

    def ship_disk_image(
        self,
        source_site: str,
        target_site: str,
        vm_name: str,
        disk: str,
        image: Path,
        *,
        progress: Progress | None = None,
    ) -> Path:
        """Deliver one disk image of an initial copy, whole or not at all."""
        ...


@dataclass(frozen=True, slots=True)
class TransportStatistics:
    """What an in-process transport has carried and refused since it was built."""

    cycles_shipped: int
    initial_copies_shipped: int  # disk images
    files_shipped: int
    bytes_shipped: int
    transfers_refused: int


class InProcessTransport:
    """A :class:`Transport` that copies files between storage roots on this machine."""

    def __init__(self, site_roots: Mapping[str, Path], *, link_up: bool = True) -> None:
        """Connect the sites named in ``site_roots`` (site -> storage root)."""
        if len(site_roots) < 2:
            msg = f"site_roots={dict(site_roots)!r} must name at least two sites"
            raise InvalidConfiguration(msg)
        self._roots = {
            validate_site_name(site): Path(root) for site, root in site_roots.items()
        }
        self.link_up = link_up
        self._cycles_shipped = 0
        self._initial_copies_shipped = 0
        self._files_shipped = 0
        self._bytes_shipped = 0
        self._transfers_refused = 0

    def reachable(self, source_site: str, target_site: str) -> bool:
        """Return whether the link is up between the two (known, distinct) sites."""
        self._check_sites(source_site, target_site)
        return self.link_up

    def ship_cycle(
        self,
        source_site: str,
        target_site: str,
        vm_name: str,
        cycle_id: int,
        logs: Mapping[str, Path],
    ) -> dict[str, Path]:
        """Copy a cycle's logs into the target's inbox, whole or not at all."""
        shipped = self._ship(
            source_site,
            target_site,
            vm_name,
            shipment=_cycle_directory(cycle_id),
            files=logs,
            suffix=LOG_SUFFIX,
        )
        self._cycles_shipped += 1
        return shipped

    def ship_disk_image(
        self,
        source_site: str,
        target_site: str,
        vm_name: str,
        disk: str,
        image: Path,
        *,
        progress: Progress | None = None,
    ) -> Path:
        """Copy one disk image of an initial copy into the target's inbox.

        Disks travel one by one; each lands whole or not at all (a partial file is
        renamed into place only when complete), holes stay holes, ``progress`` is
        called with (bytes done, bytes total).
        """
        self._check_sites(source_site, target_site)
        validate_disk_name(disk)
        if not self.link_up:
            self._transfers_refused += 1
            msg = f"link from site {source_site!r} to site {target_site!r} is down: "
            msg += (
                f"disk {disk!r} of VM {vm_name!r} was not copied; retry when it is up"
            )
            raise TransportError(msg)
        directory = safe_child(self._roots[target_site], INBOX, vm_name, INITIAL_COPY)
        filesystem.make_directory_durably(directory)
        target = safe_child(directory, disk + IMAGE_SUFFIX)
        try:
            statistics = copy_disk_image(Path(image), target, progress=progress)
        except StorageFull as error:
            msg = f"site {target_site!r} is out of space receiving disk {disk!r} of "
            msg += f"VM {vm_name!r}; nothing was delivered: free space and retry"
            raise StorageFull(msg) from error
        self._bytes_shipped += statistics.bytes_copied
        self._files_shipped += 1
        self._initial_copies_shipped += 1
        return target

    def statistics(self) -> TransportStatistics:
        """Return what was carried and refused."""
        return TransportStatistics(
            cycles_shipped=self._cycles_shipped,
            initial_copies_shipped=self._initial_copies_shipped,
            files_shipped=self._files_shipped,
            bytes_shipped=self._bytes_shipped,
            transfers_refused=self._transfers_refused,
        )

    def _ship(
        self,
        source_site: str,
        target_site: str,
        vm_name: str,
        *,
        shipment: str,
        files: Mapping[str, Path],
        suffix: str,
    ) -> dict[str, Path]:
        self._check_sites(source_site, target_site)
        if not files:
            msg = f"nothing to ship for VM {vm_name!r}: give one file per disk"
            raise InvalidConfiguration(msg)
        for disk, path in files.items():
            validate_disk_name(disk)
            if not Path(path).is_file():
                msg = f"files[{disk!r}]={str(path)!r} does not exist at site "
                msg += f"{source_site!r}; nothing was shipped"
                raise InvalidConfiguration(msg)
        if not self.link_up:
            self._transfers_refused += 1
            msg = f"link from site {source_site!r} to site {target_site!r} is down: "
            msg += f"{shipment} of VM {vm_name!r} was not shipped; retry when it is up"
            raise TransportError(msg)
        vm_inbox = safe_child(self._roots[target_site], INBOX, vm_name)
        final = safe_child(vm_inbox, shipment)
        temporary = durable_file.temporary_path(final)
        try:
            shipped = self._copy_into(temporary, files, suffix)
        except (OSError, StorageFull) as error:
            filesystem.current().remove_tree(temporary)
            full = isinstance(error, StorageFull) or durable_file.is_storage_full(error)
            if full:
                msg = f"site {target_site!r} is out of space receiving {shipment} of "
                msg += f"VM {vm_name!r}; nothing was delivered: free space and retry"
                raise StorageFull(msg) from error
            raise
        if final.exists():
            filesystem.current().remove_tree(final)
        filesystem.current().rename(temporary, final)
        fsync_directory(vm_inbox)
        return {disk: final / path.name for disk, path in shipped.items()}

    def _copy_into(
        self, directory: Path, files: Mapping[str, Path], suffix: str
    ) -> dict[str, Path]:
        filesystem.remove_tree_durably(directory)  # debris of a transfer cut short
        filesystem.make_directory_durably(directory)
        shipped = {}
        for disk, source in files.items():
            target = safe_child(directory, disk + suffix)
            copied = durable_file.copy_file_atomically(Path(source), target)
            self._bytes_shipped += copied
            self._files_shipped += 1
            shipped[disk] = target
        fsync_directory(directory)
        return shipped

    def _check_sites(self, source_site: str, target_site: str) -> None:
        for argument, site in (
            ("source_site", source_site),
            ("target_site", target_site),
        ):
            if site not in self._roots:
                msg = f"{argument}={site!r} is not a site of this transport; "
                msg += f"choices: {sorted(self._roots)}"
                raise InvalidConfiguration(msg)
        if source_site == target_site:
            msg = f"source_site and target_site are both {source_site!r}; "
            msg += "a transfer needs two different sites"
            raise InvalidConfiguration(msg)


def _cycle_directory(cycle_id: object) -> str:
    if isinstance(cycle_id, bool) or not isinstance(cycle_id, int) or cycle_id < 0:
        msg = f"cycle_id={cycle_id!r} must be an int >= 0"
        raise InvalidConfiguration(msg)
    return f"cycle-{cycle_id}"
