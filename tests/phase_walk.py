"""A walk through every phase of the lifecycle, and the model's verdict on each call.

Shared by the tests that try every engine operation in every phase the walk reaches
(``tests/failover/test_verdicts.py``: the engine gives the model's verdict;
``tests/hostile/test_hostile_inputs.py``: a refused operation changes no byte of either
site). ``tests/`` is on ``sys.path`` through its ``conftest.py``, so both import it as
``phase_walk``.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.orchestration.engine import ReplicationEngine
from model import ActionRefused, Call, apply

VM = "web"

Operation = Callable[[ReplicationEngine], object]


def _other_point(engine: ReplicationEngine) -> int:
    points = engine.status(VM).recovery_points
    return points[0].recovery_point_id if points else 1


#: Engine method -> (the model action it asks first, a call with valid arguments).
OPERATIONS: dict[str, tuple[str, Operation]] = {
    "enable_protection": ("enable_protection", lambda e: e.enable_protection(VM)),
    "replicate": ("replicate", lambda e: e.replicate(VM)),
    "pause": ("pause", lambda e: e.pause(VM)),
    "resynchronize": ("resynchronize", lambda e: e.resynchronize(VM)),
    "resume": ("resume", lambda e: e.resume(VM)),
    "disable": ("disable_protection", lambda e: e.disable(VM)),
    "start_test_failover": (
        "start_test_failover", lambda e: e.start_test_failover(VM)
    ),
    "cleanup_test_failover": (
        "cleanup_test_failover", lambda e: e.cleanup_test_failover(VM)
    ),
    "planned_failover": (
        "planned_failover",
        lambda e: e.planned_failover(VM, then_fail_over=False),
    ),
    "failover": ("failover", lambda e: e.failover(VM)),
    "unplanned_failover": ("unplanned_failover", lambda e: e.unplanned_failover(VM)),
    "change_recovery_point": (
        "change_recovery_point",
        lambda e: e.change_recovery_point(VM, _other_point(e)),
    ),
    "complete_failover": ("complete_failover", lambda e: e.complete_failover(VM)),
    "commit": ("commit", lambda e: e.commit(VM)),
    "cancel_failover": ("cancel_failover", lambda e: e.cancel_failover(VM)),
    "reverse_replication": (
        "reverse_replication", lambda e: e.reverse_replication(VM)
    ),
}  # fmt: skip

#: A walk through every phase: the step taken to reach the next one.
WALK: list[Operation] = [
    lambda e: e.enable_protection(VM),
    lambda e: e.pause(VM),
    lambda e: e.resume(VM),
    lambda e: e.start_test_failover(VM),
    lambda e: e.cleanup_test_failover(VM),
    lambda e: e.planned_failover(VM, then_fail_over=False),
    lambda e: e.failover(VM),
    lambda e: e.commit(VM),
    lambda e: e.reverse_replication(VM),
    lambda e: e.unplanned_failover(VM),
    lambda e: e.commit(VM),
    lambda e: e.reverse_replication(VM),
    lambda e: e.planned_failover(VM, then_fail_over=False),
    lambda e: e.cancel_failover(VM),
    lambda e: e.disable(VM),
]

#: Every phase the walk passes through.
PHASES_WALKED = frozenset({
    "unprotected", "protected", "replication_paused", "test_failover",
    "failover_prepared", "failed_over", "committed", "reverse_replicating",
    "replication_stopped",
})  # fmt: skip


def model_refusal(engine: ReplicationEngine, action: str) -> str | None:
    """The model's refusal of ``action`` (default arguments) on the engine's view."""
    vm = engine.vm(VM)
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


def step_forward(engine: ReplicationEngine, step: Operation, version: int) -> None:
    """Take one step of the walk, after a write and a cycle in a steady phase."""
    if engine.status(VM).phase in ("protected", "reverse_replicating"):
        block = engine.disk_sizes(VM)["os"] // 8
        engine.write(VM, "os", (version % 8) * block, bytes([version]) * block)
        engine.replicate(VM)
    step(engine)
