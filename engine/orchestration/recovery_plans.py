"""A recovery plan's definition: a name and ordered groups of VM names, checked.

A plan fails several VMs over in an order the operator sets (decision 11,
docs/behaviour.md): group 1 first, then group 2, and so on; the VMs of one group run
together. This module holds only the definition and its checks; ``plan_runner.py``
runs it. (The model's own plans, ``model/plans.py``, are the abstract counterpart:
the operations a plan can run are declared there once, and reach the orchestrator
through ``engine/binding/plan_operations.py``.)

Two kinds of check, both before anything runs, each raising
:class:`~engine.errors.InvalidPlan` that lists every problem found:

- **the definition alone** (:meth:`RecoveryPlan.define`): a valid plan name and VM
  names (``engine/names.py``: a hostile name is :class:`~engine.errors.InvalidName`),
  at least one group, no empty group, no VM in two groups, at most
  :data:`PLAN_VMS_MAX` VMs;
- **against an engine** (:func:`check_against`): the operation is one a plan can run,
  every VM is known to the engine and not damaged, and none is unprotected (its
  replication never enabled), since every plan operation needs protection.

Whether a VM may take the operation *now* is not checked here: the runner calls the
engine, which asks the model, and the model's refusal is the cause the job records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from engine.binding.plan_operations import NOT_ENABLED, PLAN_OPERATIONS, PlanOperation
from engine.errors import DamagedState, InvalidConfiguration, InvalidName, InvalidPlan
from engine.names import validate_name, validate_vm_name
from engine.orchestration.engine import ReplicationEngine

PLAN_VMS_MAX: Final = 1000
"""The most VMs one plan holds. Its definition is stored in its job and each VM adds
up to three steps per run; the bound keeps one job's record small (well under the job
store's parameter limit) and a mistaken definition (a list of every name in a
directory) from running at all."""


@dataclass(frozen=True)
class RecoveryPlan:
    """A recovery plan: its name and its groups of VM names, in order."""

    name: str
    groups: tuple[tuple[str, ...], ...]

    @classmethod
    def define(cls, name: str, groups: Iterable[Iterable[str]]) -> RecoveryPlan:
        """The plan ``name`` with ``groups`` (group 1 first), or :class:`InvalidPlan`
        listing every problem of the definition."""
        validate_name(name, argument="plan_name")
        if isinstance(groups, str | bytes) or not isinstance(groups, Iterable):
            msg = f"groups={groups!r} must be a sequence of groups, each a sequence "
            msg += "of VM names, e.g. [['sql-01'], ['web-01', 'web-02']]"
            raise InvalidPlan(msg)
        checked: list[tuple[str, ...]] = []
        for number, group in enumerate(groups, start=1):
            if isinstance(group, str | bytes) or not isinstance(group, Iterable):
                msg = f"plan {name!r}: group {number} is {group!r}; each group must "
                msg += "be a sequence of VM names, e.g. ['web-01', 'web-02']"
                raise InvalidPlan(msg)
            checked.append(tuple(_vm_name(name, number, vm) for vm in group))
        plan = cls(name, tuple(checked))
        problems = plan._problems()
        if problems:
            msg = f"plan {name!r} is not a valid recovery plan: " + "; ".join(problems)
            raise InvalidPlan(msg)
        return plan

    @classmethod
    def from_json(cls, found: Mapping[str, object]) -> RecoveryPlan:
        """The plan a job recorded (:meth:`to_json`), checked again."""
        name, groups = found.get("name"), found.get("groups")
        if not isinstance(name, str) or not isinstance(groups, list):
            msg = f"a recorded plan must hold a name and groups (got {found!r})"
            raise InvalidPlan(msg)
        return cls.define(name, groups)

    def to_json(self) -> dict[str, object]:
        """The definition as JSON values (a job's parameters)."""
        return {"name": self.name, "groups": [list(group) for group in self.groups]}

    @property
    def vm_names(self) -> tuple[str, ...]:
        """Every VM of the plan, group by group."""
        return tuple(vm for group in self.groups for vm in group)

    def group_of(self, vm: str) -> int:
        """The number (from 1) of the group holding ``vm``."""
        for number, group in enumerate(self.groups, start=1):
            if vm in group:
                return number
        msg = f"vm={vm!r} is in no group of plan {self.name!r}; its VMs: "
        msg += f"{list(self.vm_names)}"
        raise InvalidConfiguration(msg)

    def _problems(self) -> list[str]:
        problems = []
        if not self.groups:
            problems.append("it has no group; a plan needs at least one group of VMs")
        for number, group in enumerate(self.groups, start=1):
            if not group:
                problems.append(f"group {number} is empty; remove it or add VMs")
        first: dict[str, int] = {}
        for number, group in enumerate(self.groups, start=1):
            for vm in group:
                if vm in first:
                    where = (
                        f"twice in group {number}"
                        if first[vm] == number
                        else f"in group {first[vm]} and group {number}"
                    )
                    problems.append(f"VM {vm!r} is {where}; a VM belongs to one group")
                else:
                    first[vm] = number
        if len(self.vm_names) > PLAN_VMS_MAX:
            problems.append(
                f"it holds {len(self.vm_names)} VMs, over {PLAN_VMS_MAX}; split it"
            )
        return problems


def plan_operation(operation: object) -> PlanOperation:
    """The operation a plan can run, by name, or :class:`InvalidConfiguration`."""
    found = PLAN_OPERATIONS.get(operation) if isinstance(operation, str) else None
    if found is None:
        msg = f"operation={operation!r} is not an operation a recovery plan runs; "
        msg += f"operations: {', '.join(PLAN_OPERATIONS)}"
        raise InvalidConfiguration(msg)
    return found


def check_against(
    plan: RecoveryPlan,
    engine: ReplicationEngine,
    operation: str,
    vms: Sequence[str] | None = None,
) -> None:
    """Refuse with :class:`InvalidPlan` a plan whose VMs (or those of ``vms``, the ones
    left to run) the engine cannot run ``operation`` on: unknown, damaged, or
    unprotected. Every problem is listed; nothing is run."""
    plan_operation(operation)
    known = set(engine.vm_names())
    problems = []
    unknown = False
    for vm in plan.vm_names if vms is None else vms:
        where = f"VM {vm!r} (group {plan.group_of(vm)})"
        if vm not in known:
            problems.append(f"{where} is unknown to the engine")
            unknown = True
            continue
        try:
            phase = engine.status(vm).phase
        except DamagedState as damage:
            problems.append(f"{where} is damaged: {damage}")
            continue
        if phase == NOT_ENABLED:
            problems.append(
                f"{where} is {NOT_ENABLED}: its replication is not enabled, and "
                f"{operation} needs a protected VM (enable_protection first, or take "
                "it out of the plan)"
            )
    if problems:
        msg = f"plan {plan.name!r} cannot run {operation}: " + "; ".join(problems)
        if unknown:
            msg += f"; the engine knows: {sorted(known)}"
        raise InvalidPlan(msg)


def _vm_name(plan: str, number: int, vm: object) -> str:
    try:
        return validate_vm_name(vm)
    except InvalidName as error:
        error.add_note(f"in group {number} of plan {plan!r}")
        raise
