"""The protection lifecycle and the abstract system model (pure: no I/O, no clock).

Import what you need from here; the submodules are documented one concept each.
"""

from model.action import Call
from model.errors import ActionRefused, ModelError, UnknownCall
from model.lifecycle import LIFECYCLE, STEADY, Dest, Edge, Phase
from model.machine import PhaseMachine
from model.state import (
    Copy,
    FailoverKind,
    FaultKind,
    LogHealth,
    LossRecord,
    ModelConfig,
    RecoveryPlan,
    RecoveryPoint,
    Site,
    SystemState,
    VmState,
    health,
    initial_state,
    is_protected,
)
from model.successor import ACTIONS, apply, enabled, successors, try_apply

__all__ = [
    "ACTIONS",
    "LIFECYCLE",
    "STEADY",
    "ActionRefused",
    "Call",
    "Copy",
    "Dest",
    "Edge",
    "FailoverKind",
    "FaultKind",
    "LogHealth",
    "LossRecord",
    "ModelConfig",
    "ModelError",
    "Phase",
    "PhaseMachine",
    "RecoveryPlan",
    "RecoveryPoint",
    "Site",
    "SystemState",
    "UnknownCall",
    "VmState",
    "apply",
    "enabled",
    "health",
    "initial_state",
    "is_protected",
    "successors",
    "try_apply",
]
