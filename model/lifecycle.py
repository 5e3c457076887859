"""The protection lifecycle of one VM, declared once, as data.

Everything that knows about phases and edges derives from ``LIFECYCLE``: the
``transitions`` machine (``model.machine``), the pure successor function
(``model.successor``), the diagrams, the Markdown table in ``docs/`` and the checks.
Nothing else re-declares an edge.

An edge names a trigger, the phases it leaves, where it lands and the guards that must
hold over the VM's data (``model.lifecycle_guards``). Two destinations are resolved at
run time rather than spelled out:

* ``Dest.STEADY`` is the steady phase of the current direction: ``PROTECTED`` while the
  primary site is active (replicating primary -> secondary), ``REVERSE_REPLICATING``
  while the secondary is active. Both steady phases accept the same operations, so each
  such edge is one row whose sources are ``STEADY`` (decision 1, docs/behaviour.md).
* ``Dest.SAME`` stays in the phase the edge left (a delta cycle during a drill, a disk
  copied during initial replication, another recovery point chosen before commit).

Site, link and vault conditions are not lifecycle guards: they belong to the actions of
the system model (``model.actions``), which ask this table for the phase change.

The table is checked when this module is imported (``check_lifecycle``): one initial
phase, every phase reachable, every guard known, no two unguarded edges sharing a
``(source, trigger)`` pair, and guarded alternatives that are mutually exclusive.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


class Phase(enum.Enum):
    """Where one VM stands in its protection lifecycle (docs/model.md)."""

    UNPROTECTED = "unprotected"
    INITIAL_REPLICATION = "initial_replication"
    PROTECTED = "protected"
    REVERSE_REPLICATING = "reverse_replicating"
    REPLICATION_PAUSED = "replication_paused"
    RESYNCHRONIZING = "resynchronizing"
    TEST_FAILOVER = "test_failover"
    FAILOVER_PREPARED = "failover_prepared"
    FAILING_OVER = "failing_over"
    FAILED_OVER = "failed_over"
    COMMITTED = "committed"
    REPLICATION_STOPPED = "replication_stopped"


class Dest(enum.Enum):
    """Destinations resolved from the VM's data rather than named in the table."""

    STEADY = "steady phase of the current direction"
    SAME = "the phase the edge left"


INITIAL_PHASE = Phase.UNPROTECTED

#: The two steady phases: replicating primary -> secondary, and secondary -> primary.
STEADY = (Phase.PROTECTED, Phase.REVERSE_REPLICATING)


@dataclass(frozen=True)
class Edge:
    """One row of the lifecycle: ``trigger`` moves a VM from any of ``sources``."""

    trigger: str
    sources: tuple[Phase, ...]
    dest: Phase | Dest
    guards: tuple[str, ...] = ()


# Short aliases keep the table's columns aligned.
IR = Phase.INITIAL_REPLICATION
PAUSED = Phase.REPLICATION_PAUSED
RESYNC = Phase.RESYNCHRONIZING
DRILL = Phase.TEST_FAILOVER
PREPARED = Phase.FAILOVER_PREPARED
FAILING = Phase.FAILING_OVER
FAILED = Phase.FAILED_OVER
COMMITTED = Phase.COMMITTED
STOPPED = Phase.REPLICATION_STOPPED

LIFECYCLE: tuple[Edge, ...] = (
    # Protect: tracking starts and a snapshot point is fixed at enable; the disks are then
    # copied one by one while writes land in the change logs, which are applied at the
    # end: the first recovery point. Logs that became unusable meanwhile cannot bring
    # the copy to a consistent state: resynchronise instead (decision 8). Disable is
    # refused mid-failover and during a drill (decision 10).
    Edge("enable_protection",            (Phase.UNPROTECTED,),              IR),
    Edge("copy_disk",                    (IR,),                             Dest.SAME,          ("disks_left_to_copy",)),
    Edge("complete_initial_replication", (IR,),                             Dest.STEADY,        ("all_disks_copied", "log_usable")),
    Edge("complete_initial_replication", (IR,),                             RESYNC,             ("all_disks_copied", "log_unusable")),
    Edge("disable_protection",           (IR, *STEADY, PAUSED, RESYNC, COMMITTED, STOPPED), Phase.UNPROTECTED),
    # Steady state: delta cycles ship sealed logs; an unusable log (past its limit,
    # damaged) turns the next cycle into a resynchronisation (decision 8). Cycles go on
    # during a drill; the drill's writes never reach the replica (decision 4).
    Edge("replicate",                    STEADY,                            Dest.STEADY,        ("log_usable",)),
    Edge("replicate",                    STEADY,                            RESYNC,             ("log_unusable",)),
    Edge("replicate",                    (DRILL,),                          Dest.SAME,          ("log_usable",)),
    Edge("pause",                        STEADY,                            PAUSED),
    Edge("resume",                       (PAUSED,),                         Dest.STEADY),
    Edge("resynchronize",                (*STEADY, PAUSED),                 RESYNC),
    Edge("complete_resynchronization",   (RESYNC,),                         Dest.STEADY),
    Edge("start_test_failover",          STEADY,                            DRILL,              ("recovery_point_exists",)),
    Edge("cleanup_test_failover",        (DRILL,),                          Dest.STEADY),
    # Failover: planned = shut down and final sync (prepared), then fail over on the
    # replica; unplanned = stop replication and fail over from a chosen point. The job is
    # in progress until the replica VM runs; cancelling it stops replication for good
    # (decision 3). Another point may be chosen before commit after an unplanned
    # failover only (decision 5); commit deletes every recovery point.
    Edge("planned_failover",             STEADY,                            PREPARED,           ("log_usable",)),
    Edge("failover",                     (PREPARED,),                       FAILING),
    Edge("unplanned_failover",           (*STEADY, PAUSED),                 FAILING,            ("recovery_point_exists",)),
    Edge("complete_failover",            (FAILING,),                        FAILED),
    Edge("change_recovery_point",        (FAILED,),                         Dest.SAME,          ("last_failover_unplanned",)),
    Edge("commit",                       (FAILED,),                         COMMITTED),
    Edge("cancel_failover",              (PREPARED, FAILING),               STOPPED),
    # Failback: reverse replication keeps the active site and protects the VM towards
    # the other one: deltas only when the old copy is known to be the new source's
    # starting point (planned failover), resynchronisation first otherwise (decision 6).
    # Failback to the primary is a planned failover from REVERSE_REPLICATING, a commit,
    # then reverse replication again: the same rows, run in the other direction.
    Edge("reverse_replication",          (COMMITTED,),                      Dest.STEADY,        ("other_copy_trusted",)),
    Edge("reverse_replication",          (COMMITTED,),                      RESYNC,             ("other_copy_untrusted",)),
)  # fmt: skip

#: Where a refusal from each phase points the operator (decisions 3, 4 and 10 ask the
#: messages to name the way out).
WAY_OUT: dict[Phase, str] = {
    Phase.UNPROTECTED: "enable protection first",
    Phase.INITIAL_REPLICATION: "the initial copy is not finished: let it complete, "
    "or, if it stopped, continue it (copy_disk)",
    Phase.REPLICATION_PAUSED: "resume replication first",
    Phase.RESYNCHRONIZING: "wait for the resynchronisation to complete",
    Phase.TEST_FAILOVER: "a drill is open: clean it up first with cleanup_test_failover",
    Phase.FAILOVER_PREPARED: "a planned failover is in progress: fail over, or cancel "
    "it (replication then stops for good)",
    Phase.FAILING_OVER: "a failover is in progress: let it complete, or cancel it "
    "(replication then stops for good)",
    Phase.FAILED_OVER: "the failover is not committed: commit it (or, after an "
    "unplanned failover, choose another recovery point first)",
    Phase.COMMITTED: "start reverse replication to protect the VM again",
    Phase.REPLICATION_STOPPED: "a cancelled failover stopped replication for good: "
    "disable protection, then enable it again",
}

#: Guards that come in complementary pairs: exactly one of each pair holds.
COMPLEMENTARY_GUARDS: tuple[tuple[str, str], ...] = (
    ("log_usable", "log_unusable"),
    ("disks_left_to_copy", "all_disks_copied"),
    ("other_copy_trusted", "other_copy_untrusted"),
)

TRIGGERS: tuple[str, ...] = tuple(dict.fromkeys(edge.trigger for edge in LIFECYCLE))


class LifecycleError(Exception):
    """The lifecycle table is malformed (raised when the table is checked)."""


def steady_phase(primary_active: bool) -> Phase:  # noqa: FBT001  (a fact, not a flag)
    """The steady phase of the direction: replicating away from the active site."""
    return Phase.PROTECTED if primary_active else Phase.REVERSE_REPLICATING


def resolve(edge: Edge, source: Phase, *, primary_active: bool) -> Phase:
    """The concrete phase ``edge`` lands on when taken from ``source``."""
    if edge.dest is Dest.STEADY:
        return steady_phase(primary_active)
    if edge.dest is Dest.SAME:
        return source
    return edge.dest


def edges_from(
    phase: Phase, trigger: str | None = None, table: tuple[Edge, ...] = LIFECYCLE
) -> Iterator[Edge]:
    """The edges of ``table`` that leave ``phase`` (for one trigger, or all)."""
    for edge in table:
        if phase in edge.sources and trigger in (None, edge.trigger):
            yield edge


def triggers_from(phase: Phase, table: tuple[Edge, ...] = LIFECYCLE) -> tuple[str, ...]:
    """Triggers with at least one edge from ``phase``, in table order."""
    return tuple(dict.fromkeys(edge.trigger for edge in edges_from(phase, None, table)))


def sources_of(trigger: str) -> tuple[Phase, ...]:
    """Phases from which ``trigger`` has an edge, in declaration order."""
    found: dict[Phase, None] = {}
    for edge in LIFECYCLE:
        if edge.trigger == trigger:
            found.update(dict.fromkeys(edge.sources))
    return tuple(found)


def possible_destinations(edge: Edge, source: Phase) -> tuple[Phase, ...]:
    """Every phase ``edge`` may land on from ``source``.

    ``Dest.STEADY`` from a steady phase is that phase (no edge of a steady phase
    changes the direction); from elsewhere it is either steady phase.
    """
    if edge.dest is Dest.STEADY:
        return (source,) if source in STEADY else STEADY
    return (resolve(edge, source, primary_active=True),)


def check_lifecycle(
    known_guards: Iterable[str], table: tuple[Edge, ...] = LIFECYCLE
) -> None:
    """Raise LifecycleError unless ``table`` is well formed (see the module essay)."""
    known = set(known_guards)
    problems: list[str] = []
    for edge in table:
        problems += [
            f"edge {edge.trigger!r} names unknown guard {guard!r}"
            for guard in edge.guards
            if guard not in known
        ]
        if not edge.sources:
            problems.append(f"edge {edge.trigger!r} has no source phase")
    problems += _ambiguous_pairs(table)
    unreachable = set(Phase) - _reachable_phases(table)
    if unreachable:
        names = sorted(phase.value for phase in unreachable)
        problems.append(f"phases unreachable from {INITIAL_PHASE.value}: {names}")
    if problems:
        msg = "lifecycle table is malformed: " + "; ".join(problems)
        raise LifecycleError(msg)


def _ambiguous_pairs(table: tuple[Edge, ...]) -> list[str]:
    """(source, trigger) pairs with more than one edge whose guards do not exclude."""
    exclusive = {frozenset(pair) for pair in COMPLEMENTARY_GUARDS}
    problems = []
    for phase in Phase:
        for trigger in triggers_from(phase, table):
            rows = list(edges_from(phase, trigger, table))
            for index, first in enumerate(rows):
                for second in rows[index + 1 :]:
                    if not any(
                        frozenset((a, b)) in exclusive
                        for a in first.guards
                        for b in second.guards
                    ):
                        problems.append(
                            f"two edges for {trigger!r} from {phase.value} are not "
                            "told apart by complementary guards"
                        )
    return problems


def _reachable_phases(table: tuple[Edge, ...]) -> set[Phase]:
    """Phases reachable from the initial phase, ignoring guards."""
    seen = {INITIAL_PHASE}
    frontier = [INITIAL_PHASE]
    while frontier:
        phase = frontier.pop()
        for edge in edges_from(phase, None, table):
            for dest in possible_destinations(edge, phase):
                if dest not in seen:
                    seen.add(dest)
                    frontier.append(dest)
    return seen
