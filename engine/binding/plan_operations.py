"""The model's recovery-plan operations, as the orchestrator runs them on the engine.

A recovery plan runs one operation over its VMs (decision 11, docs/behaviour.md). What
each operation is, the model says once (``model/plans.py``, ``OPERATIONS``): the VM
actions in order, and the phases in which a VM has finished it. The orchestrator
(``engine/orchestration``) may not import the model, so this module, in the one
package that does, hands it that table in the engine's terms: each action as the
``ReplicationEngine`` method that runs it (the names ``status().allowed`` lists), and
each phase as the value ``status().phase`` shows. Nothing here is re-declared: a new
operation in the model is a new row here.

Also the one phase fact a plan checks before it starts: a VM whose replication was
never enabled (``unprotected``) cannot take any plan operation; every other refusal
is the model's, met when the step is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from engine.binding.protected_vm import ENGINE_METHODS
from model.lifecycle import Phase
from model.plans import OPERATIONS


@dataclass(frozen=True)
class PlanOperation:
    """An operation a plan runs on each VM: engine methods in order, where it ends."""

    name: str
    steps: tuple[str, ...]  # ReplicationEngine methods, in the order they run
    done_in: frozenset[str]  # phases (as status().phase shows them) that finish it


PLAN_OPERATIONS: Final[Mapping[str, PlanOperation]] = MappingProxyType(
    {
        name: PlanOperation(
            name,
            tuple(ENGINE_METHODS[action] for action, _ in operation.steps),
            frozenset(phase.value for phase in operation.done_in),
        )
        for name, operation in OPERATIONS.items()
    }
)
"""Every operation a recovery plan can run, by name (the model's ``OPERATIONS``)."""

NOT_ENABLED: Final = Phase.UNPROTECTED.value
"""The phase of a VM whose replication was never enabled (or was disabled)."""
