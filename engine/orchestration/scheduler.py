"""Replication on a timer: each VM's policy, and the scheduler that runs its cycles.

The product replicates a VM every 30 seconds, 5 minutes or 15 minutes, can keep
additional recovery points (one an hour, up to 24 hours back) and can make some of
them application-consistent every few hours. :class:`ReplicationPolicy` holds those
three settings for one VM, checked when it is made. :class:`Scheduler` runs the cycles
they call for over a ``ReplicationEngine``, reading the time from the engine's clock
(injected, so a test drives it by hand):

- ``due(now)``: the VMs whose next cycle is due: none was run or seen yet, the last
  one began at least the frequency ago, or it failed at least ``RETRY_SECONDS`` ago;
- ``tick()``: one cycle for each due VM, app-consistent once the policy's interval has
  passed since the last app-consistent point. The model decides whether a cycle may
  run: a refusal (paused, the link down, failed over) is recorded as a skip with the
  model's message; a cycle that fails (the transfer lost, the target's storage full)
  is recorded with its error and retried. Nothing a VM's cycle raises stops the tick;
- ``run(stop)``: ticks until ``stop`` is set, waiting on the clock for the next VM
  due (``WaitingClock.wait_until``; ``ManualClock`` jumps there at once).

**Retention.** The engine keeps the newest ``retention_count`` points of every VM
(``ReplicationEngine.open``, given to each replica when it is made), merging the
oldest away; it cannot keep one point an hour and drop those between. So "N
additional recovery points" becomes "every point of the last N hours":
``ReplicationPolicy.retention_count`` is ``N * 3600 // frequency + 1`` points (the
newest, and N hours of cycles before it), a superset of the hourly points, paid for in
disk. The scheduler refuses a policy that needs more points than the VM's engine keeps
(:class:`~engine.errors.InvalidPolicy`): it could not be honoured.

**State.** Only memory: a :class:`CycleRecord` per VM, replaced at every cycle. The
durable facts are the engine's: a new scheduler takes the newest recovery point's time
as the last cycle's, so a restart does not start with a burst of cycles. ``tick`` and
``run`` belong to one thread; the records may be read from any (one lock).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from engine.clock import WaitingClock
from engine.errors import InvalidPolicy, ReplicationError, TransitionNotAllowed
from engine.orchestration.engine import ReplicationEngine
from engine.replica.recovery_point import RecoveryPoint

#: The replication frequencies the product offers, in seconds.
FREQUENCIES_SECONDS: Final = (30, 300, 900)
#: Additional recovery points: one an hour, at most 24 hours back (the product's).
ADDITIONAL_RECOVERY_POINTS_MAX: Final = 24
#: App-consistent points every 1 to 12 hours (the product's range).
APP_CONSISTENT_HOURS_MIN: Final = 1
APP_CONSISTENT_HOURS_MAX: Final = 12
HOUR_SECONDS: Final = 3600
#: A failed cycle is tried again this long after it failed, whatever the frequency:
#: the shortest frequency, so a link that stays down is not hammered by ``run``.
RETRY_SECONDS: Final = 30.0
#: How long ``run`` waits when no VM has a policy.
IDLE_SECONDS: Final = 30.0


@dataclass(frozen=True)
class ReplicationPolicy:
    """How one VM replicates: how often, how many hours of points, app-consistency."""

    frequency_seconds: int = 300
    additional_recovery_points: int = 0
    app_consistent_hours: int | None = None

    def __post_init__(self) -> None:
        problems = _policy_problems(self)
        if problems:
            msg = f"replication policy {self!r} is refused: " + "; ".join(problems)
            raise InvalidPolicy(msg)

    @property
    def retention_count(self) -> int:
        """The newest points to keep so that every point of the last
        ``additional_recovery_points`` hours stays (see the module's essay)."""
        hours = self.additional_recovery_points
        return hours * HOUR_SECONDS // self.frequency_seconds + 1

    @property
    def app_consistent_seconds(self) -> int | None:
        """The app-consistent interval in seconds (None: no app-consistent point)."""
        hours = self.app_consistent_hours
        return None if hours is None else hours * HOUR_SECONDS


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _policy_problems(policy: ReplicationPolicy) -> list[str]:
    """Every problem of ``policy``, each with the value and what is allowed."""
    problems = []
    frequency = policy.frequency_seconds
    if not _is_int(frequency) or frequency not in FREQUENCIES_SECONDS:
        problems.append(
            f"frequency_seconds={frequency!r} must be one of "
            f"{list(FREQUENCIES_SECONDS)} (30 seconds, 5 minutes, 15 minutes)"
        )
    additional = policy.additional_recovery_points
    additional_ok = (
        _is_int(additional) and 0 <= additional <= ADDITIONAL_RECOVERY_POINTS_MAX
    )
    if not additional_ok:
        problems.append(
            f"additional_recovery_points={additional!r} must be an int from 0 to "
            f"{ADDITIONAL_RECOVERY_POINTS_MAX} (hours of points kept)"
        )
    hours = policy.app_consistent_hours
    if hours is None:
        return problems
    if not _is_int(hours) or not (
        APP_CONSISTENT_HOURS_MIN <= hours <= APP_CONSISTENT_HOURS_MAX
    ):
        problems.append(
            f"app_consistent_hours={hours!r} must be None or an int from "
            f"{APP_CONSISTENT_HOURS_MIN} to {APP_CONSISTENT_HOURS_MAX}"
        )
    elif additional_ok and hours > additional:
        problems.append(
            f"app_consistent_hours={hours} must not exceed "
            f"additional_recovery_points={additional}: the app-consistent points are "
            "among the points kept, and a longer interval would leave hours with none "
            "to fail over to; keep more hours of points or take them more often"
        )
    return problems


class Outcome(enum.Enum):
    """What one scheduled cycle of a VM came to."""

    REPLICATED = "replicated"  # a cycle shipped and made a recovery point
    NOTHING_TO_SHIP = "nothing_to_ship"  # nothing was written: the replica is current
    RESYNCHRONIZING = "resynchronizing"  # the logs were unusable: resync needed
    SKIPPED = "skipped"  # the model refused the cycle (its message is the reason)
    FAILED = "failed"  # the cycle failed (its error is the reason); retried


SUCCEEDED: Final = frozenset({Outcome.REPLICATED, Outcome.NOTHING_TO_SHIP})


@dataclass(frozen=True)
class CycleOutcome:
    """One VM's cycle in a tick."""

    vm: str
    outcome: Outcome
    app_consistent: bool  # asked for
    recovery_point_id: int | None = None  # the point it made
    reason: str | None = None  # the refusal, the error, or why it resynchronises


@dataclass(frozen=True)
class CycleRecord:
    """What the scheduler saw of one VM's cycles (times from its clock)."""

    vm: str
    last_started_at: float | None = None  # the last cycle tried (the tick's time)
    last_outcome: Outcome | None = None
    last_reason: str | None = None
    last_succeeded_at: float | None = None  # replicated, or found nothing to ship
    last_app_consistent_at: float | None = None  # made an app-consistent point
    failures_in_a_row: int = 0
    replicated: int = 0
    nothing_to_ship: int = 0
    resynchronizing: int = 0
    skipped: int = 0
    failed: int = 0


@dataclass(frozen=True)
class TickReport:
    """One tick: when it began and the cycle of each VM that was due."""

    at: float
    cycles: tuple[CycleOutcome, ...]


@dataclass(frozen=True)
class SchedulerStatistics:
    """Counters since the scheduler was made."""

    ticks: int
    replicated: int
    nothing_to_ship: int
    resynchronizing: int
    skipped: int
    failed: int


class Scheduler:
    """Runs each VM's cycles at its policy's frequency over one engine."""

    def __init__(
        self,
        engine: ReplicationEngine,
        clock: WaitingClock,
        policies: Mapping[str, ReplicationPolicy] | None = None,
    ) -> None:
        """Schedule ``policies`` (VM name -> policy) on ``engine``; ``clock`` must
        be the engine's own (recovery points carry its times)."""
        self._engine = engine
        self._clock = clock
        self._policies: dict[str, ReplicationPolicy] = {}
        self._records: dict[str, CycleRecord] = {}
        self._lock = threading.Lock()  # guards the two dicts above
        self._ticks = 0
        for vm, policy in (policies or {}).items():
            self.set_policy(vm, policy)

    def set_policy(self, vm: str, policy: ReplicationPolicy) -> None:
        """Schedule ``vm`` with ``policy`` (replacing its policy, keeping its record).

        Refused (:class:`InvalidPolicy`) when the engine does not know the VM, or
        keeps fewer recovery points than the policy needs. A damaged VM is accepted:
        its cycles fail, and say why, until it is repaired.
        """
        if not isinstance(policy, ReplicationPolicy):  # caller input, whatever its type
            kind = type(policy).__name__  # type: ignore[unreachable]
            msg = f"policy={policy!r} must be a ReplicationPolicy (got {kind})"
            raise InvalidPolicy(msg)
        known = self._engine.vm_names()
        if vm not in known:
            msg = f"vm {vm!r} is unknown to the engine; known VMs: {list(known)}"
            raise InvalidPolicy(msg)
        if vm not in self._engine.damaged:
            kept = self._engine.vm(vm).retention_count
            if kept < policy.retention_count:
                hours = policy.additional_recovery_points
                needed = policy.retention_count
                msg = f"policy for VM {vm!r} keeps {hours} hours of points at "
                msg += f"{policy.frequency_seconds} s cycles, which needs the newest "
                msg += f"{needed} recovery points; the engine keeps {kept}: open it "
                msg += f"with retention_count >= {needed}, or keep fewer hours"
                raise InvalidPolicy(msg)
        with self._lock:
            self._policies[vm] = policy
            self._records.setdefault(vm, CycleRecord(vm))

    def remove_policy(self, vm: str) -> None:
        """Stop scheduling ``vm`` (its record goes too)."""
        with self._lock:
            if vm not in self._policies:
                msg = f"vm {vm!r} has no policy; scheduled: {sorted(self._policies)}"
                raise InvalidPolicy(msg)
            del self._policies[vm]
            del self._records[vm]

    def policies(self) -> dict[str, ReplicationPolicy]:
        """Each scheduled VM's policy, by name."""
        with self._lock:
            return dict(sorted(self._policies.items()))

    def record(self, vm: str) -> CycleRecord:
        """What the scheduler saw of ``vm``'s cycles."""
        with self._lock:
            found = self._records.get(vm)
            if found is None:
                msg = f"vm {vm!r} has no policy; scheduled: {sorted(self._policies)}"
                raise InvalidPolicy(msg)
            return found

    def records(self) -> dict[str, CycleRecord]:
        """Every scheduled VM's record, by name."""
        with self._lock:
            return dict(sorted(self._records.items()))

    def next_due_at(self, vm: str, now: float | None = None) -> float:
        """When ``vm``'s next cycle is due, seen at ``now`` (default: the clock's).

        After a failure, ``RETRY_SECONDS`` after it; otherwise the frequency after the
        last cycle tried (or, before the first, after the newest recovery point). A
        last cycle after ``now`` (the clock stepped back) makes the VM due at ``now``.
        """
        policy = self._policies_get(vm)
        record = self.record(vm)
        now = self._clock.now() if now is None else now
        last = record.last_started_at
        if last is None:
            newest = _newest_point(self._points(vm))
            last = None if newest is None else newest.created_at
        if last is None or last > now:
            return now
        if record.last_outcome is Outcome.FAILED:
            return last + RETRY_SECONDS
        return last + policy.frequency_seconds

    def due(self, now: float | None = None) -> tuple[str, ...]:
        """The scheduled VMs whose cycle is due at ``now`` (default: the clock's)."""
        when = self._clock.now() if now is None else now
        return tuple(vm for vm in self.policies() if self.next_due_at(vm, when) <= when)

    def tick(self, stop: threading.Event | None = None) -> TickReport:
        """Run one cycle for each VM due now, in name order, until ``stop`` is set
        (the cycle under way ends; the VMs after it wait for the next tick); never
        raises for a VM's cycle (each outcome is recorded and returned)."""
        now = self._clock.now()
        cycles = []
        for vm in self.due(now):
            if stop is not None and stop.is_set():
                break
            cycles.append(self._cycle(vm, now))
        with self._lock:
            self._ticks += 1
        return TickReport(at=now, cycles=tuple(cycles))

    def run(self, stop: threading.Event) -> int:
        """Tick, wait on the clock until the next VM is due, again, until ``stop``
        is set; return the number of ticks run."""
        ticks = 0
        while not stop.is_set():
            self.tick(stop)
            ticks += 1
            if self._clock.wait_until(self.next_wake_at(), stop):
                break
        return ticks

    def statistics(self) -> SchedulerStatistics:
        """Counters over every scheduled VM since this scheduler was made."""
        records = self.records().values()
        with self._lock:
            ticks = self._ticks
        return SchedulerStatistics(
            ticks=ticks,
            replicated=sum(r.replicated for r in records),
            nothing_to_ship=sum(r.nothing_to_ship for r in records),
            resynchronizing=sum(r.resynchronizing for r in records),
            skipped=sum(r.skipped for r in records),
            failed=sum(r.failed for r in records),
        )

    # -- internals ---------------------------------------------------------------------

    def _policies_get(self, vm: str) -> ReplicationPolicy:
        with self._lock:
            found = self._policies.get(vm)
        if found is None:
            msg = f"vm {vm!r} has no policy; scheduled: {sorted(self._policies)}"
            raise InvalidPolicy(msg)
        return found

    def next_wake_at(self) -> float:
        """When the next VM is due (or, with none scheduled, an idle wait ends)."""
        now = self._clock.now()
        scheduled = self.policies()
        if not scheduled:
            return now + IDLE_SECONDS
        return min(self.next_due_at(vm, now) for vm in scheduled)

    def _points(self, vm: str) -> tuple[RecoveryPoint, ...]:
        """The VM's recovery points (none when they cannot be read: its cycle, due
        then, records why)."""
        try:
            return self._engine.status(vm).recovery_points
        except ReplicationError:
            return ()

    def _app_consistent_due(self, vm: str, now: float) -> bool:
        interval = self._policies_get(vm).app_consistent_seconds
        if interval is None:
            return False
        last = self.record(vm).last_app_consistent_at
        if last is None:
            newest = _newest_point(self._points(vm), app_consistent=True)
            last = None if newest is None else newest.created_at
        return last is None or last > now or now - last >= interval

    def _cycle(self, vm: str, now: float) -> CycleOutcome:
        app_consistent = False
        try:
            app_consistent = self._app_consistent_due(vm, now)
            report = self._engine.replicate(vm, app_consistent=app_consistent)
            phase = None if report is not None else self._engine.status(vm).phase
        except TransitionNotAllowed as refusal:
            outcome = CycleOutcome(
                vm, Outcome.SKIPPED, app_consistent, None, str(refusal)
            )
        except (ReplicationError, OSError) as error:
            reason = f"{type(error).__name__}: {error}"
            outcome = CycleOutcome(vm, Outcome.FAILED, app_consistent, None, reason)
        else:
            if report is not None:
                point = report.recovery_point_id
                outcome = CycleOutcome(vm, Outcome.REPLICATED, app_consistent, point)
            elif phase == "resynchronizing":
                reason = "the change logs could not be used (damaged or past their "
                reason += "limit): the VM needs resynchronisation (resynchronize)"
                outcome = CycleOutcome(
                    vm, Outcome.RESYNCHRONIZING, app_consistent, None, reason
                )
            else:
                outcome = CycleOutcome(vm, Outcome.NOTHING_TO_SHIP, app_consistent)
        self._remember(now, outcome)
        return outcome

    def _remember(self, now: float, cycle: CycleOutcome) -> None:
        with self._lock:
            record = self._records.get(cycle.vm)
            if record is None:  # its policy was removed meanwhile
                return
            succeeded = cycle.outcome in SUCCEEDED
            made_app_consistent = (
                cycle.outcome is Outcome.REPLICATED and cycle.app_consistent
            )
            record = replace(
                record,
                last_started_at=now,
                last_outcome=cycle.outcome,
                last_reason=cycle.reason,
                last_succeeded_at=now if succeeded else record.last_succeeded_at,
                last_app_consistent_at=(
                    now if made_app_consistent else record.last_app_consistent_at
                ),
                failures_in_a_row=(
                    record.failures_in_a_row + 1
                    if cycle.outcome is Outcome.FAILED
                    else 0
                ),
            )
            self._records[cycle.vm] = _counted(record, cycle.outcome)


def _counted(record: CycleRecord, outcome: Outcome) -> CycleRecord:
    """``record`` with one more cycle of ``outcome``."""
    match outcome:
        case Outcome.REPLICATED:
            return replace(record, replicated=record.replicated + 1)
        case Outcome.NOTHING_TO_SHIP:
            return replace(record, nothing_to_ship=record.nothing_to_ship + 1)
        case Outcome.RESYNCHRONIZING:
            return replace(record, resynchronizing=record.resynchronizing + 1)
        case Outcome.SKIPPED:
            return replace(record, skipped=record.skipped + 1)
        case Outcome.FAILED:
            return replace(record, failed=record.failed + 1)


def _newest_point(
    points: tuple[RecoveryPoint, ...], *, app_consistent: bool = False
) -> RecoveryPoint | None:
    """The newest point (by id: the catalogue's order), app-consistent if asked."""
    for point in reversed(points):
        if point.app_consistent or not app_consistent:
            return point
    return None
