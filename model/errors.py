"""Errors the model raises: an action refused, or a call that names nothing known.

A refusal always says which VM (or site, or plan), which action, the phase, the guard
that failed with the reason in the operator's words, and what is allowed there, so the
same text can surface unchanged from the engine
(``engine.errors.TransitionNotAllowed``).
"""

from __future__ import annotations


class ModelError(Exception):
    """Base of the model's errors."""


class ActionRefused(ModelError):
    """The model does not allow this action in this state.

    Raised by ``model.successor.apply``. ``guard`` names what failed: ``phase`` when the
    lifecycle has no edge for the action from the current phase, otherwise the name of
    the edge guard or action guard. Do one of ``allowed`` first, or fix the cause.
    For a VM, ``allowed`` holds the operator's and the replication agent's actions
    and ``world`` the environment's (writes, faults) enabled now.
    """

    def __init__(
        self,
        *,
        action: str,
        subject: str,
        phase: str | None,
        guard: str,
        reason: str,
        allowed: tuple[str, ...],
        world: tuple[str, ...] = (),
    ) -> None:
        self.action = action
        self.subject = subject
        self.phase = phase
        self.guard = guard
        self.reason = reason
        self.allowed = allowed
        self.world = world
        where = f" in phase {phase}" if phase is not None else ""
        choices = ", ".join(allowed) if allowed else "nothing (wait for a repair)"
        said = f"cannot {action} {subject}{where}: {reason} [guard {guard}]; "
        said += f"allowed now: {choices}"
        if world:
            # The workload's writes and the faults happen to the VM; nobody asks
            # for them, so they are not among what is allowed (a trace may hold them).
            said += f"; the workload and faults may: {', '.join(world)}"
        super().__init__(said)


class UnknownCall(ModelError):
    """A call names an action, VM, site or plan the model does not have.

    The message lists what exists. Fix the trace or the request.
    """
