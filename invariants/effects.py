"""What a step does: the outcome docs/behaviour.md gives each event, read over data.

The requirement properties (``invariants.requirements``) say when a step may happen;
these say what it must leave behind, reading the states before and after, never the
effect's code: a fault changes what it names and nothing else; a shutdown stops the
copy it shut down; a final sync that completed leaves a point holding every write; a
loss is called exact exactly when the old source could be asked; an applied cycle is a
recovery point; a finished resynchronisation restarts tracking; a loss record never
leaves the state unshown; a VM without replication keeps nothing of it.

Step witnesses (SOMETIMES over steps) say the workload goes on writing while the
other site is down (an environment that stopped writing then would hide every bug
of tracking during an outage, and no state shows it: a copy lagging with its site
down may have lagged before the site went down), and that every outcome of a
shutdown tried before an unplanned failover happens.
"""

from __future__ import annotations

from dataclasses import fields

from invariants.kinds import Invariant, Kind, always, sometimes_step, step
from model import Call, Copy, LogHealth, ModelConfig, Phase, SystemState, VmState
from model.vm_actions import SHUTDOWN_COMPLETE, SHUTDOWN_REFUSED, SHUTDOWN_SYNC_CUT

#: Each site event: the SiteState field it sets, and to what.
SITE_EVENTS = {
    "crash_site": ("up", False),
    "recover_site": ("up", True),
    "disconnect_vault": ("connected", False),
    "reconnect_vault": ("connected", True),
    "fill_storage": ("storage_full", True),
    "free_storage": ("storage_full", False),
}

#: The link events: what they set ``link_up`` to.
LINK_EVENTS = {"cut_link": False, "repair_link": True}

#: The change-log faults: the health they leave the VM's logs in.
LOG_FAULTS = {"overflow_log": LogHealth.OVERFLOWED, "damage_log": LogHealth.DAMAGED}

#: The shutdown outcomes of an unplanned failover in which the source was shut down.
SHUT_DOWN = frozenset({SHUTDOWN_COMPLETE, SHUTDOWN_SYNC_CUT})


def _sites_as_named(pre: SystemState, call: Call, post: SystemState) -> bool:
    """A site event set its field at the site it names; nothing else of the sites
    or the link changed."""
    site = call.site
    if site is None:
        return False
    flag, value = SITE_EVENTS[call.action]
    if getattr(post.site(site), flag) is not value:
        return False
    same = [f.name for f in fields(post.site(site)) if f.name != flag]
    return (
        all(getattr(pre.site(site), n) == getattr(post.site(site), n) for n in same)
        and pre.site(site.other) == post.site(site.other)
        and pre.link_up == post.link_up
    )


@step(
    "an environment event did not do what it names, or hit another site",
    reads=("site.up", "site.connected", "site.storage_full", "link_up", "vm.log"),
)
def events_do_what_they_name(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """A fault or repair changes what it names, where it names, and nothing else
    of the sites or the link.

    Rule: docs/behaviour.md, decision 7 (a site up, its VMM connected, the link:
    three separate facts) and decision 8 (storage full, a log overflowed or
    damaged): each fault is one of these facts turning, at one site. Disaster: a
    fault that lands on the wrong site, or does nothing, makes every property
    checked after it a statement about another world; a weaker environment hides
    the bugs the fault was there to provoke. Applies: every site event, link event
    and change-log fault.
    """
    del config
    if call.action in SITE_EVENTS:
        return _sites_as_named(pre, call, post)
    if call.action in LINK_EVENTS:
        unchanged = (pre.primary, pre.secondary) == (post.primary, post.secondary)
        return unchanged and post.link_up is LINK_EVENTS[call.action]
    if call.action in LOG_FAULTS and call.vm is not None:
        return post.vms[call.vm].log is LOG_FAULTS[call.action]
    return True


@step(
    "a shutdown was tried through a source that was down or disconnected",
    reads=("site.up", "site.connected", "vm.active", "vm.running"),
)
def shutdown_first_needs_its_source(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """An unplanned failover shuts the source down only through its running VM at
    a source site that is up and connected.

    Rule: decision 14, "the shutdown is ordered through the source's VMM server;
    with it disconnected the shutdown fails"; a host that is down runs no VM to
    shut down. Disaster: a failover that reports a clean shutdown and an exact
    loss of 0 while the source, out of reach, may still run and write. Applies:
    every unplanned failover whose source was shut down.
    """
    del config, post
    if call.action != "unplanned_failover" or call.vm is None:
        return True
    if call.arg("shutdown") not in SHUT_DOWN:
        return True
    vm = pre.vms[call.vm]
    return pre.reachable(vm.active) and vm.active in vm.running


@step(
    "a shutdown stopped another copy than the source's, or none",
    reads=("vm.active", "vm.running"),
)
def a_shutdown_stops_the_source(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """A shutdown before an unplanned failover stops the source's copy, and only it;
    one refused or skipped leaves it running.

    Rule: decision 9, the shutdown is tried and may fail; a failed one leaves the
    old source running (two copies then run). Disaster: a source reported shut
    down that still takes writes, which the failover then silently loses; or a
    replica stopped in its place. Applies: every unplanned failover.
    """
    del config
    if call.action != "unplanned_failover" or call.vm is None:
        return True
    before, after = pre.vms[call.vm], post.vms[call.vm]
    source = before.active
    if call.arg("shutdown") in SHUT_DOWN:
        return after.running == before.running - {source}
    return after.running == before.running


@step(
    "a completed final sync left no point holding every acknowledged write",
    reads=("vm.points",),
)
def a_complete_final_sync_ships_everything(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """After a shutdown whose final sync completed, the newest recovery point is
    the source as it stopped.

    Rule: decision 9, "the loss it reports reflects what the final sync managed to
    ship": a complete final sync ships everything the source held. Disaster: the
    failover to "latest" starts from an older point and loses writes the product
    said were shipped. Applies: every unplanned failover with shutdown=complete.
    """
    del config, pre
    if call.action != "unplanned_failover" or call.vm is None:
        return True
    if call.arg("shutdown") != SHUTDOWN_COMPLETE:
        return True
    points = post.vms[call.vm].points
    return bool(points) and points[0].copy == Copy()


def _old_source_can_tell(pre: SystemState, before: VmState, after: VmState) -> bool:
    """Whether the old source could be asked what it never shipped, at the step
    that completed a failover (it moved the active site: a plan step may also have
    shut the source down in it) or changed its point: its host up, the link up, its
    VM stopped, and its change logs usable (``LossRecord.logs_tell``)."""
    old = after.active.other
    record = after.last_failover
    assert record is not None
    stopped = old not in after.running
    return pre.site(old).up and pre.link_up and stopped and record.logs_tell


@step(
    "a loss was called exact when the old source could not tell, or not when it could",
    reads=(
        "vm.last_failover",
        "vm.phase",
        "vm.active",
        "vm.running",
        "vm.log",
        "site.up",
        "link_up",
    ),
)
def a_loss_is_exact_when_the_old_source_can_tell(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """A failover's loss is reported exact if and only if the old source could be
    asked (its host up, the link up, its VM stopped, its logs usable), or the
    figure was already exact.

    Rule: the target can count the writes the old source never shipped only by
    asking it, over the link, once it has stopped taking writes, and only its
    change logs can count them (docs/behaviour.md, decision 9; docs/model.md,
    decision 12); when it can be asked, the product does, and says the figure.
    Disaster: an operator told "exactly 0 lost" while the old source is out of
    reach, its unshipped writes unknown; or told only "at least 0" when the exact
    figure was one question away, and deciding on it. Applies: the completion of
    a failover and every change of recovery point (once exact, a figure stays
    exact: the old source was stopped and has written nothing since).
    """
    del config
    for before, after in zip(pre.vms, post.vms, strict=True):
        record = after.last_failover
        if record is None or record == before.last_failover:
            continue
        was = before.last_failover
        if was is not None and was.reported_exact:
            if not record.reported_exact:
                return False
            continue
        if record.reported_exact != _old_source_can_tell(pre, before, after):
            return False
    return True


@step(
    "a delta cycle shipped changes and made no recovery point of them",
    reads=("vm.other", "vm.points"),
)
def each_applied_cycle_is_a_recovery_point(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """A delta cycle that brought the replica closer makes it the newest point.

    Rule: docs/behaviour.md, "each cycle the target applies becomes a recovery
    point". Disaster: the replica holds the newest data, the points grow older
    cycle after cycle, and a failover loses what the replica already had.
    Applies: every ``replicate`` step that shipped something.
    """
    del config
    if call.action != "replicate" or call.vm is None:
        return True
    before, after = pre.vms[call.vm], post.vms[call.vm]
    if before.other is None or after.other is None:
        return True
    if after.other.behind >= before.other.behind:
        return True
    return bool(after.points) and after.points[0].copy == after.other


@step(
    "a resynchronisation finished but did not leave it, or restart tracking",
    reads=("vm.phase", "vm.log", "vm.other", "vm.other_trusted"),
)
def a_finished_resynchronization_restarts_tracking(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """The end of a resynchronisation leaves ``resynchronizing`` with the copies
    equal, the copy trusted, and fresh (usable) change logs.

    Rule: decision 8, an unusable log sends the VM to ``resynchronizing``; the
    blocks compared and sent, replication goes on from new logs (docs/behaviour.md,
    decisions 6 and 15). Disaster: a resynchronisation that never ends, or one
    whose next cycle resynchronises again, forever: the VM never protected again.
    Applies: every ``complete_resynchronization``.
    """
    del config
    if call.action != "complete_resynchronization" or call.vm is None:
        return True
    vm = post.vms[call.vm]
    return (
        vm.phase is not Phase.RESYNCHRONIZING
        and vm.log is LogHealth.USABLE
        and vm.other == Copy()
        and vm.other_trusted
    )


@step(
    "a failover moved the old source's change logs to the new source",
    reads=("vm.active", "vm.log"),
)
def a_new_source_starts_fresh_logs(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """When a failover completes, the change logs that count are the new source's,
    which start empty: usable.

    Rule: after a failover the replica VM becomes the source and tracks its own
    writes (docs/behaviour.md, decision 6); the old source's logs stay with the old
    copy, and what they can tell is the loss record's (docs/model.md, decision
    12). Disaster: the new source's first cycle refused or resynchronised for a
    fault of the old site's logs, or its own unusable logs taken for good ones.
    Applies: every step that moves the active site.
    """
    del config
    return all(
        after.log is LogHealth.USABLE
        for before, after in zip(pre.vms, post.vms, strict=True)
        if after.active != before.active and call.vm is not None
    )


@step(
    "a loss record left the state without being shown",
    reads=("vm.last_failover", "vm.closed_report"),
)
def every_loss_record_ends_shown(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """When a failover's loss record leaves the state, the step shows it closed.

    Rule: decision 16 (disable closes the record, saying what was abandoned) and
    docs/model.md, "dropping what no future step can observe": the record leaves
    only as the final report of the step that ends it (reverse replication after a
    planned failover, the reconciliation after an unplanned one, disable).
    Disaster: a failover's loss never reported to the operator, so the writes it
    lost are lost silently. Applies: every step after which a VM's record is gone.
    """
    del config, call
    for before, after in zip(pre.vms, post.vms, strict=True):
        if before.last_failover is None or after.last_failover is not None:
            continue
        closed = after.closed_report
        if closed is None or closed.kind is not before.last_failover.kind:
            return False
    return True


#: Phases without replication: nothing of it is left (decisions 3 and 10).
NOT_REPLICATING = frozenset({Phase.UNPROTECTED, Phase.REPLICATION_STOPPED})


@always(
    "a VM without replication keeps change logs, a chosen point, or distrust",
    reads=("vm.phase", "vm.log", "vm.chosen_point", "vm.points", "vm.other_trusted"),
)
def no_replication_keeps_nothing_of_it(config: ModelConfig, state: SystemState) -> bool:
    """An unprotected VM, or one whose replication stopped, holds no change log to
    be unusable, no chosen point and no recovery point; an unprotected one no
    distrust of a copy it no longer has.

    Rule: decision 10, disable "deletes the replica's recovery points and the
    change logs"; docs/model.md, decision 3, a cancelled failover drops the logs
    and the points. Disaster: a later enable that inherits a damaged log or a
    stale choice of point, and resynchronises (or fails over) for a fault of the
    protection that was given up. Applies: ``unprotected`` and
    ``replication_stopped``.
    """
    del config
    for vm in state.vms:
        if vm.phase not in NOT_REPLICATING:
            continue
        if vm.log is not LogHealth.USABLE or vm.chosen_point is not None or vm.points:
            return False
        if vm.phase is Phase.UNPROTECTED and not vm.other_trusted:
            return False
    return True


@always(
    "a copy with no recovery point is trusted while it is resynchronised",
    reads=("vm.phase", "vm.points", "vm.other_trusted"),
)
def an_unfinished_copy_is_not_trusted(config: ModelConfig, state: SystemState) -> bool:
    """While a copy with no recovery point behind it is resynchronised, it is not
    trusted to be a past state of the source.

    Rule: decision 15, a copy becomes the first recovery point only when its
    initial copy or resynchronisation finishes; docs/model.md, decision 10, an
    initial copy over unusable logs is fuzzy until resynchronised. Disaster: a
    copy half rewritten, or copied over logs that lost changes, taken for the
    source's past: a failover or a reverse replication would start from it.
    Applies: ``resynchronizing`` without recovery points.
    """
    del config
    return all(
        not vm.other_trusted
        for vm in state.vms
        if vm.phase is Phase.RESYNCHRONIZING and not vm.points
    )


@sometimes_step(
    "the workload never writes while the other site is down",
    reads=("vm.active", "site.up"),
)
def write_while_the_other_site_is_down(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """The workload takes a write while the site holding its replica is down."""
    del config, post
    if call.action != "write" or call.vm is None:
        return False
    return not pre.site(pre.vms[call.vm].active.other).up


@sometimes_step(
    "a divergent copy never writes while the active site is down",
    reads=("vm.active", "site.up"),
)
def stale_write_while_the_active_site_is_down(
    config: ModelConfig, pre: SystemState, call: Call, post: SystemState
) -> bool:
    """A divergent copy left running takes a write while the new active site is
    down (it runs at the other site, which is up)."""
    del config, post
    if call.action != "write_stale_copy" or call.vm is None:
        return False
    return not pre.site(pre.vms[call.vm].active).up


def _shutdown_witness(outcome: str) -> Invariant:
    """A step witness: an unplanned failover whose shutdown first ends ``outcome``."""

    def taken(
        config: ModelConfig, pre: SystemState, call: Call, post: SystemState
    ) -> bool:
        del config, pre, post
        return call.action == "unplanned_failover" and call.arg("shutdown") == outcome

    name = f"shutdown_first_{outcome}"
    taken.__name__ = name
    taken.__doc__ = (
        f"An unplanned failover tries to shut the source down first, and the attempt "
        f"ends {outcome.replace('_', ' ')} (decision 9: each step may fail)."
    )
    return Invariant(
        name,
        Kind.SOMETIMES,
        f"never: {name}",
        step=taken,
        reads=frozenset({"vm.phase"}),
    )


SHUTDOWN_WITNESSES: tuple[Invariant, ...] = tuple(
    _shutdown_witness(outcome)
    for outcome in (SHUTDOWN_COMPLETE, SHUTDOWN_SYNC_CUT, SHUTDOWN_REFUSED)
)


EFFECT_INVARIANTS: tuple[Invariant, ...] = (
    events_do_what_they_name,
    shutdown_first_needs_its_source,
    a_shutdown_stops_the_source,
    a_complete_final_sync_ships_everything,
    a_loss_is_exact_when_the_old_source_can_tell,
    each_applied_cycle_is_a_recovery_point,
    a_finished_resynchronization_restarts_tracking,
    a_new_source_starts_fresh_logs,
    every_loss_record_ends_shown,
    no_replication_keeps_nothing_of_it,
    an_unfinished_copy_is_not_trusted,
)

EFFECT_WITNESSES: tuple[Invariant, ...] = (
    write_while_the_other_site_is_down,
    stale_write_while_the_active_site_is_down,
    *SHUTDOWN_WITNESSES,
)
