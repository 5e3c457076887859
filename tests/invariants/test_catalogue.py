"""The catalogue's entries are documented, named once, and hold on the seed traces."""

from __future__ import annotations

import pytest

from invariants.catalogue import BY_NAME, INVARIANTS, select
from invariants.kinds import Invariant, Kind

DESIGN_NAMES = (
    "no_replication_after_cancelled_failover",
    "planned_failover_loses_no_acknowledged_write",
    "unplanned_failover_loss_is_exact",
    "replica_is_a_past_source_state",
    "recovery_points_are_past_states_in_order",
    "commit_discards_every_recovery_point",
    "delta_replication_only_after_initial_copy",
    "writes_during_initial_replication_are_never_lost",
    "reverse_replication_keeps_the_active_site",
    "only_the_active_copy_is_replicated",
    "failback_needs_both_sites_connected",
    "test_failover_writes_never_reach_the_replica",
    "unplanned_failover_leaves_the_target_unprotected",
    "planned_failover_leaves_it_protected",
    "recoverability",
)

CHECKED = [inv for inv in INVARIANTS if inv.kind is not Kind.SOMETIMES]


def test_every_invariant_of_design_md_is_in_the_catalogue() -> None:
    """Each property the design lists (docs/verification.md) has an entry."""
    assert [name for name in DESIGN_NAMES if name not in BY_NAME] == []


@pytest.mark.parametrize("invariant", CHECKED, ids=[i.name for i in CHECKED])
def test_docstring_gives_rule_disaster_and_scope(invariant: Invariant) -> None:
    """A checked property cites its rule, the disaster and where it applies."""
    doc = invariant.doc
    assert [
        word for word in ("Rule:", "Disaster:", "Applies:") if word not in doc
    ] == []


@pytest.mark.parametrize("invariant", INVARIANTS, ids=[i.name for i in INVARIANTS])
def test_violation_message_is_one_line(invariant: Invariant) -> None:
    """Messages fit on one line of a report."""
    assert "\n" not in invariant.message
    assert 0 < len(invariant.message) <= 80


def test_select_refuses_an_unknown_name_and_lists_the_known() -> None:
    """A misspelt invariant name is refused with the catalogue's names."""
    with pytest.raises(KeyError, match="recoverability"):
        select(("recoverabilty",))
