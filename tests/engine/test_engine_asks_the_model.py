"""The engine never decides alone: every operation is allowed exactly when the model
allows it, and a refusal carries the model's own message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import TransitionNotAllowed
from engine.orchestration.engine import ReplicationEngine
from engine.testing import ManualClock
from model import ActionRefused, Call, apply

BLOCK = 4096
DISKS = {"os": 16 * BLOCK}

# How to bring the VM into each phase the engine can reach, from unprotected.
SETUPS: dict[str, Callable[[ReplicationEngine], object]] = {
    "unprotected": lambda engine: None,
    "protected": lambda engine: engine.enable_protection("web"),
    "replication_paused": lambda engine: (
        engine.enable_protection("web"),
        engine.pause("web"),
    ),
    "resynchronizing": lambda engine: (
        engine.enable_protection("web"),
        engine.write("web", "os", 0, b"x" * 9 * BLOCK),  # past half the disk
        engine.replicate("web"),
    ),
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


@pytest.mark.parametrize("phase", list(SETUPS))
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_the_engine_does_what_the_model_allows_and_nothing_else(
    phase: str, operation: str, tmp_path: Path
) -> None:
    """Same verdict as model.apply on the engine's own view; same message."""
    with ReplicationEngine.open(
        tmp_path / "p", tmp_path / "s", clock=ManualClock()
    ) as engine:
        engine.create_vm("web", DISKS)
        SETUPS[phase](engine)
        vm = engine.vm("web")
        assert engine.status("web").phase == phase
        run, call = OPERATIONS[operation]
        if operation == "resynchronize" and phase == "resynchronizing":
            call = Call("complete_resynchronization", vm=0)
        try:
            apply(vm.config, vm.view(), call)
            expected: str | None = None
        except ActionRefused as refusal:
            expected = str(refusal)
        if expected is None:
            run(engine)  # allowed: must not raise
        else:
            with pytest.raises(TransitionNotAllowed) as refused:
                run(engine)
            assert str(refused.value) == expected
            assert engine.status("web").phase == phase  # nothing moved
