"""Distinct crash points of the failover scenarios, named for a person to read.

A sweep by operation index (``failover_sweep``) says "operation 233"; this module says
where that is: a **crash point** is

    (engine operation, its call, the last named step passed, what, to what, when)

- the *engine operation* of the scenario step under way: ``initial_replication``
  (``enable_protection``), ``cycle_apply`` (``replicate``), ``test_failover``,
  ``cleanup``, ``planned_failover`` (prepared, then ``failover``; or in one call),
  ``unplanned_failover``, ``change_recovery_point``, ``commit``, ``cancel``,
  ``reverse_resync`` (``reverse_replication``), ``failback`` (every step from
  ``reverse_replicating`` back to ``protected`` at the primary: the planned failover
  back, its commit, the reverse replication), and the scenario's other steps
  (``create_vm``, ``write``, ``flush``, ``disable``, ...); its *call* is the engine
  method (``commit`` of a failback and of a failover are different points);
- the *named step* is the last of the engine's ``crash_point`` hooks the operation
  passed (``engine.binding.failover.CRASH_POINTS``, ``engine.source.shipping``'s
  ``CYCLE_CRASH_POINTS``, ``engine.replica.store.CRASH_POINTS``), ``-`` before any;
- *what is done*: the file operation of the ``engine.storage.files`` seam (``fsync``,
  ``rename``, ...), or ``hook`` for a crash at a named step itself;
- *to what*: the file's role, its path with the site kept and the VM, the disks and
  the numbers generalised (``secondary:replicas/<vm>/undo/N.undo.tmp``); for a hook,
  its name;
- *when*: a kill ``before`` or ``after`` the file operation, or ``at`` a hook; a power
  cut is always before the operation (after it is the next one's before).

One counting run of each scenario lists every occurrence of every crash point
(:func:`census`); a campaign (``crash_campaign``) crashes one or more occurrences
of each, by SIGKILL and by power cut, and at a power cut every crash state of
``engine.storage.crash_states`` that its budget allows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

from failover_scenario import ORACLES, PLANS, run_scenario

from engine.storage import files
from engine.testing import CountingFileSystem

#: The operations the issue names, each of which must be crashed by kill and power.
OPERATIONS: Final = (
    "initial_replication",
    "cycle_apply",
    "test_failover",
    "cleanup",
    "planned_failover",
    "unplanned_failover",
    "change_recovery_point",
    "commit",
    "cancel",
    "reverse_resync",
    "failback",
)

_OPERATION_OF_CALL: Final = {
    "enable_protection": "initial_replication",
    "enable_protection_target_down": "initial_replication",
    "continue_initial_replication": "initial_replication",
    "replicate": "cycle_apply",
    "start_test_failover": "test_failover",
    "cleanup_test_failover": "cleanup",
    "prepare_planned_failover": "planned_failover",
    "failover": "planned_failover",
    "planned_failover": "planned_failover",
    "cancel_failover": "cancel",
    "reverse_replication": "reverse_resync",
    "write_stale": "write",
}
_FAILBACK_CALLS: Final = frozenset(
    {"prepare_planned_failover", "planned_failover", "failover", "commit"}
    | {"reverse_replication"}
)


class Label(NamedTuple):
    """One distinct crash point (see the module's essay)."""

    operation: str
    call: str
    after: str  # the last named step passed in this call, "-" before any
    kind: str  # the file operation, or "hook"
    role: str  # the file's role, or the hook's name
    when: str  # "before" / "after" (a kill), "at" (a hook); power: "before" / "at"

    def text(self) -> str:
        call = "" if self.call == self.operation else f" ({self.call})"
        where = "" if self.after == "-" else f" after {self.after}"
        return f"{self.operation}{call}{where}: {self.when} {self.kind} {self.role}"


@dataclass(frozen=True)
class Occurrence:
    """Where a crash point happens in a counting run: scenario, the index of its
    file operation (or of its hook call), and the label."""

    scenario: str
    index: int  # the file operation's trace index, or the hook call's number
    hook: bool
    label: Label


def step_operations(plan_name: str) -> list[tuple[str, str]]:
    """(operation, call) of each step of plan ``plan_name``."""
    plan = PLANS[plan_name]
    found = []
    reversed_from = False  # the VM reached reverse_replicating: failback may follow
    for index, step in enumerate(plan):
        before = plan[index - 1].phase if index else "unprotected"
        if before == "reverse_replicating" and step.action in _FAILBACK_CALLS:
            reversed_from = True
        operation = _OPERATION_OF_CALL.get(step.action, step.action)
        if reversed_from and step.action in _FAILBACK_CALLS:
            operation = "failback"
        if step.phase in ("protected", "replication_stopped", "unprotected"):
            reversed_from = False
        found.append((operation, step.action))
    return found


_NUMBER = re.compile(r"\d+")


def role(path: str) -> str:
    """A path of the trace (relative to the sites), generalised: ``site:rest``."""
    parts = [part for part in path.split("/") if part]
    if not parts:
        return "(sites)"
    site, rest = parts[0], parts[1:]
    general = []
    for part in rest:
        if part == "web":
            general.append("<vm>")
            continue
        part = re.sub(r"^(os|data)(?=\.|$)", "<disk>", part)
        general.append(_NUMBER.sub("N", part))
    return f"{site}:{'/'.join(general)}" if general else f"{site}:"


def file_role(path: str) -> str:
    """``role`` of a traced path, both sides of a rename."""
    return " -> ".join(role(side) for side in path.split(" -> "))


@dataclass(frozen=True)
class Census:
    """Every occurrence of every crash point of one scenario's counting run."""

    scenario: str
    operations: int
    hooks: int
    occurrences: tuple[Occurrence, ...]


def census(scenario: str, directory: Path, *, durable: bool = False) -> Census:
    """Run ``scenario`` once, counting file operations and hook calls; label each
    (``durable``: with ``durable_writes``, which adds fsyncs)."""
    sites = directory / "sites"
    sites.mkdir(parents=True)
    counting = CountingFileSystem()
    events: list[tuple[str, int, str]] = []  # ("step", i, "") or ("hook", n, name)
    hooks = 0

    def report(line: str) -> None:
        if line.startswith("step "):
            events.append(("step", int(line.split()[1]), str(counting.operations)))

    def hook(name: str) -> None:
        nonlocal hooks
        hooks += 1
        events.append(("hook", hooks, f"{counting.operations} {name}"))

    with files.use(counting):
        run_scenario(
            scenario, sites, durable_writes=durable, report=report, crash_point=hook
        )
    root = str(sites)
    trace = [(t.index, t.operation, t.path.replace(root, "")) for t in counting.trace]
    return Census(scenario, len(trace), hooks, _label(scenario, trace, events))


def _label(
    scenario: str,
    trace: Sequence[tuple[int, str, str]],
    events: Sequence[tuple[str, int, str]],
) -> tuple[Occurrence, ...]:
    """Walk the trace and the events together: each operation, each hook labelled."""
    operations = step_operations(scenario)
    found: list[Occurrence] = []
    position = 0  # into the trace
    step, after = -1, "-"

    def context() -> tuple[str, str]:
        return operations[step] if step >= 0 else ("open", "open")

    def file_operations(until: int) -> None:
        nonlocal position
        while position < len(trace) and trace[position][0] <= until:
            index, kind, path = trace[position]
            operation, call = context()
            for when in ("before", "after"):
                label = Label(operation, call, after, kind, file_role(path), when)
                found.append(Occurrence(scenario, index, False, label))
            position += 1

    for kind, number, detail in events:
        done = int(detail.split()[0])
        file_operations(done)
        if kind == "step":
            step, after = number, "-"
        else:
            name = detail.split()[1]
            operation, call = context()
            label = Label(operation, call, after, "hook", name, "at")
            found.append(Occurrence(scenario, number, True, label))
            after = name
    file_operations(len(trace))
    assert ORACLES[scenario].plan is PLANS[scenario]
    return tuple(found)
