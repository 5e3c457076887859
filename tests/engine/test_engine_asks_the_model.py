"""The engine never decides alone: every operation is allowed exactly when the model
allows it, and a refusal carries the model's own message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import TransitionNotAllowed
from engine.orchestration.engine import ReplicationEngine
from engine.testing import ManualClock
from model import (
    ActionRefused,
    Call,
    ModelConfig,
    SystemState,
    apply,
    initial_state,
)

BLOCK = 4096
DISKS = {"os": 16 * BLOCK}


def _protect(engine: ReplicationEngine) -> None:
    engine.enable_protection("web")


def _pause(engine: ReplicationEngine) -> None:
    engine.enable_protection("web")
    engine.pause("web")


def _overflow(engine: ReplicationEngine) -> None:
    engine.enable_protection("web")
    engine.write("web", "os", 0, b"x" * 9 * BLOCK)  # past half the disk
    engine.replicate("web")


# How to bring the VM into each phase the engine can reach, from unprotected.
SETUPS: dict[str, Callable[[ReplicationEngine], object]] = {
    "unprotected": lambda engine: None,
    "protected": _protect,
    "replication_paused": _pause,
    "resynchronizing": _overflow,
}

# Each engine operation and the model call it must be asked as.
OPERATIONS: dict[str, tuple[Callable[[ReplicationEngine], object], Call]] = {
    "enable_protection": (lambda e: e.enable_protection("web"),
                          Call("enable_protection", vm=0)),
    "replicate": (lambda e: e.replicate("web"),
                  Call("replicate", vm=0, args=(("app_consistent", False),))),
    "pause": (lambda e: e.pause("web"), Call("pause", vm=0)),
    "resume": (lambda e: e.resume("web"), Call("resume", vm=0)),
    "resynchronize": (lambda e: e.resynchronize("web"), Call("resynchronize", vm=0)),
    "disable": (lambda e: e.disable("web"), Call("disable_protection", vm=0)),
}  # fmt: skip


# The same histories told to the model: the oracle is the model's own state after
# them, never the engine's view of itself (a view that misread the engine would make
# the engine and its oracle agree on a wrong verdict).
PROTECT = (
    Call("enable_protection", vm=0),
    Call("copy_disk", vm=0),  # the engine copies every disk (one here) at enable
    Call("complete_initial_replication", vm=0),
)
HISTORIES: dict[str, tuple[Call, ...]] = {
    "unprotected": (),
    "protected": PROTECT,
    "replication_paused": (*PROTECT, Call("pause", vm=0)),
    "resynchronizing": (
        *PROTECT,
        Call("write", vm=0),
        Call("overflow_log", vm=0),  # the write is past the log's limit
        Call("replicate", vm=0, args=(("app_consistent", False),)),
    ),
}

#: The model steps an engine operation takes after the one it asks first.
THEN: dict[str, tuple[Call, ...]] = {
    "enable_protection": PROTECT[1:],  # the whole initial replication
    "resynchronize": (Call("complete_resynchronization", vm=0),),  # both halves
}


def model_state(config: ModelConfig, history: tuple[Call, ...]) -> SystemState:
    """The model's state after ``history`` from its initial state."""
    state = initial_state(config)
    for call in history:
        state = apply(config, state, call)
    return state


@pytest.mark.parametrize("phase", list(SETUPS))
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_the_engine_does_what_the_model_allows_and_nothing_else(
    phase: str, operation: str, tmp_path: Path
) -> None:
    """Same verdict as model.apply on the model's own run of the history; same
    message; an allowed operation lands the engine where it lands the model."""
    with ReplicationEngine.open(
        tmp_path / "p", tmp_path / "s", clock=ManualClock()
    ) as engine:
        engine.create_vm("web", DISKS)
        SETUPS[phase](engine)
        config = engine.vm("web").config
        state = model_state(config, HISTORIES[phase])
        assert state.vms[0].phase.value == phase
        assert engine.status("web").phase == phase
        run, call = OPERATIONS[operation]
        if operation == "resynchronize" and phase == "resynchronizing":
            call = Call("complete_resynchronization", vm=0)
        try:
            after: SystemState | None = apply(config, state, call)
            expected: str | None = None
        except ActionRefused as refusal:
            after, expected = None, str(refusal)
        if after is None:
            with pytest.raises(TransitionNotAllowed) as refused:
                run(engine)
            assert str(refused.value) == expected
            assert engine.status("web").phase == phase  # nothing moved
        else:
            run(engine)  # allowed: must not raise
            for rest in THEN.get(call.action, ()):  # the steps the engine goes on to
                after = apply(config, after, rest)
            assert engine.status("web").phase == after.vms[0].phase.value
