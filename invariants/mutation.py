"""Running the generated mutants: which are killed, by what, and which survive.

``run(mutant)`` explores one mutant (``invariants.rule_mutants``) at the default
bounds with every property and says what happened:

* **killed** by a property violation, a deadlock, an unrecoverable state, or a
  SOMETIMES witness the mutant never reaches (the property that the model is not
  vacuous: a fault that no longer does anything, a phase no longer reached), never
  by a changed number of states;
* **equivalent**: it survived, and its successors are the model's in every state
  the model reaches (``rule_mutants.same_successors``): nothing can tell them apart
  at these bounds. ``EQUIVALENT`` says why for each one; docs/verification.md
  lists them, and a test keeps the three in step;
* **survived**: neither; a property is missing (or the mutant is equivalent in a
  way the model cannot show: then it needs a reason here and in the docs);
* **incomplete**: the search reached ``STATE_LIMIT`` first (a mutant whose state
  space is far larger than the model's) without a finding.

``lookup(name)`` finds a mutant's rules by name, hand-written or generated, for
``hvdr check --mutant`` and for replaying a trace whose header names one.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from invariants import mutants as hand
from invariants import rule_mutants
from invariants.configuration import DEFAULT_CONFIG
from invariants.explorer import Report, explore
from invariants.rule_mutants import OPERATORS, RuleMutant
from model import Call
from model.successor import RULES, Rules

#: States a mutant's search may reach: about 28 times the model's 3,604 at the
#: default bounds. A mutant that grows its space past it without a finding is reported
#: incomplete rather than searched for minutes.
STATE_LIMIT = 100_000


class Verdict(enum.Enum):
    """What one mutant's exploration found."""

    KILLED = "killed"
    EQUIVALENT = "equivalent"
    SURVIVED = "survived"
    INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class Outcome:
    """One mutant's verdict, what killed it, and the trace that shows it."""

    mutant: RuleMutant
    verdict: Verdict
    killer: str = ""  # the property, "deadlock", or "never reached <witness>"
    trace: tuple[Call, ...] = ()


#: Why each equivalent generated mutant is equivalent (they are found by
#: ``same_successors``; the reason is the explanation of what the model shows).
EQUIVALENT: dict[str, str] = {
    "drop_edge_guard:complete_initial_replication#2:log_unusable": "the row with "
    "log_usable comes first and takes every usable case; the second row is only "
    "reached with unusable logs",
    "drop_edge_guard:replicate#2:log_unusable": "the same: the log_usable row "
    "comes first",
    "drop_edge_guard:reverse_replication#2:other_copy_untrusted": "the same: the "
    "other_copy_trusted row comes first",
    "drop_edge_guard:start_test_failover:recovery_point_exists": "every steady "
    "phase holds a point (protected_vm_has_a_recovery_point), and the drill's "
    "choices are the points: with none there is no call",
    "drop_edge_guard:unplanned_failover:recovery_point_exists": "the choices "
    "offer only existing points, and every phase it leaves holds one",
    "drop_guard:crash_site:would_change_up": "with a fault budget of 1 a site is "
    "down only once the budget is spent, so crashing it again is refused anyway",
    "drop_guard:cut_link:link_up": "the same: the link is down only when the "
    "budget is spent",
    "drop_guard:disconnect_vault:would_change_connected": "the same: a site is "
    "disconnected only when the budget is spent",
    "drop_guard:fill_storage:would_change_storage_full": "the same: storage is "
    "full only when the budget is spent",
    "drop_guard:enable_protection:no_divergent_copy_running": "a divergent copy "
    "runs only after a failover, and every way back to unprotected (disable) stops "
    "it: enable never meets one",
    "drop_guard:free_storage:would_change_storage_full": "freeing free storage "
    "changes nothing (repairs spend no budget)",
    "drop_guard:reconnect_vault:would_change_connected": "reconnecting a "
    "connected site changes nothing",
    "drop_guard:recover_site:would_change_up": "recovering an up site restarts "
    "nothing: every VM active at an up site already runs there, or is shut down "
    "for a failover, which recovery does not restart",
    "drop_guard:repair_link:link_down": "repairing a link that is up changes nothing",
}


#: Survivors not yet killed nor shown equivalent, with what is missing: the work
#: left (docs/verification.md lists them too; a test keeps the list exact for the
#: sample it runs, and ``hvdr check --mutate`` prints them all).
OPEN: dict[str, str] = {}


#: For each property added to kill generated mutants (and one widened for them), a
#: generated mutant it kills on its own (tests/mutation/test_rule_mutants.py).
KNOWN_KILLS = {
    "operator_actions_need_their_site": "drop_guard:pause:active_site_reachable",
    "data_transfers_need_hosts_link_and_room": "drop_guard:replicate:link_up",
    "new_disks_need_room_at_their_site": "drop_guard:commit:active_storage_free",
    "operator_actions_take_effect": "retarget:resume:replication_paused",
    "writes_come_from_a_running_copy": "drop_guard:write_test_vm:test_vm_runs",
    "steady_phase_follows_the_direction": "retarget:pause:reverse_replicating",
    "unprotected_vm_keeps_no_replica": "retarget:pause:unprotected",
    "failover_job_is_recorded": "retarget:failover:failover_prepared",
    "unusable_logs_lead_to_resynchronization": "drop_edge_guard:replicate#1:log_usable",
    "pauses_and_resynchronizations_have_a_cause":
        "retarget:cleanup_test_failover:replication_paused",
    "the_vm_runs_where_it_is_active": "drop_write:recover_site:vms",
    "writes_during_initial_replication_are_never_lost": "drop_write:write:test_copy",
    "events_do_what_they_name": "drop_write:disconnect_vault:primary",
    "shutdown_first_needs_its_source": "swap_sites:unplanned_failover:choices",
    "a_shutdown_stops_the_source": "drop_write:unplanned_failover:running",
    "a_complete_final_sync_ships_everything": "drop_write:unplanned_failover:points",
    "a_loss_is_exact_when_the_old_source_can_tell":
        "swap_roles:change_recovery_point:effect",
    "each_applied_cycle_is_a_recovery_point": "drop_write:replicate:points",
    "a_finished_resynchronization_restarts_tracking":
        "retarget:complete_resynchronization:resynchronizing",
    "a_new_source_starts_fresh_logs": "drop_write:complete_failover:log",
    "every_loss_record_ends_shown": "drop_write:disable_protection:closed_report",
    "no_replication_keeps_nothing_of_it": "drop_write:cancel_failover:chosen_point",
    "an_unfinished_copy_is_not_trusted":
        "drop_write:complete_initial_replication:other_trusted",
}  # fmt: skip


def run(mutant: RuleMutant) -> Outcome:
    """Explore ``mutant`` at the default bounds; its verdict (module essay)."""
    report = explore(DEFAULT_CONFIG, mutant.rules, max_states=STATE_LIMIT)
    found = _finding(report)
    if found is not None:
        return Outcome(mutant, Verdict.KILLED, *found)
    if not report.complete:
        return Outcome(mutant, Verdict.INCOMPLETE)
    if report.unwitnessed:
        return Outcome(mutant, Verdict.KILLED, f"never reached {report.unwitnessed[0]}")
    if rule_mutants.same_successors(mutant.rules):
        return Outcome(mutant, Verdict.EQUIVALENT)
    return Outcome(mutant, Verdict.SURVIVED)


def _finding(report: Report) -> tuple[str, tuple[Call, ...]] | None:
    if report.violations:
        first = report.violations[0]
        return first.invariant.name, first.trace
    if report.deadlocks:
        return "deadlock", report.deadlock_traces[0]
    if report.unrecoverable:
        return "recoverability", report.unrecoverable_traces[0]
    return None


def select(
    operators: Iterable[str] | None = None, only: str | None = None
) -> list[RuleMutant]:
    """The generated mutants of ``operators`` (all: None), or the one named
    ``only``; KeyError names what is unknown and what there is."""
    mutants = rule_mutants.generate().mutants
    if only is not None:
        found = [mutant for mutant in mutants if mutant.name == only]
        if not found:
            msg = f"no generated mutant is named {only!r} (hvdr check --list-mutants)"
            raise KeyError(msg)
        return found
    wanted = OPERATORS if operators is None else tuple(operators)
    unknown = [name for name in wanted if name not in OPERATORS]
    if unknown:
        msg = f"unknown operators {unknown}; the operators are: {', '.join(OPERATORS)}"
        raise KeyError(msg)
    return [mutant for mutant in mutants if mutant.operator in wanted]


def run_all(
    mutants: Iterable[RuleMutant], progress: Callable[[Outcome], None] | None = None
) -> list[Outcome]:
    """Every mutant's outcome, in order; ``progress`` is told each one."""
    outcomes = []
    for mutant in mutants:
        outcome = run(mutant)
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    return outcomes


def kill_rate(outcomes: Iterable[Outcome]) -> tuple[int, int]:
    """(killed, non-equivalent) over ``outcomes``: the figure the issue asks for."""
    listed = list(outcomes)
    killed = sum(outcome.verdict is Verdict.KILLED for outcome in listed)
    equivalent = sum(outcome.verdict is Verdict.EQUIVALENT for outcome in listed)
    return killed, len(listed) - equivalent


def lookup(name: str) -> Rules | None:
    """The rules of the mutant ``name``, hand-written or generated (None: none)."""
    if name in hand.BY_NAME:
        return hand.BY_NAME[name].rules
    generated = rule_mutants.by_name().get(name)
    return None if generated is None else generated.rules


class UnknownMutant(ValueError):
    """A trace's header names a mutant that does not exist."""


def header_rules(mutant: str | None, source: str) -> Rules:
    """The rules a trace's header asks for: the model's, or the mutant's it names
    (UnknownMutant, naming ``source``, when there is no such mutant)."""
    if mutant is None:
        return RULES
    found = lookup(mutant)
    if found is None:
        msg = f"{source}: the header names mutant {mutant!r}, which does not exist "
        msg += "(hvdr check --list-mutants lists them)"
        raise UnknownMutant(msg)
    return found


def known_names() -> list[str]:
    """Every mutant's name: the hand-written ones, then the generated ones."""
    return [*hand.BY_NAME, *rule_mutants.by_name()]
