"""Reusable action guards: sites reachable, link up, storage free, copies within bounds.

Decision 7 (docs/behaviour.md): an operator action needs the site it acts on up and
connected to the vault; every data transfer needs the link; applying data needs room at
the target. These guards say so in the operator's words when they fail.

Roles are relative to the VM: the *active* site runs the workload and is the source of
replication; the *other* site holds the replica (before a failover completes) or the
old source (after it).
"""

from __future__ import annotations

from collections.abc import Callable

from model.action import Context, Guard
from model.state import Site, SystemState, VmState


def _site_words(state: SystemState, site: Site) -> str:
    here = state.site(site)
    if not here.up:
        return "is down"
    if not here.connected:
        return "is disconnected from the vault"
    return "is reachable"


def site_reachable(role: str, pick: Callable[[VmState], Site]) -> Guard:
    """The VM's ``role`` site (chosen by ``pick``) is up and connected to the vault."""

    def check(ctx: Context) -> bool:
        return ctx.state.reachable(pick(ctx.vm))

    def explain(ctx: Context) -> str:
        site = pick(ctx.vm)
        return f"the {role} site ({site.value}) {_site_words(ctx.state, site)}"

    return Guard(f"{role.replace(' ', '_')}_site_reachable", check, explain)


def site_up(role: str, pick: Callable[[VmState], Site]) -> Guard:
    """The VM's ``role`` site is up (the replication agent needs no vault)."""

    def check(ctx: Context) -> bool:
        return ctx.state.site(pick(ctx.vm)).up

    def explain(ctx: Context) -> str:
        return f"the {role} site ({pick(ctx.vm).value}) is down"

    return Guard(f"{role.replace(' ', '_')}_site_up", check, explain)


def _active(vm: VmState) -> Site:
    return vm.active


def _other(vm: VmState) -> Site:
    return vm.active.other


ACTIVE_REACHABLE = site_reachable("active", _active)
OTHER_REACHABLE = site_reachable("other", _other)
ACTIVE_UP = site_up("active", _active)
OTHER_UP = site_up("other", _other)

LINK_UP = Guard(
    "link_up",
    lambda ctx: ctx.state.link_up,
    lambda ctx: "the link between the sites is down",
)

OTHER_STORAGE_FREE = Guard(
    "other_storage_free",
    lambda ctx: not ctx.state.site(ctx.vm.active.other).storage_full,
    lambda ctx: f"the storage at the {ctx.vm.active.other.value} site is full",
)

ACTIVE_STORAGE_FREE = Guard(
    "active_storage_free",
    lambda ctx: not ctx.state.site(ctx.vm.active).storage_full,
    lambda ctx: (
        f"the storage at the {ctx.vm.active.value} site is full (commit writes there: "
        "the chosen point becomes the disks)"
    ),
)

#: A data transfer from the active site to the other one: both up, link, room.
TRANSFER = (ACTIVE_UP, OTHER_UP, LINK_UP, OTHER_STORAGE_FREE)

#: Failback and reverse replication: both sites reachable and the link (decision 7).
BOTH_SITES_AND_LINK = (ACTIVE_REACHABLE, OTHER_REACHABLE, LINK_UP)


def within_bound(name: str, check: Callable[[Context], bool], what: str) -> Guard:
    """A bound of the explored environment (not a product rule), explained as such."""
    return Guard(
        name,
        check,
        lambda ctx: f"{what} (a bound of the model's environment, not a product rule)",
        bound=True,
    )
