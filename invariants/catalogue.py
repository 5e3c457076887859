"""The catalogue: every property of the design as a named, documented predicate.

``INVARIANTS`` lists them all, by theme: the replica and its recovery points
(``invariants.replica``), failover, loss and failback (``invariants.failover``),
what each phase claims of the data (``invariants.phases``), what a step needs of the
sites and the link (``invariants.requirements``), what a recovery plan may do to its
VMs (``invariants.plans``), the reachability witnesses
(``invariants.witnesses``) and recoverability, the one EVENTUALLY property, which
the explorer checks on the whole graph. The same entries serve the exhaustive
explorer, the Hypothesis state machine and ``hvdr replay``.

``failing(config, state)`` and ``failing_step(config, pre, call, post)`` return the
ALWAYS and STEP properties that do not hold: the one place that runs them.
"""

from __future__ import annotations

from invariants.failover import FAILOVER_INVARIANTS
from invariants.kinds import Invariant, Kind
from invariants.phases import PHASE_INVARIANTS
from invariants.plans import PLAN_INVARIANTS
from invariants.replica import REPLICA_INVARIANTS
from invariants.requirements import REQUIREMENT_INVARIANTS
from invariants.witnesses import WITNESSES
from model import Call, ModelConfig, SystemState

RECOVERABILITY = Invariant(
    "recoverability",
    Kind.EVENTUALLY,
    "no steady, healthy state is reachable from here, even with every repair",
    description="""From every reachable state a steady, healthy state is reachable.

    With the sites up, the link repaired and the vault reconnected, every VM can
    reach a steady phase and every job (failover, recovery plan) ends. Rule:
    docs/verification.md, "recoverability"; decision 3 (disable then enable
    leaves ``replication_stopped``); decision 11 (a plan can be resumed or
    cancelled). Disaster: a VM wedged for good in a phase no operator action
    leaves. Applies: every reachable state; the explorer checks it by one backward
    search from the goal states.
    """,
    reads=frozenset(
        {
            "site.up",
            "site.connected",
            "site.storage_full",
            "link_up",
            "vm.phase",
            "plan_runs",
        }
    ),  # what a goal state is (invariants.explorer._goals)
)

INVARIANTS: tuple[Invariant, ...] = (
    *REPLICA_INVARIANTS,
    *FAILOVER_INVARIANTS,
    *PHASE_INVARIANTS,
    *REQUIREMENT_INVARIANTS,
    *PLAN_INVARIANTS,
    RECOVERABILITY,
    *WITNESSES,
)

BY_NAME = {invariant.name: invariant for invariant in INVARIANTS}
assert len(BY_NAME) == len(INVARIANTS), "invariant names must be unique"

ALWAYS: tuple[Invariant, ...] = tuple(i for i in INVARIANTS if i.kind is Kind.ALWAYS)
STEPS: tuple[Invariant, ...] = tuple(i for i in INVARIANTS if i.kind is Kind.STEP)
SOMETIMES: tuple[Invariant, ...] = tuple(
    i for i in INVARIANTS if i.kind is Kind.SOMETIMES
)


def failing(
    config: ModelConfig, state: SystemState, among: tuple[Invariant, ...] = ALWAYS
) -> list[Invariant]:
    """The ALWAYS properties (of ``among``) that ``state`` violates."""
    found = []
    for invariant in among:
        if invariant.kind is Kind.ALWAYS:
            assert invariant.state is not None
            if not invariant.state(config, state):
                found.append(invariant)
    return found


def failing_step(
    config: ModelConfig,
    pre: SystemState,
    call: Call,
    post: SystemState,
    among: tuple[Invariant, ...] = STEPS,
) -> list[Invariant]:
    """The STEP properties (of ``among``) the step ``pre --call--> post`` violates."""
    found = []
    for invariant in among:
        if invariant.kind is Kind.STEP:
            assert invariant.step is not None
            if not invariant.step(config, pre, call, post):
                found.append(invariant)
    return found


def select(names: tuple[str, ...] | None) -> tuple[Invariant, ...]:
    """The invariants named (all of them for None); KeyError lists the names."""
    if names is None:
        return INVARIANTS
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        msg = f"unknown invariants {unknown}; the catalogue has: {', '.join(BY_NAME)}"
        raise KeyError(msg)
    return tuple(BY_NAME[name] for name in names)


def witnessed(config: ModelConfig, state: SystemState) -> list[Invariant]:
    """The SOMETIMES witnesses ``state`` (a fresh post-state) satisfies."""
    return [
        witness
        for witness in SOMETIMES
        if witness.state is not None and witness.state(config, state)
    ]
