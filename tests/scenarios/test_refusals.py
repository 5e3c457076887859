"""The refusals the foundation issue requires, each with its message."""

from __future__ import annotations

import pytest

from model import ActionRefused, Call, Phase, Site, SystemState, apply, initial_state
from model.scenarios import ONE_VM, planned_failover, protect

NO_APP = (("app_consistent", False),)


def run(*calls: Call, state: SystemState | None = None) -> SystemState:
    """Apply ``calls`` in order from ``state`` (default: the initial state)."""
    state = initial_state(ONE_VM) if state is None else state
    for call in calls:
        state = apply(ONE_VM, state, call)
    return state


def refusal(state: SystemState, call: Call) -> ActionRefused:
    """The refusal ``call`` gets in ``state``."""
    with pytest.raises(ActionRefused) as refused:
        apply(ONE_VM, state, call)
    return refused.value


PROTECTED = run(*protect())


def test_commit_before_failover_is_refused() -> None:
    """Commit needs a completed failover."""
    error = refusal(PROTECTED, Call("commit", vm=0))
    assert error.guard == "phase"
    assert "cannot commit VM 'vm0' in phase protected" in str(error)
    assert "commit is allowed only from: failed_over" in str(error)


@pytest.mark.parametrize("action", ["replicate", "resume"])
def test_replicate_or_resume_after_a_cancelled_failover_is_refused(action: str) -> None:
    """A cancelled failover stops replication for good: only disable leads out."""
    stopped = run(Call("planned_failover", vm=0), Call("cancel_failover", vm=0),
                  state=PROTECTED)  # fmt: skip
    assert stopped.vms[0].phase is Phase.REPLICATION_STOPPED
    args = NO_APP if action == "replicate" else ()
    error = refusal(stopped, Call(action, vm=0, args=args))
    assert "in phase replication_stopped" in str(error)
    assert error.allowed == ("disable_protection",)
    assert error.world == ("write",)  # the guest's, not the operator's to ask


def test_reverse_replication_before_commit_is_refused() -> None:
    """Reverse replication starts from a committed failover only."""
    failed_over = run(*planned_failover()[:3], state=PROTECTED)
    assert failed_over.vms[0].phase is Phase.FAILED_OVER
    error = refusal(failed_over, Call("reverse_replication", vm=0))
    assert "reverse_replication is allowed only from: committed" in str(error)
    assert "commit" in error.allowed


@pytest.mark.parametrize("site", list(Site))
def test_failback_while_a_site_is_disconnected_from_the_vault_is_refused(
    site: Site,
) -> None:
    """Failback needs both VMM servers connected to the vault (the seed)."""
    committed = run(*planned_failover(), state=PROTECTED)
    cut = run(Call("disconnect_vault", site=site), state=committed)
    error = refusal(cut, Call("reverse_replication", vm=0))
    assert f"({site.value}) is disconnected from the vault" in str(error)
    # and the planned failover back, once reverse replication runs:
    reversing = run(Call("reverse_replication", vm=0), state=committed)
    error = refusal(
        run(Call("disconnect_vault", site=site), state=reversing),
        Call("planned_failover", vm=0),
    )
    assert f"({site.value}) is disconnected from the vault" in str(error)


def test_planned_failover_while_the_source_site_is_down_is_refused() -> None:
    """A planned failover shuts the source down and syncs: the source must be up."""
    down = run(Call("crash_site", site=Site.PRIMARY), state=PROTECTED)
    error = refusal(down, Call("planned_failover", vm=0))
    assert error.guard == "active_site_reachable"
    assert "the active site (primary) is down" in str(error)
    assert "unplanned_failover" in error.allowed


def test_failover_before_the_initial_copy_completes_is_refused() -> None:
    """No recovery point exists until the initial copy is whole."""
    copying = run(Call("enable_protection", vm=0), Call("copy_disk", vm=0))
    for action in ("unplanned_failover", "planned_failover"):
        error = refusal(copying, Call(action, vm=0))
        assert "in phase initial_replication" in str(error)
        assert f"{action} is allowed only from: protected" in str(error)


def test_failover_during_a_drill_is_refused_with_the_way_out() -> None:
    """Clean the drill up first (decision 4)."""
    drilling = run(Call("start_test_failover", vm=0, args=(("point", 0),)),
                   state=PROTECTED)  # fmt: skip
    for action in ("unplanned_failover", "planned_failover"):
        error = refusal(drilling, Call(action, vm=0))
        assert "in phase test_failover" in str(error)
        assert "cleanup_test_failover" in error.allowed


def test_disable_during_a_failover_is_refused() -> None:
    """Disable is refused mid-failover (decision 10)."""
    failing = run(Call("planned_failover", vm=0), state=PROTECTED)
    error = refusal(failing, Call("disable_protection", vm=0))
    assert "disable_protection is allowed only from:" in str(error)
    assert "cancel_failover" in error.allowed


def test_a_wrong_argument_names_the_choices() -> None:
    """A recovery point that does not exist is refused with the ones that do."""
    error = refusal(PROTECTED, Call("start_test_failover", vm=0, args=(("point", 7),)))
    assert error.guard == "choice"
    assert "{'point': 0}" in str(error)


@pytest.mark.parametrize(
    "action", ["pause", "resynchronize", "planned_failover", "unplanned_failover"]
)
def test_refusals_during_a_drill_say_to_clean_it_up_first(action: str) -> None:
    """Decision 4: failover, pause and resynchronisation name the way out."""
    drilling = run(Call("start_test_failover", vm=0, args=(("point", 0),)),
                   state=PROTECTED)  # fmt: skip
    error = refusal(drilling, Call(action, vm=0))
    assert "a drill is open: clean it up first with cleanup_test_failover" in str(error)


def test_disable_mid_failover_names_the_way_out() -> None:
    """Decision 10: the refusal says what leads out of the failover."""
    failing = run(Call("planned_failover", vm=0), state=PROTECTED)
    error = refusal(failing, Call("disable_protection", vm=0))
    assert "fail over, or cancel it" in str(error)
