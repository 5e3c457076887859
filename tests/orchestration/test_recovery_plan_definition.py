"""A recovery plan's definition is checked before anything runs; each error says
what was wrong and what is allowed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.binding.plan_operations import PLAN_OPERATIONS
from engine.errors import InvalidName, InvalidPlan
from engine.orchestration.engine import ReplicationEngine
from engine.orchestration.plan_runner import STEP_CALLS
from engine.orchestration.recovery_plans import (
    PLAN_VMS_MAX,
    RecoveryPlan,
    check_against,
)


def test_a_plan_keeps_its_groups_in_order() -> None:
    """Group 1 first; every VM knows its group; the JSON round trip is exact."""
    plan = RecoveryPlan.define("dr", [["sql-01"], ["web-01", "web-02"]])
    assert plan.groups == (("sql-01",), ("web-01", "web-02"))
    assert plan.vm_names == ("sql-01", "web-01", "web-02")
    assert [plan.group_of(vm) for vm in plan.vm_names] == [1, 2, 2]
    assert RecoveryPlan.from_json(plan.to_json()) == plan


INVALID = "plan 'dr' is not a valid recovery plan: "
MALFORMED = [
    ([], INVALID + "it has no group; a plan needs at least one group of VMs"),
    ([["a"], []], INVALID + "group 2 is empty; remove it or add VMs"),
    (
        [["a", "b"], ["c", "a"]],
        INVALID + "VM 'a' is in group 1 and group 2; a VM belongs to one group",
    ),
    ([["a", "a"]], INVALID + "VM 'a' is twice in group 1; a VM belongs to one group"),
    (
        "abc",
        (
            "groups='abc' must be a sequence of groups, each a sequence of VM names, "
            "e.g. [['sql-01'], ['web-01', 'web-02']]"
        ),
    ),
    (
        ["a"],
        (
            "plan 'dr': group 1 is 'a'; each group must be a sequence of VM names, "
            "e.g. ['web-01', 'web-02']"
        ),
    ),
]


@pytest.mark.parametrize(("groups", "message"), MALFORMED)
def test_a_malformed_plan_is_refused(groups: object, message: str) -> None:
    """Empty plan, empty group, a VM in two groups (or twice in one), not groups."""
    with pytest.raises(InvalidPlan) as refused:
        RecoveryPlan.define("dr", groups)  # type: ignore[arg-type]
    assert str(refused.value) == message


def test_every_problem_is_listed_at_once() -> None:
    """An empty group and a VM in two groups: both named in one message."""
    with pytest.raises(InvalidPlan) as refused:
        RecoveryPlan.define("dr", [["a"], [], ["a"]])
    assert str(refused.value) == (
        "plan 'dr' is not a valid recovery plan: group 2 is empty; remove it or add "
        "VMs; VM 'a' is in group 1 and group 3; a VM belongs to one group"
    )


def test_too_many_vms_are_refused() -> None:
    """The bound is named in the message."""
    vms = [f"vm-{number}" for number in range(PLAN_VMS_MAX + 1)]
    with pytest.raises(InvalidPlan, match=f"it holds {PLAN_VMS_MAX + 1} VMs, over"):
        RecoveryPlan.define("dr", [vms])


@pytest.mark.parametrize("name", ["../etc", "a/b", "", ".hidden", "CON", "x" * 65])
def test_a_hostile_vm_name_is_refused_naming_its_group(name: str) -> None:
    """engine/names.py's rule, with the group and the plan in a note."""
    with pytest.raises(InvalidName) as refused:
        RecoveryPlan.define("dr", [["ok"], ["fine", name]])
    assert str(refused.value).startswith(f"vm_name={name!r} ")
    assert refused.value.__notes__ == ["in group 2 of plan 'dr'"]


@pytest.mark.parametrize("name", ["../dr", "dr plan", "", 7])
def test_a_hostile_plan_name_is_refused(name: object) -> None:
    """The plan's name is a name too (it becomes a job's target)."""
    with pytest.raises(InvalidName, match="plan_name="):
        RecoveryPlan.define(name, [["a"]])  # type: ignore[arg-type]


def test_a_damaged_vm_is_refused_before_the_plan_runs(
    make_engine: Callable[..., ReplicationEngine], tmp_path: Path
) -> None:
    """A VM whose disk image went missing: the engine's damage report is quoted."""
    make_engine(["a", "b"]).close()
    image = tmp_path / "primary" / "vms" / "b" / "os.img"
    image.unlink()
    engine = make_engine()
    with pytest.raises(InvalidPlan) as refused:
        check_against(RecoveryPlan.define("p", [["a", "b"]]), engine, "commit")
    damage = engine.damaged["b"]
    assert str(refused.value) == (
        f"plan 'p' cannot run commit: VM 'b' (group 1) is damaged: {damage}"
    )
    assert "disk image" in str(engine.damaged["b"])


def test_every_plan_step_has_a_call() -> None:
    """Each engine method the model's plan operations name is one the runner calls."""
    steps = {step for operation in PLAN_OPERATIONS.values() for step in operation.steps}
    assert steps == set(STEP_CALLS)
