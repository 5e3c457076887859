"""The scheduler on a real engine, its time driven by a ManualClock (never slept).

What each test counts comes from the engine's own record: the recovery points'
creation times and app-consistency, read back from the replica.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.errors import InvalidPolicy
from engine.orchestration.engine import ReplicationEngine
from engine.orchestration.scheduler import (
    RETRY_SECONDS,
    Outcome,
    ReplicationPolicy,
    Scheduler,
)
from engine.replica.recovery_point import RecoveryPoint
from engine.testing import LossyTransport, ManualClock
from engine.transport.interface import CycleShipment, ReplicaTarget

BLOCK = 4096
DISKS = {"os": 64 * BLOCK}  # room for many one-block writes under the log limit
START = 1_000.0


class Site:
    """An engine with protected VMs, its clock, and the lossy transports."""

    def __init__(
        self,
        root: Path,
        vms: tuple[str, ...] = ("web",),
        *,
        retention_count: int = 64,
        clock: ManualClock | None = None,
    ) -> None:
        self.clock = clock or ManualClock(START)
        self.lossy: dict[str, LossyTransport] = {}
        self.engine = ReplicationEngine.open(
            root / "primary", root / "secondary", clock=self.clock,
            block_bytes=BLOCK, retention_count=retention_count,
            wrap_transport=self._wrap,
        )  # fmt: skip
        self.writes = 0
        for vm in vms:
            self.engine.create_vm(vm, DISKS)
            self.engine.enable_protection(vm)  # its first point, at START

    def _wrap(self, inner: ReplicaTarget) -> ReplicaTarget:
        self.lossy[inner.site_name] = LossyTransport(inner)
        return self.lossy[inner.site_name]

    def write(self, vm: str = "web") -> None:
        """One block, each time at the next offset (so each is a new change)."""
        self.writes += 1
        block = self.writes % 64
        self.engine.write(vm, "os", block * BLOCK, self.writes.to_bytes(8) * 512)

    def points(self, vm: str = "web") -> tuple[RecoveryPoint, ...]:
        return self.engine.status(vm).recovery_points

    def cycle_times(self, vm: str = "web") -> list[float]:
        """When each point after the initial replication's was made."""
        return [p.created_at for p in self.points(vm) if p.created_at > START]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """VM 'web', protected at START, its engine keeping 64 points."""
    made = Site(tmp_path)
    yield made
    made.engine.close()


@pytest.mark.parametrize(
    ("frequency", "seconds", "step"), [(30, 600, 1), (300, 3600, 10)]
)
def test_cycles_run_at_the_configured_frequency(
    site: Site, frequency: int, seconds: int, step: int
) -> None:
    """Ticked every `step` seconds with a write before each tick: one point every
    `frequency` seconds (20 in 10 minutes at 30 s, 12 in an hour at 5 minutes)."""
    scheduler = Scheduler(
        site.engine, site.clock, {"web": ReplicationPolicy(frequency)}
    )
    for _ in range(seconds // step):
        site.clock.advance(step)
        site.write()
        scheduler.tick()
    expected = [START + frequency * n for n in range(1, seconds // frequency + 1)]
    assert expected == site.cycle_times()
    statistics = scheduler.statistics()
    assert (statistics.ticks, statistics.replicated) == (
        seconds // step,
        seconds // frequency,
    )


class WorkloadClock:
    """A ManualClock's time whose waits also play the guest (one write per wait)
    and end the run at ``limit``: ``run`` is driven to its end in this thread."""

    def __init__(self, start: float, limit: float) -> None:
        self.manual = ManualClock(start)
        self.limit = limit
        self.waits: list[float] = []
        self.workload: Callable[[], None] = lambda: None

    def now(self) -> float:
        return self.manual.now()

    def wait_until(self, deadline: float, stop: threading.Event) -> bool:
        self.waits.append(deadline)
        if deadline > self.limit:
            stop.set()
            return True
        self.workload()
        return self.manual.wait_until(deadline, stop)


def test_run_waits_on_the_clock_for_the_next_cycle(tmp_path: Path) -> None:
    """run() over 10 simulated minutes at 30 s: it wakes exactly when a cycle is
    due, and the points' times are those wake-ups."""
    clock = WorkloadClock(START, limit=START + 600)
    site = Site(tmp_path, clock=clock.manual)
    clock.workload = site.write
    with site.engine:
        scheduler = Scheduler(site.engine, clock, {"web": ReplicationPolicy(30)})
        ticks = scheduler.run(threading.Event())
        cycles = [START + 30 * n for n in range(1, 21)]
        assert cycles == site.cycle_times()
        assert [*cycles, START + 630] == clock.waits
        assert ticks == 21  # the first, at START, found nothing due


def test_app_consistent_points_come_at_their_interval(site: Site) -> None:
    """Three hours at 5 minutes, app-consistent every hour: the first cycle's point
    and one an hour after it are app-consistent, the others are not."""
    policy = ReplicationPolicy(
        300, additional_recovery_points=3, app_consistent_hours=1
    )
    scheduler = Scheduler(site.engine, site.clock, {"web": policy})
    for _ in range(3 * 60):
        site.clock.advance(60)
        site.write()
        scheduler.tick()
    points = [p for p in site.points() if p.created_at > START]
    assert len(points) == 36
    app_consistent = [p.created_at for p in points if p.app_consistent]
    assert app_consistent == [START + 300, START + 3900, START + 7500]


def test_an_app_consistent_cycle_with_nothing_to_ship_is_asked_again(
    site: Site,
) -> None:
    """No write, so no point: the next cycle asks for app-consistency again, and its
    point (once something was written) is the app-consistent one."""
    policy = ReplicationPolicy(
        300, additional_recovery_points=1, app_consistent_hours=1
    )
    scheduler = Scheduler(site.engine, site.clock, {"web": policy})
    site.clock.advance(300)
    (idle,) = scheduler.tick().cycles
    assert (idle.outcome, idle.app_consistent) == (Outcome.NOTHING_TO_SHIP, True)
    site.clock.advance(300)
    site.write()
    (made,) = scheduler.tick().cycles
    assert (made.outcome, made.app_consistent) == (Outcome.REPLICATED, True)
    assert site.points()[-1].app_consistent
    site.clock.advance(300)
    site.write()
    (next_one,) = scheduler.tick().cycles
    assert (next_one.outcome, next_one.app_consistent) == (Outcome.REPLICATED, False)


def test_the_app_consistent_interval_holds_when_its_point_was_merged_away(
    tmp_path: Path,
) -> None:
    """Cycles run by hand push the app-consistent point out of retention: the
    scheduler's record still knows when it was made, so the next scheduled cycle
    is not app-consistent before the hour is over."""
    policy = ReplicationPolicy(
        300, additional_recovery_points=1, app_consistent_hours=1
    )
    site = Site(tmp_path, retention_count=policy.retention_count)
    with site.engine:
        scheduler = Scheduler(site.engine, site.clock, {"web": policy})
        site.clock.advance(300)
        site.write()
        (first,) = scheduler.tick().cycles
        assert (first.outcome, first.app_consistent) == (Outcome.REPLICATED, True)
        for _ in range(policy.retention_count):  # an operator's cycles
            site.clock.advance(1)
            site.write()
            site.engine.replicate("web")
        assert not any(p.app_consistent for p in site.points())
        site.clock.set(START + 600)
        site.write()
        (second,) = scheduler.tick().cycles
        assert (second.outcome, second.app_consistent) == (Outcome.REPLICATED, False)


def test_a_vm_the_model_refuses_is_skipped_with_its_reason(tmp_path: Path) -> None:
    """'db' is paused: its cycle is refused by the model and recorded, 'web' runs
    on; after resume 'db' replicates again."""
    site = Site(tmp_path, ("db", "web"))
    with site.engine:
        policy = ReplicationPolicy(30)
        scheduler = Scheduler(site.engine, site.clock, {"db": policy, "web": policy})
        site.engine.pause("db")
        site.clock.advance(30)
        site.write("db")
        site.write("web")
        db, web = scheduler.tick().cycles
        assert (db.vm, db.outcome, web.vm, web.outcome) == (
            "db", Outcome.SKIPPED, "web", Outcome.REPLICATED,
        )  # fmt: skip
        assert db.reason is not None
        assert db.reason.startswith(
            "cannot replicate VM 'db' in phase replication_paused: replicate is "
            "allowed only from: protected, reverse_replicating, test_failover"
        )
        record = scheduler.record("db")
        assert (record.last_outcome, record.last_reason, record.skipped) == (
            Outcome.SKIPPED, db.reason, 1,
        )  # fmt: skip
        assert scheduler.next_due_at("db") == START + 60
        site.engine.resume("db")
        site.clock.advance(30)
        assert [c.outcome for c in scheduler.tick().cycles] == [
            Outcome.REPLICATED, Outcome.NOTHING_TO_SHIP,
        ]  # fmt: skip


def test_a_stop_during_a_round_lets_that_cycle_finish_and_starts_no_other(
    tmp_path: Path,
) -> None:
    """Both VMs are due; stop is set while 'db' ships (SIGINT in ``hvdr run``):
    'db''s cycle completes, 'web''s is not started and stays due for the next
    round."""
    stop = threading.Event()
    site = Site(tmp_path, ("db", "web"))
    with site.engine:
        replica = site.lossy["secondary"]
        shipped = replica.apply_cycle

        def ship_then_stop(vm_name: str, shipment: CycleShipment) -> RecoveryPoint:
            point = shipped(vm_name, shipment)
            stop.set()
            return point

        replica.apply_cycle = ship_then_stop  # type: ignore[method-assign]
        policy = ReplicationPolicy(30)
        scheduler = Scheduler(site.engine, site.clock, {"db": policy, "web": policy})
        site.clock.advance(30)
        site.write("db")
        site.write("web")
        (db,) = scheduler.tick(stop).cycles
        assert (db.vm, db.outcome) == ("db", Outcome.REPLICATED)
        assert len(site.cycle_times("db")) == 1
        assert site.cycle_times("web") == []
        assert scheduler.due() == ("web",)


def test_a_failed_cycle_is_recorded_and_retried_before_the_frequency(
    site: Site,
) -> None:
    """The transfer is lost: recorded with its error, due again RETRY_SECONDS later
    (not the 15 minutes of the frequency); the retry ships the waiting cycle."""
    scheduler = Scheduler(site.engine, site.clock, {"web": ReplicationPolicy(900)})
    site.clock.advance(900)
    site.write()
    site.lossy["secondary"].drops = 1
    (failed,) = scheduler.tick().cycles
    assert failed.outcome is Outcome.FAILED
    assert failed.reason == (
        "TransportError: link lost while shipping cycle 2 of VM 'web' (dropped by "
        "LossyTransport)"
    )
    assert scheduler.record("web").failures_in_a_row == 1
    assert scheduler.next_due_at("web") == START + 900 + RETRY_SECONDS
    site.clock.advance(RETRY_SECONDS - 1)
    assert scheduler.tick().cycles == ()
    site.clock.advance(1)
    (retried,) = scheduler.tick().cycles
    assert (retried.outcome, retried.recovery_point_id) == (Outcome.REPLICATED, 2)
    assert site.cycle_times() == [START + 900 + RETRY_SECONDS]
    record = scheduler.record("web")
    assert (record.failures_in_a_row, record.failed, record.replicated) == (0, 1, 1)
    assert scheduler.next_due_at("web") == START + 900 + RETRY_SECONDS + 900


def test_logs_past_their_limit_turn_the_cycle_into_a_resynchronization(
    tmp_path: Path,
) -> None:
    """The cycle finds the logs unusable: recorded as resynchronizing, with why;
    the next cycles are refused by the model until resynchronize."""
    site = Site(tmp_path)
    with site.engine:
        scheduler = Scheduler(site.engine, site.clock, {"web": ReplicationPolicy(30)})
        for _ in range(33):  # 33 blocks of a 64-block disk: past half of it
            site.write()
        site.clock.advance(30)
        (cycle,) = scheduler.tick().cycles
        assert cycle.outcome is Outcome.RESYNCHRONIZING
        assert cycle.reason == (
            "the change logs could not be used (damaged or past their limit): the VM "
            "needs resynchronisation (resynchronize)"
        )
        site.clock.advance(30)
        (refused,) = scheduler.tick().cycles
        assert refused.outcome is Outcome.SKIPPED
        assert "in phase resynchronizing" in (refused.reason or "")


def test_a_new_scheduler_waits_for_the_newest_point_to_age(site: Site) -> None:
    """Not due while the newest point is younger than the frequency (a restart
    causes no burst); due once it is as old."""
    scheduler = Scheduler(site.engine, site.clock, {"web": ReplicationPolicy(300)})
    site.clock.advance(299)
    assert (scheduler.due(), scheduler.next_due_at("web")) == ((), START + 300)
    site.clock.advance(1)
    assert scheduler.due() == ("web",)


def test_a_clock_stepped_back_makes_the_vm_due_at_once(site: Site) -> None:
    """The last cycle seems to lie in the future: the VM is due now (waiting for
    the clock to catch up could stop replication for as long as the step)."""
    scheduler = Scheduler(site.engine, site.clock, {"web": ReplicationPolicy(30)})
    site.clock.advance(30)
    site.write()
    scheduler.tick()
    site.clock.set(START - 3600)
    assert scheduler.due() == ("web",)
    site.write()
    (cycle,) = scheduler.tick().cycles
    assert cycle.outcome is Outcome.REPLICATED
    assert scheduler.next_due_at("web") == START - 3600 + 30


def test_retention_keeps_every_point_of_the_additional_hours(tmp_path: Path) -> None:
    """One additional hour at 15 minutes: the newest 5 points, so after three hours
    the oldest kept is exactly one hour older than the newest."""
    policy = ReplicationPolicy(900, additional_recovery_points=1)
    assert policy.retention_count == 5
    site = Site(tmp_path, retention_count=policy.retention_count)
    with site.engine:
        scheduler = Scheduler(site.engine, site.clock, {"web": policy})
        for _ in range(3 * 4):
            site.clock.advance(900)
            site.write()
            scheduler.tick()
        times = [p.created_at for p in site.points()]
        assert [START + 900 * n for n in range(8, 13)] == times
        assert times[-1] - times[0] == 3600


@pytest.mark.parametrize(
    ("frequency", "hours", "count"), [(30, 24, 2881), (300, 0, 1), (900, 24, 97)]
)
def test_retention_count_covers_the_hours_at_the_frequency(
    frequency: int, hours: int, count: int
) -> None:
    """N hours of cycles and the newest point."""
    assert ReplicationPolicy(frequency, hours).retention_count == count


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"frequency_seconds": 60},
            (
                "frequency_seconds=60 must be one of [30, 300, 900] (30 seconds, "
                "5 minutes, 15 minutes)"
            ),
        ),
        (
            {"frequency_seconds": True},
            "frequency_seconds=True must be one of [30, 300, 900]",
        ),
        (
            {"additional_recovery_points": 25},
            (
                "additional_recovery_points=25 must be an int from 0 to 24 (hours of "
                "points kept)"
            ),
        ),
        (
            {"additional_recovery_points": 4, "app_consistent_hours": 0},
            "app_consistent_hours=0 must be None or an int from 1 to 12",
        ),
        (
            {"additional_recovery_points": 24, "app_consistent_hours": 13},
            "app_consistent_hours=13 must be None or an int from 1 to 12",
        ),
        (
            {"additional_recovery_points": 2, "app_consistent_hours": 4},
            (
                "app_consistent_hours=4 must not exceed additional_recovery_points=2: "
                "the app-consistent points are among the points kept"
            ),
        ),
    ],
)
def test_a_policy_out_of_range_is_refused_saying_what_is_allowed(
    arguments: dict[str, object], message: str
) -> None:
    """One problem: its argument, its value, what is allowed."""
    with pytest.raises(InvalidPolicy) as refused:
        ReplicationPolicy(**arguments)  # type: ignore[arg-type]
    assert message in str(refused.value)


def test_every_problem_of_a_policy_is_listed_at_once() -> None:
    """Three wrong values: one refusal naming the three."""
    with pytest.raises(InvalidPolicy) as refused:
        ReplicationPolicy(45, -1, 20)
    assert str(refused.value) == (
        "replication policy ReplicationPolicy(frequency_seconds=45, "
        "additional_recovery_points=-1, app_consistent_hours=20) is refused: "
        "frequency_seconds=45 must be one of [30, 300, 900] (30 seconds, 5 minutes, "
        "15 minutes); additional_recovery_points=-1 must be an int from 0 to 24 "
        "(hours of points kept); app_consistent_hours=20 must be None or an int from "
        "1 to 12"
    )


def test_a_policy_the_engine_cannot_honour_is_refused(site: Site) -> None:
    """Unknown VMs and too few points kept are refused when scheduled."""
    scheduler = Scheduler(site.engine, site.clock)
    with pytest.raises(InvalidPolicy) as unknown:
        scheduler.set_policy("db", ReplicationPolicy())
    assert str(unknown.value) == "vm 'db' is unknown to the engine; known VMs: ['web']"
    with pytest.raises(InvalidPolicy) as too_few:
        scheduler.set_policy("web", ReplicationPolicy(30, additional_recovery_points=1))
    assert str(too_few.value) == (
        "policy for VM 'web' keeps 1 hours of points at 30 s cycles, which needs the "
        "newest 121 recovery points; the engine keeps 64: open it with "
        "retention_count >= 121, or keep fewer hours"
    )
    assert scheduler.policies() == {}
