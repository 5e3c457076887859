"""Replication health per VM, as Hyper-V Replica's Measure-VMReplication shows it.

:func:`health_of` reads one VM from the engine (``status``, ``unshipped_log_bytes``)
and, when a :class:`~engine.orchestration.scheduler.Scheduler` runs its cycles, that
scheduler's record of them; it returns a frozen :class:`VmHealth`: the model's phase,
the replication state Hyper-V Replica would name (``REPLICATION_STATES``), the health
(Normal, Warning or Critical) and the reason in words, the last replication time, the
recovery points and the change-log bytes not yet shipped. It reads only: nothing is
changed, no operation waited for.

**The rules** (docs/orchestration.md, "Health", says why). With F the policy's
frequency and a grace of ``GRACE_FRACTION`` of F (a cycle takes time to cut, ship and
apply), in the phases where cycles run (``LAG_PHASES``), the lag since the last
replication counts the cycles missed: a deadline passes at every F after the last
replication, plus the grace.

- Normal: no cycle missed.
- Warning: at least one cycle missed; replication paused; the last cycle failed (it
  is retried); the model's own health is Warning (a cycle cannot run now and the
  replica lags).
- Critical: more than ``CRITICAL_MISSED_FRACTION`` of an hour's cycles missed in a row
  (at least ``CRITICAL_MISSED_MIN``); resynchronisation needed; replication stopped
  for good; the model's health is Critical (the logs cannot be used); the VM's files
  are damaged.

The worst finding decides; the reason joins every finding at that level. The last
replication time is the newer of the newest recovery point's ``created_at`` and the
start of the last cycle the scheduler saw succeed (a cycle with nothing to ship makes
no point, yet the replica is current): without the scheduler's record an idle VM
looks as if it missed its cycles.

The engine's phases are strings here: the orchestrator does not import the model
(``tests/test_layers.py``); a test checks the table covers every phase the binding
knows.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from engine.clock import Clock
from engine.errors import DamagedState
from engine.orchestration.engine import ReplicationEngine
from engine.orchestration.scheduler import (
    HOUR_SECONDS,
    CycleRecord,
    Outcome,
    ReplicationPolicy,
)
from engine.replica.recovery_point import RecoveryPoint

#: Phase -> the replication state Hyper-V Replica names (Measure-VMReplication's
#: State). Where its list has no state for a phase, the closest is taken and
#: docs/orchestration.md says so.
REPLICATION_STATES: Final[Mapping[str, str]] = {
    "unprotected": "Disabled",
    "initial_replication": "InitialReplicationInProgress",
    "protected": "Replicating",
    "reverse_replicating": "Replicating",
    "replication_paused": "Suspended",
    "resynchronizing": "WaitingForStartResynchronize",
    "test_failover": "Replicating",  # cycles go on during a drill (decision 4)
    "failover_prepared": "PreparedForFailover",
    "failing_over": "RecoveryInProgress",
    "failed_over": "FailedOverWaitingCompletion",
    "committed": "FailedOver",
    "replication_stopped": "Error",
}
#: The state shown for a VM whose files are damaged (its phase cannot be trusted).
DAMAGED_STATE: Final = "Error"

#: Phases in which cycles run, so a lag since the last replication means cycles missed.
LAG_PHASES: Final = frozenset({"protected", "reverse_replicating", "test_failover"})

#: A cycle counts as missed once its deadline (F after the last replication) passes
#: by more than this fraction of F: cutting, shipping and applying a cycle take time,
#: and the scheduler starts it only once it is due.
GRACE_FRACTION: Final = 0.2
#: Critical once the cycles missed in a row exceed this fraction of an hour's cycles:
#: Hyper-V Replica's threshold over an hour, applied to the misses since the last
#: replication (every one of them within the hour while the lag is under one).
CRITICAL_MISSED_FRACTION: Final = 0.2
#: ... and at least this many, so that Warning (one missed) comes before Critical at
#: every frequency (a fifth of four 15-minute cycles is less than one).
CRITICAL_MISSED_MIN: Final = 2


class Health(enum.Enum):
    """Replication health as the product shows it, in order of severity."""

    NORMAL = "Normal"
    WARNING = "Warning"
    CRITICAL = "Critical"

    @property
    def severity(self) -> int:
        """0 for Normal, 1 for Warning, 2 for Critical."""
        return list(Health).index(self)


#: The model's health (``VmStatus.health``) in these terms.
MODEL_HEALTH: Final = {
    "normal": Health.NORMAL,
    "warning": Health.WARNING,
    "critical": Health.CRITICAL,
}


@dataclass(frozen=True)
class VmHealth:
    """One VM's replication health, read at ``checked_at``."""

    name: str
    phase: str
    replication_state: str
    health: Health
    reason: str
    checked_at: float
    frequency_seconds: int
    last_replication_at: float | None
    lag_seconds: float | None
    recovery_point_count: int
    latest_recovery_point: RecoveryPoint | None
    latest_app_consistent_point: RecoveryPoint | None
    active_site: str | None  # None: the VM's files are damaged
    unshipped_log_bytes: int | None  # None: its active site's logs cannot be read

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (times in seconds since the Unix epoch)."""
        return {
            "name": self.name,
            "phase": self.phase,
            "replication_state": self.replication_state,
            "health": self.health.value,
            "reason": self.reason,
            "checked_at": self.checked_at,
            "frequency_seconds": self.frequency_seconds,
            "last_replication_at": self.last_replication_at,
            "lag_seconds": self.lag_seconds,
            "recovery_points": {
                "count": self.recovery_point_count,
                "latest": _point_json(self.latest_recovery_point),
                "latest_app_consistent": _point_json(self.latest_app_consistent_point),
            },
            "active_site": self.active_site,
            "unshipped_log_bytes": self.unshipped_log_bytes,
        }


def _point_json(point: RecoveryPoint | None) -> dict[str, object] | None:
    if point is None:
        return None
    return {
        "recovery_point_id": point.recovery_point_id,
        "created_at": point.created_at,
        "app_consistent": point.app_consistent,
    }


def grace_seconds(policy: ReplicationPolicy) -> float:
    """How late a cycle may be before it counts as missed."""
    return policy.frequency_seconds * GRACE_FRACTION


def critical_missed_cycles(policy: ReplicationPolicy) -> int:
    """Cycles missed in a row from which health is Critical: more than a fifth of
    an hour's cycles, at least two (30 s: 25; 5 min: 3; 15 min: 2)."""
    per_hour = HOUR_SECONDS / policy.frequency_seconds
    return max(CRITICAL_MISSED_MIN, math.floor(CRITICAL_MISSED_FRACTION * per_hour) + 1)


def missed_cycles(lag_seconds: float, policy: ReplicationPolicy) -> int:
    """The cycle deadlines passed in ``lag_seconds`` since the last replication."""
    late = lag_seconds - grace_seconds(policy)
    return max(0, math.floor(late / policy.frequency_seconds))


def warning_after_seconds(policy: ReplicationPolicy) -> float:
    """The lag from which one cycle is missed (health Warning)."""
    return policy.frequency_seconds + grace_seconds(policy)


def critical_after_seconds(policy: ReplicationPolicy) -> float:
    """The lag from which health is Critical."""
    frequency = policy.frequency_seconds
    return critical_missed_cycles(policy) * frequency + grace_seconds(policy)


def health_of(
    engine: ReplicationEngine,
    vm: str,
    policy: ReplicationPolicy,
    clock: Clock,
    *,
    record: CycleRecord | None = None,
) -> VmHealth:
    """The health of ``vm`` now (``clock``: the engine's), under ``policy``;
    ``record``: the scheduler's record of its cycles, when one runs them."""
    now = clock.now()
    try:
        status = engine.status(vm)
    except DamagedState as damage:
        return _damaged(vm, policy, now, damage)
    points = status.recovery_points
    latest = points[-1] if points else None
    app_consistent = next((p for p in reversed(points) if p.app_consistent), None)
    seen = record.last_succeeded_at if record is not None else None
    newest = None if latest is None else latest.created_at
    times = [t for t in (newest, seen) if t is not None]
    last = max(times) if times else None
    lag = None if last is None else max(0.0, now - last)
    findings = [
        *_phase_findings(status.phase, status.log_problem, lag),
        *_model_findings(status.health, status.phase, status.log_problem, engine),
    ]
    if status.phase in LAG_PHASES:
        findings.extend(_lag_findings(lag, policy, record))
    health, reason = _verdict(findings)
    return VmHealth(
        name=vm,
        phase=status.phase,
        replication_state=REPLICATION_STATES[status.phase],
        health=health,
        reason=reason,
        checked_at=now,
        frequency_seconds=policy.frequency_seconds,
        last_replication_at=last,
        lag_seconds=lag,
        recovery_point_count=len(points),
        latest_recovery_point=latest,
        latest_app_consistent_point=app_consistent,
        active_site=status.active_site,
        unshipped_log_bytes=engine.unshipped_log_bytes(vm),
    )


def health_of_all(
    engine: ReplicationEngine,
    policies: Mapping[str, ReplicationPolicy],
    clock: Clock,
    *,
    records: Mapping[str, CycleRecord] | None = None,
) -> tuple[VmHealth, ...]:
    """The health of every VM in ``policies``, by name (``records``: the
    scheduler's, e.g. ``Scheduler.records()``)."""
    found = records or {}
    return tuple(
        health_of(engine, vm, policies[vm], clock, record=found.get(vm))
        for vm in sorted(policies)
    )


Finding = tuple[Health, str]


def _verdict(findings: list[Finding]) -> tuple[Health, str]:
    worst = max((health for health, _ in findings), key=lambda h: h.severity)
    return worst, "; ".join(text for health, text in findings if health is worst)


def _phase_findings(
    phase: str, log_problem: str | None, lag: float | None
) -> list[Finding]:
    """What the phase alone says."""
    behind = "" if lag is None else f"; the replica is {lag:.0f} s behind"
    texts: dict[str, Finding] = {
        "unprotected": (Health.NORMAL, "replication is not enabled"),
        "initial_replication": (
            Health.NORMAL,
            "initial replication in progress: no cycle runs before it ends",
        ),
        "replication_paused": (
            Health.WARNING,
            "replication is paused: nothing is shipped until it is resumed" + behind,
        ),
        "resynchronizing": (
            Health.CRITICAL,
            "resynchronization required: "
            + (log_problem or "the replica must be compared with the source")
            + "; run resynchronize",
        ),
        "test_failover": (Health.NORMAL, "a test failover is open; cycles go on"),
        "failover_prepared": (
            Health.NORMAL,
            "prepared for failover: the source is shut down and every change shipped",
        ),
        "failing_over": (
            Health.NORMAL,
            "failover in progress: replication is stopped until reverse replication",
        ),
        "failed_over": (
            Health.NORMAL,
            (
                "failed over, waiting for commit: not replicating until reverse "
                "replication"
            ),
        ),
        "committed": (
            Health.NORMAL,
            "failover committed: not replicating until reverse replication",
        ),
        "replication_stopped": (
            Health.CRITICAL,
            (
                "replication stopped for good (a failover was cancelled): disable, "
                "then enable protection"
            ),
        ),
    }
    found = texts.get(phase)
    return [] if found is None else [found]


def _model_findings(
    model_health: str,
    phase: str,
    log_problem: str | None,
    engine: ReplicationEngine,
) -> list[Finding]:
    """The model's health (``VmStatus.health``), said in words."""
    health = MODEL_HEALTH[model_health]
    if health is Health.NORMAL or phase in ("resynchronizing", "replication_stopped"):
        return []  # said by the phase already
    if health is Health.CRITICAL:
        why = (
            log_problem
            or "the change logs cannot be used (past their limit, or damaged)"
        )
        said = f"{why}: the next cycle marks the VM for resynchronization (then "
        return [(health, said + "run resynchronize)")]
    blocked = (
        "the link between the sites is down"
        if not engine.link_up
        else "a cycle cannot run now (a site is down or the target's storage is full)"
    )
    return [(health, f"{blocked} and the replica lags behind the source")]


def _lag_findings(
    lag: float | None, policy: ReplicationPolicy, record: CycleRecord | None
) -> list[Finding]:
    """The lag rule, and the last cycle the scheduler tried."""
    frequency = policy.frequency_seconds
    findings: list[Finding] = []
    if record is not None and record.last_outcome is Outcome.FAILED:
        text = f"the last cycle failed ({record.failures_in_a_row} in a row): "
        text += f"{record.last_reason}; it is retried"
        findings.append((Health.WARNING, text))
    refused = ""
    if record is not None and record.last_outcome is Outcome.SKIPPED:
        refused = f"; the last cycle was refused: {record.last_reason}"
    if lag is None:
        text = "no replication seen: no recovery point, and no cycle recorded"
        findings.append((Health.WARNING, text + refused))
        return findings
    missed = missed_cycles(lag, policy)
    if missed == 0:
        text = f"last replication {lag:.0f} s ago, within the {frequency} s frequency"
        findings.append((Health.NORMAL, text))
        return findings
    critical = critical_missed_cycles(policy)
    text = f"no replication for {lag:.0f} s: {missed} cycle(s) of {frequency} s "
    if missed >= critical:
        text += "missed in a row, more than a fifth of an hour's (Critical from "
        text += f"{critical}, {critical_after_seconds(policy):.0f} s)"
        findings.append((Health.CRITICAL, text + refused))
    else:
        text += f"missed (Warning from {warning_after_seconds(policy):.0f} s, "
        text += f"Critical from {critical_after_seconds(policy):.0f} s)"
        findings.append((Health.WARNING, text + refused))
    return findings


def _damaged(
    vm: str, policy: ReplicationPolicy, now: float, damage: DamagedState
) -> VmHealth:
    return VmHealth(
        name=vm,
        phase="damaged",
        replication_state=DAMAGED_STATE,
        health=Health.CRITICAL,
        reason=f"the VM's files are damaged: {damage}",
        checked_at=now,
        frequency_seconds=policy.frequency_seconds,
        last_replication_at=None,
        lag_seconds=None,
        recovery_point_count=0,
        latest_recovery_point=None,
        latest_app_consistent_point=None,
        active_site=None,
        unshipped_log_bytes=None,
    )
