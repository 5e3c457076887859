"""What a step needs from the world: the sites it acts on, and the data paths it uses.

The model's guards say what each action needs; these properties say the same from
the reference's side, over data, so a guard dropped or pointed at the wrong site
shows up as a step that happened where it could not have. They read the sites and
the link before the step and what the step changed, never a guard.

Roles are those of the VM before the step: the *source* is the active site (the
copy the workload writes, replication ships from); the *replica site* holds the
replica and the recovery points: the other site until a failover completes, the
active site after it (the replica VM runs there until commit).
"""

from __future__ import annotations

from invariants.fields import EVERY_VM_FIELD
from invariants.kinds import Invariant, step
from model import Call, ModelConfig, Phase, Site, SystemState, VmState

#: Decision 7: operator actions ordered through the source site's VMM server.
SOURCE_SIDE = frozenset(
    {"enable_protection", "pause", "resume", "resynchronize", "disable_protection"}
)

#: Decisions 7 and 12: operator actions (and the vault's orders: starting the replica
#: VM) ordered through the replica site's VMM server.
REPLICA_SIDE = frozenset(
    {
        "start_test_failover",
        "cleanup_test_failover",
        "failover",
        "unplanned_failover",
        "complete_failover",
        "change_recovery_point",
        "commit",
        "cancel_failover",
    }
)

#: Decision 7: actions that need both sites reachable and the link.
BOTH_SIDES = frozenset({"planned_failover", "reverse_replication"})

#: Phases after a failover completed and before commit ends it: the recovery points
#: are at the active site.
POINTS_AT_ACTIVE = frozenset({Phase.FAILED_OVER, Phase.COMMITTED})


def replica_site(vm: VmState) -> Site:
    """The site holding the replica and the recovery points (module essay)."""
    return vm.active if vm.phase in POINTS_AT_ACTIVE else vm.active.other


def _changed(pre: SystemState, call: Call, post: SystemState) -> list[int]:
    """The VMs the step changed (a plan step may change several)."""
    return [
        index
        for index, (before, after) in enumerate(zip(pre.vms, post.vms, strict=True))
        if before != after or (call.vm == index)
    ]


@step(
    "an operator action ran without the site it acts on up and connected",
    reads=(
        "vm.phase",
        "vm.active",
        "site.up",
        "site.connected",
        "link_up",
    ),
)
def operator_actions_need_their_site(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """An operator action happens only with the site it acts on reachable.

    Rule: decision 7, "an operator action needs the site it acts on to be up and
    connected": source-side actions (enable, pause, resume, resynchronise, disable)
    the source site; target-side actions (drill and cleanup, failover, change of
    recovery point, commit, cancel) the site of the replica; decision 12, starting
    the replica VM is ordered through that site's VMM; a planned failover and reverse
    replication both sites and the link. Disaster: a job reported done that the
    vault could never have ordered, leaving the product and the operator's view of
    the VM apart. Applies: every step of a VM action named here, from the state
    before it.
    """
    del config, post
    if call.vm is None:
        return True
    vm = pre.vms[call.vm]
    if call.action in SOURCE_SIDE:
        return pre.reachable(vm.active)
    if call.action in REPLICA_SIDE:
        return pre.reachable(replica_site(vm))
    if call.action in BOTH_SIDES:
        return all(pre.reachable(site) for site in Site) and pre.link_up
    return True


def _received_data(before: VmState, after: VmState) -> bool:
    """Whether the replica site received data in this step: a disk copied, the
    replica brought closer to the source, or a newer recovery point made."""
    if before.other is None or after.other is None or before.active != after.active:
        return False  # protection starts or ends, or a failover moved the source
    if before.phase is Phase.FAILED_OVER:
        return False  # another point chosen: copies re-based, nothing is sent
    if after.disks_copied > before.disks_copied:
        return True
    old, new = before.other, after.other
    if new.behind < old.behind or new.divergent < old.divergent:
        return True
    return bool(after.points) and (
        not before.points or after.points[0].copy.behind < before.points[0].copy.behind
    )


@step(
    "data reached the replica site without both hosts, the link and room there",
    reads=(
        "vm.phase",
        "vm.active",
        "vm.other",
        "vm.disks_copied",
        "vm.points",
        "site.up",
        "site.storage_full",
        "link_up",
    ),
)
def data_transfers_need_hosts_link_and_room(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """Data reaches the replica site only with both hosts up, the link, and room.

    Rule: decision 12, "data moves host to host: copying a disk, a delta cycle, the
    transfer of the final sync and a resynchronisation's block exchange need the
    hosts they touch up and the link, not the VMM servers' connection"; decision 8,
    a delta cycle fails while the target storage is full. Disaster: a recovery point
    recorded for data that could not have arrived (a host down, the link cut, the
    disk full): the failover it promises starts from a copy that is not there.
    Applies: every step that copies a disk, brings the other copy closer to the
    active one or makes a newer recovery point (not the change of recovery point
    before commit, which re-bases the copies where they are).
    """
    del config
    for index in _changed(pre, call, post):
        before, after = pre.vms[index], post.vms[index]
        if not _received_data(before, after):
            continue
        source, target = pre.site(before.active), pre.site(before.active.other)
        if not (source.up and target.up and pre.link_up) or target.storage_full:
            return False
    return True


@step(
    "new disks were written at a site whose storage is full",
    reads=(
        "vm.phase",
        "vm.active",
        "vm.test_copy",
        "site.storage_full",
    ),
)
def new_disks_need_room_at_their_site(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """A test VM's disks and a committed failover's disks need room where they go.

    Rule: decision 12, creating the test VM of a drill is ordered at the replica
    site, whose disks it writes; committing makes the chosen recovery point the
    VM's disks at its site ("commit deletes all available recovery points", the
    point's data becoming the disks). Disaster: a drill or a commit reported done on
    a site that had no room for the disks it wrote. Applies: the step that creates
    a test copy, and the step from ``failed_over`` to ``committed``.
    """
    del config
    for index in _changed(pre, call, post):
        before, after = pre.vms[index], post.vms[index]
        site = replica_site(before)
        drill = before.test_copy is None and after.test_copy is not None
        commit = before.phase is Phase.FAILED_OVER and after.phase is Phase.COMMITTED
        if (drill or commit) and pre.site(site).storage_full:
            return False
    return True


#: Every operator action of the model (decision 7's list, and the drill's cleanup).
OPERATOR_ACTIONS = (SOURCE_SIDE | REPLICA_SIDE | BOTH_SIDES) - {"complete_failover"}


@step(
    "an operator action was accepted and changed nothing",
    reads=EVERY_VM_FIELD,
)
def operator_actions_take_effect(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """An operator action the product accepts changes the VM's phase or data.

    Rule: each operator operation of the reference does something the operator can
    see: pause stops shipping, resume restarts it, resynchronise compares the disks,
    a failover step moves the job on (decisions 3-6, 10); one the product cannot
    carry out is refused with the way out (decisions 4 and 10), never accepted as
    done. Disaster: a job reported successful that did nothing, so the operator
    believes replication resumed, or a drill cleaned up, when it was not. Applies:
    every step of an operator action on a VM.
    """
    del config
    if call.vm is None or call.action not in OPERATOR_ACTIONS:
        return True
    return pre.vms[call.vm] != post.vms[call.vm]


@step(
    "a write was acknowledged by a copy that was not running",
    reads=(
        "vm.phase",
        "vm.active",
        "vm.running",
        "vm.test_copy",
        "site.up",
    ),
)
def writes_come_from_a_running_copy(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """Only a running copy takes writes: the active VM, a divergent one, a test VM.

    Rule: the workload writes to the VM where it runs; a failed shutdown leaves the
    old copy running and taking writes (decision 9); a drill's test VM runs at the
    replica site (decision 4); between a failover's completion and its commit the
    workload does not reach the replica VM (docs/model.md, decision 1). Disaster:
    writes counted (and reported lost, or shipped) that no running VM could have
    made, so every loss figure after them is wrong. Applies: every write step.
    """
    del config, post
    if call.vm is None:
        return True
    vm = pre.vms[call.vm]
    if call.action == "write":
        return vm.active in vm.running and vm.phase is not Phase.FAILED_OVER
    if call.action == "write_stale_copy":
        return vm.active.other in vm.running
    if call.action == "write_test_vm":
        return vm.test_copy is not None and pre.site(vm.active.other).up
    return True


REQUIREMENT_INVARIANTS: tuple[Invariant, ...] = (
    writes_come_from_a_running_copy,
    operator_actions_take_effect,
    operator_actions_need_their_site,
    data_transfers_need_hosts_link_and_room,
    new_disks_need_room_at_their_site,
)
