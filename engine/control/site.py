"""A site on disk: one storage root, its directories, and its durable control state.

Layout under a site's storage root (every name below the root is validated, so a hostile
VM or disk name cannot escape it)::

    <root>/control.sqlite3            the site's control state (``control_store.py``)
    <root>/vms/<vm>/<disk>.img        the disks of the VMs active here
    <root>/vms/<vm>/<disk>.img.hrl    each disk's change log, beside it
    <root>/outbox/<vm>/cycle-<id>/    logs sealed at a cut, kept until applied
    <root>/inbox/<vm>/...             what the transport delivered (``transport.py``)
    <root>/replicas/<vm>/...          the replica store of a VM replicated here

A site never decides anything; it only names places.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.clock import Clock
from engine.control.store import ControlStore
from engine.names import safe_child, validate_site_name
from engine.storage import files

CONTROL_FILE: Final = "control.sqlite3"


@dataclass
class SiteStorage:
    """The directories and the control state of one site."""

    name: str
    root: Path
    control: ControlStore

    @classmethod
    def open(cls, name: str, root: Path, clock: Clock) -> SiteStorage:
        """Open (creating the directories if needed) the site ``name`` at ``root``."""
        validate_site_name(name)
        root = Path(root)
        for directory in ("vms", "outbox", "inbox", "replicas"):
            files.make_directory_durably(root / directory)
        control = ControlStore.open(root / CONTROL_FILE, site_name=name, clock=clock)
        return cls(name, root, control)

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

    def close(self) -> None:
        """Close the control state."""
        self.control.close()
