"""In every phase the engine reaches, every operation gets exactly the model's verdict.

For each phase on the way through the whole lifecycle (drill, planned failover and
failback, unplanned failover, cancel), every engine operation is tried: one the model
refuses raises TransitionNotAllowed carrying the model's reason, and changes nothing;
one the model allows runs, on a copy of both sites (so the walk goes on from the
original).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import ReplicationError, TransitionNotAllowed
from engine.orchestration.engine import ReplicationEngine
from model import ActionRefused, Call, apply

BLOCK = 4096
DISKS = {"os": 8 * BLOCK, "data": 8 * BLOCK}

Operation = Callable[[ReplicationEngine], object]


def _other_point(engine: ReplicationEngine) -> int:
    points = engine.status("web").recovery_points
    return points[0].recovery_point_id if points else 1


#: Engine method -> (the model action it asks first, a call with valid arguments).
OPERATIONS: dict[str, tuple[str, Operation]] = {
    "enable_protection": ("enable_protection", lambda e: e.enable_protection("web")),
    "replicate": ("replicate", lambda e: e.replicate("web")),
    "pause": ("pause", lambda e: e.pause("web")),
    "resynchronize": ("resynchronize", lambda e: e.resynchronize("web")),
    "resume": ("resume", lambda e: e.resume("web")),
    "disable": ("disable_protection", lambda e: e.disable("web")),
    "start_test_failover": (
        "start_test_failover", lambda e: e.start_test_failover("web")
    ),
    "cleanup_test_failover": (
        "cleanup_test_failover", lambda e: e.cleanup_test_failover("web")
    ),
    "planned_failover": (
        "planned_failover",
        lambda e: e.planned_failover("web", then_fail_over=False),
    ),
    "failover": ("failover", lambda e: e.failover("web")),
    "unplanned_failover": ("unplanned_failover", lambda e: e.unplanned_failover("web")),
    "change_recovery_point": (
        "change_recovery_point",
        lambda e: e.change_recovery_point("web", _other_point(e)),
    ),
    "complete_failover": ("complete_failover", lambda e: e.complete_failover("web")),
    "commit": ("commit", lambda e: e.commit("web")),
    "cancel_failover": ("cancel_failover", lambda e: e.cancel_failover("web")),
    "reverse_replication": (
        "reverse_replication", lambda e: e.reverse_replication("web")
    ),
}  # fmt: skip

#: A walk through every phase: the step taken to reach the next one.
WALK: list[Operation] = [
    lambda e: e.enable_protection("web"),
    lambda e: e.pause("web"),
    lambda e: e.resume("web"),
    lambda e: e.start_test_failover("web"),
    lambda e: e.cleanup_test_failover("web"),
    lambda e: e.planned_failover("web", then_fail_over=False),
    lambda e: e.failover("web"),
    lambda e: e.commit("web"),
    lambda e: e.reverse_replication("web"),
    lambda e: e.unplanned_failover("web"),
    lambda e: e.commit("web"),
    lambda e: e.reverse_replication("web"),
    lambda e: e.planned_failover("web", then_fail_over=False),
    lambda e: e.cancel_failover("web"),
    lambda e: e.disable("web"),
]


def _model_refusal(engine: ReplicationEngine, action: str) -> str | None:
    """The model's refusal of ``action`` (default arguments) on the engine's view."""
    vm = engine.vm("web")
    view = vm.view()
    if action == "resynchronize" and view.vms[0].phase.value == "resynchronizing":
        action = "complete_resynchronization"  # resynchronize() runs the second step
    args: tuple[tuple[str, object], ...] = ()
    if action == "start_test_failover":
        args = (("point", 0),)
    elif action == "unplanned_failover":
        args = (("point", "latest"), ("shutdown", "skip"))
    elif action == "replicate":
        args = (("app_consistent", False),)
    elif action == "change_recovery_point":
        points = view.vms[0].points
        chosen = view.vms[0].chosen_point
        others = [i for i in range(len(points)) if i != chosen]
        args = (("point", others[0] if others else 0),)
    try:
        apply(vm.config, view, Call(action, vm=0, args=args))  # type: ignore[arg-type]
    except ActionRefused as refusal:
        return refusal.reason
    return None


def _copy_sites(tmp_path: Path, engine: ReplicationEngine, name: str) -> Path:
    engine.flush()
    target = tmp_path / name
    for site in ("p", "s"):
        shutil.copytree(
            tmp_path / "live" / site, target / site,
            ignore=shutil.ignore_patterns("site.lock"),
        )  # fmt: skip
    return target


def test_every_operation_in_every_phase_gets_the_models_verdict(tmp_path: Path) -> None:
    live = tmp_path / "live"
    engine = ReplicationEngine.open(live / "p", live / "s")
    engine.create_vm("web", DISKS)
    phases_seen = []
    tried = {"allowed": 0, "refused": 0}
    version = 0
    try:
        for index, step in enumerate([*WALK, None]):
            phase = engine.status("web").phase
            phases_seen.append(phase)
            for name, (action, call) in OPERATIONS.items():
                refusal = _model_refusal(engine, action)
                if refusal is not None:
                    with pytest.raises(TransitionNotAllowed) as refused:
                        call(engine)
                    assert refusal in str(refused.value), (phase, name)
                    assert engine.status("web").phase == phase, (phase, name)
                    tried["refused"] += 1
                    continue
                tried["allowed"] += 1
                engine.close()  # copy quiescent sites, then reopen the original
                copy = _copy_sites(tmp_path, engine, f"{index}-{name}")
                engine = ReplicationEngine.open(live / "p", live / "s")
                with ReplicationEngine.open(copy / "p", copy / "s") as trial:
                    try:
                        call(trial)
                    except TransitionNotAllowed as error:  # pragma: no cover
                        pytest.fail(f"{phase}: {name} allowed by the model, refused "
                                    f"by the engine: {error}")  # fmt: skip
                    except ReplicationError:
                        pass  # allowed, and failed for a reason of its own
            if step is None:
                break
            version += 1
            if engine.status("web").phase in ("protected", "reverse_replicating"):
                engine.write(
                    "web", "os", (version % 8) * BLOCK, bytes([version]) * BLOCK
                )
                engine.replicate("web")
            step(engine)
    finally:
        engine.close()
    assert tried["allowed"] >= 30, tried
    assert tried["refused"] >= 100, tried
    assert set(phases_seen) >= {
        "unprotected", "protected", "replication_paused", "test_failover",
        "failover_prepared", "failed_over", "committed", "reverse_replicating",
        "replication_stopped",
    }  # fmt: skip
