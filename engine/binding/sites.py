"""Both sites as a VM's binding sees them: storage, reachability, and the way to each.

An engine has two sites, ``primary`` and ``secondary``. Each holds its own control
state, the disks of the VMs active there, and the replicas of the VMs replicated to it;
which role a site plays for a VM is data (the VM's control row), never its name. A VM
replicates from its active site *towards* the other one, through the replica interface
whose target is that other site (:meth:`Sites.towards`).

**Reachability is a fact the binding is told, and obeys.** A site that is down (its
hosts crashed, :meth:`Sites.mark_down`) has no open storage here: nothing of it is read
or written until it is back (:meth:`Sites.mark_up` with its reopened storage), so no
figure the engine reports can come from a site it could not reach. A site whose VMM
server is disconnected from the vault is up (its data still moves host to host) but
takes no order through that server. The link is one switch for both directions.

**Storage is full** when the folder holding a site's replicas has less than
:data:`REPLICA_STORAGE_RESERVE_BYTES` free (as the file-operation layer in force reports
it): the model then refuses the transfers that would land there, with its own words,
instead of letting them fail half-way on ``ENOSPC``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Final

from engine.control.site import SiteStorage
from engine.errors import InvalidConfiguration, SiteUnreachable
from engine.storage import files
from engine.transport.interface import ReplicaTarget

PRIMARY: Final = "primary"
SECONDARY: Final = "secondary"
SITE_NAMES: Final = (PRIMARY, SECONDARY)

REPLICA_STORAGE_RESERVE_BYTES: Final = 64 * 1024
"""Below this much free space at a site's replica folder, its storage counts as full."""

LinkSwitch = Callable[[bool], None]
"""Sets the link up or down (the in-process transports' switch)."""


def other_site(site: str) -> str:
    """The site across the link."""
    return SECONDARY if site == PRIMARY else PRIMARY


def direction(active_site: str) -> str:
    """The replication direction away from ``active_site``, as the control row says."""
    return f"{active_site}->{other_site(active_site)}"


class Sites:
    """The two sites of an engine: their storage when up, the transports between."""

    def __init__(
        self,
        storage: Mapping[str, SiteStorage],
        towards: Mapping[str, ReplicaTarget],
        *,
        set_link: LinkSwitch,
        link_up: bool = True,
    ) -> None:
        """``towards[site]`` is the replica interface whose target is ``site``."""
        self._storage: dict[str, SiteStorage | None] = dict(storage)
        self._towards = dict(towards)
        self._connected = dict.fromkeys(SITE_NAMES, True)
        self._set_link = set_link
        self._link_up = link_up

    # -- facts -------------------------------------------------------------------------

    def up(self, site: str) -> bool:
        """Whether the site's hosts are up (its storage open here)."""
        return self._storage.get(_known(site)) is not None

    def connected(self, site: str) -> bool:
        """Whether the site's VMM server is connected to the vault."""
        return self._connected[_known(site)]

    def storage_full(self, site: str) -> bool:
        """Whether the site is up and its replica storage has no room left."""
        found = self._storage.get(_known(site))
        if found is None:
            return False
        return (
            files.current().free_bytes(found.replicas) < REPLICA_STORAGE_RESERVE_BYTES
        )

    @contextmanager
    def memoised(self) -> Iterator[None]:
        """One engine operation: each replica interface may reuse its answers
        (``ReplicaTarget.memoised``: a replica server is asked its VM's status and
        its health once, until something changes)."""
        with ExitStack() as stack:
            for target in self._towards.values():
                stack.enter_context(target.memoised())
            yield

    @property
    def link_up(self) -> bool:
        """Whether data can travel between the sites (as the transports report it)."""
        return self._link_up and all(
            self._towards[site].reachable() for site in SITE_NAMES if self.up(site)
        )

    def set_link(self, up: bool) -> None:  # noqa: FBT001  (a fact, not a flag)
        """Bring the link up or down (both directions)."""
        self._set_link(up)
        self._link_up = up

    def set_connected(self, site: str, *, connected: bool) -> None:
        """Connect or disconnect the site's VMM server from the vault."""
        self._connected[_known(site)] = connected

    # -- access ------------------------------------------------------------------------

    def storage(self, site: str) -> SiteStorage:
        """The site's storage; :class:`SiteUnreachable` while it is down."""
        found = self._storage.get(_known(site))
        if found is None:
            msg = f"site {site!r} is down: nothing of it can be read or changed until "
            msg += "it recovers (recover_site)"
            raise SiteUnreachable(msg)
        return found

    def towards(self, site: str) -> ReplicaTarget:
        """The replica interface whose target is ``site`` (refused while it is down)."""
        self.storage(site)
        return self._towards[site]

    def up_sites(self) -> Iterator[SiteStorage]:
        """The storage of every site that is up, primary first."""
        for site in SITE_NAMES:
            found = self._storage.get(site)
            if found is not None:
                yield found

    def mark_down(self, site: str) -> SiteStorage:
        """Forget the site's storage (the caller closes it); return it."""
        found = self.storage(site)
        self._storage[site] = None
        return found

    def mark_up(self, site: str, storage: SiteStorage, towards: ReplicaTarget) -> None:
        """The site is back with its reopened storage and the transport towards it."""
        if self._storage.get(_known(site)) is not None:
            msg = f"site {site!r} is already up"
            raise InvalidConfiguration(msg)
        self._storage[site] = storage
        self._towards[site] = towards


def _known(site: str) -> str:
    if site not in SITE_NAMES:
        msg = f"site={site!r} is not a site of this engine; sites: {list(SITE_NAMES)}"
        raise InvalidConfiguration(msg)
    return site
