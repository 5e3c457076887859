"""Who can count a failover's lost writes, and when (docs/model.md, decision 12).

Three findings of the conformance fuzzer, each pinned on the engine and the model:

- a resynchronisation that sent nothing makes no point, yet starts a new epoch: the
  next delta cycle's writes are still writes, and a failover that rolls them back
  counts them (the engine used to take "first point of an epoch" for "made by a
  resynchronisation" and gave up counting);
- a change of recovery point while the old copy still runs stays a bound: that copy
  may write more (the engine used to ask it and call the answer exact);
- when the old source's logs were damaged as it failed over, no figure is ever exact:
  reverse replication closes the record with the target's bound.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engine.orchestration.engine import ReplicationEngine
from engine.testing import ManualClock
from invariants.failover import reconciled_loss_is_exact
from model import Call, ModelConfig, apply, initial_state
from model.scenarios import protect
from model.state import Site

BLOCK = 4096
DISKS = {"os": 16 * BLOCK, "data": 16 * BLOCK}


def write(engine: ReplicationEngine, version: int) -> None:
    disk = "os" if version % 2 else "data"
    data = version.to_bytes(4, "little") * (BLOCK // 4)
    engine.write("web", disk, (version % 16) * BLOCK, data)


def open_engine(tmp_path: Path) -> ReplicationEngine:
    return ReplicationEngine.open(tmp_path / "p", tmp_path / "s", clock=ManualClock())


def points(engine: ReplicationEngine) -> list[int]:
    return [p.recovery_point_id for p in engine.status("web").recovery_points]


def test_a_delta_after_a_resynchronisation_that_sent_nothing_is_counted(
    tmp_path: Path,
) -> None:
    """Rolling back the first delta of an epoch no resynchronisation point opened
    gives the exact figure: its record count is writes, not blocks."""
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        write(engine, 1)
        engine.replicate("web")
        before = points(engine)
        engine.resynchronize("web")  # nothing differs: no point
        assert points(engine) == before
        write(engine, 2)
        write(engine, 3)
        engine.replicate("web")
        newest = engine.status("web").recovery_points[-1]
        assert newest.epoch > engine.status("web").recovery_points[-2].epoch
        engine.unplanned_failover("web", before[-1], shut_down_first=True)
        loss = engine.status("web").loss
        assert loss is not None
        assert (loss.exact, loss.writes_lost, loss.writes_rolled_back) == (True, 2, 2)


def test_a_resynchronisation_point_rolled_back_stays_uncountable(
    tmp_path: Path,
) -> None:
    """The other side of the same rule: a point a resynchronisation made (blocks that
    differed) is never counted as writes, so the figure is a bound."""
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        write(engine, 1)
        engine.replicate("web")
        before = points(engine)
        write(engine, 2)
        engine.resynchronize("web")  # the replica lacks write 2: a block is shipped
        after = engine.status("web").recovery_points
        assert after[-1].resync
        assert after[-1].recovery_point_id not in before
        engine.unplanned_failover("web", before[-1], shut_down_first=True)
        loss = engine.status("web").loss
        assert loss is not None
        assert not loss.exact
        assert not loss.rolled_back_countable


def test_a_change_of_point_while_the_old_copy_runs_stays_a_bound(
    tmp_path: Path,
) -> None:
    """The old copy kept running: however reachable it is, what it says now may grow,
    so the report for another point is the target's bound, not an exact figure."""
    with open_engine(tmp_path) as engine:
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
        first = points(engine)[-1]
        write(engine, 1)
        engine.replicate("web")
        write(engine, 2)  # never shipped
        engine.unplanned_failover("web", shut_down_first=False)
        status = engine.status("web")
        assert status.phase == "failed_over"
        assert "primary" in status.running_at
        engine.change_recovery_point("web", first)
        loss = engine.status("web").loss
        assert loss is not None
        assert (loss.exact, loss.writes_lost) == (False, None)
        assert loss.writes_lost_at_least == 1  # the shipped write it rolls back


def test_damaged_logs_at_failover_close_the_record_with_the_bound() -> None:
    """The model: logs damaged as the source failed over cannot count its writes, so
    reverse replication closes the record with no reconciled figure and a bound that
    is not more than the truth (and the step property accepts exactly that)."""
    config = ModelConfig(vm_count=1)
    state = initial_state(config)
    for call in protect():
        state = apply(config, state, call)
    state = apply(config, state, Call("write", vm=0))
    state = apply(config, state, Call("damage_log", vm=0))
    failover = Call(
        "unplanned_failover",
        vm=0,
        args=(("point", "latest"), ("shutdown", "sync_cut_short")),
    )
    for call in (failover, Call("complete_failover", vm=0), Call("commit", vm=0)):
        state = apply(config, state, call)
    record = state.vms[0].last_failover
    assert record is not None
    assert (record.logs_tell, record.reported_exact, record.lost_writes) == (
        False,
        False,
        1,
    )
    reverse = Call("reverse_replication", vm=0)
    before = state
    state = apply(config, state, reverse)
    state = apply(config, state, Call("complete_resynchronization", vm=0))
    closed = state.vms[0].closed_report
    assert closed is not None
    assert (closed.reconciled_writes, closed.reported_writes) == (None, 0)
    assert reconciled_loss_is_exact.step is not None
    assert reconciled_loss_is_exact.step(config, before, reverse, state)
    # A model that claimed a reconciled figure here would fail the property if the
    # figure were wrong, and the record must not claim one at all:
    claimed = replace(state.vms[0], closed_report=replace(closed, reconciled_writes=1))
    assert reconciled_loss_is_exact.step is not None
    assert not reconciled_loss_is_exact.step(
        config, before, reverse, replace(state, vms=(claimed,))
    )
    assert state.vms[0].active is Site.SECONDARY
