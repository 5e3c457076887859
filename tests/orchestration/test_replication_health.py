"""Replication health on a real engine, its time driven by a ManualClock.

Each test moves the clock across one of the rules' thresholds (or changes what the
engine really holds: a paused VM, an overflowed log, a lost transfer) and reads the
health on both sides of it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.binding.protected_vm import KNOWN_PHASES
from engine.orchestration.engine import ReplicationEngine
from engine.orchestration.health import (
    REPLICATION_STATES,
    Health,
    VmHealth,
    critical_after_seconds,
    critical_missed_cycles,
    health_of,
    health_of_all,
    warning_after_seconds,
)
from engine.orchestration.scheduler import Outcome, ReplicationPolicy, Scheduler
from engine.testing import LossyTransport, ManualClock
from engine.transport.interface import ReplicaTarget

BLOCK = 4096
DISKS = {"os": 4 * BLOCK}
START = 1_000.0
#: Replication states Hyper-V Replica reports (Measure-VMReplication's State).
HYPER_V_STATES = {
    "Disabled", "ReadyForInitialReplication", "InitialReplicationInProgress",
    "WaitingForInitialReplication", "Replicating", "PreparedForFailover",
    "FailedOverWaitingCompletion", "FailedOver", "Suspended", "Error",
    "WaitingForStartResynchronize", "Resynchronizing", "ResynchronizeSuspended",
    "RecoveryInProgress", "FailbackInProgress", "FailbackComplete",
}  # fmt: skip


class Site:
    """An engine with protected VMs, its ManualClock, and the lossy transports."""

    def __init__(self, root: Path, vms: tuple[str, ...]) -> None:
        self.clock = ManualClock(START)
        self.lossy: dict[str, LossyTransport] = {}
        self.engine = ReplicationEngine.open(
            root / "primary", root / "secondary", clock=self.clock,
            block_bytes=BLOCK, wrap_transport=self._wrap,
        )  # fmt: skip
        for vm in vms:
            self.engine.create_vm(vm, DISKS)
            self.engine.enable_protection(vm)  # its first point, at START

    def _wrap(self, inner: ReplicaTarget) -> ReplicaTarget:
        self.lossy[inner.site_name] = LossyTransport(inner)
        return self.lossy[inner.site_name]

    def write(self, vm: str = "web", block: int = 0) -> None:
        self.engine.write(vm, "os", block * BLOCK, b"w" * BLOCK)

    def health(self, policy: ReplicationPolicy, vm: str = "web") -> VmHealth:
        return health_of(self.engine, vm, policy, self.clock)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """VM 'web', protected at START."""
    made = Site(tmp_path, ("web",))
    yield made
    made.engine.close()


@pytest.mark.parametrize(
    ("frequency", "warning_after", "critical_after", "critical_missed"),
    [(30, 36.0, 756.0, 25), (300, 360.0, 960.0, 3), (900, 1080.0, 1980.0, 2)],
)
def test_health_turns_warning_then_critical_without_a_cycle_then_normal_after_one(
    site: Site,
    frequency: int,
    warning_after: float,
    critical_after: float,
    critical_missed: int,
) -> None:
    """Normal up to F + grace, Warning from there, Critical once more than a fifth
    of an hour's cycles were missed; one cycle brings it back to Normal."""
    policy = ReplicationPolicy(frequency)
    expected = (warning_after, critical_after, critical_missed)
    assert expected == (
        warning_after_seconds(policy),
        critical_after_seconds(policy),
        critical_missed_cycles(policy),
    )
    seen = []
    for lag in (warning_after - 1, warning_after, critical_after - 1, critical_after):
        site.clock.set(START + lag)
        found = site.health(policy)
        assert found.lag_seconds == lag
        seen.append((found.health, found.reason))
    assert [health for health, _ in seen] == [
        Health.NORMAL, Health.WARNING, Health.WARNING, Health.CRITICAL,
    ]  # fmt: skip
    assert seen[0][1] == (
        f"last replication {warning_after - 1:.0f} s ago, within the {frequency} s "
        "frequency"
    )
    assert seen[1][1] == (
        f"no replication for {warning_after:.0f} s: 1 cycle(s) of {frequency} s "
        f"missed (Warning from {warning_after:.0f} s, Critical from "
        f"{critical_after:.0f} s)"
    )
    assert seen[3][1].startswith(
        f"no replication for {critical_after:.0f} s: {critical_missed} cycle(s) of "
        f"{frequency} s missed in a row, more than a fifth of an hour's"
    )
    site.write()
    site.engine.replicate("web")
    after = site.health(policy)
    assert (after.health, after.lag_seconds) == (Health.NORMAL, 0.0)
    assert after.last_replication_at == START + critical_after
    assert after.recovery_point_count == 2


def test_a_paused_vm_is_warning_and_says_so(site: Site) -> None:
    """Pause: Warning at once (no cycle missed yet), state Suspended, the reason."""
    policy = ReplicationPolicy(30)
    site.engine.pause("web")
    site.clock.advance(10)
    found = site.health(policy)
    assert (found.phase, found.replication_state, found.health) == (
        "replication_paused", "Suspended", Health.WARNING,
    )  # fmt: skip
    assert found.reason == (
        "replication is paused: nothing is shipped until it is resumed; the replica "
        "is 10 s behind"
    )
    site.engine.resume("web")
    assert site.health(policy).health is Health.NORMAL


def test_logs_past_their_limit_are_critical_and_resynchronizing_says_why(
    site: Site,
) -> None:
    """A log past half its disk: Critical while protected (the model's verdict), then
    Critical 'resynchronization required' once the cycle turned into one; Normal
    after resynchronize."""
    policy = ReplicationPolicy(30)
    for block in range(3):  # three blocks of a four-block disk: past half of it
        site.write(block=block)
    protected = site.health(policy)
    assert (protected.phase, protected.health) == ("protected", Health.CRITICAL)
    assert protected.reason == (
        "the change logs cannot be used (past their limit, or damaged): the next "
        "cycle marks the VM for resynchronization (then run resynchronize)"
    )
    assert site.engine.replicate("web") is None
    needed = site.health(policy)
    assert (needed.phase, needed.replication_state, needed.health) == (
        "resynchronizing", "WaitingForStartResynchronize", Health.CRITICAL,
    )  # fmt: skip
    assert needed.reason.startswith("resynchronization required: ")
    assert needed.reason.endswith("; run resynchronize")
    site.engine.resynchronize("web")
    assert site.health(policy).health is Health.NORMAL


def test_a_failed_cycle_is_warning_with_its_error_until_the_retry_succeeds(
    site: Site,
) -> None:
    """The transfer is lost in transit: the scheduler's record makes the health
    Warning with the error before any cycle is missed; the retry clears it."""
    policy = ReplicationPolicy(900)
    scheduler = Scheduler(site.engine, site.clock, {"web": policy})
    site.clock.advance(900)
    site.write()
    site.lossy["secondary"].drops = 1
    (cycle,) = scheduler.tick().cycles
    assert cycle.outcome is Outcome.FAILED
    failed = health_of(
        site.engine, "web", policy, site.clock, record=scheduler.record("web")
    )
    assert failed.health is Health.WARNING
    assert failed.reason.startswith(
        "the last cycle failed (1 in a row): TransportError: link lost while shipping "
        "cycle 2 of VM 'web'"
    )
    assert failed.reason.endswith("; it is retried")
    assert failed.unshipped_log_bytes == 28 + len("os") + 4 + 24 + BLOCK
    site.clock.advance(30)
    (retried,) = scheduler.tick().cycles
    assert retried.outcome is Outcome.REPLICATED
    healed = health_of(
        site.engine, "web", policy, site.clock, record=scheduler.record("web")
    )
    assert (healed.health, healed.unshipped_log_bytes) == (Health.NORMAL, 0)


def test_an_idle_vm_stays_normal_when_the_scheduler_saw_its_cycles(
    site: Site,
) -> None:
    """Nothing written for ten minutes: no new point, yet every cycle found the
    replica current; with the scheduler's record the VM is Normal, without it the
    newest point alone makes it look Warning."""
    policy = ReplicationPolicy(30)
    scheduler = Scheduler(site.engine, site.clock, {"web": policy})
    for _ in range(20):
        site.clock.advance(30)
        assert [c.outcome for c in scheduler.tick().cycles] == [Outcome.NOTHING_TO_SHIP]
    record = scheduler.record("web")
    with_record = health_of(site.engine, "web", policy, site.clock, record=record)
    assert (with_record.health, with_record.lag_seconds) == (Health.NORMAL, 0.0)
    assert with_record.recovery_point_count == 1
    alone = site.health(policy)
    assert (alone.health, alone.lag_seconds) == (Health.WARNING, 600.0)


def test_the_link_down_with_changes_waiting_is_warning(site: Site) -> None:
    """The model's own Warning (a cycle cannot run and the replica lags) shows,
    naming the link, before any cycle is missed; once one is, the lag's finding
    joins it, quoting the model's refusal of the scheduler's cycle."""
    policy = ReplicationPolicy(300)
    site.engine.set_link(False)
    site.write()
    found = site.health(policy)
    assert found.health is Health.WARNING
    assert found.reason == (
        "the link between the sites is down and the replica lags behind the source"
    )
    scheduler = Scheduler(site.engine, site.clock, {"web": policy})
    site.clock.advance(300)
    (refused,) = scheduler.tick().cycles
    assert refused.outcome is Outcome.SKIPPED
    site.clock.advance(60)
    late = health_of(
        site.engine, "web", policy, site.clock, record=scheduler.record("web")
    )
    assert late.health is Health.WARNING
    assert late.reason == (
        "the link between the sites is down and the replica lags behind the source; "
        "no replication for 360 s: 1 cycle(s) of 300 s missed (Warning from 360 s, "
        f"Critical from 960 s); the last cycle was refused: {refused.reason}"
    )


def test_a_vm_whose_files_are_damaged_is_critical_among_the_others(
    tmp_path: Path,
) -> None:
    """Its folder is gone when the engine reopens: health_of_all still answers for
    every VM, the damaged one Critical with the damage as the reason."""
    first = Site(tmp_path, ("db", "web"))
    shutil.rmtree(first.engine.primary.vm_directory("db"))
    first.engine.close()
    reopened = ReplicationEngine.open(
        tmp_path / "primary", tmp_path / "secondary", clock=first.clock,
        block_bytes=BLOCK,
    )  # fmt: skip
    with reopened:
        policy = ReplicationPolicy(30)
        found = health_of_all(reopened, {"web": policy, "db": policy}, first.clock)
    assert [(h.name, h.phase, h.health) for h in found] == [
        ("db", "damaged", Health.CRITICAL), ("web", "protected", Health.NORMAL),
    ]  # fmt: skip
    assert found[0].reason.startswith("the VM's files are damaged: VM 'db': its folder")


def test_to_json_is_what_a_script_reads(site: Site) -> None:
    """Every field, through json.dumps and back: plain values only."""
    policy = ReplicationPolicy(30, additional_recovery_points=1, app_consistent_hours=1)
    site.write()
    site.clock.advance(5)
    site.engine.replicate("web", app_consistent=True)
    site.clock.advance(40)
    document = json.loads(json.dumps(site.health(policy).to_json()))
    assert document == {
        "name": "web",
        "phase": "protected",
        "replication_state": "Replicating",
        "health": "Warning",
        "reason": "no replication for 40 s: 1 cycle(s) of 30 s missed (Warning from "
        "36 s, Critical from 756 s)",
        "checked_at": START + 45,
        "frequency_seconds": 30,
        "last_replication_at": START + 5,
        "lag_seconds": 40.0,
        "recovery_points": {
            "count": 2,
            "latest": {
                "recovery_point_id": 2, "created_at": START + 5, "app_consistent": True,
            },
            "latest_app_consistent": {
                "recovery_point_id": 2, "created_at": START + 5, "app_consistent": True,
            },
        },
        "active_site": "primary",
        "unshipped_log_bytes": 0,
    }  # fmt: skip


def test_every_phase_has_a_replication_state_hyper_v_names() -> None:
    """The table covers each phase the binding knows, with a name from Hyper-V
    Replica's list of states."""
    assert set(REPLICATION_STATES) == set(KNOWN_PHASES)
    assert set(REPLICATION_STATES.values()) <= HYPER_V_STATES
